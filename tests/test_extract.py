"""Representations: word = mean of subwords, pair = concatenation, sentence = [CLS]; batching and
order never change a vector; the cache makes a second call a pure hit."""

import numpy as np
import pytest
import torch

from ftgeo import extract
from ftgeo.data import TaskData
from ftgeo.extract import cls_vectors, encode, representations, word_vectors

SENTENCES = (("The", "unbelievably", "tiny", "preposition", "sat", "on", "mats", "."),
             ("Tokenization", "splits", "words"),
             ("a",),
             ("Transformers", "re-represent", "everything", "contextually", "!", "Really", "?"))


def _hidden(model, words):
    """All hidden states for one sentence, computed directly with the encoder."""
    enc = model.tokenizer([list(words)], is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        out = model.encoder(**enc, output_hidden_states=True)
    return torch.stack(out.hidden_states)[:, 0].numpy(), enc.word_ids(0)


def _word_task(sentences, kind="word"):
    if kind == "word":
        items = [(s, w) for s, sent in enumerate(sentences) for w in range(len(sent))]
    else:
        items = [(s, 0, w) for s, sent in enumerate(sentences) for w in range(1, len(sent))]
    y = np.zeros(len(items), dtype=np.int64)
    y[::2] = 1
    return TaskData("pos", "train", tuple(sentences), np.asarray(items), y, ("A", "B"), kind)


def test_word_vector_is_mean_of_its_subword_vectors(minilm):
    words = SENTENCES[0]
    H, word_ids = _hidden(minilm, words)
    k = words.index("unbelievably")
    tokens = [t for t, w in enumerate(word_ids) if w == k]
    assert len(tokens) > 1, "the test needs a word split into several subwords"
    expected = H[:, tokens].mean(axis=1)
    got = word_vectors(minilm, [words], np.array([[0, k]]))[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert got.shape == (minilm.n_layers, minilm.n_features)


def test_pair_is_concatenation_of_head_and_dependent(minilm, store):
    words_task = _word_task(SENTENCES)
    pair_task = _word_task(SENTENCES, kind="pair")
    W = representations(minilm, words_task, store=store)
    P = representations(minilm, pair_task, store=store)
    assert P.shape == (minilm.n_layers, pair_task.n_items, 2 * minilm.n_features)
    row = {tuple(it): r for r, it in enumerate(words_task.items.tolist())}
    # two forward passes: equal up to float32 rounding (oneDNN's reductions can differ in the
    # last bits between passes when the CPU's threads are scheduled differently)
    for r, (s, h, d) in enumerate(pair_task.items.tolist()):
        np.testing.assert_allclose(P[:, r, :minilm.n_features], W[:, row[(s, h)]], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(P[:, r, minilm.n_features:], W[:, row[(s, d)]], rtol=1e-5, atol=1e-5)


def test_one_layer_is_that_layer_of_every_layer(minilm, store):
    """representations(..., layer=k) is the k-th layer of the full array, for word, pair and
    sentence items, from the same cache entry; a layer out of range is refused by name."""
    sentence_task = TaskData("trec-50", "train", tuple(SENTENCES), np.array([[0], [1]]),
                             np.array([0, 1]), ("A", "B"), "sentence")
    for data in (_word_task(SENTENCES), _word_task(SENTENCES, kind="pair"), sentence_task):
        every = representations(minilm, data, store=store)
        for k in (0, 2, -1):
            np.testing.assert_array_equal(representations(minilm, data, store=store, layer=k), every[k])
        with pytest.raises(ValueError, match=f"layer {minilm.n_layers} is out of range"):
            representations(minilm, data, store=store, layer=minilm.n_layers)


def test_sentence_is_cls_vector(minilm):
    H, _ = _hidden(minilm, SENTENCES[1])
    got = cls_vectors(minilm, [SENTENCES[1]])[:, 0]
    np.testing.assert_allclose(got, H[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batch_size_and_order_do_not_change_vectors(minilm, batch_size):
    positions = np.array([[s, w] for s, sent in enumerate(SENTENCES) for w in range(len(sent))])
    reference = word_vectors(minilm, SENTENCES, positions, batch_size=64)
    perm = np.random.default_rng(batch_size).permutation(len(SENTENCES))
    shuffled = [SENTENCES[i] for i in perm]
    inverse = np.argsort(perm)
    pos2 = np.column_stack([inverse[positions[:, 0]], positions[:, 1]])
    got = word_vectors(minilm, shuffled, pos2, batch_size=batch_size)
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-5)
    cls_ref = cls_vectors(minilm, SENTENCES, batch_size=64)
    cls_got = cls_vectors(minilm, shuffled, batch_size=batch_size)[:, inverse]
    np.testing.assert_allclose(cls_got, cls_ref, rtol=1e-4, atol=1e-5)


def test_second_call_is_a_pure_cache_hit(minilm, store):
    task = _word_task(SENTENCES)
    first = representations(minilm, task, store=store)
    before = dict(extract.COUNTERS)
    second = representations(minilm, task, store=store)
    np.testing.assert_array_equal(first, second)
    assert extract.COUNTERS["forward_batches"] == before["forward_batches"]
    assert extract.COUNTERS["cache_hits"] == before["cache_hits"] + 1


def test_cached_representations_are_what_representations_then_reads(minilm, store):
    """cache_representations (a fine-tuning snapshot's) stores what representations would
    compute, for every kind of item: the later read is a pure hit and equals a fresh pass;
    a second cache_representations does no forward pass."""
    sentence_task = TaskData("trec-50", "train", tuple(SENTENCES), np.array([[1], [0], [3]]),
                             np.array([0, 1, 0]), ("A", "B"), "sentence")
    for data in (_word_task(SENTENCES), _word_task(SENTENCES, kind="pair"), sentence_task):
        before = dict(extract.COUNTERS)
        assert extract.cache_representations(minilm, data, store=store) is None
        assert extract.COUNTERS["cache_misses"] == before["cache_misses"] + 1
        extract.cache_representations(minilm, data, store=store)
        read = representations(minilm, data, store=store)
        assert extract.COUNTERS["forward_batches"] - before["forward_batches"] == 1  # the first only
        np.testing.assert_allclose(read, representations(minilm, data, store=False), rtol=1e-5, atol=1e-5)


def test_word_without_subwords_still_gets_a_vector(minilm):
    words = ("zero", "\u200b", "width")
    enc = encode(minilm.tokenizer, [words])[0]
    assert set(enc.word_ids) - {-1} == {0, 1, 2}
    X = word_vectors(minilm, [words], np.array([[0, 0], [0, 1], [0, 2]]))
    assert np.isfinite(X).all()


def test_sentence_pair_encodes_both_sentences(minilm):
    a = cls_vectors(minilm, [("A", "cat", "sat", ".")], [("A", "dog", "ran", ".")])
    b = cls_vectors(minilm, [("A", "cat", "sat", ".")], [("Nothing", "alike", "here", ".")])
    assert not np.allclose(a[-1], b[-1])


def test_too_long_sentence_is_refused_by_name(minilm):
    with pytest.raises(ValueError, match=r"sentence 1 has \d+ subword tokens, more than the model's 512"):
        encode(minilm.tokenizer, [("short",), ("word",) * 600], max_length=512)


def test_positions_outside_the_sentence_are_refused(minilm):
    with pytest.raises(ValueError, match=r"outside their sentences"):
        word_vectors(minilm, [("two", "words")], np.array([[0, 5]]))


def test_token_vectors_are_every_content_token_counted_against_the_tokenizer(minilm, store):
    """Isotropy's vectors: one per subword token of the text, [CLS] and [SEP] left out,
    each equal to the encoder's own hidden state at that position."""
    second = [("A", "second", "sentence"), ("b",), ("c", "d"), ("Why", "?")]
    for pairs in (None, second):
        X, ids, sentence = extract.token_representations(minilm, SENTENCES, pairs, store=store,
                                                         batch_size=3)
        tokenizer = minilm.tokenizer
        expected = []
        for k, words in enumerate(SENTENCES):
            expected += tokenizer(list(words), is_split_into_words=True,
                                  add_special_tokens=False)["input_ids"]
            if pairs is not None:
                expected += tokenizer(list(pairs[k]), is_split_into_words=True,
                                      add_special_tokens=False)["input_ids"]
        assert ids.tolist() == expected
        assert X.shape == (minilm.n_layers, len(expected), minilm.n_features)
        assert not set(ids.tolist()) & {tokenizer.cls_token_id, tokenizer.sep_token_id,
                                        tokenizer.pad_token_id}
        H, _ = _hidden(minilm, SENTENCES[0]) if pairs is None else (None, None)
        if pairs is None:  # the first sentence's tokens are its hidden states without [CLS]/[SEP]
            n = int((sentence == 0).sum())
            np.testing.assert_allclose(X[:, :n], H[:, 1:-1], rtol=1e-4, atol=1e-4)
        again = extract.token_representations(minilm, SENTENCES, pairs, store=store)
        np.testing.assert_array_equal(again[0], X)


def test_pooling_by_a_matrix_product_is_the_sum_index_add_gives(monkeypatch):
    """The GPU's pooling (a 0/1 matrix times the token vectors, in a fixed order) gives the
    CPU's means and gradients."""
    import torch

    from ftgeo import extract

    g = torch.Generator().manual_seed(0)
    H = torch.randn(3, 2, 7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([[-1, 0, 0, 1, 2, -1, -1], [-1, 3, 4, 4, 4, 5, -1]])
    means = extract.pool_words(H, rows, 6)
    (grad,) = torch.autograd.grad(means.square().sum(), H)
    monkeypatch.setattr(extract, "_POOL_BY_MATMUL", True)
    again = extract.pool_words(H, rows, 6)
    (grad2,) = torch.autograd.grad(again.square().sum(), H)
    torch.testing.assert_close(again, means)
    torch.testing.assert_close(grad2, grad)
    torch.testing.assert_close(means[1, 4], H[1, 1, 2:5].mean(0))
