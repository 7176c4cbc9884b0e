"""DirectProbe: time and peak memory for 1,000, 3,000 and 10,000 points at 384 and 768
dimensions with 17 labels, from real representations (PUD POS, default model) and from
synthetic Gaussian blobs; how time grows with the number of points.

    python benchmarks/directprobe.py [--sizes 1000,3000,10000] [--hard 1000,3000]
                                     [--pca8 1000,5000] [--full 6,3,0] [--full-finetuned]
                                     [--timeout 1800]

Real 384-d points are the last layer's word vectors; real 768-d points concatenate the
word's vectors at layers 3 and 6. ``--hard`` adds the embedding layer (layer 0), whose
identical vectors with different labels force phase 2 to start from single points: the
hardest case. ``--pca8`` adds "pud-last PCA-8": the last layer's points projected on
their first 8 principal components (fitted on those points), where hulls overlap
everywhere and phase 2's exact overlap tests are nearly all the time. Points are a
seeded sample (seed 0) of the training words. ``--full`` adds the whole POS training set
(every training word, no sample) at each layer it lists, as the chapters' full-set
DirectProbe reads it; a case that runs past ``--timeout`` seconds is recorded as such
(``"timed_out": true``) and the benchmark goes on. ``--full-finetuned`` adds the whole POS
training set at the last layer of the fine-tuned model that the chapters read (the first
seed's run of configs/default.yaml, from the artifacts cache; fine-tuned first, a few
minutes, if it is not there). Each case runs in its own process, so that
its peak memory is its own. Writes ``<artifacts>/benchmarks/directprobe.json`` (per case:
seconds, peak memory, clusters, exact overlap tests ``n_lp_tests`` and phase-2 merge
tries). Target: 10,000 x 384 x 17 labels in under 120 s.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FTGEO_PROGRESS", "0")


PCA8 = "pud-last PCA-8"
FINETUNED = "pud-finetuned-last"


def pca(X: np.ndarray, n_components: int) -> np.ndarray:
    """X centered and projected on its first principal directions (by SVD)."""
    Xc = X - X.mean(axis=0)
    return Xc @ np.linalg.svd(Xc, full_matrices=False)[2][:n_components].T


def points(source: str, n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    if source == PCA8:
        X, y = points("pud-last", n, 384, seed)
        return pca(X, dim), y
    if source == FINETUNED:
        from pathlib import Path

        import yaml

        from ftgeo.finetune import chapter_seed_runs

        config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
        plan = yaml.safe_load(config.read_text())["parameters"]["finetune"]
        _, data, runs = chapter_seed_runs("minilm", ["pos"], finetune=plan, train=True,
                                          first_only=True)
        run, train = runs["pos"][0], data["pos"]["train"]
        return run.representations(train, run.final_step)[-1].astype(np.float64), train.y
    rng = np.random.default_rng(seed)
    if source == "blobs":
        y = rng.integers(0, 17, n)
        centers = rng.normal(0, 1.0, (17, dim))
        return centers[y] + rng.normal(0, 1.0 / np.sqrt(dim) * 4, (n, dim)), y
    from ftgeo import load_model, load_task, representations

    model, data = load_model("minilm"), load_task("pos")["train"]
    X = representations(model, data)
    layers = {"pud-last": [-1]}.get(source, [3, -1])
    if source.startswith("pud-layer"):
        layers = [int(source.removeprefix("pud-layer"))]
    Z = np.concatenate([X[layer] for layer in layers], axis=1) if dim == 768 else X[layers[0]]
    if n == 0:  # the full training set, in its order
        return Z.astype(np.float64), data.y
    idx = rng.choice(len(data.y), size=min(n, len(data.y)), replace=False)
    return Z[idx].astype(np.float64), data.y[idx]


def one_case(source: str, n: int, dim: int) -> dict:
    from ftgeo.directprobe import DirectProbe

    X, y = points(source, n, dim)
    start = time.perf_counter()
    dp = DirectProbe().fit(X, y)
    seconds = time.perf_counter() - start
    return {"source": source, "n_points": len(X), "n_features": X.shape[1],
            "n_labels": int(len(np.unique(y))), "seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "n_clusters": int(dp.n_clusters_), "first_overlap_step": dp.first_overlap_step_,
            "n_lp_tests": int(dp.n_lp_tests_), "phase2_tries": int(dp.phase2_tries_)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--hard", default="1000", help="sizes of the layer-0 case ('' for none)")
    parser.add_argument("--pca8", default="1000,5000", help=f"sizes of the {PCA8!r} case ('' for none)")
    parser.add_argument("--full", default="", help="layers at which to fit the whole POS training "
                        "set, e.g. 6,3,0 ('' for none)")
    parser.add_argument("--full-finetuned", action="store_true", help="also fit the whole POS "
                        "training set at the last layer of the chapters' fine-tuned model")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a case may run")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        source, n, dim = args.case.split(",")
        print(json.dumps(one_case(source, int(n), int(dim))))
        return
    from ftgeo._util import artifacts_dir, atomic_write_json

    cases = [(s, n, d) for s in ("pud", "blobs") for d in (384, 768)
             for n in map(int, filter(None, args.sizes.split(",")))]
    cases += [("pud-layer0", int(n), 384) for n in args.hard.split(",") if n]
    cases += [(PCA8, int(n), 8) for n in args.pca8.split(",") if n]
    cases += [(f"pud-layer{int(k)}", 0, 384) for k in args.full.split(",") if k]
    cases += [(FINETUNED, 0, 384)] * args.full_finetuned
    results = []
    for source, n, dim in cases:
        src = "pud-last" if (source == "pud" and dim == 384) else source
        try:
            proc = subprocess.run([sys.executable, __file__, "--case", f"{src},{n},{dim}"],
                                  capture_output=True, text=True, check=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            results.append({"source": src, "n_points": n or None, "n_features": dim,
                            "timed_out": True, "seconds": None, "timeout_seconds": args.timeout})
            print(f"{src:>14} n={n or 'all':>6} d={dim:>4}: over {args.timeout:.0f} s, stopped",
                  flush=True)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(row)
        print(f"{row['source']:>14} n={row['n_points']:>6} d={row['n_features']:>4}: "
              f"{row['seconds']:7.1f} s, {row['peak_rss_mb']:6.0f} MB, {row['n_clusters']} clusters",
              flush=True)
    growth = {}
    for source in {r["source"] for r in results}:
        for dim in sorted({r["n_features"] for r in results if r["source"] == source}):
            rows = [r for r in results if r["source"] == source and r["n_features"] == dim
                    and r["seconds"]]
            if len(rows) >= 2:
                slope = np.polyfit(np.log([r["n_points"] for r in rows]),
                                   np.log([r["seconds"] for r in rows]), 1)[0]
                growth[f"{source}/{dim}"] = round(float(slope), 2)
    target = next((r for r in results if r["source"] == "pud-last" and r["n_points"] == 10000
                   and r["n_features"] == 384), None)
    out = artifacts_dir() / "benchmarks" / "directprobe.json"
    atomic_write_json(out, {"benchmark": "directprobe", "cases": results,
                            "time_exponent_vs_points": growth,
                            "target": "10,000 x 384 x 17 labels (PUD POS, last layer) under 120 s",
                            "target_seconds": None if target is None else target["seconds"],
                            "meets_target": None if target is None else target["seconds"] < 120})
    print(f"time grows as n^k, k = {growth}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
