"""Layer-wise representations of the probed items, all layers in one forward pass.

* a **word** is the mean of its subword vectors;
* a **pair** (head, dependent) is the concatenation of its two word vectors;
* a **sentence** (or a sentence pair, encoded together) is its ``[CLS]`` vector.

Layer 0 is the embedding layer, layer ``l`` the output of transformer layer ``l``. Sentences
go through the model in length-sorted batches with no gradients; results are cached in
the artifact store, keyed by the model's fingerprint and the exact sentences and words,
so POS and DEP (same PUD sentences) share one forward pass, and a second run does none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._util import canonical_json, check, progress, sha256_text
from .data import TaskData
from .models import LoadedModel, accepts_token_types, encoder_device
from .store import Store

log = logging.getLogger(__name__)

EXTRACT_VERSION = 1  # bump when the computation changes, so old cache entries are not reused

#: How much work this process did: tests and the pipeline read it to prove a run was a
#: pure cache hit ("forward passes: 0").
COUNTERS = {"forward_batches": 0, "forward_sentences": 0, "cache_hits": 0, "cache_misses": 0}


@dataclass(frozen=True)
class Encoded:
    """One tokenized sentence (or pair): ids, segment ids, and the word of each token."""

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    word_ids: tuple[int, ...]  # word index in the first sentence, -1 for other tokens


def encode(tokenizer, sentences: Sequence[Sequence[str]],
           second: Sequence[Sequence[str]] | None = None, *, max_length: int = 512
           ) -> list[Encoded]:
    """Tokenize word lists (and optional second sentences) with special tokens.

    A word that the tokenizer maps to no subword at all (a lone control or zero-width
    character) is replaced by the unknown token, so that every word gets a vector.
    Raises ``ValueError`` naming the sentence when it is longer than ``max_length``.
    """
    sentences = [list(s) for s in sentences]
    pairs = None if second is None else [list(s) for s in second]
    batch = tokenizer(sentences, pairs, is_split_into_words=True, add_special_tokens=True,
                      truncation=False, return_attention_mask=False, return_token_type_ids=True)
    out = []
    for i in range(len(sentences)):
        word_ids = batch.word_ids(i)
        seq_ids = batch.sequence_ids(i)
        ids = batch["input_ids"][i]
        present = {w for w, s in zip(word_ids, seq_ids, strict=True) if s == 0 and w is not None}
        if len(present) < len(sentences[i]):
            fixed = [w if k in present else tokenizer.unk_token for k, w in enumerate(sentences[i])]
            log.debug("sentence %d: %d word(s) had no subword; replaced by %s", i,
                      len(sentences[i]) - len(present), tokenizer.unk_token)
            one = tokenizer([fixed], None if pairs is None else [pairs[i]],
                            is_split_into_words=True, add_special_tokens=True, truncation=False,
                            return_attention_mask=False, return_token_type_ids=True)
            word_ids, seq_ids, ids = one.word_ids(0), one.sequence_ids(0), one["input_ids"][0]
            batch_tt = one["token_type_ids"][0]
        else:
            batch_tt = batch["token_type_ids"][i]
        if len(ids) > max_length:
            raise ValueError(f"sentence {i} has {len(ids)} subword tokens, more than the model's "
                             f"{max_length} positions; drop or split it")
        out.append(Encoded(tuple(ids), tuple(batch_tt),
                           tuple(-1 if (w is None or s != 0) else w
                                 for w, s in zip(word_ids, seq_ids, strict=True))))
    return out


def batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (longest first).

    >>> [b.tolist() for b in batches([3, 9, 1, 7], 2)]
    [[1, 3], [0, 2]]
    """
    check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _collate(encoded: Sequence[Encoded], pad_id: int, *, token_types: bool = True
             ) -> dict[str, torch.Tensor]:
    """Padded model inputs; ``token_types=False`` leaves out ``token_type_ids`` (a model
    without segment ids: :func:`ftgeo.models.accepts_token_types`)."""
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(encoded), width), dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for r, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[r, :n] = torch.tensor(e.input_ids)
        types[r, :n] = torch.tensor(e.token_type_ids)
        mask[r, :n] = 1
    if not token_types:
        return {"input_ids": ids, "attention_mask": mask}
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def forward_batches(model: LoadedModel, encoded: Sequence[Encoded], *, batch_size: int = 32,
                    hidden_states: bool = True, desc: str = "forward"
                    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Run the encoder over length-sorted batches.

    Yields ``(index, H)``: the sentence indices of the batch and, with ``hidden_states``,
    a tensor of shape (n_layers, batch, n_tokens, n_features); otherwise the last layer
    of shape (batch, n_tokens, n_features). The batches go to the encoder's device; H comes
    back on the CPU.
    """
    pad_id = model.tokenizer.pad_token_id or 0
    groups = batches([len(e.input_ids) for e in encoded], batch_size)
    types = accepts_token_types(model.encoder)
    device = encoder_device(model.encoder)
    with torch.inference_mode():
        for index in progress(groups, desc=desc, unit="batch"):
            inputs = _collate([encoded[i] for i in index], pad_id, token_types=types)
            if device.type != "cpu":
                inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
            out = model.encoder(**inputs, output_hidden_states=hidden_states, return_dict=True)
            COUNTERS["forward_batches"] += 1
            COUNTERS["forward_sentences"] += len(index)
            H = torch.stack(out.hidden_states) if hidden_states else out.last_hidden_state
            yield index, H.cpu()  # on the CPU already: the same tensor


def word_vectors(model: LoadedModel, sentences: Sequence[Sequence[str]], positions: np.ndarray,
                 *, batch_size: int = 32) -> np.ndarray:
    """Mean-of-subwords vectors of the words at ``positions``, at every layer.

    Parameters
    ----------
    positions : ndarray of shape (n_words, 2) of (sentence, word) indices, no duplicates

    Returns
    -------
    ndarray of shape (n_layers, n_words, n_features), float32
    """
    positions = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    needed = sorted(set(positions[:, 0].tolist()))
    row_of = {(int(s), int(w)): r for r, (s, w) in enumerate(positions)}
    check(len(row_of) == len(positions), "positions must not repeat a (sentence, word) pair")
    encoded = encode(model.tokenizer, [sentences[s] for s in needed],
                     max_length=model.max_length)
    # For every token of every needed sentence: the output row it is pooled into, or -1.
    token_rows = []
    for s, e in zip(needed, encoded, strict=True):
        token_rows.append(np.asarray([row_of.get((s, w), -1) if w >= 0 else -1
                                      for w in e.word_ids], dtype=np.int64))
    counts = np.bincount(np.concatenate(token_rows)[np.concatenate(token_rows) >= 0],
                         minlength=len(positions))
    missing = np.flatnonzero(counts == 0)
    check(len(missing) == 0, f"{len(missing)} requested words are outside their sentences, e.g. "
          f"(sentence, word) = {tuple(positions[missing[0]]) if len(missing) else None}")
    out = torch.zeros((model.n_layers, len(positions), model.n_features), dtype=torch.float32)
    for index, H in forward_batches(model, encoded, batch_size=batch_size, desc="words"):
        rows = token_row_matrix([token_rows[i] for i in index], H.shape[2])
        # a word's subwords are all in its sentence's batch, so the batch mean is the mean
        present, local = torch.unique(rows[rows >= 0], return_inverse=True)
        rows[rows >= 0] = local
        out[:, present] = pool_words(H.float(), rows, len(present))
    return out.numpy()


def token_row_matrix(token_rows: Sequence[np.ndarray], width: int) -> torch.Tensor:
    """Stack per-sentence token -> row arrays into a (batch, width) tensor padded with -1."""
    rows = torch.full((len(token_rows), width), -1, dtype=torch.long)
    for r, tr in enumerate(token_rows):
        rows[r, : len(tr)] = torch.from_numpy(np.asarray(tr, dtype=np.int64))
    return rows


def pool_words(H: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Mean of the subword vectors of each word (differentiable; used by fine-tuning too).

    Parameters
    ----------
    H : tensor of shape (..., batch, n_tokens, n_features)
    rows : tensor of shape (batch, n_tokens): the word (0..n_rows-1) each token belongs
        to, -1 for tokens that belong to no requested word

    Returns
    -------
    tensor of shape (..., n_rows, n_features)
    """
    sel = rows >= 0
    target = rows[sel]
    if H.device.type == "cpu" and not _POOL_BY_MATMUL:
        out = torch.zeros((*H.shape[:-3], n_rows, H.shape[-1]), dtype=H.dtype, device=H.device)
        out = out.index_add(-2, target, H[..., sel, :])
    else:
        # on a GPU, index_add adds with atomics in no fixed order, so two runs would differ in
        # the last bits; a 0/1 matrix times the token vectors is the same sum, in a fixed order
        onehot = torch.zeros((n_rows, target.numel()), dtype=H.dtype, device=H.device)
        onehot[target, torch.arange(target.numel(), device=H.device)] = 1
        out = onehot @ H[..., sel, :]
    counts = torch.bincount(target, minlength=n_rows).clamp(min=1).to(H.dtype)
    return out / counts[:, None]


#: Pool by the 0/1-matrix product on the CPU too (tests compare the two ways).
_POOL_BY_MATMUL = False


def cls_vectors(model: LoadedModel, sentences: Sequence[Sequence[str]],
                second: Sequence[Sequence[str]] | None = None, *, batch_size: int = 32
                ) -> np.ndarray:
    """The ``[CLS]`` vector of every sentence (or sentence pair), at every layer.

    Returns ndarray of shape (n_layers, n_sentences, n_features), float32.
    """
    encoded = encode(model.tokenizer, sentences, second,
                     max_length=model.max_length)
    out = torch.zeros((model.n_layers, len(encoded), model.n_features), dtype=torch.float32)
    for index, H in forward_batches(model, encoded, batch_size=batch_size, desc="sentences"):
        out[:, torch.from_numpy(index)] = H[:, :, 0].float()
    return out.numpy()


def _content_masks(tokenizer, encoded: Sequence[Encoded]) -> list[np.ndarray]:
    """Per sentence, True for the tokens that stand for text: not [CLS], [SEP], <s>, </s>,
    padding or a mask token (the unknown token stands for text and is kept)."""
    special = np.array(sorted(set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}))
    return [~np.isin(np.asarray(e.input_ids), special) for e in encoded]


