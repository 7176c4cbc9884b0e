"""Tiny random transformer encoders of several architectures, for tests (no tests here).

:func:`build_tiny_model` trains a small tokenizer on the fly with the ``tokenizers`` library
(WordPiece, byte-level BPE or Unigram, as the real architecture uses), wraps it in the
architecture's own ``transformers`` tokenizer class, builds a randomly initialised encoder
(hidden size 32, 2 layers, 2 heads) and saves both to a folder, so that
``AutoModel.from_pretrained(folder)`` and ``AutoTokenizer.from_pretrained(folder,
use_fast=True)`` load them without the internet.

In transformers 5 every ``*TokenizerFast`` name is an alias of a ``tokenizers``-backed class
whose ``__init__`` builds the normalizer, pre-tokenizer and post-processor itself, and
``from_pretrained`` rebuilds them the same way from the saved vocabulary. So each tokenizer
is trained with exactly the pipeline its class builds, and the class is then constructed
from the trained vocabulary (and merges): what is saved is what a reload gives.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ARCHITECTURES = ("bert", "roberta", "albert", "distilbert", "electra", "deberta-v2", "mpnet")

HIDDEN, LAYERS, HEADS, INTERMEDIATE = 32, 2, 2, 64
MAX_LENGTH = 512  # usable tokens per sequence (tokenizer.model_max_length), as the real models
VOCAB_SIZE = 800  # asked of the trainers

# Special tokens in vocabulary order (ids 0, 1, ...), as the real checkpoints order them
# where that matters (RoBERTa and MPNet pad with id 1; ALBERT's Unigram has <unk> at id 1).
_SPECIALS = {
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "distilbert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "electra": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "mpnet": ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"],
    "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "albert": ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"],
    "deberta-v2": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
}

_NAMES = ["Anna", "Peter", "Maria", "John", "Sophie", "David", "Laura", "Thomas", "Emma",
          "Oliver", "Clara", "Lucas", "Nina", "Samuel", "Alice", "Robert"]
_DETS = ["the", "a", "my", "our", "their", "this", "that", "every", "some", "her", "his"]
_ADJECTIVES = ["old", "young", "small", "large", "red", "green", "blue", "happy", "tired",
               "quiet", "noisy", "careful", "strange", "beautiful", "broken", "famous",
               "ancient", "modern", "bright", "dark", "heavy", "gentle", "clever", "curious",
               "expensive", "cheap", "dangerous", "friendly", "hungry", "lonely", "wooden",
               "unbelievably long", "surprisingly simple", "rather difficult"]
_NOUNS = ["cat", "dog", "man", "woman", "child", "teacher", "student", "farmer", "doctor",
          "bird", "horse", "king", "queen", "soldier", "painter", "writer", "driver",
          "neighbour", "stranger", "committee", "programmer", "engineer", "musician",
          "baker", "sailor", "lawyer", "nurse", "pilot", "scientist", "tokenizer"]
_THINGS = ["ball", "letter", "house", "apple", "book", "car", "river", "computer", "garden",
           "answer", "cookie", "transformer", "question", "mat", "window", "bridge", "song",
           "story", "picture", "bottle", "chair", "table", "newspaper", "mountain", "island",
           "village", "kitchen", "bicycle", "umbrella", "sentence", "problem", "present",
           "ticket", "machine", "message", "recipe", "castle", "forest", "station", "market"]
_INTRANSITIVE = ["sat", "ran", "slept", "waited", "jumped", "smiled", "worked", "arrived",
                 "laughed", "disappeared", "complained", "danced", "cried", "shouted",
                 "whispered", "travelled", "returned", "stayed", "listened", "hesitated",
                 "was singing", "had finished", "will leave", "is sleeping", "has arrived"]
_TRANSITIVE = ["saw", "found", "liked", "bought", "read", "painted", "repaired", "visited",
               "understood", "forgot", "carried", "described", "represented", "ignored",
               "opened", "closed", "cleaned", "built", "sold", "stole", "watched", "wrote",
               "borrowed", "discovered", "remembered", "explained", "destroyed", "admired",
               "has broken", "will answer", "was reading", "had hidden"]
_PREPOSITIONS = ["on", "in", "near", "under", "behind", "beside", "across", "through",
                 "towards", "without", "after", "before", "during", "inside", "above"]
_ADVERBS = ["quickly", "slowly", "quietly", "happily", "suddenly", "carefully", "finally",
            "yesterday", "today", "often", "never", "always", "already", "again", "soon"]
_CONNECTIVES = ["and", "but", "because", "while", "although", "so", "when", "after"]
_ENDINGS = [".", ".", ".", "!", "?"]


def _noun_phrase(rng: random.Random, nouns: list[str]) -> str:
    if rng.random() < 0.15:
        return rng.choice(_NAMES)
    words = [rng.choice(_DETS)]
    if rng.random() < 0.5:
        words.append(rng.choice(_ADJECTIVES))
    noun = rng.choice(nouns)
    if rng.random() < 0.2:
        noun += "s"
    return " ".join([*words, noun])


def _clause(rng: random.Random) -> str:
    subject = _noun_phrase(rng, _NOUNS)
    if rng.random() < 0.5:
        parts = [subject, rng.choice(_INTRANSITIVE)]
    else:
        parts = [subject, rng.choice(_TRANSITIVE), _noun_phrase(rng, _THINGS)]
    if rng.random() < 0.5:
        parts.append(f"{rng.choice(_PREPOSITIONS)} {_noun_phrase(rng, _THINGS)}")
    if rng.random() < 0.3:
        parts.append(rng.choice(_ADVERBS))
    return " ".join(parts)


def default_corpus(n: int = 600, seed: int = 1234) -> list[str]:
    """``n`` short English sentences, the same every call (independent of the model seed).

    Mixed case and punctuation, with every word of ``"The cat sat on the mat ."`` and
    one line holding every printable ASCII character.
    """
    rng = random.Random(seed)
    # every printable ASCII character once, so that no tokenizer maps one to the unknown token
    alphabet = " ".join(chr(c) for c in range(33, 127))
    out = ["The cat sat on the mat.", "A dog barked at the cat!", alphabet]
    while len(out) < n:
        text = _clause(rng)
        if rng.random() < 0.3:
            text += f", {rng.choice(_CONNECTIVES)} {_clause(rng)}"
        text = text[0].upper() + text[1:] + rng.choice(_ENDINGS)
        if rng.random() < 0.1:
            text = f'"{text}" said {rng.choice(_NAMES)}.'
        out.append(text)
    return out


# --------------------------------------------------------------------------- tokenizers

def _wordpiece(arch: str, corpus: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = _SPECIALS[arch]
    unk = specials[3] if arch == "mpnet" else "[UNK]"
    tok = Tokenizer(models.WordPiece(unk_token=unk))
    # what BertTokenizer / MPNetTokenizer build in __init__ (lower-cased, uncased models)
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    # WordPieceTrainer (BPE underneath) numbers the "##x" pieces in hash-map order, which
    # breaks ties between merges differently from run to run (huggingface/tokenizers#1794).
    # Listing every "##x" up front as a "special" token gives them fixed ids, so training is
    # deterministic; the special flag is lost below, where only the vocabulary is passed on.
    chars = sorted({ch for text in corpus for ch in tok.normalizer.normalize_str(text)
                    if not ch.isspace()})
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=specials + ["##" + ch for ch in chars],
        continuing_subword_prefix="##", show_progress=False))
    vocab = tok.get_vocab()
    if arch == "mpnet":
        from transformers import MPNetTokenizerFast

        return MPNetTokenizerFast(vocab=vocab, do_lower_case=True, bos_token="<s>",
                                  eos_token="</s>", sep_token="</s>", cls_token="<s>",
                                  unk_token=unk, pad_token="<pad>", mask_token="<mask>")
    from transformers import BertTokenizerFast, DistilBertTokenizerFast, ElectraTokenizerFast

    cls = {"bert": BertTokenizerFast, "distilbert": DistilBertTokenizerFast,
           "electra": ElectraTokenizerFast}[arch]
    return cls(vocab=vocab, do_lower_case=True, unk_token="[UNK]", sep_token="[SEP]",
               pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")


def _byte_bpe(corpus: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizerFast

    specials = _SPECIALS["roberta"]
    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # add_prefix_space=True: needed to tokenize pre-split words (is_split_into_words=True)
    return RobertaTokenizerFast(vocab=model["vocab"], merges=merges, bos_token="<s>",
                                eos_token="</s>", sep_token="</s>", cls_token="<s>",
                                unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                add_prefix_space=True, trim_offsets=True)


def _unigram(arch: str, corpus: list[str]):
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    specials = _SPECIALS[arch]
    unk = specials[1]
    tok = Tokenizer(models.Unigram())
    # the pipelines AlbertTokenizer / DebertaV2Tokenizer build (SentencePiece-like, with "▁")
    if arch == "albert":
        tok.normalizer = normalizers.Sequence([
            normalizers.Replace("``", '"'), normalizers.Replace("''", '"'),
            normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    else:
        tok.normalizer = normalizers.Sequence([
            normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
            normalizers.Strip(left=False, right=True)])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=specials, unk_token=unk, show_progress=False))
    trained = json.loads(tok.to_str())["model"]["vocab"]
    assert [p for p, _ in trained[:len(specials)]] == specials, trained[:len(specials)]
    # UnigramTrainer gives the same pieces every run, but scores that differ in the 4th
    # decimal and so a different order; round and sort them so that ids are reproducible.
    rest = sorted(((piece, round(float(score), 2)) for piece, score in trained[len(specials):]),
                  key=lambda ps: (-ps[1], ps[0]))
    vocab = [(piece, 0.0) for piece in specials] + rest
    if arch == "albert":
        from transformers import AlbertTokenizerFast

        return AlbertTokenizerFast(vocab=vocab, do_lower_case=True, keep_accents=False,
                                   bos_token="[CLS]", eos_token="[SEP]", unk_token="<unk>",
                                   sep_token="[SEP]", pad_token="<pad>", cls_token="[CLS]",
                                   mask_token="[MASK]", add_prefix_space=True)
    from transformers import DebertaV2TokenizerFast

    return DebertaV2TokenizerFast(vocab=vocab, do_lower_case=False, split_by_punct=False,
                                  bos_token="[CLS]", eos_token="[SEP]", unk_token="[UNK]",
                                  sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                                  mask_token="[MASK]", add_prefix_space=True,
                                  unk_id=specials.index("[UNK]"))


def build_tokenizer(arch: str, corpus: list[str] | None = None):
    """The trained fast tokenizer of ``arch`` (model_max_length = MAX_LENGTH)."""
    _check_arch(arch)
    corpus = default_corpus() if corpus is None else list(corpus)
    if arch == "roberta":
        tok = _byte_bpe(corpus)
    elif arch in ("albert", "deberta-v2"):
        tok = _unigram(arch, corpus)
    else:
        tok = _wordpiece(arch, corpus)
    tok.model_max_length = MAX_LENGTH
    assert tok.is_fast
    return tok


# --------------------------------------------------------------------------- models

def build_config(arch: str, tokenizer):
    """A tiny config of ``arch`` for ``tokenizer``'s vocabulary."""
    import transformers as tf

    _check_arch(arch)
    vocab = len(tokenizer)
    pad, cls_, sep = tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id
    common = dict(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, intermediate_size=INTERMEDIATE, pad_token_id=pad)
    if arch == "bert":
        return tf.BertConfig(**common, max_position_embeddings=MAX_LENGTH, type_vocab_size=2)
    if arch == "electra":
        return tf.ElectraConfig(**common, embedding_size=16, max_position_embeddings=MAX_LENGTH,
                                type_vocab_size=2)
    if arch == "albert":
        return tf.AlbertConfig(**common, embedding_size=16, max_position_embeddings=MAX_LENGTH,
                               type_vocab_size=2, bos_token_id=cls_, eos_token_id=sep)
    if arch == "distilbert":
        return tf.DistilBertConfig(vocab_size=vocab, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS,
                                   hidden_dim=INTERMEDIATE, max_position_embeddings=MAX_LENGTH,
                                   pad_token_id=pad)
    if arch == "roberta":
        # positions start at padding_idx + 1: 2 more position embeddings than usable tokens
        return tf.RobertaConfig(**common, max_position_embeddings=MAX_LENGTH + 2,
                                type_vocab_size=1, bos_token_id=cls_, eos_token_id=sep)
    if arch == "mpnet":
        return tf.MPNetConfig(**common, max_position_embeddings=MAX_LENGTH + 2,
                              relative_attention_num_buckets=32, bos_token_id=cls_,
                              eos_token_id=sep)
    # deberta-v2, as DeBERTa-v3: relative positions only, no token type embeddings
    return tf.DebertaV2Config(**common, max_position_embeddings=MAX_LENGTH, type_vocab_size=0,
                              relative_attention=True, position_buckets=32,
                              max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
                              position_biased_input=False, norm_rel_ebd="layer_norm",
                              share_att_key=True)


def build_tiny_model(arch: str, folder: Path, *, corpus: list[str] | None = None,
                     seed: int = 0) -> Path:
    """Train a tokenizer, build a random tiny ``arch`` encoder, save both to ``folder``.

    Returns ``folder``. The weights depend only on ``seed`` (and the corpus, through the
    vocabulary size).
    """
    import torch
    from transformers import AutoModel

    folder = Path(folder)
    tokenizer = build_tokenizer(arch, corpus)
    config = build_config(arch, tokenizer)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; one of {', '.join(ARCHITECTURES)}")
