"""Side-by-side comparison of the models the pipeline has run: one column per model.

Every chapter writes ``metrics.json`` into its run folder (see :mod:`ftgeo.pipeline`). This
module reads all of them under a runs folder, keeps the newest run of each chapter for
each *model set-up* (a model, by its weights' fingerprint, and the data size the run used)
and task,
and lays out the key figures of the book per model and task:

==========================  ===========================================  ======================
measure                     before / after fine-tuning                   chapter (metrics key)
==========================  ===========================================  ======================
fine-tuned dev accuracy     after only                                   02 (finetuned_dev_accuracy)
MLP probe accuracy          untuned / fine-tuned, mean over seeds        03 (mlp_*_mean)
DirectProbe clusters        clusters per label, untuned / fine-tuned     04 (clusters_*, n_labels)
similarity to pretrained    spatial similarity of the last layer to its  07 (final_similarity)
                            pretrained structure (after only)
IsoScore                    last layer, pretrained / fine-tuned          08 (isoscore_*)
CKA block score             pretrained / fine-tuned                      09 (block_score_*)
==========================  ===========================================  ======================

Running the pipeline on a new model therefore adds a column and needs no code change.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._util import artifacts_dir, check

log = logging.getLogger(__name__)

__all__ = ["MEASURES", "column_names", "comparison_table", "model_label", "read_runs"]

# (measure, chapter, function of one task's metrics -> (before, after)); NaN where absent
MEASURES: dict[str, tuple[str, Any]] = {
    "fine-tuned dev accuracy": (
        "02_finetuning", lambda t: (np.nan, t.get("finetuned_dev_accuracy"))),
    "MLP probe accuracy": (
        "03_probing_performance", lambda t: (t.get("mlp_untuned_mean"), t.get("mlp_finetuned_mean"))),
    "DirectProbe clusters per label": (
        "04_linearity", lambda t: (_ratio(t.get("clusters_untuned"), t.get("n_labels")),
                                   _ratio(t.get("clusters_finetuned"), t.get("n_labels")))),
    "spatial similarity to pretrained": (
        "07_layers", lambda t: (np.nan, (t.get("final_similarity") or [None])[-1])),
    "IsoScore (last layer)": (
        "08_isotropy", lambda t: (t.get("isoscore_pretrained"), t.get("isoscore_fine-tuned"))),
    "CKA block score": (
        "09_cka", lambda t: (t.get("block_score_pretrained"), t.get("block_score_finetuned"))),
}


def _ratio(a, b) -> float:
    return np.nan if a is None or not b else a / b


def _number(x) -> float:
    return np.nan if x is None else float(x)


def model_label(model: str) -> str:
    """A short column name for a model: the alias or hub id, or a local folder's name.

    >>> model_label("minilm"), model_label("google/bert_uncased_L-2_H-128_A-2")
    ('minilm', 'google/bert_uncased_L-2_H-128_A-2')
    >>> model_label("/tmp/models/tiny-bert/")
    'tiny-bert'
    """
    if os.path.isabs(model) or model.startswith((".", "~")) or model.endswith("/"):
        return Path(model.rstrip("/")).name or model
    return model


def read_runs(runs_dir: str | os.PathLike | None = None) -> dict[tuple[str, str, int], dict]:
    """The newest metrics of each chapter and task for each model set-up under ``runs_dir``.

    runs_dir : a folder of run folders, each with a ``metrics.json`` (default
        ``<artifacts>/runs``)

    Returns ``{(model label, model fingerprint, max_sentences): {chapter: metrics}}``.
    A ``metrics.json`` that is not valid JSON is skipped with a warning naming it.
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else artifacts_dir() / "runs"
    check(runs_dir.is_dir(), f"runs_dir {str(runs_dir)!r} is not a folder; run the pipeline "
                             "first (python -m ftgeo run), or pass the folder it wrote to")
    found: dict[tuple[str, str, int], dict] = {}
    for path in sorted(runs_dir.glob("*/metrics.json"),
                       key=lambda p: (p.stat().st_mtime_ns, p.parent.name)):
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            log.warning("%s: skipped, not readable as JSON (%s)", path, err)
            continue
        if not isinstance(m, Mapping) or not {"chapter", "model", "fingerprint"} <= set(m):
            continue
        key = (model_label(str(m["model"])), str(m["fingerprint"]), int(m.get("max_sentences") or 0))
        chapters = found.setdefault(key, {})
        older = chapters.get(m["chapter"], {}).get("tasks")
        if isinstance(older, Mapping) and isinstance(m.get("tasks"), Mapping):
            # per task, the newest run wins: a later run on fewer tasks keeps the others
            m = {**m, "tasks": {**older, **m["tasks"]}}
        chapters[m["chapter"]] = m
    return found


def column_names(keys) -> dict[tuple[str, str, int], str]:
    """One name per model set-up: the model label, qualified only where two set-ups share it."""
    names = {}
    for key in keys:
        label, fp, max_sentences = key
        same = [k for k in keys if k[0] == label]
        name = label
        if len({k[1] for k in same}) > 1:
            name += f" [{fp[:8]}]"
        if len({k[2] for k in same}) > 1:
            name += f" ({max_sentences} sentences)" if max_sentences else " (full data)"
        names[key] = name
    return names


def comparison_table(runs_dir: str | os.PathLike | None = None, *,
                     max_sentences: int | None = 0) -> pd.DataFrame:
    """Key figures per model, task and measure, in long form.

    max_sentences : keep the runs made with this ``max_sentences`` (0: the full data sets;
        ``None``: every data size, as separate columns)

    Returns a DataFrame with columns ``model, task, measure, before, after, change``
    (``change = after - before``; ``before`` is NaN for measures of the fine-tuned model
    only), sorted by measure, task and model. Empty if no chapter has run.
    """
    runs = read_runs(runs_dir)
    if max_sentences is not None:
        runs = {k: v for k, v in runs.items() if k[2] == max_sentences}
    names = column_names(list(runs))
    rows = []
    for key, chapters in runs.items():
        for measure, (chapter, get) in MEASURES.items():
            tasks = chapters.get(chapter, {}).get("tasks", {})
            if not isinstance(tasks, Mapping):
                continue
            for task, values in tasks.items():
                before, after = (_number(v) for v in get(values))
                if np.isnan(before) and np.isnan(after):
                    continue
                rows.append({"model": names[key], "task": task, "measure": measure,
                             "before": before, "after": after, "change": after - before})
    table = pd.DataFrame(rows, columns=["model", "task", "measure", "before", "after", "change"])
    order = {m: i for i, m in enumerate(MEASURES)}
    return (table.sort_values(["measure", "task", "model"], key=lambda s: s.map(order)
                              if s.name == "measure" else s).reset_index(drop=True))
