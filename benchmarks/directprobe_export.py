"""Export real representations with our DirectProbe clusters, for a comparison with the
reference code (utahnlp/DirectProbe) run elsewhere.

    python benchmarks/directprobe_export.py [--task pos] [--layer -1] [--n 1000] [--seed 0]

Writes into ``<artifacts>/directprobe_export/<task>-layer<L>-n<N>/``:
``vectors.txt`` (one point per line, space-separated floats, full precision), ``labels.txt``
(one label per line), ``clusters.txt`` (our cluster id per point) and ``summary.json``
(cluster count and each cluster's label and size). Points are a seeded sample of the task's
training split, in the order written.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FTGEO_PROGRESS", "0")

import numpy as np  # noqa: E402

from ftgeo import DirectProbe, load_model, load_task, representations  # noqa: E402
from ftgeo._util import artifacts_dir, atomic_write_json, atomic_write_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pos")
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="minilm")
    args = parser.parse_args()
    data = load_task(args.task)["train"]
    X = representations(load_model(args.model), data)[args.layer]
    idx = np.sort(np.random.default_rng(args.seed).choice(len(data.y), min(args.n, len(data.y)),
                                                          replace=False))
    X, y = X[idx].astype(np.float64), data.y_names[idx]
    dp = DirectProbe().fit(X, y)
    out = artifacts_dir() / "directprobe_export" / f"{args.task}-layer{args.layer}-n{len(X)}"
    atomic_write_text(out / "vectors.txt", "\n".join(" ".join(repr(float(v)) for v in row)
                                                     for row in X) + "\n")
    atomic_write_text(out / "labels.txt", "\n".join(map(str, y)) + "\n")
    atomic_write_text(out / "clusters.txt", "\n".join(map(str, dp.labels_)) + "\n")
    sizes = np.bincount(dp.labels_)
    atomic_write_json(out / "summary.json", {
        "task": args.task, "layer": args.layer, "model": args.model, "n_points": len(X),
        "n_labels": len(dp.classes_), "n_clusters": dp.n_clusters_,
        "clusters": [{"label": str(lab), "size": int(sz)}
                     for lab, sz in zip(dp.cluster_labels_, sizes, strict=True)]})
    print(f"{dp.n_clusters_} clusters for {len(dp.classes_)} labels; wrote {out}")


if __name__ == "__main__":
    main()
