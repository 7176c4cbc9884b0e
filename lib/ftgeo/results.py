"""The records each chapter writes, and reading them back: one schema, one vocabulary.

A chapter's results cross the notebook boundary as a typed record (a frozen dataclass),
never as a dict whose keys another notebook must guess. :func:`write_record` checks the
record and writes it as the run's ``metrics.json``; :func:`read_record` reads one back and
checks it field by field, so a renamed or missing key is an error that names the file and
the field, not a claim that silently becomes untestable. :func:`read_runs` is the one rule
for which run counts (the comparison chapter and the claims both use it).

Vocabulary: the two model states are ``pretrained`` and ``finetuned`` (:data:`STATES`),
in field names, tables and figures alike.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

log = logging.getLogger(__name__)

__all__ = [
    "CHAPTERS",
    "STATES",
    "CKARecord",
    "CKATask",
    "CrossTaskRecord",
    "CrossTaskState",
    "FinetuningRecord",
    "FinetuningTask",
    "IsotropyRecord",
    "IsotropyTask",
    "LayersRecord",
    "LayersTask",
    "LinearityRecord",
    "LinearityTask",
    "ModelInfo",
    "PAPER_ENHANCEMENT_EVALUATION",
    "ProbingRecord",
    "ProbingTask",
    "Record",
    "SchemaError",
    "SpatialRecord",
    "SpatialTask",
    "TasksRecord",
    "TasksTask",
    "header",
    "from_dict",
    "model_info",
    "read_record",
    "read_runs",
    "write_record",
]

SCHEMA_VERSION = 1
STATES = ("pretrained", "finetuned")


class SchemaError(ValueError):
    """A record does not match its schema; the message names the file and the field."""


@dataclass(frozen=True)
class ModelInfo:
    """What a claim about one model family or size needs to know about the model."""

    model_type: str  # the transformers config's model_type: bert, roberta, albert, ...
    n_layers: int  # transformer layers (the embedding layer not counted)
    hidden_size: int


def model_info(loaded) -> ModelInfo:
    """The :class:`ModelInfo` of a :class:`ftgeo.LoadedModel`."""
    config = loaded.encoder.config
    return ModelInfo(str(config.model_type), int(config.num_hidden_layers), int(config.hidden_size))


def header(model: str, loaded, max_sentences: int = 0, settings=None) -> dict[str, Any]:
    """The fields every chapter's record shares, for a chapter that read ``loaded`` (a
    :class:`ftgeo.LoadedModel` named ``model``) and, where it read fine-tuned runs, their
    ``settings`` (a :class:`ftgeo.finetune.FinetuneSettings`: a chapter's runs share them)."""
    return {"model": model, "fingerprint": loaded.spec.fingerprint, "model_info": model_info(loaded),
            "max_sentences": max_sentences, "settings": None if settings is None else settings.as_dict()}


@dataclass(frozen=True, kw_only=True)
class Record:
    """What every chapter's record holds: the model, its weights' fingerprint and the data size."""

    chapter: ClassVar[str] = ""
    model: str
    fingerprint: str
    model_info: ModelInfo
    max_sentences: int = 0
    settings: dict[str, Any] | None = None  # the fine-tuning settings the chapter read


# -- chapter 01 -------------------------------------------------------------------------
@dataclass(frozen=True)
class TasksTask:
    n_items: dict[str, int]
    n_labels: int
    linear_probe_test_accuracy: list[float | None]
    linear_probe_dev_accuracy: list[float | None]
    linear_probe_l2: list[float | None]


@dataclass(frozen=True, kw_only=True)
class TasksRecord(Record):
    chapter: ClassVar[str] = "01_tasks_and_representations"
    encoder: str
    n_layers: int
    n_features: int
    tasks: dict[str, TasksTask]


# -- chapter 02 -------------------------------------------------------------------------
@dataclass(frozen=True)
class FinetuningTask:
    run: str
    n_steps: int
    steps: list[int]
    dev_accuracy_curve: list[float | None]
    finetuned_dev_accuracy: float | None
    finetuned_test_accuracy: float | None
    linear_probe_pretrained_test_accuracy: list[float | None]
    linear_probe_finetuned_test_accuracy: list[float | None]
    training_seconds: float | None
    # one entry per fine-tuning seed, the first seed's first (None: a record from one seed)
    finetuned_dev_accuracy_seeds: list[float | None] | None = None
    finetuned_test_accuracy_seeds: list[float | None] | None = None


@dataclass(frozen=True, kw_only=True)
class FinetuningRecord(Record):
    chapter: ClassVar[str] = "02_finetuning"
    encoder: str
    trajectory_items: int | None
    tasks: dict[str, FinetuningTask]


# -- chapter 03 -------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbingTask:
    mlp_pretrained: list[float]  # test accuracy of the chosen MLP probe, one per probe seed
    mlp_finetuned: list[float]
    similarity_pretrained: float | None  # train-test spatial similarity (Pearson r)
    similarity_finetuned: float | None
    label_pairs_pretrained: int  # entries of the distance vectors the similarity correlates
    label_pairs_finetuned: int
    separable_pretrained: bool  # train and test sets both linearly separable (DirectProbe)
    separable_finetuned: bool
    # one entry per fine-tuning seed, the first seed's first (None: a record from one seed)
    mlp_finetuned_seeds: list[float] | None = None  # mean over probe seeds
    similarity_finetuned_seeds: list[float | None] | None = None  # None: not defined
    # seconds of each DirectProbe fit of the first seed, "pretrained/train" etc. (None: unknown)
    directprobe_seconds: dict[str, float | None] | None = None


@dataclass(frozen=True, kw_only=True)
class ProbingRecord(Record):
    chapter: ClassVar[str] = "03_probing_performance"
    layer: int
    probe_grid: dict[str, Any]
    directprobe_items: int | None
    tasks: dict[str, ProbingTask]


# -- chapter 04 -------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearityTask:
    n_labels: int
    clusters_pretrained: int
    clusters_finetuned: int
    clusters_per_layer_pretrained: list[int] | None
    clusters_per_layer_finetuned: list[int] | None
    # one count per fine-tuning seed, the first seed's first (None: a record from one seed)
    clusters_finetuned_seeds: list[int] | None = None
    # whether each transformer layer is linearly separable (the reference's protocol for
    # layers; None where the chapter counted clusters per layer instead, or neither)
    separable_per_layer_pretrained: list[bool] | None = None
    separable_per_layer_finetuned: list[bool] | None = None


@dataclass(frozen=True, kw_only=True)
class LinearityRecord(Record):
    chapter: ClassVar[str] = "04_linearity"
    layer: int
    directprobe_items: int | None
    tasks: dict[str, LinearityTask]


# -- chapter 05 -------------------------------------------------------------------------
@dataclass(frozen=True)
class SpatialTask:
    steps: list[int]
    min_distance: dict[str, list[float | None]]  # label -> its minimum distance at each step
    scale: list[float]  # the spread of the representation at each step (ftgeo.spatial.spread)
    closest_labels: list[str]  # the three closest labels at step 0
    closest_distance_first: list[float | None]  # their pairwise distances at the first step
    closest_distance_last: list[float | None]  # ... and at the last
    separable: list[bool] | None = None  # linearly separable at each step (else no distances)
    # one entry per fine-tuning seed, the first seed's first (None: a record from one seed); the
    # steps, the labels and the closest labels (chosen at step 0, the pretrained model, which
    # every seed shares) are the same for every seed
    min_distance_seeds: list[dict[str, list[float | None]]] | None = None
    scale_seeds: list[list[float]] | None = None
    closest_distance_last_seeds: list[list[float | None]] | None = None
    separable_seeds: list[list[bool]] | None = None


@dataclass(frozen=True, kw_only=True)
class SpatialRecord(Record):
    chapter: ClassVar[str] = "05_spatial_structure"
    layer: int
    tasks: dict[str, SpatialTask]


# -- chapter 06 -------------------------------------------------------------------------
@dataclass(frozen=True)
class CrossTaskState:
    mlp: list[float]
    clusters: int
    min_distance: dict[str, float | None]  # target label -> its minimum distance
    scale: float  # the spread of the target's representation in this state
    similarity_to_pretrained: float | None
    # a fine-tuned state: one entry per fine-tuning seed, the first seed's first (None: the
    # pretrained state, or a record from one seed)
    mlp_seeds: list[list[float]] | None = None
    clusters_seeds: list[int] | None = None
    min_distance_seeds: list[dict[str, float | None]] | None = None
    scale_seeds: list[float] | None = None
    similarity_to_pretrained_seeds: list[float | None] | None = None


@dataclass(frozen=True, kw_only=True)
class CrossTaskRecord(Record):
    chapter: ClassVar[str] = "06_cross_task"
    layer: int
    target: str
    sources: list[str]
    states: dict[str, CrossTaskState]  # "pretrained" and "finetuned on <task>"


# -- chapter 07 -------------------------------------------------------------------------
@dataclass(frozen=True)
class LayersTask:
    steps: list[int]
    n_labels: int
    similarity: list[list[float | None]]  # transformer layer x step: similarity to pretrained
    final_similarity: list[float | None]  # per transformer layer, at the last step
    relative_motion: list[float | None]
    range_of_motion: list[float | None]
    relative_range: list[float | None]
    # one entry per fine-tuning seed, the first seed's first (None: a record from one seed)
    similarity_seeds: list[list[list[float | None]]] | None = None
    final_similarity_seeds: list[list[float | None]] | None = None
    relative_motion_seeds: list[list[float | None]] | None = None
    range_of_motion_seeds: list[list[float | None]] | None = None
    relative_range_seeds: list[list[float | None]] | None = None


@dataclass(frozen=True, kw_only=True)
class LayersRecord(Record):
    chapter: ClassVar[str] = "07_layers"
    tasks: dict[str, LayersTask]


# -- chapter 08 -------------------------------------------------------------------------
@dataclass(frozen=True)
class IsotropyTask:
    layer: int
    n_test: int
    partition: dict[str, float | None]  # state -> I(W) of the last layer
    average_cosine: dict[str, float | None]
    isoscore: dict[str, float | None]
    cluster_isoscore: dict[str, float | None]
    elongated: dict[str, float | None]
    directions_90: dict[str, float | None]
    max_r: dict[str, float | None]
    property: str
    word_share: dict[str, float | None]
    probe: dict[str, dict[str, float | None]]  # state -> variant -> test accuracy
    n_removed: int
    n_vectors: int | None = None  # vectors the isotropy measures read (tokens or items)
    # measure -> one value per fine-tuning seed (fine-tuned state, last layer), the first
    # seed's first (None: a record from one seed); ftgeo.analyses.SEED_MEASURES
    finetuned_seeds: dict[str, list[float | None]] | None = None
    # the paper's evaluation of isotropy enhancement (PAPER_ENHANCEMENT_EVALUATION), last layer:
    # enhancement method (ftgeo.isotropy.ENHANCEMENTS, "none" first) -> test accuracy of the
    # classifier trained on the enhanced vectors; pretrained once, fine-tuned once per
    # fine-tuning seed, the first seed's first (None: not evaluated)
    enhanced_pretrained: dict[str, float | None] | None = None
    enhanced_finetuned: dict[str, list[float | None]] | None = None
    enhanced_removed: int | None = None  # D of the global and cluster-based enhancements


#: :attr:`IsotropyRecord.enhancement_evaluation` when chapter 8 scored enhancement as Rajaee &
#: Pilehvar (2021) do: a classifier trained on the enhanced (unstandardized) vectors of the
#: last layer. Older records hold "retrained probe" (a standardized ridge probe, which can hardly
#: gain from removing directions), records without the evaluation "none".
PAPER_ENHANCEMENT_EVALUATION = "classifier trained on enhanced vectors (paper)"


@dataclass(frozen=True, kw_only=True)
class IsotropyRecord(Record):
    chapter: ClassVar[str] = "08_isotropy"
    enhancement_evaluation: str  # how enhanced vectors are scored: PAPER_ENHANCEMENT_EVALUATION
    max_items: int | None
    n_clusters: int
    n_top: int
    tasks: dict[str, IsotropyTask]
    vectors: str = "items"  # what the measures read: "tokens" (every token) or "items"
    max_tokens: int | None = None
    enhancement_clusters: int | None = None  # k-means clusters of the paper's enhancements
    # the paper's classifier as trained here (ftgeo.analyses.ENHANCEMENT_CLASSIFIER and changes)
    enhancement_classifier: dict[str, float] | None = None


# -- chapter 09 -------------------------------------------------------------------------
@dataclass(frozen=True)
class CKATask:
    layers: list[int]
    cka_pretrained: list[list[float | None]]
    cka_finetuned: list[list[float | None]]
    same_layer: list[float | None]
    dropping: list[float | None]  # test accuracy with the top k layers dropped, k = 0, 1, ...
    n_test: int
    # one entry per fine-tuning seed, the first seed's first (None: a record from one seed)
    cka_finetuned_seeds: list[list[list[float | None]]] | None = None
    dropping_seeds: list[list[float | None]] | None = None


@dataclass(frozen=True, kw_only=True)
class CKARecord(Record):
    chapter: ClassVar[str] = "09_cka"
    debiased: bool
    max_items: int | None
    tasks: dict[str, CKATask]
    split: str = "train"  # the items CKA read (records before this field: the training items)


RECORDS: dict[str, type[Record]] = {
    cls.chapter: cls
    for cls in (
        TasksRecord,
        FinetuningRecord,
        ProbingRecord,
        LinearityRecord,
        SpatialRecord,
        CrossTaskRecord,
        LayersRecord,
        IsotropyRecord,
        CKARecord,
    )
}
CHAPTERS = tuple(RECORDS)


# -- checking ---------------------------------------------------------------------------
def _check(value: Any, kind: Any, where: str) -> Any:
    """``value`` (parsed JSON) as ``kind``; SchemaError naming ``where`` if it does not fit."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _check(value, option, where)
            except SchemaError:
                continue
        raise SchemaError(f"{where}: expected {kind}, got {value!r:.80}")
    if kind is type(None):
        if value is None:
            return None
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind in (int, str, bool):
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return [_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, Mapping):
            return {str(k): _check(v, args[1], f"{where}[{k!r}]") for k, v in value.items()}
    elif dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            value = _as_json(value)
        if isinstance(value, Mapping):
            return from_dict(kind, value, where)
    else:  # pragma: no cover - a field type this checker does not know
        raise TypeError(f"{where}: unsupported field type {kind}")
    raise SchemaError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r:.80}")


def from_dict(cls: type, data: Mapping[str, Any], where: str = "record") -> Any:
    """Build the dataclass ``cls`` from a mapping, checking every field's name and type.

    >>> from_dict(ModelInfo, {"model_type": "bert", "n_layers": 2, "hidden_size": 128})
    ModelInfo(model_type='bert', n_layers=2, hidden_size=128)
    >>> from_dict(ModelInfo, {"model_type": "bert", "layers": 2, "hidden_size": 128})
    Traceback (most recent call last):
    ...
    ftgeo.results.SchemaError: record: missing field(s) ['n_layers']; unknown field(s) ['layers']
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    missing = [
        n
        for n, f in fields.items()
        if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    unknown = sorted(set(data) - set(fields))
    if missing or unknown:
        parts = ([f"missing field(s) {missing}"] if missing else []) + (
            [f"unknown field(s) {unknown}"] if unknown else []
        )
        raise SchemaError(f"{where}: {'; '.join(parts)}")
    return cls(**{n: _check(v, hints[n], f"{where}.{n}") for n, v in data.items()})


def _as_json(record: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(record), allow_nan=True))


# -- writing and reading ----------------------------------------------------------------
def write_record(output_dir: str | os.PathLike, record: Record) -> Path:
    """Check ``record`` against its schema and write it as ``<output_dir>/metrics.json``
    (atomically; NaN becomes null). Returns the path."""
    from .pipeline import save_metrics

    if not isinstance(record, Record) or type(record).chapter not in RECORDS:
        raise SchemaError(
            f"write_record needs one of the chapter records {sorted(RECORDS)}, got {type(record).__name__}"
        )
    data = _as_json(record)
    from_dict(type(record), data, type(record).__name__)  # the same check as on reading
    return save_metrics(output_dir, {"schema": SCHEMA_VERSION, "chapter": type(record).chapter, **data})


def parse_record(metrics: Mapping[str, Any], where: str = "metrics") -> Record:
    """The typed record in a ``metrics.json`` mapping; SchemaError if it does not fit."""
    chapter = metrics.get("chapter")
    if chapter not in RECORDS:
        raise SchemaError(f"{where}: 'chapter' is {chapter!r}, not one of {sorted(RECORDS)}")
    if metrics.get("schema") != SCHEMA_VERSION:
        raise SchemaError(
            f"{where}: schema version {metrics.get('schema')!r}, expected "
            f"{SCHEMA_VERSION}; rerun the chapter (python -m ftgeo run --force)"
        )
    data = {k: v for k, v in metrics.items() if k not in ("schema", "chapter", "work")}
    return from_dict(RECORDS[chapter], data, where)


def read_record(path: str | os.PathLike) -> Record:
    """The record in a run folder's ``metrics.json`` (or that file), checked."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} does not exist: run the chapter first (python -m ftgeo run --config CONFIG)"
        ) from None
    except ValueError as err:
        raise SchemaError(f"{path}: not valid JSON ({err})") from err
    return parse_record(metrics, str(path))


@dataclass(frozen=True)
class ModelRuns:
    """The records of one model set-up (a model's weights and a data size), one per chapter."""

    label: str
    fingerprint: str
    max_sentences: int
    records: dict[str, Record] = field(default_factory=dict)
    folders: dict[str, list[str]] = field(default_factory=dict)  # chapter -> run folders read


def read_runs(runs_dir: str | os.PathLike) -> dict[tuple[str, str, int], ModelRuns]:
    """Every chapter record under ``runs_dir``, grouped by model set-up: the one rule for
    which run counts.

    Returns ``{(model label, fingerprint, max_sentences): ModelRuns}``. Runs are read oldest
    first; for each chapter and task the newest run wins, so a later run on fewer tasks
    keeps the other tasks of an earlier one. Runs of other notebooks (the comparison, the
    scorecard) are ignored; a chapter's ``metrics.json`` that does not fit its schema is
    skipped with a warning that names it and says why.
    """
    from .compare import model_label

    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(
            f"runs_dir {str(runs_dir)!r} is not a folder; run the pipeline "
            "first (python -m ftgeo run), or pass the folder it wrote to"
        )
    found: dict[tuple[str, str, int], ModelRuns] = {}
    for path in sorted(runs_dir.glob("*/metrics.json"), key=lambda p: (p.stat().st_mtime_ns, p.parent.name)):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            log.warning("%s: skipped, not readable as JSON (%s)", path, err)
            continue
        if not isinstance(metrics, Mapping) or metrics.get("chapter") not in RECORDS:
            continue
        try:
            record = parse_record(metrics, str(path))
        except SchemaError as err:
            log.warning("skipped: %s", err)
            continue
        key = (model_label(record.model), record.fingerprint, record.max_sentences)
        runs = found.setdefault(key, ModelRuns(*key))
        older = runs.records.get(record.chapter)
        if older is not None and hasattr(record, "tasks"):
            record = dataclasses.replace(record, tasks={**older.tasks, **record.tasks})
            runs.folders[record.chapter].append(path.parent.name)
        else:
            runs.folders[record.chapter] = [path.parent.name]
        runs.records[record.chapter] = record
    return found
