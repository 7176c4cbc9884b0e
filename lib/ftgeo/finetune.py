"""Fine-tuning an encoder with a task head, with snapshots along the way (work in progress).

The head matches the probed item, pooled exactly as :mod:`ftgeo.extract` pools it:

* a **word** (POS, PS-role, PS-fxn): the mean of its subword vectors, then a linear layer;
* a **pair** (DEP): the head's and the dependent's word vectors concatenated;
* a **sentence** (TREC-50, SST-2, MRPC): the ``[CLS]`` vector.

Training follows Zhou & Srikumar (2022): AdamW, a linear schedule with 10% warm-up, batches
of 32 sentences (length-bucketed, dynamic padding); learning rate, epochs and seed are
settings. Everything random (head initialization, dropout, batch order) comes from the seed,
so the same seed on the same machine gives bit-identical weights.

:func:`finetune` stores representations of the probing sets at evenly spaced steps (the
trajectory), checkpoints at each of them, resumes an interrupted run and treats a finished
one as a cache hit. Still to come (issue 4): the command line, the chapter and the benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ._util import check, progress_bar
from .data import TaskData
from .extract import Encoded, _collate, encode, pool_words, token_row_matrix
from .models import LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneSettings:
    """The settings of one fine-tuning run (all part of its cache key)."""

    epochs: int = 3
    learning_rate: float = 5e-5
    batch_size: int = 32
    warmup: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    n_snapshots: int = 10

    def validate(self, n_steps: int | None = None) -> None:
        """Refuse a bad setting with a message naming it."""
        check(int(self.epochs) == self.epochs and self.epochs >= 1,
              f"epochs must be a whole number >= 1, got {self.epochs}")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(0 <= self.warmup < 1, f"warmup must be in [0, 1), got {self.warmup}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.n_snapshots >= 2, f"n_snapshots must be >= 2 (step 0 and the last), "
              f"got {self.n_snapshots}")
        if n_steps is not None:
            check(self.n_snapshots <= n_steps + 1,
                  f"n_snapshots={self.n_snapshots} is larger than the {n_steps} training steps "
                  f"(+ step 0); use at most {n_steps + 1}")

    def as_dict(self) -> dict:
        return asdict(self)


class TaskModel(torch.nn.Module):
    """An encoder with a linear head on the pooled item representation (last layer)."""

    def __init__(self, encoder: torch.nn.Module, item_kind: str, n_labels: int):
        super().__init__()
        check(item_kind in ("word", "pair", "sentence"),
              f"item_kind must be word, pair or sentence, got {item_kind!r}")
        self.encoder = encoder
        self.item_kind = item_kind
        width = encoder.config.hidden_size * (2 if item_kind == "pair" else 1)
        self.dropout = torch.nn.Dropout(encoder.config.hidden_dropout_prob)
        self.head = torch.nn.Linear(width, n_labels)

    def forward(self, inputs: dict[str, torch.Tensor], rows: torch.Tensor | None = None,
                n_words: int = 0, pairs: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the batch's items.

        rows : (batch, n_tokens) word row of each token (word and pair tasks)
        pairs : (n_items, 2) rows of (head, dependent) words (pair tasks)
        """
        H = self.encoder(**inputs, return_dict=True).last_hidden_state
        if self.item_kind == "sentence":
            Z = H[:, 0]
        else:
            W = pool_words(H, rows, n_words)
            Z = W if self.item_kind == "word" else torch.cat([W[pairs[:, 0]], W[pairs[:, 1]]], -1)
        return self.head(self.dropout(Z))


@dataclass(frozen=True)
class _Batch:
    inputs: dict
    rows: torch.Tensor | None
    n_words: int
    pairs: torch.Tensor | None
    y: torch.Tensor


def _sentence_items(data: TaskData) -> dict[int, list[int]]:
    by_sentence: dict[int, list[int]] = {}
    for k, s in enumerate(data.items[:, 0].tolist()):
        by_sentence.setdefault(s, []).append(k)
    return by_sentence


