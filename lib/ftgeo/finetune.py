"""Fine-tuning an encoder with a task head, with snapshots along the way.

The head matches the probed item, pooled exactly as :mod:`ftgeo.extract` pools it:

* a **word** (POS, PS-role, PS-fxn): the mean of its subword vectors, then a linear layer;
* a **pair** (DEP): the head's and the dependent's word vectors concatenated;
* a **sentence** (TREC-50, SST-2, MRPC): the ``[CLS]`` vector.

Training follows Zhou & Srikumar (2022): Adam, learning rate 3e-4, a linear schedule with
10% warm-up, batches of 32 sentences (length-bucketed, dynamic padding), no gradient clipping;
each is a setting (:class:`FinetuneSettings`), as are epochs, weight decay and seed.
Everything random (head initialization, dropout, batch order) comes from the seed,
so the same seed on the same machine gives bit-identical weights.

:func:`finetune` stores representations of the probing sets at evenly spaced steps (the
trajectory), checkpoints at them at most once a minute, resumes an interrupted run and
treats a finished one as a cache hit. :class:`FinetuneRun` reads a finished run's stored
states back.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._util import check, check_count, progress_bar, remove_left_by_dead_processes, writing_to
from .data import TaskData
from .extract import Encoded, _collate, encode, pool_words, token_row_matrix
from .models import LoadedModel, accepts_token_types, encoder_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneSettings:
    """The settings of one fine-tuning run (all part of its cache key).

    The defaults are Zhou & Srikumar's (2022) fine-tuning: Adam (no weight decay), learning
    rate 3e-4, a linear schedule with 10% warm-up, batches of 32, 10 epochs (they used 3 for
    BERT-base, see ``configs/paper.yaml``), and no gradient clipping.

    weight_decay : AdamW's decoupled weight decay (0: Adam)
    max_grad_norm : clip the gradient's norm to this (None: no clipping, as the paper)
    autocast : None (float32 throughout, the default) or ``"bf16"``: the training steps'
        forward and backward passes in bfloat16 autocast, about 1.5x faster on a CPU with
        AVX-512 BF16 and on recent GPUs (weights, optimizer and the stored representations
        stay float32); ``"fp16"`` (GPUs only): float16 autocast with a gradient scaler. It
        changes the weights a run ends with, so it is part of the run's key
    """

    epochs: int = 10
    learning_rate: float = 3e-4
    batch_size: int = 32
    warmup: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    n_snapshots: int = 10
    max_grad_norm: float | None = None
    autocast: str | None = None

    def validate(self, n_steps: int | None = None) -> None:
        """Refuse a bad setting with a message naming it."""
        check_count(self.epochs, "epochs")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(0 <= self.warmup < 1, f"warmup must be in [0, 1), got {self.warmup}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.max_grad_norm is None or self.max_grad_norm > 0,
              f"max_grad_norm must be > 0 or None (no clipping), got {self.max_grad_norm}")
        check(self.autocast in (None, "bf16", "fp16"),
              f"autocast must be None (float32), 'bf16' or 'fp16' (CUDA only), got {self.autocast!r}")
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
        config = encoder.config  # DistilBERT names its dropout ``dropout``
        self.dropout = torch.nn.Dropout(getattr(config, "hidden_dropout_prob",
                                                getattr(config, "dropout", 0.1)))
        self.head = torch.nn.Linear(width, n_labels)

    def forward(self, inputs: dict[str, torch.Tensor], rows: torch.Tensor | None = None,
                n_words: int = 0, pairs: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the batch's items.

        rows : (batch, n_tokens) word row of each token (word and pair tasks)
        pairs : (n_items, 2) rows of (head, dependent) words (pair tasks)
        """
        H = self.encoder(**inputs, return_dict=True).last_hidden_state
        return self.head(self.dropout(self.pool(H, rows, n_words, pairs)))

    def pool(self, H: torch.Tensor, rows: torch.Tensor | None, n_words: int,
             pairs: torch.Tensor | None) -> torch.Tensor:
        """The item vectors the head reads, from token states H of shape (batch, n_tokens, d)."""
        if self.item_kind == "sentence":
            return H[:, 0]
        W = pool_words(H, rows, n_words)
        return W if self.item_kind == "word" else torch.cat([W[pairs[:, 0]], W[pairs[:, 1]]], -1)


@dataclass(frozen=True)
class _Batch:
    inputs: dict
    rows: torch.Tensor | None
    n_words: int
    pairs: torch.Tensor | None
    y: torch.Tensor

    def to(self, device) -> _Batch:
        """This batch on ``device`` (itself when it is there already: the CPU path)."""
        if device.type == "cpu":
            return self

        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        return _Batch({k: move(v) for k, v in self.inputs.items()}, move(self.rows), self.n_words,
                      move(self.pairs), move(self.y))


def _sentence_items(data: TaskData) -> dict[int, list[int]]:
    by_sentence: dict[int, list[int]] = {}
    for k, s in enumerate(data.items[:, 0].tolist()):
        by_sentence.setdefault(s, []).append(k)
    return by_sentence


def make_batches(data: TaskData, encoded: Sequence[Encoded], pad_id: int, batch_size: int,
                 rng: np.random.Generator | None, *, token_types: bool = True) -> list[_Batch]:
    """Batches of ``batch_size`` sentences that hold items, bucketed by length.

    With ``rng``, sentences are shuffled, sorted by length within buckets of 50 batches,
    and the batches shuffled (so padding stays small and the order still varies by epoch);
    without, sentences are sorted by length once (for evaluation: fixed, least padding).
    """
    by_sentence = _sentence_items(data)
    sentences = np.array(sorted(by_sentence))
    if rng is None:
        sentences = np.array(sorted(sentences, key=lambda s: (len(encoded[s].input_ids), s)),
                            dtype=np.int64)
    else:
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
        inputs = _collate([encoded[s] for s in group], pad_id, token_types=token_types)
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


def accuracy_dropping_layers(model: TaskModel, batches: Sequence[_Batch]) -> np.ndarray:
    """Accuracy of the task model with its top k transformer layers removed and no further
    tuning, for every k from 0 to L: the head reads the output of layer L - k.

    One forward pass gives every layer's output (``output_hidden_states``); for BERT-style
    encoders, whose last layer's output is the final hidden state, that output is what a
    model truncated to L - k layers computes. Returns ndarray of shape (L + 1,), index k.
    """
    was_training = model.training
    model.eval()
    right, total = None, 0
    device = encoder_device(model)
    with torch.inference_mode():
        for b in batches:
            b = b.to(device)
            states = model.encoder(**b.inputs, output_hidden_states=True,
                                   return_dict=True).hidden_states
            hits = []
            for H in states[::-1]:  # k = 0 reads the last layer
                logits = model.head(model.pool(H, b.rows, b.n_words, b.pairs))
                if model.item_kind == "word":
                    logits = logits[b.pairs[:, 0]]
                hits.append(int((logits.argmax(-1) == b.y).sum()))
            right = np.asarray(hits) if right is None else right + hits
            total += len(b.y)
    model.train(was_training)
    return right / max(total, 1)


