"""MLP-probe grid: the full search (hidden sizes {32,64,128,256}^2 x 8 values of alpha, 1e-7 .. 1, chosen on
dev) and the retraining of the best setting with 5 seeds, for one task and representation.

    python benchmarks/probes.py [--task pos] [--layer -1]

Writes ``<artifacts>/benchmarks/probes.json``. Target: under 180 s for PUD POS (about 15,000
training items x 384) with the default model on a 2-core machine.
"""

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FTGEO_PROGRESS", "0")

import torch  # noqa: E402

from ftgeo import load_model, load_task, representations  # noqa: E402
from ftgeo._util import artifacts_dir, atomic_write_json  # noqa: E402
from ftgeo.probes import HIDDEN_SIZES, MLP_ALPHA_GRID, probe_grid  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pos")
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--model", default="minilm")
    args = parser.parse_args()
    model = load_model(args.model)
    data = load_task(args.task)
    X = {s: representations(model, d)[args.layer] for s, d in data.items()}
    start = time.perf_counter()
    res = probe_grid(X["train"], data["train"].y, X["dev"], data["dev"].y, X["test"], data["test"].y)
    seconds = time.perf_counter() - start
    result = {
        "benchmark": "probes", "task": args.task, "layer": args.layer, "model": model.spec.name,
        "train_items": int(X["train"].shape[0]), "n_features": int(X["train"].shape[1]),
        "grid": {"hidden_sizes": list(HIDDEN_SIZES), "alpha": list(MLP_ALPHA_GRID), "seeds": 5},
        "seconds": seconds, "target_seconds": 180, "meets_target": seconds < 180,
        "chosen": {"hidden": list(res.hidden), "alpha": res.alpha, "dev_accuracy": res.dev_accuracy},
        "test_accuracy_mean": res.mean, "test_accuracy_sd": res.sd,
        "epochs": res.dev["epochs"].tolist(), "torch_threads": torch.get_num_threads(),
    }
    out = artifacts_dir() / "benchmarks" / "probes.json"
    atomic_write_json(out, result)
    print(json.dumps({k: result[k] for k in ("seconds", "meets_target", "chosen",
                                             "test_accuracy_mean", "test_accuracy_sd")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
