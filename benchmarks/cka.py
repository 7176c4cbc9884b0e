"""CKA: time of a full layer-by-layer matrix, 7 x 7 on 20,000 tokens x 384 features and
13 x 13 at 768 features (the layer counts of a 6- and a 12-layer model, embeddings included).

    python benchmarks/cka.py [--rows 20000] [--repeats 2]

The layers are synthetic float32 matrices (what ``ftgeo.extract`` stores), each a noisy
mix of the one below, so that the matrix has structure; the time does not depend on the
values. ``cka.cka_matrix`` computes each of the L(L+1)/2 pairs once, in feature space. Three
precisions are timed: float32 products summed in float64 (the default), float64, and
bfloat16 products accumulated in float32 (the fast option), each with its largest
difference from float64. The best of ``--repeats`` runs is reported. Writes
``<artifacts>/benchmarks/cka.json``. Target: under 10 s each.
"""

import argparse
import os
import platform
import time

import numpy as np

os.environ.setdefault("FTGEO_PROGRESS", "0")


def layers(n_layers: int, n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n_layers, n, d), dtype=np.float32)
    out[0] = rng.normal(size=(n, d))
    mix = np.linalg.qr(rng.normal(size=(d, d)))[0].astype(np.float32)
    for k in range(1, n_layers):
        out[k] = out[k - 1] @ mix + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    return out


def main() -> None:
    import torch  # only for the thread count in the report

    from ftgeo import cka
    from ftgeo._util import artifacts_dir, atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for n_layers, d in ((7, 384), (13, 768)):
        X = layers(n_layers, args.rows, d)
        case = {"n_layers": n_layers, "n_samples": args.rows, "n_features": d, "target_s": 10.0}
        matrices = {}
        for name in ("float32", "float64", "bfloat16"):
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                matrices[name] = cka.cka_matrix(X, dtype=name)
                times.append(time.perf_counter() - start)
            case[f"seconds_{name}"] = round(min(times), 3)
            case[f"all_runs_s_{name}"] = [round(t, 3) for t in times]
            case[f"matrix_{name}"] = matrices[name].round(6).tolist()
        case["seconds"] = case["seconds_float32"]  # the default precision
        for name in ("float32", "bfloat16"):
            case[f"max_abs_difference_{name}_float64"] = float(
                np.abs(matrices[name] - matrices["float64"]).max())
        case["fastest"] = min(("float32", "bfloat16"), key=lambda k: case[f"seconds_{k}"])
        rows.append(case)
        print({k: v for k, v in case.items() if not k.startswith("matrix")}, flush=True)
    result = {"benchmark": "cka", "cases": rows,
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "python": platform.python_version(), "numpy": np.__version__}}
    atomic_write_json(artifacts_dir() / "benchmarks" / "cka.json", result)
    print("CKA matrices: " + ", ".join(
        f"{r['n_layers']}x{r['n_layers']} at {r['n_features']}-d {r['seconds_float32']:.2f} s "
        f"(bfloat16 {r['seconds_bfloat16']:.2f} s, max |diff| "
        f"{r['max_abs_difference_bfloat16_float64']:.1e})" for r in rows) + " (target < 10 s each)")


if __name__ == "__main__":
    main()
