"""Fine-tuning core: heads for every item kind, memorizing a synthetic task, determinism,
and bad settings refused by name."""

import numpy as np
import pytest
import torch

from ftgeo import load_model
from ftgeo.data import TaskData
from ftgeo.extract import encode
from ftgeo.finetune import FinetuneSettings, accuracy, finetune, make_batches

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dogs", "run", "fast", "and", "birds", "fly"]


def _synthetic(kind: str, n_sentences: int = 24, seed: int = 0) -> TaskData:
    """Label = a word's identity class (word), the dependent's class (pair), or whether the
    sentence holds 'cat' (sentence): learnable by any encoder."""
    rng = np.random.default_rng(seed)
    sentences = tuple(tuple(rng.choice(WORDS, size=rng.integers(3, 7))) for _ in range(n_sentences))
    items, y = [], []
    for s, sent in enumerate(sentences):
        if kind == "word":
            for w, word in enumerate(sent):
                items.append((s, w))
                y.append(WORDS.index(word) % 3)
        elif kind == "pair":
            for w in range(1, len(sent)):
                items.append((s, 0, w))
                y.append(WORDS.index(sent[w]) % 3)
        else:
            items.append((s,))
            y.append(int("cat" in sent))
    n_labels = 2 if kind == "sentence" else 3
    return TaskData("synthetic", "train", sentences, np.asarray(items), np.asarray(y),
                    tuple(str(i) for i in range(n_labels)), kind)


@pytest.mark.parametrize("kind", ["word", "pair", "sentence"])
def test_small_bert_memorizes_a_synthetic_task(tiny_bert_dir, kind):
    model = load_model(str(tiny_bert_dir))
    train = _synthetic(kind)
    result = finetune(model, train, FinetuneSettings(epochs=40, learning_rate=3e-3, batch_size=8,
                                                     seed=0, n_snapshots=2))
    batches = make_batches(train, encode(model.tokenizer, train.sentences), 0, 8, None)
    assert accuracy(result.model, batches) == 1.0
    assert result.losses[-5:].mean() < result.losses[:5].mean()


def test_same_seed_gives_bit_identical_weights(tiny_bert_dir):
    train = _synthetic("word")
    settings = FinetuneSettings(epochs=2, learning_rate=1e-3, batch_size=8, seed=3, n_snapshots=2)
    a = finetune(load_model(str(tiny_bert_dir)), train, settings).model.state_dict()
    b = finetune(load_model(str(tiny_bert_dir)), train, settings).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = finetune(load_model(str(tiny_bert_dir)), train,
                 FinetuneSettings(epochs=2, learning_rate=1e-3, batch_size=8, seed=4,
                                  n_snapshots=2)).model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", 0.0, "learning_rate must be > 0"),
    ("learning_rate", -1e-5, "learning_rate must be > 0"),
    ("epochs", 0, "epochs must be a whole number >= 1"),
    ("warmup", 1.0, r"warmup must be in \[0, 1\)"),
])
def test_bad_settings_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        FinetuneSettings(**{field: value}).validate()


def test_more_snapshots_than_steps_is_refused(tiny_bert_dir):
    train = _synthetic("sentence", n_sentences=8)
    with pytest.raises(ValueError, match=r"n_snapshots=50 is larger than the 2 training steps"):
        finetune(load_model(str(tiny_bert_dir)), train,
                 FinetuneSettings(epochs=1, batch_size=4, n_snapshots=50))