def make_batches(data: TaskData, encoded: Sequence[Encoded], pad_id: int, batch_size: int,
                 rng: np.random.Generator | None) -> list[_Batch]:
    """Batches of ``batch_size`` sentences that hold items, bucketed by length.

    With ``rng``, sentences are shuffled, sorted by length within buckets of 50 batches,
    and the batches shuffled (so padding stays small and the order still varies by epoch);
    without, the order is fixed (for evaluation).
    """
    by_sentence = _sentence_items(data)
    sentences = np.array(sorted(by_sentence))
    if rng is not None:
        sentences = sentences[rng.permutation(len(sentences))]
        bucket = batch_size * 50
        parts = [sorted(sentences[i:i + bucket], key=lambda s: len(encoded[s].input_ids))
                 for i in range(0, len(sentences), bucket)]
        sentences = np.array([s for p in parts for s in p])
    groups = [sentences[i:i + batch_size] for i in range(0, len(sentences), batch_size)]
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    batches = []
    for group in groups:
        inputs = _collate([encoded[s] for s in group], pad_id)
        items = [k for s in group for k in by_sentence[s]]
        y = torch.from_numpy(data.y[items])
        if data.item_kind == "sentence":
            batches.append(_Batch(inputs, None, 0, None, y))
            continue
        # one row per distinct word the batch's items use
        cols = [1] if data.item_kind == "word" else [1, 2]
        words = sorted({(int(data.items[k, 0]), int(data.items[k, c])) for k in items for c in cols})
        row_of = {w: r for r, w in enumerate(words)}
        token_rows = [np.asarray([row_of.get((int(s), w), -1) if w >= 0 else -1
                                  for w in encoded[s].word_ids]) for s in group]
        rows = token_row_matrix(token_rows, inputs["input_ids"].shape[1])
        if data.item_kind == "word":
            order = [row_of[(int(data.items[k, 0]), int(data.items[k, 1]))] for k in items]
            batches.append(_Batch(inputs, rows, len(words), torch.tensor(order)[:, None], y))
        else:
            pairs = torch.tensor([[row_of[(int(data.items[k, 0]), int(data.items[k, 1]))],
                                   row_of[(int(data.items[k, 0]), int(data.items[k, 2]))]]
                                  for k in items])
            batches.append(_Batch(inputs, rows, len(words), pairs, y))
    return batches


def _logits(model: TaskModel, batch: _Batch) -> torch.Tensor:
    if model.item_kind == "word":
        return model(batch.inputs, batch.rows, batch.n_words)[batch.pairs[:, 0]]
    return model(batch.inputs, batch.rows, batch.n_words, batch.pairs)


def accuracy(model: TaskModel, batches: Sequence[_Batch]) -> float:
    """Accuracy of the task model over evaluation batches (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    right = total = 0
    with torch.inference_mode():
        for b in batches:
            right += int((_logits(model, b).argmax(-1) == b.y).sum())
            total += len(b.y)
    model.train(was_training)
    return right / max(total, 1)


# --------------------------------------------------------------------------------------
# Runs: snapshots along the trajectory, checkpoints, resume, cache
# --------------------------------------------------------------------------------------

FINETUNE_VERSION = 1

#: Called as ``hook(step)`` after every training step; tests use it to interrupt a run.
_AFTER_STEP = {"hook": None}


def snapshot_steps(n_steps: int, n_snapshots: int) -> np.ndarray:
    """Evenly spaced steps from 0 to ``n_steps`` inclusive.

    >>> snapshot_steps(100, 5).tolist()
    [0, 25, 50, 75, 100]
    """
    return np.unique(np.round(np.linspace(0, n_steps, n_snapshots)).astype(int))


def state_model(base: LoadedModel, run_key: str, step: int) -> LoadedModel:
    """The tokenizer and (current) encoder under the fingerprint of ``finetuned(run, step)``,
    so that :func:`ftgeo.extract.representations` caches each state's vectors apart."""
    from .models import ModelSpec

    spec = ModelSpec(base.spec.name, base.spec.source,
                     f"{base.spec.fingerprint}/ft-{run_key[:20]}/step-{step}", base.spec.local)
    return LoadedModel(spec, base.tokenizer, base.encoder)


@dataclass(frozen=True)
class FinetuneRun:
    """A finished run: where it lives and its curve (loss per step, dev accuracy per snapshot)."""

    key: str
    folder: object
    steps: np.ndarray
    dev_accuracy: np.ndarray
    losses: np.ndarray
    n_steps: int