def accuracy(model: TaskModel, batches: Sequence[_Batch]) -> float:
    """Accuracy of the task model over evaluation batches (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    right = total = 0
    device = encoder_device(model)
    with torch.inference_mode():
        for b in batches:
            b = b.to(device)
            right += int((_logits(model, b).argmax(-1) == b.y).sum())
            total += len(b.y)
    model.train(was_training)
    return right / max(total, 1)


# --------------------------------------------------------------------------------------
# Runs: snapshots along the trajectory, checkpoints, resume, cache
# --------------------------------------------------------------------------------------

FINETUNE_VERSION = 4

#: Called as ``hook(step)`` after every training step; tests use it to interrupt a run.
_AFTER_STEP = {"hook": None}

#: A checkpoint (weights and optimizer state: 270 MB for the default model, about 0.4 s to
#: write) is written at a snapshot only if this many seconds have passed since the last one;
#: the environment variable ``FTGEO_CHECKPOINT_EVERY_S`` overrides it (on a cluster whose
#: jobs are preempted often, checkpoint more often: 0 writes one at every snapshot).
CHECKPOINT_EVERY_S = 60.0
CHECKPOINT_ENV = "FTGEO_CHECKPOINT_EVERY_S"


def _checkpoint_every_s() -> float:
    text = os.environ.get(CHECKPOINT_ENV)
    if text is None:
        return CHECKPOINT_EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    check(value >= 0, f"{CHECKPOINT_ENV}={text!r}: give a number of seconds, 0 or more")
    return value


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint through a temporary file and a rename; a full disk or an unwritable
    folder raises StorageError and leaves no temporary file.

    ``torch.save`` gets an open Python file, not a path: given a path, its C++ writer turns a
    full disk into an opaque RuntimeError ("unexpected pos ..."); given a file, the OSError
    with its errno comes through.
    """
    tmp = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
    with writing_to(path):
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path``, or None if there is none; a checkpoint that cannot be read
    (truncated or damaged) is removed with a warning, and the run starts over."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # the optimizer
        # moves its state to the weights' device; RNG states must be CPU tensors
        missing = {"model", "optimizer", "schedule", "torch_rng", "step", "epoch", "in_epoch",
                   "losses", "dev_accuracy", "epoch_rng", "timing"} - set(state)
        if missing:
            raise ValueError(f"it lacks {sorted(missing)}")
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        log.warning("checkpoint %s cannot be read (%s: %s); removing it and training from step 0",
                    path, type(err).__name__, err)
        path.unlink(missing_ok=True)
        return None
    return state


def snapshot_steps(n_steps: int, n_snapshots: int) -> np.ndarray:
    """Evenly spaced steps from 0 to ``n_steps`` inclusive.

    >>> snapshot_steps(100, 5).tolist()
    [0, 25, 50, 75, 100]
    """
    return np.unique(np.round(np.linspace(0, n_steps, n_snapshots)).astype(int))


def state_fingerprint(base_fingerprint: str, run_key: str, step: int) -> str:
    """The fingerprint of the state ``finetuned(run, step)``; step 0 is the base model.

    >>> state_fingerprint("abc", "0123456789" * 4, 0), state_fingerprint("abc", "k" * 32, 5)
    ('abc', 'abc/ft-kkkkkkkkkkkkkkkkkkkk/step-5')
    """
    return base_fingerprint if step == 0 else f"{base_fingerprint}/ft-{run_key[:20]}/step-{int(step)}"


def state_model(base: LoadedModel, run_key: str, step: int, encoder=None) -> LoadedModel:
    """The tokenizer and an encoder under the fingerprint of the state ``finetuned(run, step)``,
    so that :func:`ftgeo.extract.representations` caches each state's vectors apart.

    Step 0 is the pretrained model itself, so it keeps the base model's fingerprint: its
    vectors are the ones every pretrained analysis already cached.
    """
    from .models import ModelSpec

    encoder = base.encoder if encoder is None else encoder
    if step == 0:
        return LoadedModel(base.spec, base.tokenizer, encoder)
    spec = ModelSpec(base.spec.name, base.spec.source,
                     state_fingerprint(base.spec.fingerprint, run_key, step), base.spec.local)
    return LoadedModel(spec, base.tokenizer, encoder)


