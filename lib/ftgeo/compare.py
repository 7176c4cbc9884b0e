"""Side-by-side comparison of the models the pipeline has run: one column per model.

Every chapter writes its typed record (:mod:`ftgeo.results`) into its run folder. This
module reads them all under a runs folder with :func:`ftgeo.results.read_runs` (the one
rule for which run counts, which the claims use too) and lays out the key figures of the
book per model set-up (a model's weights and the data size of its runs) and task:

==============================  ===========================================  ======================
measure                         before / after fine-tuning                   chapter (record field)
==============================  ===========================================  ======================
finetuned dev accuracy          after only                                   02 (finetuned_dev_accuracy)
MLP probe accuracy              pretrained / finetuned, mean over seeds      03 (mlp_*)
DirectProbe clusters per label  pretrained / finetuned                       04 (clusters_*, n_labels)
similarity to pretrained        spatial similarity of the last layer to its  07 (final_similarity)
                                pretrained structure (after only)
IsoScore                        last layer, pretrained / finetuned           08 (isoscore)
CKA block contrast              beyond the best banded matrix (the claims'    09 (cka_*)
                                test), pretrained / finetuned
==============================  ===========================================  ======================

Running the pipeline on a new model therefore adds a column and needs no code change.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._util import artifacts_dir

log = logging.getLogger(__name__)

__all__ = ["MEASURES", "column_names", "comparison_table", "model_label"]


def _block_contrast(matrix) -> float:
    from .cka import blocks_beyond_banded

    C = np.asarray(matrix, dtype=float)
    return blocks_beyond_banded(C).score if len(C) >= 3 and np.isfinite(C).all() else np.nan


# (measure, chapter, function of one task's record -> (before, after)); NaN where absent
MEASURES: dict[str, tuple[str, Any]] = {
    # the fine-tuned figures: the mean over fine-tuning seeds where a record has several
    "finetuned dev accuracy": ("02_finetuning", lambda t: (np.nan, _seed_mean(
        t.finetuned_dev_accuracy_seeds, t.finetuned_dev_accuracy))),
    "MLP probe accuracy": (
        "03_probing_performance", lambda t: (np.mean(t.mlp_pretrained), _seed_mean(
            t.mlp_finetuned_seeds, np.mean(t.mlp_finetuned)))),
    "DirectProbe clusters per label": (
        "04_linearity", lambda t: (_ratio(t.clusters_pretrained, t.n_labels),
                                   _ratio(t.clusters_finetuned, t.n_labels))),
    "spatial similarity to pretrained": (
        "07_layers", lambda t: (np.nan, _seed_mean(_top_layers(t.final_similarity_seeds),
                                                   (t.final_similarity or [None])[-1]))),
    "IsoScore (last layer)": (
        "08_isotropy", lambda t: (t.isoscore.get("pretrained"), t.isoscore.get("finetuned"))),
    "CKA block contrast": (
        "09_cka", lambda t: (_block_contrast(t.cka_pretrained), _block_contrast(t.cka_finetuned))),
}


def _seed_mean(per_seed, single) -> float:
    """The mean over fine-tuning seeds (None entries left out), else ``single``.

    >>> _seed_mean([0.5, None, 0.7], 0.5), _seed_mean(None, 0.4)
    (0.6, 0.4)
    """
    values = [v for v in (per_seed or []) if v is not None]
    return float(np.mean(values)) if values else _number(single)


def _top_layers(per_seed) -> list | None:
    """The top layer's value of each fine-tuning seed's per-layer list (None: no seeds).

    >>> _top_layers([[0.9, 0.7], [0.8, None]]), _top_layers(None)
    ([0.7, None], None)
    """
    return None if per_seed is None else [(values or [None])[-1] for values in per_seed]


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
    from .results import read_runs

    runs = read_runs(runs_dir if runs_dir is not None else artifacts_dir() / "runs")
    if max_sentences is not None:
        runs = {k: v for k, v in runs.items() if k[2] == max_sentences}
    names = column_names(list(runs))
    rows = []
    for key, found in runs.items():
        for measure, (chapter, get) in MEASURES.items():
            record = found.records.get(chapter)
            for task, values in (record.tasks.items() if record is not None else ()):
                before, after = (_number(v) for v in get(values))
                if np.isnan(before) and np.isnan(after):
                    continue
                rows.append({"model": names[key], "task": task, "measure": measure,
                             "before": before, "after": after, "change": after - before})
    table = pd.DataFrame(rows, columns=["model", "task", "measure", "before", "after", "change"])
    order = {m: i for i, m in enumerate(MEASURES)}
    return (table.sort_values(["measure", "task", "model"], key=lambda s: s.map(order)
                              if s.name == "measure" else s).reset_index(drop=True))
