"""ftgeo: how fine-tuning changes the geometry of transformer representations.

The library under the ftgeo book: task data, layer-wise representations with a
content-addressed cache, fine-tuning with stored trajectories
(``ftgeo.finetune.finetune``), probes and geometry measures (DirectProbe, isotropy, CKA),
and the papermill pipeline.
"""

from ._util import set_progress
from .cka import block_structure, cka_matrix, linear_cka
from .data import PROBING_TASKS, TASKS, DataNotFoundError, TaskData, load_task, task_table
from .directprobe import DirectProbe, hull_distance, hull_overlap, spatial_similarity
from .extract import representations
from .finetune import FinetuneRun, FinetuneSettings
from .isotropy import isoscore  # not the function isotropy: ftgeo.isotropy is the module
from .models import LoadedModel, ModelSpec, load_model, resolve_model
from .pipeline import run_config, save_metrics
from .probes import LinearProbe, MLPProbe, linear_probe_layers, probe_grid
from .store import Store

__version__ = "0.1.0"

__all__ = [
    "PROBING_TASKS",
    "TASKS",
    "DataNotFoundError",
    "DirectProbe",
    "FinetuneRun",
    "FinetuneSettings",
    "LinearProbe",
    "LoadedModel",
    "MLPProbe",
    "ModelSpec",
    "Store",
    "TaskData",
    "block_structure",
    "cka_matrix",
    "hull_distance",
    "hull_overlap",
    "isoscore",
    "linear_cka",
    "linear_probe_layers",
    "load_model",
    "load_task",
    "probe_grid",
    "representations",
    "resolve_model",
    "run_config",
    "save_metrics",
    "set_progress",
    "spatial_similarity",
    "task_table",
]