def finetune(model: LoadedModel, splits: dict[str, TaskData],
                   settings: FinetuneSettings = FinetuneSettings(), *, store=None,
                   probe_splits: Sequence[str] = ("train", "test"), root=None) -> FinetuneRun:
    """Fine-tune on ``splits["train"]`` with snapshots, checkpoints and a cache.

    At each of ``settings.n_snapshots`` evenly spaced steps (0 and the last included) the
    representations of ``probe_splits`` at every layer go into the store under the state
    ``finetuned(task, seed, step)``, and the dev accuracy is recorded. A checkpoint is
    written at every snapshot; an interrupted run resumes from its last one and ends with
    the same weights as an uninterrupted run. A finished run is a cache hit: nothing is
    trained. The final encoder (safetensors, ``save_pretrained``) and head are kept.
    """
    import json
    import os
    import shutil

    from transformers import get_linear_schedule_with_warmup

    from ._util import artifacts_dir, atomic_write_json, canonical_json, sha256_text
    from .extract import representations
    from .store import Store

    train = splits["train"]
    settings.validate()
    store = Store() if store is None else store
    parts = {"version": FINETUNE_VERSION, "model": model.spec.fingerprint, "task": train.task,
             "train": train.checksum, "settings": settings.as_dict()}
    key = sha256_text(canonical_json(parts))[:32]
    folder = (artifacts_dir() if root is None else root) / "finetune" / f"{train.task}-{key[:12]}"
    result_file = folder / "result.json"
    if result_file.exists():
        res = json.loads(result_file.read_text())
        log.info("fine-tuning %s: cached run %s, nothing to train", train.task, folder)
        return FinetuneRun(key, folder, np.asarray(res["steps"]), np.asarray(res["dev_accuracy"]),
                           np.asarray(res["losses"]), res["n_steps"])

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    encoded = encode(model.tokenizer, train.sentences, train.second,
                     max_length=model.encoder.config.max_position_embeddings)
    pad_id = model.tokenizer.pad_token_id or 0
    # make_batches groups the sentences that hold items, batch_size at a time
    n_batches = -(-len(_sentence_items(train)) // settings.batch_size)
    n_steps = n_batches * settings.epochs
    settings.validate(n_steps)
    steps = snapshot_steps(n_steps, settings.n_snapshots)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "parts.json", parts)
    dev = splits.get("dev")
    dev_batches = None
    if dev is not None and dev.n_items:
        dev_batches = make_batches(dev, encode(model.tokenizer, dev.sentences, dev.second),
                                   pad_id, settings.batch_size, None)
    task_model = TaskModel(model.encoder, train.item_kind, len(train.labels))
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    opt = torch.optim.AdamW([
        {"params": [p for n, p in task_model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": settings.weight_decay},
        {"params": [p for n, p in task_model.named_parameters() if n.endswith(no_decay)],
         "weight_decay": 0.0}], lr=settings.learning_rate)
    schedule = get_linear_schedule_with_warmup(opt, int(round(settings.warmup * n_steps)), n_steps)
    step, epoch, in_epoch, losses, dev_acc = 0, 0, 0, [], []
    epoch_rng_state = rng.bit_generator.state
    ckpt = folder / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        task_model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        step, epoch, in_epoch = state["step"], state["epoch"], state["in_epoch"]
        losses, dev_acc = state["losses"], state["dev_accuracy"]
        epoch_rng_state = state["epoch_rng"]
        log.info("fine-tuning %s: resuming at step %d of %d", train.task, step, n_steps)

    def snapshot() -> None:
        was = task_model.training
        task_model.eval()
        for s in probe_splits:
            representations(state_model(model, key, step), splits[s], store=store)
        dev_acc.append(accuracy(task_model, dev_batches) if dev_batches else float("nan"))
        task_model.train(was)
        tmp = folder / f".checkpoint.{os.getpid()}.pt"
        torch.save({"model": task_model.state_dict(), "optimizer": opt.state_dict(),
                    "schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state(),
                    "step": step, "epoch": epoch, "in_epoch": in_epoch, "losses": losses,
                    "dev_accuracy": dev_acc, "epoch_rng": epoch_rng_state}, tmp)
        os.replace(tmp, ckpt)

    if step == 0 and not dev_acc:
        snapshot()
    task_model.train()
    bar = progress_bar(desc=f"fine-tuning {train.task}", unit="step", total=n_steps)
    bar.update(step)
    while epoch < settings.epochs:
        rng.bit_generator.state = epoch_rng_state
        batches = make_batches(train, encoded, pad_id, settings.batch_size, rng)
        for batch in batches[in_epoch:]:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(_logits(task_model, batch), batch.y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(task_model.parameters(), 1.0)
            opt.step()
            schedule.step()
            step += 1
            in_epoch += 1
            losses.append(float(loss.detach()))
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if in_epoch == len(batches):
                epoch, in_epoch = epoch + 1, 0
                epoch_rng_state = rng.bit_generator.state
            if step in steps:
                snapshot()
            if _AFTER_STEP["hook"] is not None:
                _AFTER_STEP["hook"](step)
    bar.close()
    task_model.eval()
    final = folder / "final"
    tmp = folder / f".final.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.encoder.save_pretrained(tmp)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in task_model.head.state_dict().items()},
              str(tmp / "head.safetensors"))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_json(result_file, {"steps": steps.tolist(), "dev_accuracy": dev_acc,
                                    "losses": losses, "n_steps": n_steps,
                                    "labels": list(train.labels)})
    ckpt.unlink(missing_ok=True)
    return FinetuneRun(key, folder, steps, np.asarray(dev_acc), np.asarray(losses), n_steps)
