"""Wall time of the "closer look" chapters (03 to 07 and the scorecard) for the default model,
from a warm fine-tuning cache.

    python benchmarks/chapters.py [--config configs/default.yaml] [--keep] [--chapters 08_isotropy,...]

The runs execute in a temporary artifacts folder whose ``finetune/`` and stored
representations link to the real ones: the fine-tuning runs and their snapshots are
reused, as a reader who has built chapter 2 would have them, while every analysis
(MLP probes, DirectProbe fits, which are cached too) starts cold. The notebooks run with
papermill exactly as ``python -m ftgeo run`` runs them. With ``--keep``, the DirectProbe
fits, separability tests and MLP-probe grids are then moved into the real store, so that
the book does not compute them again.

``--chapters`` times other chapters of the config instead (e.g. ``08_isotropy``, whose token
vectors are then extracted cold too); the target is judged on the default set only.

Writes ``<artifacts>/benchmarks/chapters.json``. Target: under 15 minutes in total.
"""

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FTGEO_PROGRESS", "0")

import torch  # noqa: E402

from ftgeo import pipeline, results  # noqa: E402
from ftgeo._util import artifacts_dir, atomic_write_json  # noqa: E402

#: The cache kinds that ``--keep`` moves into the real store.
KEPT = ("directprobe", "separable", "probe-grid")

CHAPTERS = ("03_probing_performance", "04_linearity", "05_spatial_structure", "06_cross_task",
            "07_layers", "scorecard")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--keep", action="store_true",
                        help="move the DirectProbe fits, separability tests and MLP-probe "
                             "grids into the real store afterwards")
    parser.add_argument("--chapters", default=",".join(CHAPTERS),
                        help="comma-separated notebook names of the config to time, in order")
    args = parser.parse_args()
    chapters = [c for c in args.chapters.split(",") if c]
    config = pipeline.load_config(args.config)
    names = [r.name for r in pipeline.plan(config, book=False)]
    unknown = [c for c in chapters if c not in names]
    if unknown or not chapters:
        raise SystemExit(f"--chapters: {unknown or 'none given'} are not notebooks of {args.config}; "
                         f"choose among {names}")

    real = artifacts_dir()
    finetuned = sorted((real / "finetune").glob("*/result.json"))
    if not finetuned:
        raise SystemExit("no fine-tuning runs in the artifacts folder: run chapter 2 first "
                         "(python -m ftgeo run) or benchmarks/finetune.py --keep")
    work = Path(tempfile.mkdtemp(prefix="bench-chapters-", dir=real))
    (work / "cache").mkdir()
    os.symlink(real / "finetune", work / "finetune")
    (real / "cache" / "representations").mkdir(parents=True, exist_ok=True)
    os.symlink(real / "cache" / "representations", work / "cache" / "representations")
    os.environ["FTGEO_ARTIFACTS"] = str(work)
    planned = {r.name: r for r in pipeline.plan(config, book=False, runs_dir=work / "runs")}
    runs = [planned[c] for c in chapters]
    default_set = tuple(chapters) == CHAPTERS  # the set the target is judged on
    rows, start, directprobe = [], time.perf_counter(), None
    try:
        for run in runs:
            t = time.perf_counter()
            pipeline.execute(run)
            rows.append({"chapter": run.name, "wall_s": round(time.perf_counter() - t, 1)})
            print(rows[-1], flush=True)
            if run.name == "03_probing_performance":
                directprobe = _directprobe_seconds(run.folder)
        total = time.perf_counter() - start
        moved = dict.fromkeys(KEPT, 0)
        for kind in KEPT if args.keep else ():
            if not (work / "cache" / kind).is_dir():
                continue
            target = real / "cache" / kind
            target.mkdir(parents=True, exist_ok=True)
            for entry in (work / "cache" / kind).iterdir():
                if not entry.name.startswith(".") and not (target / entry.name).exists():
                    shutil.move(str(entry), str(target / entry.name))
                    moved[kind] += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "chapters", "config": args.config, "model": config.get("model"),
        "chapters": rows, "total_wall_s": round(total, 1),
        "target_total_wall_s": 900 if default_set else None,
        "directprobe_seconds_per_task": directprobe,
        "fine_tuning_runs_reused": len(finetuned), "cache_entries_kept": moved,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__},
    }
    atomic_write_json(real / "benchmarks" / "chapters.json", result)
    target = " (target < 900 s)" if default_set else ""
    print(f"{', '.join(chapters)}: {total:.0f} s{target}")


def _directprobe_seconds(folder: Path) -> dict:
    """Chapter 3's DirectProbe fit times, from its record: {task: {"pretrained/train": s, ...}}
    (the first fine-tuning seed's fits on the full splits; chapters 4 and 6 reuse them from
    the cache)."""
    record = results.read_record(folder / "metrics.json")
    return {task: t.directprobe_seconds for task, t in record.tasks.items()}


if __name__ == "__main__":
    main()
