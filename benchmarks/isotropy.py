"""Isotropy measures: time of all of them on 20,000 x 384 and 20,000 x 768 matrices.

    python benchmarks/isotropy.py [--rows 20000] [--repeats 3]

"All measures" is what the isotropy chapter computes for one representation matrix:
I(W), the exact average cosine and IsoScore (``isotropy.isotropy``), the variance shares
of the principal directions, and the correlation and word share of the top 10 directions.
The matrices are synthetic, with a common offset and a few dominant directions like
contextual representations; the time does not depend on the values. k-means and the
probes are not measures and are left out. The best of ``--repeats`` runs is reported, with
every run listed. Writes ``<artifacts>/benchmarks/isotropy.json``. Target: under 5 s each.
"""

import argparse
import os
import platform
import time

import numpy as np

os.environ.setdefault("FTGEO_PROGRESS", "0")


def matrix(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, 5)))
    dominant = (rng.normal(size=(n, 5)) * [30, 20, 10, 5, 3]) @ q.T
    X = rng.normal(size=(n, d)) + dominant + 4 * rng.normal(size=d)
    return X.astype(np.float32)  # as stored by ftgeo.extract


def all_measures(X: np.ndarray, words: np.ndarray, freq: np.ndarray) -> dict:
    from ftgeo import isotropy

    m = isotropy.isotropy(X)
    shares = isotropy.explained_variance(X)
    return {**m.as_dict(), "elongated": isotropy.n_dominant_directions(shares),
            "directions_for_90": isotropy.n_directions_for(shares, 0.9),
            "max_r": float(np.abs(isotropy.direction_correlations(X, freq, 10)).max()),
            "word_share": float(np.mean(isotropy.direction_group_share(X, words, 10)))}


def main() -> None:
    import torch  # only for the thread count in the report

    from ftgeo._util import artifacts_dir, atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for d in (384, 768):
        X = matrix(args.rows, d)
        rng = np.random.default_rng(1)
        words, freq = rng.integers(0, 3000, args.rows), rng.normal(size=args.rows)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            values = all_measures(X, words, freq)
            times.append(time.perf_counter() - start)
        rows.append({"n_samples": args.rows, "n_features": d, "seconds": round(min(times), 3),
                     "all_runs_s": [round(t, 3) for t in times], "target_s": 5.0,
                     "values": {k: round(float(v), 6) for k, v in values.items()}})
        print(rows[-1], flush=True)
    result = {"benchmark": "isotropy", "cases": rows,
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "python": platform.python_version(), "numpy": np.__version__}}
    atomic_write_json(artifacts_dir() / "benchmarks" / "isotropy.json", result)
    print("all measures: " + ", ".join(f"{r['n_features']}-d {r['seconds']:.2f} s" for r in rows)
          + " (target < 5 s each)")


if __name__ == "__main__":
    main()
