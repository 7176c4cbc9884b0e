"""``python -m ftgeo``: see :mod:`ftgeo.pipeline`."""

import sys

from .pipeline import main

sys.exit(main())
