"""Extraction speed: all layers of UD English PUD with the default model, against a bare
forward pass over the same batches.

    python benchmarks/extract.py [--model minilm] [--batch-size 32] [--repeats 3]

Writes ``<artifacts>/benchmarks/extract.json``. Target: extraction throughput at least 0.7 of
the bare forward pass (pooling, copying and bookkeeping cost little).
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FTGEO_PROGRESS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ftgeo import extract, load_model  # noqa: E402
from ftgeo._util import artifacts_dir, atomic_write_json  # noqa: E402
from ftgeo.data import data_file, read_conllu  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = load_model(args.model)
    sentences = [s.words for s in read_conllu(data_file("ud-english-pud", "en_pud-ud-test.conllu"))]
    positions = np.array([(s, w) for s, sent in enumerate(sentences) for w in range(len(sent))])
    encoded = extract.encode(model.tokenizer, sentences)
    n_tokens = sum(len(e.input_ids) for e in encoded)

    def bare() -> None:
        for _ in extract.forward_batches(model, encoded, batch_size=args.batch_size,
                                         hidden_states=False):
            pass

    def full() -> None:
        extract.word_vectors(model, sentences, positions, batch_size=args.batch_size)

    timings = {"bare_forward": [], "extraction": []}
    bare()  # warm-up: first calls allocate and pick kernels
    for _ in range(args.repeats):  # interleaved, so that drift in machine load hits both
        for name, fn in (("bare_forward", bare), ("extraction", full)):
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in timings.items()}
    result = {
        "benchmark": "extract",
        "model": model.spec.name,
        "n_layers": model.n_layers,
        "n_features": model.n_features,
        "sentences": len(sentences),
        "words": len(positions),
        "subword_tokens": n_tokens,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "seconds": timings,
        "tokens_per_second": {k: n_tokens / v for k, v in best.items()},
        "ratio_extraction_to_bare": best["bare_forward"] / best["extraction"],
        "target_ratio": 0.7,
        "torch_threads": torch.get_num_threads(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }
    result["meets_target"] = result["ratio_extraction_to_bare"] >= result["target_ratio"]
    out = artifacts_dir() / "benchmarks" / "extract.json"
    atomic_write_json(out, result)
    print(json.dumps({k: result[k] for k in ("tokens_per_second", "ratio_extraction_to_bare",
                                             "meets_target")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