def token_vectors(model: LoadedModel, sentences: Sequence[Sequence[str]],
                  second: Sequence[Sequence[str]] | None = None, *, batch_size: int = 32
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The contextual vector of every token of every sentence (or sentence pair), at every
    layer, with the special tokens and padding left out: the vectors Rajaee & Pilehvar
    (2021) measure isotropy on.

    Returns ``(X, token_ids, sentence)``: ndarray of shape (n_layers, n_tokens, n_features),
    float32, in sentence order then token order; the id of each token; and the sentence it
    comes from.
    """
    encoded = encode(model.tokenizer, sentences, second,
                     max_length=model.max_length)
    keep = _content_masks(model.tokenizer, encoded)
    offsets = np.cumsum([0] + [int(k.sum()) for k in keep])
    out = torch.zeros((model.n_layers, int(offsets[-1]), model.n_features), dtype=torch.float32)
    for index, H in forward_batches(model, encoded, batch_size=batch_size, desc="tokens"):
        for r, i in enumerate(index):
            k = torch.from_numpy(keep[i])
            out[:, offsets[i]:offsets[i + 1]] = H[:, r, :len(k)][:, k].float()
    ids = np.concatenate([np.asarray(e.input_ids, dtype=np.int64)[k]
                          for e, k in zip(encoded, keep, strict=True)])
    sentence = np.repeat(np.arange(len(encoded)), np.diff(offsets))
    return out.numpy(), ids, sentence


def token_representations(model: LoadedModel, sentences: Sequence[Sequence[str]],
                          second: Sequence[Sequence[str]] | None = None, *,
                          store: Store | None | bool = None, batch_size: int = 32
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`token_vectors`, cached in the store by the model's fingerprint and the text."""
    if store is None:
        store = Store()
    if store is False:
        return token_vectors(model, sentences, second, batch_size=batch_size)
    parts = {"what": "tokens", "version": EXTRACT_VERSION, "model": model.spec.fingerprint,
             "text": sha256_text(canonical_json([[list(s) for s in sentences],
                                                 None if second is None else
                                                 [list(s) for s in second]]))}

    def build():
        log.info("token vectors (%s): forward pass over %d sentences", model.spec.name,
                 len(sentences))
        X, ids, sentence = token_vectors(model, sentences, second, batch_size=batch_size)
        return {"X": X, "token_ids": ids, "sentence": sentence}, {"model": model.spec.name}

    entry, _ = store.get_or_build("tokens", parts, build)
    return tuple(np.asarray(entry[k]) for k in ("X", "token_ids", "sentence"))


def representations(model: LoadedModel, data: TaskData, *, store: Store | None | bool = None,
                    batch_size: int = 32, layer: int | None = None) -> np.ndarray:
    """The representation of every item of ``data`` at every layer (or at one).

    Parameters
    ----------
    model : a loaded model (:func:`ftgeo.models.load_model`)
    data : one split of a task (:func:`ftgeo.data.load_task`)
    store : the artifact cache (default: ``Store()``); ``False`` computes without caching
    batch_size : sentences per forward batch (does not change any vector)
    layer : None for every layer; a layer index (negative from the top) for that layer's
        matrix alone, which spares gathering the items of every layer (for a DEP training
        set, about 4 s of a chapter's read of one snapshot)

    Returns
    -------
    X : ndarray of shape (n_layers, n_items, n_features), float32, or (n_items, n_features)
        with ``layer``; for a pair task n_features is twice the model's hidden size (head
        vector, then dependent vector).
    """
    M, pos = _stored_matrix(model, data, store, batch_size)
    if layer is not None:
        check(-len(M) <= layer < len(M), f"layer {layer} is out of range for {len(M)} layers")
        M = M[layer][None]
    if data.item_kind == "sentence":
        X = M[:, data.items[:, 0]]
    else:
        X = M[:, _position_rows(pos, data.items, 1)]
        if data.item_kind == "pair":
            X = np.concatenate([X, M[:, _position_rows(pos, data.items, 2)]], axis=2)
    return X if layer is None else X[0]


def cache_representations(model: LoadedModel, data: TaskData, *, store: Store | None = None,
                          batch_size: int = 32) -> None:
    """Compute and store ``data``'s representations (a forward pass unless they are in the
    store already) without gathering them per item: what a fine-tuning snapshot needs, for
    which the gathered copy (7 layers x 15,000 POS words x 384 here) was about a second of
    every snapshot's eight, and unread."""
    _stored_matrix(model, data, store, batch_size)


def _stored_matrix(model: LoadedModel, data: TaskData, store: Store | None | bool,
                   batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The stored matrix of ``data`` (one row per sentence, or per distinct word position),
    computed and stored if absent, and the word positions (None for sentences)."""
    if store is None:
        store = Store()
    parts, pos = _entry_parts(model, data)

    def build() -> np.ndarray:
        if data.item_kind == "sentence":
            return cls_vectors(model, data.sentences, data.second, batch_size=batch_size)
        return word_vectors(model, data.sentences, pos, batch_size=batch_size)

    return _cached(store, parts, data, model, build), pos


def _entry_parts(model: LoadedModel, data: TaskData) -> tuple[dict, np.ndarray | None]:
    """The store key parts of ``data``'s representations, and for word and pair items the
    sorted unique (sentence, word) positions the stored matrix has one row for."""
    if data.item_kind == "sentence":
        return {"what": "cls", "version": EXTRACT_VERSION, "model": model.spec.fingerprint,
                "text": sha256_text(canonical_json([data.sentences, data.second]))}, None
    cols = [1] if data.item_kind == "word" else [1, 2]
    pos = np.unique(np.concatenate([data.items[:, [0, c]] for c in cols]), axis=0)
    return {"what": "word-mean", "version": EXTRACT_VERSION, "model": model.spec.fingerprint,
            "text": sha256_text(canonical_json(data.sentences)),
            "positions": sha256_text(canonical_json(pos.tolist()))}, pos


def _position_rows(pos: np.ndarray, items: np.ndarray, column: int) -> np.ndarray:
    """Row in ``pos`` of each item's word in ``items[:, column]`` (pos is sorted: binary search)."""
    stride = 1 + int(max(pos[:, 1].max(), items[:, column].max()))
    key = pos[:, 0] * stride + pos[:, 1]
    return np.searchsorted(key, items[:, 0] * stride + items[:, column])


def store_subset(model: LoadedModel, data: TaskData, X: np.ndarray, store: Store) -> bool:
    """Store ``X``, the representations of ``data``'s items (as :func:`representations`
    returns them), under ``data``'s key, so that a later ``representations(model, data)``
    is a cache hit. For a subset of a set whose representations are at hand, such as
    :meth:`TaskData.sample`, this replaces a forward pass by slicing: a word's vector does
    not depend on which other sentences are in the set. Returns False if the entry existed.
    Every sentence of ``data`` must hold an item.
    """
    parts, pos = _entry_parts(model, data)
    if store.load("representations", parts) is not None:
        return False
    X = np.asarray(X, dtype=np.float32)
    check(X.ndim == 3 and X.shape[1] == data.n_items,
          f"X must have shape (n_layers, {data.n_items}, n_features), got {X.shape}")
    if data.item_kind == "sentence":
        check(np.array_equal(np.sort(data.items[:, 0]), np.arange(len(data.sentences))),
              "every sentence of data must be one item")
        entry = np.empty_like(X)
        entry[:, data.items[:, 0]] = X
    else:
        width = X.shape[2] // (1 if data.item_kind == "word" else 2)
        entry = np.full((X.shape[0], len(pos), width), np.nan, dtype=np.float32)
        entry[:, _position_rows(pos, data.items, 1)] = X[:, :, :width]
        if data.item_kind == "pair":
            entry[:, _position_rows(pos, data.items, 2)] = X[:, :, width:]
        check(not np.isnan(entry).any(), "X does not cover every position of data")
    store.save("representations", parts, {"X": entry},
               {"model": model.spec.name, "source": model.spec.source, "task": data.task,
                "split": data.split, "derived": "sliced from a superset"})
    return True


def _cached(store, parts, data: TaskData, model: LoadedModel, build) -> np.ndarray:
    label = f"{data.task}/{data.split} ({model.spec.name})"
    if store is False:
        COUNTERS["cache_misses"] += 1
        return build()

    def compute():
        log.info("representations of %s: forward pass over %d sentences", label,
                 len(data.sentences))
        return {"X": build()}, {"model": model.spec.name, "source": model.spec.source,
                                "task": data.task, "split": data.split}

    entry, cached = store.get_or_build("representations", parts, compute)
    COUNTERS["cache_hits" if cached else "cache_misses"] += 1
    if cached:
        log.info("representations of %s: from cache, no forward pass", label)
    return np.asarray(entry["X"])