@dataclass(frozen=True)
class FinetuneRun:
    """A finished run: where it lives, its curve, and access to its stored states.

    ``steps`` are the snapshot steps; ``dev_accuracy`` the dev accuracy at each; ``losses``
    the training loss of every step. The representations of every state are in the store:
    the full probing sets at the first and last snapshot, and the *trajectory sets* (each
    probing set itself, or with ``trajectory_items`` a seeded sample of whole sentences
    with at most that many items): the training set's at every snapshot, the others' at the
    first and last.
    :meth:`representations` reads them; :meth:`load_model` and
    :meth:`load_task_model` load the final weights.
    """

    key: str
    folder: Path
    task: str
    steps: np.ndarray
    dev_accuracy: np.ndarray
    losses: np.ndarray
    n_steps: int
    settings: FinetuneSettings
    base: dict
    trajectory_items: int | None
    timing: dict
    device: str = "cpu"  # the type of device it was trained on

    @property
    def final_step(self) -> int:
        return int(self.steps[-1])

    def trajectory_set(self, data: TaskData) -> TaskData:
        """The sample of ``data`` whose representations are stored at every snapshot."""
        return data.sample(self.trajectory_items, seed=0)

    def state_fingerprint(self, step: int) -> str:
        check(int(step) in self.steps.tolist(),
              f"step {step} is not a snapshot of this run; snapshots: {self.steps.tolist()}")
        return state_fingerprint(self.base["fingerprint"], self.key, step)

    def representations(self, data: TaskData, step: int, store=None,
                        layer: int | None = None) -> np.ndarray:
        """The stored representations of ``data`` at snapshot ``step`` (all layers, or the
        one ``layer``: see :func:`ftgeo.extract.representations`).

        ``data`` is a full probing set (kept at the first and last step) or
        :meth:`trajectory_set` of one (the training set's kept at every step, the others'
        at the first and last). Nothing is computed: the
        weights of intermediate states are not kept, so a state missing from the store is
        an error that says how to rebuild it.
        """
        from .extract import representations
        from .models import ModelSpec
        from .store import Store

        spec = ModelSpec(self.base["name"], self.base["source"], self.state_fingerprint(step),
                         self.base["local"])

        class _Missing:
            def __getattr__(_, name):
                raise LookupError(
                    f"representations of {data.task}/{data.split} at step {step} of run "
                    f"{self.folder} are not in the store; only the trajectory sets are kept "
                    "at every step and the full sets at the first and last. Delete the run "
                    "folder and fine-tune again to rebuild them.")

        missing = _Missing()
        return representations(LoadedModel(spec, missing, missing), data,
                               store=Store() if store is None else store, layer=layer)

    def load_model(self, device=None) -> LoadedModel:
        """The fine-tuned encoder (final weights) and tokenizer, under the final state's
        fingerprint (so its representations of the probing sets come from the store).

        device : as for :func:`ftgeo.models.load_model`. On a device of another type than
            the run was trained on, the fingerprint gains ``@<type>``, so that what it
            computes there is cached apart.
        """
        from transformers import AutoModel, AutoTokenizer

        from ._util import resolve_device
        from .models import ModelSpec

        target = resolve_device(device)
        final = self.folder / "final"
        check(final.is_dir(), f"{final} is missing: the run did not finish; fine-tune again")
        encoder = AutoModel.from_pretrained(final).eval()
        if target.type != "cpu":
            encoder.to(target)
        tokenizer = AutoTokenizer.from_pretrained(final, use_fast=True)
        fingerprint = self.state_fingerprint(self.final_step)
        if target.type != self.device:
            fingerprint = f"{fingerprint}@{target.type}"
        return LoadedModel(ModelSpec(self.base["name"], str(final), fingerprint, True), tokenizer,
                           encoder)

    def load_task_model(self, loaded: LoadedModel | None = None) -> TaskModel:
        """The final encoder with its trained head (eval mode); ``loaded``: the result of
        :meth:`load_model`, if already at hand."""
        from safetensors.torch import load_file

        result = json.loads((self.folder / "result.json").read_text())
        loaded = self.load_model() if loaded is None else loaded
        model = TaskModel(loaded.encoder, result["item_kind"], len(result["labels"]))
        model.head.load_state_dict(load_file(str(self.folder / "final" / "head.safetensors")))
        return model.to(encoder_device(loaded.encoder)).eval()

    def _task_model_and_batches(self, data: TaskData, batch_size: int):
        check(data.task == self.task, f"the run was fine-tuned on {self.task!r}, "
              f"not on {data.task!r}")
        loaded = self.load_model()
        model, tokenizer = self.load_task_model(loaded), loaded.tokenizer
        batches = make_batches(data, encode(tokenizer, data.sentences, data.second,
                                            max_length=loaded.max_length),
                               tokenizer.pad_token_id or 0, batch_size, None,
                               token_types=accepts_token_types(loaded.encoder))
        return model, batches

    def evaluate(self, data: TaskData, batch_size: int = 64) -> float:
        """Accuracy of the fine-tuned model (final weights and head) on ``data``."""
        return accuracy(*self._task_model_and_batches(data, batch_size))

    def evaluate_dropping(self, data: TaskData, batch_size: int = 64) -> np.ndarray:
        """Accuracy on ``data`` with the top k transformer layers removed and no further
        tuning, the head reading layer L - k (Phang, Liu & Bowman 2021), for k = 0 .. L:
        ndarray of shape (L + 1,). See :func:`accuracy_dropping_layers`."""
        return accuracy_dropping_layers(*self._task_model_and_batches(data, batch_size))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> FinetuneRun:
        """A finished run from its folder (``artifacts/finetune/<task>-<key>``)."""
        folder = Path(folder)
        result_file = folder / "result.json"
        check(result_file.is_file(), f"{result_file} is missing: the run has not finished")
        r = json.loads(result_file.read_text())
        return cls(r["key"], folder, r["task"], np.asarray(r["steps"]),
                   np.asarray(r["dev_accuracy"], dtype=float), np.asarray(r["losses"]),
                   r["n_steps"], FinetuneSettings(**r["settings"]), r["base"],
                   r["trajectory_items"], r.get("timing", {}), r.get("device", "cpu"))


def run_folder(model: LoadedModel, train: TaskData, settings: FinetuneSettings,
               root: str | os.PathLike | None = None,
               trajectory_items: int | None = None,
               snapshot_dev_items: int | None = None,
               trajectory_splits: Sequence[str] = ("train",)) -> tuple[str, Path, dict]:
    """The cache key, folder and key parts of a run (nothing is created)."""
    from ._util import artifacts_dir, canonical_json, sha256_text

    parts = {"version": FINETUNE_VERSION, "model": model.spec.fingerprint, "task": train.task,
             "train": train.checksum, "settings": settings.as_dict(),
             "trajectory_items": trajectory_items}
    if snapshot_dev_items is not None:  # absent when unused: earlier runs keep their keys
        parts["snapshot_dev_items"] = snapshot_dev_items
    if tuple(trajectory_splits) != ("train",):  # the same, for the default
        parts["trajectory_splits"] = list(trajectory_splits)
    key = sha256_text(canonical_json(parts))[:32]
    root = artifacts_dir() if root is None else Path(root)
    return key, root / "finetune" / f"{train.task}-{key[:12]}", parts


