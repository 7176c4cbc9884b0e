"""Small shared helpers: input checks, progress bars, hashing and atomic writes.

Private to the package; the public names live in the method modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

T = TypeVar("T")

# Progress bars are on by default in a terminal; notebooks and tests turn them off with
# ``ftgeo.set_progress(False)`` or the environment variable FTGEO_PROGRESS=0.
_PROGRESS = {"enabled": os.environ.get("FTGEO_PROGRESS", "1") not in {"0", "false", "no"}}


def set_progress(enabled: bool) -> None:
    """Turn every ftgeo progress bar on or off."""
    _PROGRESS["enabled"] = bool(enabled)


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "",
             enabled: bool | None = None, **kwargs: Any) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar unless progress bars are off."""
    on = _PROGRESS["enabled"] if enabled is None else enabled
    return iter(tqdm(iterable, total=total, desc=desc, disable=not on, leave=False, **kwargs))


def progress_bar(*, desc: str, unit: str = "it", total: int | None = None,
                 enabled: bool | None = None) -> tqdm:
    """A manually updated tqdm bar (``bar.update()``), off when progress bars are off."""
    on = _PROGRESS["enabled"] if enabled is None else enabled
    return tqdm(total=total, desc=desc, unit=unit, disable=not on, leave=False)


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds.

    >>> check(1 < 2, "never raised")
    >>> check(False, "learning_rate must be > 0, got -1")
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be > 0, got -1
    """
    if not condition:
        raise ValueError(message)


def check_Xy(X: np.ndarray, y: np.ndarray | None = None, *, name: str = "X") -> None:
    """Check a representation matrix (and labels): 2-D, finite, matching lengths."""
    X = np.asarray(X)
    check(X.ndim == 2, f"{name} must have shape (n_samples, n_features), got shape {X.shape}")
    check(bool(np.isfinite(X).all()),
          f"{name} contains NaN or infinite values ({int((~np.isfinite(X)).sum())} entries)")
    if y is not None:
        y = np.asarray(y)
        check(y.ndim == 1 and len(y) == len(X),
              f"y must have shape (n_samples,) = ({len(X)},) to match {name}, got {y.shape}")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, the basis of every cache key.

    >>> canonical_json({"b": 1, "a": [1, 2]})
    '{"a":[1,2],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_text(text: str) -> str:
    """Hex sha256 of a string.

    >>> sha256_text("")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def repo_root() -> Path | None:
    """The source checkout that holds this package (``lib/ftgeo``), if it is one."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else None


def artifacts_dir() -> Path:
    """Where generated things go: ``FTGEO_ARTIFACTS`` if set, else ``<checkout>/artifacts``."""
    env = os.environ.get("FTGEO_ARTIFACTS")
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "artifacts"
