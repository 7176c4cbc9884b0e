"""Regenerate the golden smoke runs: small papermill runs of each chapter, committed with
their outputs, which ``pytest`` re-executes under nbval and compares cell by cell.

    python tests/golden/make_golden.py            # all chapters
    python tests/golden/make_golden.py 01_tasks   # the chapters whose name starts with this

Regenerate only when a change of results is intended, and read the diff of the outputs.
"""

import os
import sys
from pathlib import Path

import nbformat
import papermill as pm

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parents[1] / "notebooks"

# Small, fast parameters for each chapter: every task, a few sentences per split, two
# fine-tuning seeds (the default is three).
TWO_SEEDS = {"n_seeds": 2}
SMOKE = {
    "01_tasks_and_representations": {
        "tasks": ["pos", "dep", "ps-role", "ps-fxn", "trec-50"],
        "max_sentences": 20,
        "pca_points": 60,
        "output_dir": "_out/01",
    },
    "02_finetuning": {
        "tasks": ["pos", "dep", "ps-role", "ps-fxn", "trec-50"],
        "max_sentences": 20,
        "pca_points": 60,
        "finetune": TWO_SEEDS,
        "output_dir": "_out/02",
    },
    "03_probing_performance": {"max_sentences": 20, "probe_hidden_sizes": [16],
                               "probe_alpha": [1e-3], "probe_seeds": 2, "finetune": TWO_SEEDS,
                               "output_dir": "_out/03"},
    "04_linearity": {"max_sentences": 20, "finetune": TWO_SEEDS, "output_dir": "_out/04"},
    "05_spatial_structure": {"max_sentences": 20, "finetune": TWO_SEEDS, "output_dir": "_out/05"},
    "06_cross_task": {"max_sentences": 20, "probe_hidden_sizes": [16], "probe_alpha": [1e-3],
                      "probe_seeds": 2, "grid_search": "first seed", "finetune": TWO_SEEDS,
                      "output_dir": "_out/06"},
    "07_layers": {"max_sentences": 20, "finetune": TWO_SEEDS, "output_dir": "_out/07"},
    # glue_epochs 10: 20 sentences are one batch, and 10 snapshots need at least 9 steps
    "08_isotropy": {"max_sentences": 20, "finetune": {"glue_epochs": 10, **TWO_SEEDS}, "max_items": 300,
                    "n_clusters": 3, "n_top": 3, "removed_grid": [1, 2], "output_dir": "_out/08"},
    "09_cka": {"max_sentences": 20, "finetune": {"glue_epochs": 10, **TWO_SEEDS}, "output_dir": "_out/09"},
    "10_models": {"runs_dir": "_out", "max_sentences": 20, "output_dir": "_out/10"},
    "scorecard": {"runs_dir": "_out", "max_sentences": 20, "output_dir": "_out/scorecard"},
}


INTERACTIVE = ("application/vnd.plotly.v1+json", "application/vnd.jupyter.widget-view+json")


def _kept(cell) -> bool:
    """A cell whose output the book built from the goldens needs (tests/test_book_html.py): a
    plotly figure, a widget, or a glue value (scrapbook metadata) that the text cites. The
    output stays in the golden, uncompared (nbval-ignore-output: ids are random)."""
    return any(mime in out.get("data", {}) or "scrapbook" in out.get("metadata", {})
               for out in cell.get("outputs", []) for mime in INTERACTIVE)


def prepare(names=None) -> None:
    """Train the fine-tuned runs the smoke chapters read (chapters only read them), as the
    pipeline's fine-tuning stage does before it runs a config; finished runs are cache hits."""
    from ftgeo.pipeline import prepare_finetuning

    prepare_finetuning([(NOTEBOOKS / f"{name}.ipynb", params) for name, params in SMOKE.items()
                        if names is None or name in names])


def main(prefixes: list[str]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["FTGEO_PROGRESS"] = "0"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    prepare([n for n in SMOKE if not prefixes or any(n.startswith(p) for p in prefixes)])
    for name, params in SMOKE.items():
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        target = HERE / f"{name}.ipynb"
        pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(target), parameters=params,
                            kernel_name="python3", cwd=str(HERE), progress_bar=False)
        nb = nbformat.read(target, as_version=4)
        nb.metadata.pop("papermill", None)  # timings and paths: not part of the result
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
            if "nbval-ignore-output" in cell.metadata.get("tags", []) and not _kept(cell):
                cell.outputs = []  # never compared: figures, tables of timings
        nbformat.write(nb, target)
        print(f"wrote {target.relative_to(HERE.parents[1])}")


if __name__ == "__main__":
    main(sys.argv[1:])