def finetune(model: LoadedModel, splits: dict[str, TaskData],
             settings: FinetuneSettings = FinetuneSettings(), *, store=None,
             probe_splits: Sequence[str] = ("train", "test"), trajectory_items: int | None = None,
             trajectory_splits: Sequence[str] = ("train",),
             root: str | os.PathLike | None = None, cached_only: bool = False,
             snapshot_dev_items: int | None = None) -> FinetuneRun:
    """Fine-tune a copy of ``model`` on ``splits["train"]``, with snapshots and a cache.

    At each of ``settings.n_snapshots`` evenly spaced steps (0 and the last included), the
    dev accuracy is recorded and representations at every layer go into the store under the
    state ``finetuned(task, seed, step)``: the full ``probe_splits`` at the first and last
    snapshot, and their *trajectory sets*: the full sets (``trajectory_items=None``, the
    default and the papers' protocol: a forward pass over them at every snapshot) or seeded
    samples of whole sentences with at most ``trajectory_items`` items, at the ends for every
    probe split (sliced from the full sets) and in between for the ``trajectory_splits``
    only (the chapters follow the training set along fine-tuning; a test sample at every
    snapshot was about a sixth of the snapshots' time, unread).
    A checkpoint is written at a snapshot (not the last) once
    ``CHECKPOINT_EVERY_S`` seconds have passed since the previous one; an interrupted run
    resumes from its last checkpoint and ends with the same weights as an uninterrupted run
    (a checkpoint that cannot be read is discarded, and training starts over). A folder that
    cannot be written or a full disk raises :class:`~ftgeo._util.StorageError`.
    A finished run is a cache hit: nothing is trained. Any change of settings, data or model
    is a new run in a new folder. The final encoder
    (``save_pretrained``, safetensors), tokenizer and head are kept in ``<folder>/final``.
    ``model`` itself is not changed. With ``cached_only``, nothing is trained: a run that
    has not finished raises :class:`MissingRunError`. With ``snapshot_dev_items``, the dev
    accuracy between the first and last snapshot is that of a seeded sample of at most that
    many dev items (whole sentences; the ends always use the whole dev split): SST-2's
    6,735 dev sentences took 18 s an evaluation here, about 180 of a run's 288 s of snapshots.
    """
    from ._util import file_lock
    from .store import Store

    train = splits["train"]
    settings.validate()
    for s in probe_splits:
        check(s in splits, f"probe_splits names {s!r}, which is not among the splits "
              f"{sorted(splits)}")
    for s in trajectory_splits:
        check(s in probe_splits or not probe_splits,
              f"trajectory_splits names {s!r}, which is not among probe_splits {list(probe_splits)}")
    store = Store() if store is None else store
    dev = splits.get("dev")
    if snapshot_dev_items is not None:
        snapshot_dev_items = check_count(snapshot_dev_items, "snapshot_dev_items", optional=True)
        n_sampled = 0 if dev is None else dev.sample_index(snapshot_dev_items, seed=0).size
        if dev is None or n_sampled >= dev.n_items:
            snapshot_dev_items = None  # the sample would be the whole split
        else:
            check(n_sampled > 0, f"snapshot_dev_items={snapshot_dev_items} samples no dev item of "
                  f"{train.task}: every dev sentence holds more items; give a larger number or None")
    key, folder, parts = run_folder(model, train, settings, root, trajectory_items,
                                    snapshot_dev_items, trajectory_splits)
    if (folder / "result.json").exists():
        log.info("fine-tuning %s: cached run %s, nothing to train", train.task, folder)
        return FinetuneRun.load(folder)
    if cached_only:
        raise MissingRunError(
            f"no fine-tuned run of {model.spec.name} on {train.task} with the settings {settings.as_dict()} "
            f"and these {train.n_items} training items ({folder} has not finished). Chapters only read "
            "fine-tuned runs: train it with the pipeline, whose fine-tuning stage runs first "
            "(python -m ftgeo run --config CONFIG, with the same model, tasks and finetune settings)"
            + ("" if train.task in GLUE_TASKS else  # the command line trains no GLUE sample
               f", or with python -m ftgeo finetune --model {model.spec.name} --task {train.task} "
               f"--seed {settings.seed} --epochs {settings.epochs} "
               f"--learning-rate {settings.learning_rate}"))

    # one process trains a run; another that asks for it (a second job, a pipeline beside
    # this one) waits, then finds it finished
    with file_lock(folder / ".lock", what=f"trains {train.task} there") as lock:
        if (folder / "result.json").exists():
            log.info("fine-tuning %s: run %s was finished by another process", train.task, folder)
            return FinetuneRun.load(folder)
        run = _train(model, splits, settings, store=store, probe_splits=probe_splits,
                     trajectory_items=trajectory_items, trajectory_splits=trajectory_splits,
                     key=key, folder=folder, parts=parts, snapshot_dev_items=snapshot_dev_items)
        # safe to remove: whoever opens it from now on finds result.json first
        lock.unlink(missing_ok=True)
        return run


