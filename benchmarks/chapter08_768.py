"""Chapter 8 on a BERT-base-sized encoder, as a new user would first run it: a random
12-layer, 768-d BERT built from a config (MiniLM's tokenizer), 30 sentences per split.

    python benchmarks/chapter08_768.py [--sentences 30] [--layers 12] [--hidden 768]

Fine-tunes the seven tasks of chapter 8 (1 epoch each, untimed: a preparation step), then
runs chapter 8 with papermill exactly as ``python -m ftgeo run`` would and times it. Before
the isotropy code computed only the top directions it needs, this took more than 10 minutes,
almost all in full d x d eigendecompositions (1,536 x 1,536 for DEP pairs) inside
``ClusterDirectionRemover.fit``. Everything runs in a temporary artifacts folder.

Writes ``<artifacts>/benchmarks/chapter08_768.json``. Target: under 5 minutes.
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

from ftgeo._util import artifacts_dir, atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["pos", "dep", "ps-role", "ps-fxn", "trec-50"]


def build_model(folder: Path, layers: int, hidden: int) -> None:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ftgeo.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm").source)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, intermediate_size=4 * hidden)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=30)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    args = parser.parse_args()
    real = artifacts_dir()
    work = Path(tempfile.mkdtemp(prefix="bench-ch08-", dir=real))
    os.environ["FTGEO_ARTIFACTS"] = str(work)
    try:
        import papermill

        from ftgeo.finetune import chapter_runs

        model_dir = work / "model"
        build_model(model_dir, args.layers, args.hidden)
        finetune = {"epochs": 1, "glue_epochs": 1, "n_snapshots": 2}
        t = time.perf_counter()
        chapter_runs(str(model_dir), TASKS + ["sst-2", "mrpc"], finetune=finetune,
                     max_sentences=args.sentences, train=True)
        prepare = time.perf_counter() - t
        t = time.perf_counter()
        papermill.execute_notebook(
            str(ROOT / "notebooks" / "08_isotropy.ipynb"), str(work / "08.ipynb"),
            parameters={"model": str(model_dir), "tasks": TASKS, "finetune": finetune,
                        "max_sentences": args.sentences, "output_dir": str(work / "runs")},
            cwd=str(ROOT), progress_bar=False)
        seconds = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "chapter08_768", "layers": args.layers, "hidden": args.hidden,
              "sentences_per_split": args.sentences, "prepare_s": round(prepare, 1),
              "seconds": round(seconds, 1), "target_seconds": 300, "meets_target": seconds < 300,
              "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    out = real / "benchmarks" / "chapter08_768.json"
    atomic_write_json(out, result)
    print(result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