def _train(model: LoadedModel, splits: dict[str, TaskData], settings: FinetuneSettings, *,
           store, probe_splits: Sequence[str], trajectory_items: int | None,
           trajectory_splits: Sequence[str], key: str, folder: Path, parts: dict,
           snapshot_dev_items: int | None = None) -> FinetuneRun:
    """:func:`finetune`'s training, under the run's lock."""
    import shutil

    from transformers import get_linear_schedule_with_warmup

    from ._util import atomic_write_json
    from .extract import cache_representations, representations, store_subset

    train = splits["train"]
    device = encoder_device(model.encoder)
    check(settings.autocast != "fp16" or device.type == "cuda",
          f"autocast='fp16' needs a CUDA device; the model is on {device} (use 'bf16' or None)")
    if settings.autocast == "bf16" and device.type == "cpu" and not _native_bf16():
        log.warning("fine-tuning %s with autocast='bf16' on a CPU without native bfloat16 "
                    "instructions (AVX-512 BF16 or AMX): it is emulated and slower than float32; "
                    "set autocast to None (finetune: {autocast: null}) on this machine",
                    train.task)
    t_start = time.perf_counter()
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    encoder = copy.deepcopy(model.encoder)
    encoded = encode(model.tokenizer, train.sentences, train.second,
                     max_length=model.max_length)
    pad_id = model.tokenizer.pad_token_id or 0
    token_types = accepts_token_types(encoder)
    # make_batches groups the sentences that hold items, batch_size at a time
    n_batches = -(-len(_sentence_items(train)) // settings.batch_size)
    n_steps = n_batches * settings.epochs
    settings.validate(n_steps)
    steps = snapshot_steps(n_steps, settings.n_snapshots)
    with writing_to(folder):
        folder.mkdir(parents=True, exist_ok=True)
    # a run killed while writing a checkpoint or the final weights leaves these behind
    remove_left_by_dead_processes([*folder.glob(".checkpoint.*.pt"), *folder.glob(".final.*")],
                                  pid_field=2)
    atomic_write_json(folder / "parts.json", parts)
    dev = splits.get("dev")
    dev_batches = between_batches = None
    if dev is not None and dev.n_items:
        def batches_of(data: TaskData) -> list:
            return make_batches(data, encode(model.tokenizer, data.sentences, data.second,
                                             max_length=model.max_length),
                                pad_id, settings.batch_size, None, token_types=token_types)

        dev_batches = between_batches = batches_of(dev)
        if snapshot_dev_items is not None:
            between_batches = batches_of(dev.sample(snapshot_dev_items, seed=0))
    full_sets = [splits[s] for s in probe_splits]
    trajectory_sets = [d.sample(trajectory_items, seed=0) for d in full_sets]
    followed = [t for s, t in zip(probe_splits, trajectory_sets, strict=True) if s in trajectory_splits]
    task_model = TaskModel(encoder, train.item_kind, len(train.labels)).to(device)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    opt = torch.optim.AdamW([
        {"params": [p for n, p in task_model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": settings.weight_decay},
        {"params": [p for n, p in task_model.named_parameters() if n.endswith(no_decay)],
         "weight_decay": 0.0}], lr=settings.learning_rate, fused=True)  # fused: 6x faster on CPU
    # float16 gradients underflow without loss scaling; bfloat16 and float32 need none
    scaler = torch.amp.GradScaler("cuda") if settings.autocast == "fp16" else None
    amp_dtype = torch.float16 if settings.autocast == "fp16" else torch.bfloat16
    schedule = get_linear_schedule_with_warmup(opt, int(round(settings.warmup * n_steps)), n_steps)
    step, epoch, in_epoch, losses, dev_acc = 0, 0, 0, [], []
    timing = {"train_s": 0.0, "snapshot_s": 0.0, "train_tokens": 0}
    epoch_rng_state = rng.bit_generator.state
    ckpt = folder / "checkpoint.pt"
    state = _load_checkpoint(ckpt)
    if state is not None:
        task_model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        step, epoch, in_epoch = state["step"], state["epoch"], state["in_epoch"]
        losses, dev_acc = state["losses"], state["dev_accuracy"]
        epoch_rng_state, timing = state["epoch_rng"], state["timing"]
        timing["resumed_at"] = [*timing.get("resumed_at", []), step]  # kept in result.json
        log.info("fine-tuning %s (seed %d): resuming at step %d of %d", train.task, settings.seed,
                 step, n_steps)

    last_checkpoint = [time.perf_counter()]
    every_s = _checkpoint_every_s()

    def snapshot() -> None:
        t = time.perf_counter()
        task_model.eval()
        state = state_model(model, key, step, encoder)
        at_end = step in (steps[0], steps[-1])
        if at_end:  # the full sets, and the trajectory sets sliced from them
            for full, sample in zip(full_sets, trajectory_sets, strict=True):
                if sample is full:
                    cache_representations(state, full, store=store)
                    continue
                # a subset: slice it instead of a second forward pass
                X = representations(state, full, store=store)
                store_subset(state, sample, X[:, full.sample_index(trajectory_items, seed=0)], store)
        else:
            for data in followed:
                cache_representations(state, data, store=store)
        dev_acc.append(accuracy(task_model, dev_batches if at_end else between_batches)
                       if dev_batches else float("nan"))
        task_model.train()
        timing["snapshot_s"] += time.perf_counter() - t
        if step == steps[-1] or time.perf_counter() - last_checkpoint[0] < every_s:
            return  # the final weights are saved next; or the last checkpoint is recent
        last_checkpoint[0] = time.perf_counter()
        extra = {}
        if device.type == "cuda":  # dropout on the GPU draws from its own generator
            extra["cuda_rng"] = torch.cuda.get_rng_state(device)
        if scaler is not None:
            extra["scaler"] = scaler.state_dict()
        _save_checkpoint(ckpt, {
            "model": task_model.state_dict(), "optimizer": opt.state_dict(),
            "schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state(),
            "step": step, "epoch": epoch, "in_epoch": in_epoch, "losses": losses,
            "dev_accuracy": dev_acc, "epoch_rng": epoch_rng_state, "timing": timing, **extra})

    if step == 0 and not dev_acc:
        snapshot()
    task_model.train()
    bar = progress_bar(desc=f"fine-tuning {train.task}", unit="step", total=n_steps)
    bar.update(step)
    while epoch < settings.epochs:
        rng.bit_generator.state = epoch_rng_state
        batches = make_batches(train, encoded, pad_id, settings.batch_size, rng,
                               token_types=token_types)
        for batch in batches[in_epoch:]:
            t = time.perf_counter()
            batch = batch.to(device)
            opt.zero_grad()
            with torch.autocast(device.type, dtype=amp_dtype, enabled=settings.autocast is not None):
                logits = _logits(task_model, batch)
            loss = torch.nn.functional.cross_entropy(logits.float(), batch.y)
            if scaler is None:
                loss.backward()
                if settings.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(task_model.parameters(), settings.max_grad_norm)
                opt.step()
            else:
                scaler.scale(loss).backward()
                if settings.max_grad_norm is not None:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(task_model.parameters(), settings.max_grad_norm)
                scaler.step(opt)
                scaler.update()
            schedule.step()
            step += 1
            in_epoch += 1
            losses.append(float(loss.detach()))
            timing["train_s"] += time.perf_counter() - t
            timing["train_tokens"] += int(batch.inputs["attention_mask"].sum())
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
    final, tmp = folder / "final", folder / f".final.{os.getpid()}"
    from safetensors.torch import save_file

    with writing_to(final):
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            encoder.save_pretrained(tmp)
            model.tokenizer.save_pretrained(tmp)
            save_file({k: v.contiguous() for k, v in task_model.head.state_dict().items()},
                      str(tmp / "head.safetensors"))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    timing["total_s"] = timing["train_s"] + timing["snapshot_s"]
    timing["this_process_s"] = time.perf_counter() - t_start
    atomic_write_json(folder / "result.json", {
        "key": key, "task": train.task, "item_kind": train.item_kind,
        "labels": list(train.labels), "steps": steps.tolist(), "dev_accuracy": dev_acc,
        "losses": losses, "n_steps": n_steps, "settings": settings.as_dict(),
        "base": {"name": model.spec.name, "source": model.spec.source,
                 "fingerprint": model.spec.fingerprint, "local": model.spec.local},
        "trajectory_items": trajectory_items, "probe_splits": list(probe_splits), "device": device.type,
        "snapshot_dev_items": snapshot_dev_items,
        "trajectory_splits": [s for s in probe_splits if s in trajectory_splits],
        "timing": timing})
    ckpt.unlink(missing_ok=True)
    log.info("fine-tuned %s (seed %d) in %.0f s (training %.0f s, snapshots %.0f s); dev accuracy "
             "%.4f", train.task, settings.seed, timing["total_s"], timing["train_s"],
             timing["snapshot_s"], dev_acc[-1])
    return FinetuneRun.load(folder)


def _native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where autocast pays."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe is not None and probe()) or (amx is not None and amx()))


_finetune_run = finetune  # chapter_runs' parameter ``finetune`` (the settings) hides the function

#: Sentence tasks fine-tuned with their own, shorter recipe in the isotropy and CKA chapters.
GLUE_TASKS = ("sst-2", "mrpc")


class MissingRunError(LookupError):
    """A chapter needs a fine-tuned run that has not been trained; the message says which
    command trains it."""


@dataclass(frozen=True)
class ChapterFinetuning:
    """The fine-tuning every chapter reads, named once: the config's ``finetune`` parameter.

    settings : the :class:`FinetuneSettings` of the probing tasks
    trajectory_items : items of each probing set stored at every snapshot (None, the default:
        all of them, as the papers follow the whole training set; N: a seeded sample of whole
        sentences, cheaper but easier to separate linearly)
    glue_epochs, glue_train_sentences : SST-2 and MRPC (:data:`GLUE_TASKS`) are fine-tuned
        for ``glue_epochs`` epochs, the usual GLUE recipe (Devlin et al. 2019), on a seeded
        sample of ``glue_train_sentences`` training sentences (None: all; SST-2 has 60,614,
        too many for a CPU budget)
    glue_snapshot_dev_items : the dev accuracy of SST-2 and MRPC between the first and last
        snapshot is that of a seeded sample of at most this many dev sentences (None: all);
        the curve's ends use the whole dev split. SST-2's dev split here is 6,735 sentences
        (10% of GLUE's training set: GLUE's own dev set is the test split): at every
        snapshot it took 18 s here, more than the rest of the snapshot
    glue_trajectories : whether SST-2 and MRPC runs store their training set's trajectory set
        at the snapshots between the first and last; no chapter reads it (chapters 8 and 9
        read their pretrained and fine-tuned states), and for MRPC's long pairs it is 42%
        to 52% of the tokens a run's snapshots pass through the model
    n_seeds : fine-tuning runs per task, with seeds ``settings.seed``, ``settings.seed + 1``,
        ...: the spread over them is the spread of every before/after result (Zhou &
        Srikumar report one run per task; one run cannot tell a fine-tuning effect from the
        luck of one initialization and data order)

    >>> ChapterFinetuning.from_mapping({"epochs": 2, "seed": 1}).settings.epochs
    2
    >>> ChapterFinetuning.from_mapping({"epochz": 2})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: finetune: unknown setting(s) ['epochz']; allowed: autocast, batch_size, epochs, ...
    """

    settings: FinetuneSettings = FinetuneSettings()
    trajectory_items: int | None = None
    glue_epochs: int = 3
    glue_train_sentences: int | None = 8000
    glue_snapshot_dev_items: int | None = 1000
    glue_trajectories: bool = False
    n_seeds: int = 3

    @property
    def seeds(self) -> list[int]:
        """The fine-tuning seeds, the first one ``settings.seed``.

        >>> ChapterFinetuning.from_mapping({"seed": 4, "n_seeds": 3}).seeds
        [4, 5, 6]
        """
        return [self.settings.seed + k for k in range(self.n_seeds)]

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any] | ChapterFinetuning | None) -> ChapterFinetuning:
        if isinstance(given, ChapterFinetuning):
            return given
        given = dict(given or {})
        own = {"trajectory_items", "glue_epochs", "glue_train_sentences", "glue_snapshot_dev_items",
               "glue_trajectories", "n_seeds"}
        allowed = {f.name for f in fields(FinetuneSettings)} | own
        unknown = sorted(set(given) - allowed)
        check(not unknown, f"finetune: unknown setting(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        # whole numbers as ints, so that 3.0 or a numpy integer names the same runs as 3
        for key, optional in (("epochs", False), ("n_seeds", False), ("glue_epochs", False),
                              ("glue_train_sentences", True), ("glue_snapshot_dev_items", True)):
            if key in given:
                given[key] = check_count(given[key], f"finetune: {key}", optional=optional)
        settings = FinetuneSettings(**{k: v for k, v in given.items() if k not in own})
        settings.validate()
        plan = cls(settings, **{k: v for k, v in given.items() if k in own})
        check(isinstance(plan.glue_trajectories, bool),
              f"finetune: glue_trajectories must be true or false, got {plan.glue_trajectories!r}")
        return plan

    def as_dict(self) -> dict[str, Any]:
        return {**self.settings.as_dict(), "trajectory_items": self.trajectory_items,
                "glue_epochs": self.glue_epochs, "glue_train_sentences": self.glue_train_sentences,
                "glue_snapshot_dev_items": self.glue_snapshot_dev_items,
                "glue_trajectories": self.glue_trajectories, "n_seeds": self.n_seeds}


def chapter_runs(model: str | LoadedModel, tasks: Sequence[str], *, seed: int = 0,
                 finetune: Mapping[str, Any] | ChapterFinetuning | None = None, max_sentences: int = 0,
                 train: bool = False
                 ) -> tuple[LoadedModel, dict[str, dict[str, TaskData]], dict[str, FinetuneRun]]:
    """The model, task data and fine-tuned runs a chapter reads: ``(model, {task: splits},
    {task: run})``, the run of the first fine-tuning seed; the one loader of chapters 02 to
    09 (:func:`chapter_seed_runs` gives every seed's run).

    ``seed`` is the seed of the data splits that a data set does not fix; ``finetune`` the
    fine-tuning settings (:class:`ChapterFinetuning`, or a mapping of its fields and those of
    :class:`FinetuneSettings`); ``max_sentences`` keeps the first N sentences of every split
    (smoke runs). With ``train=False`` (the chapters) nothing is trained: a run that is not
    in the cache raises :class:`MissingRunError`, which names the command that trains it.
    The pipeline's fine-tuning stage calls this with ``train=True`` before any chapter runs;
    it trains the runs of every seed (``n_seeds``).
    """
    loaded, data, runs = chapter_seed_runs(model, tasks, seed=seed, finetune=finetune,
                                           max_sentences=max_sentences, train=train,
                                           first_only=not train)
    return loaded, data, {task: task_runs[0] for task, task_runs in runs.items()}


def chapter_seed_runs(model: str | LoadedModel, tasks: Sequence[str], *, seed: int = 0,
                      finetune: Mapping[str, Any] | ChapterFinetuning | None = None,
                      max_sentences: int = 0, train: bool = False, first_only: bool = False,
                      seeds: Sequence[int] | None = None
                      ) -> tuple[LoadedModel, dict[str, dict[str, TaskData]],
                                 dict[str, list[FinetuneRun]]]:
    """As :func:`chapter_runs`, with every fine-tuning seed's run: ``(model, {task: splits},
    {task: [run per seed]})``, in :attr:`ChapterFinetuning.seeds` order (``first_only``:
    the first seed's alone; ``seeds``: these of the fine-tuning seeds alone, e.g. the one
    seed a cluster job trains)."""
    from .data import load_task
    from .models import load_model

    plan = ChapterFinetuning.from_mapping(finetune)
    chosen = plan.seeds[:1] if first_only else plan.seeds
    if seeds is not None:
        check(set(seeds) <= set(plan.seeds), f"seeds {list(seeds)} are not all among the "
              f"fine-tuning seeds {plan.seeds} of these settings")
        chosen = [s for s in chosen if s in set(seeds)]
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    data, runs = {}, {}
    for task in tasks:
        splits = load_task(task, seed=seed)
        task_settings, dev_items, followed = plan.settings, None, ("train",)
        if splits["train"].task in GLUE_TASKS:
            dev_items = plan.glue_snapshot_dev_items
            followed = ("train",) if plan.glue_trajectories else ()
            task_settings = replace(plan.settings, epochs=plan.glue_epochs)
            splits = dict(splits, train=splits["train"].sample(plan.glue_train_sentences, seed=seed))
        if max_sentences:
            splits = {s: d.head(max_sentences) for s, d in splits.items()}
        data[task] = splits
        runs[task] = [_finetune_run(loaded, splits, replace(task_settings, seed=s),
                                    cached_only=not train, trajectory_items=plan.trajectory_items,
                                    snapshot_dev_items=dev_items, trajectory_splits=followed)
                      for s in chosen]
    return loaded, data, runs


def unfinished_seed_runs(model: str | LoadedModel, tasks: Sequence[str], *, seed: int = 0,
                         finetune: Mapping[str, Any] | ChapterFinetuning | None = None,
                         max_sentences: int = 0) -> list[tuple[str, int]]:
    """The ``(task, fine-tuning seed)`` runs that :func:`chapter_seed_runs` with ``train=True``
    would train: those not finished in the cache (nothing is trained here)."""
    from .models import load_model

    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    missing = []
    for task in tasks:
        for s in ChapterFinetuning.from_mapping(finetune).seeds:
            try:
                chapter_seed_runs(loaded, [task], seed=seed, finetune=finetune,
                                  max_sentences=max_sentences, seeds=[s])
            except MissingRunError:
                missing.append((task, s))
    return missing


# --------------------------------------------------------------------------------------
# Reading finished runs for the chapters: the two model states, tables, the linear-probe
# comparison of chapter 2 and its record
# --------------------------------------------------------------------------------------

def state_steps(run: FinetuneRun) -> dict[str, int]:
    """The snapshot step of each model state of ``run``, in :data:`ftgeo.results.STATES`
    order: the pretrained model is step 0, the fine-tuned one the last snapshot.

    >>> run = FinetuneRun("key", Path("run"), "pos", np.array([0, 5, 10]), np.zeros(3),
    ...                   np.zeros(10), 10, FinetuneSettings(), {}, None, {})
    >>> state_steps(run)
    {'pretrained': 0, 'finetuned': 10}
    """
    return {"pretrained": 0, "finetuned": run.final_step}


def iter_state_representations(model: LoadedModel, runs: Mapping[str, FinetuneRun],
                               data: Mapping[str, Mapping[str, TaskData]], *,
                               layer: int | None = None, store=None,
                               states: Sequence[str] = ("pretrained", "finetuned"),
                               ) -> Iterator[tuple[tuple[str, str], dict[str, np.ndarray]]]:
    """The representations of every split of every task before and after fine-tuning,
    one model state at a time: yields ``((task, state), {split: X})``.

    ``pretrained`` is ``model``, ``finetuned`` the run's final weights
    (:meth:`FinetuneRun.load_model`); tasks come in the order of ``runs``, the pretrained
    state first. Representations are read from the store, and computed (and cached) where
    absent, e.g. a dev split a run did not store. Lazy, so that a caller who reduces each
    state (a probe per layer) holds one state's vectors at a time; ``dict(...)`` keeps all.

    Parameters
    ----------
    model : the pretrained model the runs started from
    runs : {task: FinetuneRun}; data : {task: {split: TaskData}}, as :func:`chapter_runs`
        returns them
    layer : None for every layer, X of shape (n_layers, n_items, n_features); a layer index
        (0 = embeddings, -1 = last) for X of shape (n_items, n_features)
    store : the artifact cache (default ``Store()``)
    states : the states to yield (``("finetuned",)`` for a further fine-tuning seed, whose
        pretrained state is the same model)
    """
    from .extract import representations

    unknown = sorted(set(states) - {"pretrained", "finetuned"})
    check(not unknown, f"states: unknown state(s) {unknown}; use 'pretrained' and 'finetuned'")
    for task, run in runs.items():
        for state in states:
            loaded = model if state == "pretrained" else run.load_model()
            yield (task, state), {split: representations(loaded, d, store=store, layer=layer)
                                  for split, d in data[task].items()}


def trajectory(run: FinetuneRun, sample: TaskData, *, layer: int = -1, store=None) -> np.ndarray:
    """The stored representations of ``sample`` at ``layer`` at every snapshot of ``run``.

    sample : a trajectory set, ``run.trajectory_set(split)`` (kept at every snapshot)

    Returns
    -------
    X : ndarray of shape (n_snapshots, n_items, n_features), in ``run.steps`` order
    """
    return np.stack([run.representations(sample, int(step), store=store, layer=layer)
                     for step in run.steps])


def runs_table(runs: Mapping[str, FinetuneRun], data: Mapping[str, Mapping[str, TaskData]]):
    """One row per task (pandas DataFrame, index ``task``): labels, training items, steps,
    snapshots, and the items of the training set's trajectory set (its sample followed at
    every snapshot)."""
    import pandas as pd

    return pd.DataFrame({task: {
        "labels": len(data[task]["train"].labels),
        "train items": data[task]["train"].n_items,
        "steps": run.n_steps,
        "snapshots": len(run.steps),
        "trajectory items": run.trajectory_set(data[task]["train"]).n_items,
    } for task, run in runs.items()}).T.rename_axis("task")


def timing_table(runs: Mapping[str, FinetuneRun]):
    """Seconds each run took when it was trained (pandas DataFrame, index ``task``): the
    training steps, the snapshots, and their total (NaN where a run did not record it)."""
    import pandas as pd

    return pd.DataFrame({task: {"training": run.timing.get("train_s"),
                                "snapshots": run.timing.get("snapshot_s"),
                                "total": run.timing.get("total_s")}
                         for task, run in runs.items()}).T.rename_axis("task")


def seed_accuracy(seed_runs: Mapping[str, Sequence[FinetuneRun]],
                  data: Mapping[str, Mapping[str, TaskData]], splits: Sequence[str] = ("dev", "test")
                  ) -> dict[str, list[dict[str, float]]]:
    """The fine-tuned model's accuracy of every seed's run: {task: [{split: accuracy}, one per
    seed]} (:meth:`FinetuneRun.evaluate`)."""
    return {task: [{split: run.evaluate(data[task][split]) for split in splits} for run in task_runs]
            for task, task_runs in seed_runs.items()}


def mean_accuracy(accuracy: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """{task: {split: mean over seeds}} of :func:`seed_accuracy`'s result.

    >>> mean_accuracy({"pos": [{"test": 0.5}, {"test": 1.0}]})
    {'pos': {'test': 0.75}}
    """
    return {task: {split: float(np.mean([a[split] for a in accs])) for split in accs[0]}
            for task, accs in accuracy.items()}


def seeds_table(accuracy: Mapping[str, Sequence[Mapping[str, float]]],
                seed_runs: Mapping[str, Sequence[FinetuneRun]]):
    """The fine-tuned model of every seed (pandas DataFrame, index (task, seed)): its dev and
    test accuracy, with each task's mean and sd over seeds in the last rows of the task."""
    import pandas as pd

    rows = {}
    for task, accs in accuracy.items():
        for run, acc in zip(seed_runs[task], accs, strict=True):
            rows[task, str(run.settings.seed)] = dict(acc)
        frame = pd.DataFrame(accs)
        rows[task, "mean"] = frame.mean().to_dict()
        rows[task, "sd"] = frame.std(ddof=1).to_dict() if len(frame) > 1 else dict.fromkeys(frame, np.nan)
    return pd.DataFrame(rows).T.rename_axis(["task", "seed"])


def comparison_table(model_accuracy: Mapping[str, Mapping[str, float]], probe: Mapping):
    """The fine-tuned model against the ridge probe of chapter 1 (pandas DataFrame, one row
    per task of ``model_accuracy``, index ``task``).

    Columns: the fine-tuned model's dev and test accuracy; the probe on the pretrained
    model's last layer and on its best layer, chosen on dev (so its test figure is a fair
    baseline), on dev and test; and the probe on the fine-tuned model's last layer, on test.

    Parameters
    ----------
    model_accuracy : {task: {"dev": accuracy, "test": accuracy}} (:meth:`FinetuneRun.evaluate`,
        or the mean over fine-tuning seeds, :func:`mean_accuracy`)
    probe : {(task, state): LayerProbeResult} for both states of every task
        (:func:`ftgeo.probes.linear_probe_layers`; arrays of shape (n_layers,))
    """
    import pandas as pd

    rows = {}
    for task, acc in model_accuracy.items():
        before, after = probe[task, "pretrained"], probe[task, "finetuned"]
        best = int(np.nanargmax(before.dev_accuracy))
        rows[task] = {
            "finetuned model, dev": acc["dev"],
            "linear probe pretrained, last layer, dev": before.dev_accuracy[-1],
            "linear probe pretrained, best layer, dev": before.dev_accuracy[best],
            "finetuned model, test": acc["test"],
            "linear probe pretrained, last layer, test": before.test_accuracy[-1],
            "linear probe pretrained, best layer, test": before.test_accuracy[best],
            "linear probe finetuned, last layer, test": after.test_accuracy[-1],
        }
    return pd.DataFrame(rows).T.rename_axis("task")


def gain_summary(comparison) -> dict[str, Any]:
    """What chapter 2's summary cites from :func:`comparison_table`: the test-accuracy gain of
    the fine-tuned model over the probe on the pretrained model's last layer (``*_last``)
    and best layer (``*_best``).

    Returns
    -------
    {"n_beats_last", "n_beats_best"}: tasks with a gain > 0; {"mean_gain_last",
    "mean_gain_best"}: mean gains; "largest_gain_task", "largest_gain": the largest gain
    over the last layer; "smallest_gain_task", "smallest_gain": the smallest over the best
    layer; "not_helped": the tasks with no gain over the best layer, comma-separated, or
    "none".
    """
    model = comparison["finetuned model, test"]
    gain_last = model - comparison["linear probe pretrained, last layer, test"]
    gain_best = model - comparison["linear probe pretrained, best layer, test"]
    not_helped = [task for task in comparison.index if gain_best[task] <= 0]
    return {"n_beats_last": int((gain_last > 0).sum()), "n_beats_best": int((gain_best > 0).sum()),
            "mean_gain_last": float(gain_last.mean()), "mean_gain_best": float(gain_best.mean()),
            "largest_gain_task": gain_last.idxmax(), "largest_gain": float(gain_last.max()),
            "smallest_gain_task": gain_best.idxmin(), "smallest_gain": float(gain_best.min()),
            "not_helped": ", ".join(not_helped) if not_helped else "none"}


def finetuning_tasks(runs: Mapping[str, FinetuneRun],
                     model_accuracy: Mapping[str, Mapping[str, float]], probe: Mapping, *,
                     seed_accuracy: Mapping[str, Sequence[Mapping[str, float]]] | None = None) -> dict:
    """The per-task part of chapter 2's record: {task: :class:`ftgeo.results.FinetuningTask`},
    from the runs, the fine-tuned models' dev and test accuracy and the per-layer probes
    (arguments as for :func:`comparison_table`), in the order of ``runs``; ``seed_accuracy``:
    every fine-tuning seed's accuracy (:func:`seed_accuracy`)."""
    from .results import FinetuningTask

    def per_seed(task, split):
        return None if seed_accuracy is None else [a[split] for a in seed_accuracy[task]]

    return {task: FinetuningTask(
        run.folder.name, run.n_steps, run.steps.tolist(), run.dev_accuracy.tolist(),
        model_accuracy[task]["dev"], model_accuracy[task]["test"],
        probe[task, "pretrained"].test_accuracy.tolist(),
        probe[task, "finetuned"].test_accuracy.tolist(), run.timing.get("total_s"),
        per_seed(task, "dev"), per_seed(task, "test"))
        for task, run in runs.items()}
