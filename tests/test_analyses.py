"""ftgeo.analyses: the isotropy and CKA chapters' computations, on hand-made data and runs
whose answers are known by construction."""

import numpy as np
import pandas as pd
import pytest

from ftgeo import analyses, cka, claims, results
from ftgeo.data import TaskData

INFO = results.ModelInfo("toy", 3, 16)


def word_task(n_sentences=40, words=4, seed=0, split="train"):
    """Word items: sentence s holds words w0..w3; the label is the word's position."""
    vocab = ["the", "cat", "sat", "on", "mat", "dog"]
    rng = np.random.default_rng(seed)
    sentences = tuple(tuple(vocab[i] for i in rng.integers(0, len(vocab), words)) for _ in range(n_sentences))
    items = np.array([[s, w] for s in range(n_sentences) for w in range(words)])
    return TaskData("toy", split, sentences, items, items[:, 1].copy(), ("p0", "p1", "p2", "p3"), "word")


class FakeRun:
    """A fine-tuned run whose states are given arrays: {step: (n_layers, n_items, d)} per split."""

    def __init__(self, states, dropping=None):
        self.states = states
        self.steps = np.array(sorted(next(iter(states.values()))))
        self.dropping = dropping

    @property
    def final_step(self):
        return int(self.steps[-1])

    def representations(self, d, step):
        return self.states[d.split][step]

    def evaluate_dropping(self, d):
        return np.asarray(self.dropping, dtype=float)


def layers_for(d, rng, n_layers=3, dim=16, stretch=1.0):
    """Representations that separate the labels (one-hot of the label in the first
    dimensions), plus noise; ``stretch`` scales one extra direction by that factor."""
    X = rng.normal(size=(n_layers, d.n_items, dim)) * 0.3
    X[:, np.arange(d.n_items), d.y] += 3.0
    X[:, :, -1] *= stretch
    return X


def toy_study(train, test, arrays, **settings):
    """Chapter 8 on one task "toy" whose run holds ``arrays`` ({split: {step: X}})."""
    data = {"toy": {"train": train, "test": test}}
    return analyses.isotropy_study(
        {"toy": FakeRun(arrays)}, data, ["toy"], vectors="items", max_items=None, n_clusters=2,
        **settings
    )


@pytest.fixture(scope="module")
def isotropy_setup():
    rng = np.random.default_rng(0)
    train, test = word_task(split="train"), word_task(20, seed=1, split="test")
    states = {
        s: {0: layers_for(d, rng), 5: layers_for(d, rng, stretch=40.0)}
        for s, d in (("train", train), ("test", test))
    }
    return toy_study(train, test, states, n_removed=1, n_top=3, removed_grid=[1, 2])


# -- what each item stands for ------------------------------------------------------------------
def test_item_words_and_frequency_count_the_training_sentences():
    d = TaskData(
        "t",
        "train",
        (("The", "cat"), ("the", "dog", "the")),
        np.array([[0, 0], [0, 1], [1, 1]]),
        np.array([0, 1, 1]),
        ("a", "b"),
        "word",
    )
    assert analyses.item_words(d).tolist() == ["the", "cat", "dog"]
    name, values = analyses.surface_property(d)
    assert name == "log frequency"
    np.testing.assert_allclose(values, np.log([3, 1, 1]))  # "the" three times, case folded


def test_pairs_stand_for_their_dependent_and_sentences_for_their_length():
    pairs = TaskData("t", "train", (("a", "b", "c"),), np.array([[0, 0, 2]]), np.array([0]), ("x",), "pair")
    assert analyses.item_words(pairs).tolist() == ["c"]
    sents = TaskData(
        "t",
        "train",
        (("a", "b"), ("c",)),
        np.array([[0], [1]]),
        np.array([0, 0]),
        ("x",),
        "sentence",
        second=(("d",), ("e", "f", "g")),
    )
    assert analyses.item_words(sents) is None
    name, values = analyses.surface_property(sents)
    assert name == "log length"
    np.testing.assert_allclose(values, np.log([3, 4]))  # both sentences of a pair


def test_sentence_holdout_never_splits_a_sentence():
    d = word_task(50)
    fit, dev = analyses.sentence_holdout(d.items, 0.2, seed=3)
    assert len(fit) + len(dev) == d.n_items and not set(fit) & set(dev)
    assert not set(d.items[fit, 0]) & set(d.items[dev, 0])
    assert len(np.unique(d.items[dev, 0])) == 10  # 20% of 50 sentences
    with pytest.raises(ValueError, match="fraction"):
        analyses.sentence_holdout(d.items, 1.5)


def test_probe_accuracy_is_perfect_on_separable_data_and_nan_with_one_label():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    X = rng.normal(size=(80, 5)) + 4 * y[:, None]
    fit, dev = np.arange(0, 80, 2), np.arange(1, 80, 2)
    assert analyses.probe_accuracy(X, X, y, y, fit, dev) == 1.0
    assert np.isnan(analyses.probe_accuracy(X, X, np.zeros(80, int), y, fit, dev))


def test_enhancement_removes_the_dominant_direction_learned_on_the_fitting_rows():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 6))
    X[:, 0] *= 50
    out = analyses.enhancement_variants(X, X[:50], np.arange(100), n_removed=1, n_clusters=2)
    assert set(out) == set(analyses.VARIANTS)
    assert np.array_equal(out["none"][0], X)
    assert out["top D removed"][0][:, 0].std() < 1.0 < out["random D removed"][0].std(axis=0).max()
    assert out["top D removed"][1].shape == (50, 6)


def test_layer_isotropy_counts_elongated_directions_and_follows_the_property():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 50))  # elongated: >= 10x the isotropic share 1/50
    prop = rng.normal(size=400)
    X[:, 3] = 30 * prop  # one direction holds most of the variance, and it is the property
    words = np.array(["a", "b"])[rng.integers(0, 2, 400)]
    m, content, shares = analyses.layer_isotropy(X, prop=prop, words=words, n_clusters=2, n_top=3)
    assert m["elongated"] == 1 and m["directions for 50%"] == 1
    assert content["max |r|"] > 0.999  # the top direction is the property
    assert content["word share by direction"][0] < 0.05  # and not the word
    assert shares.sum() == pytest.approx(1.0)
    m0, c0, _ = analyses.layer_isotropy(
        rng.normal(size=(400, 50)), prop=prop, words=None, n_clusters=2, n_top=3
    )
    assert m0["elongated"] == 0 and np.isnan(c0["word share"]) and c0["max |r|"] < 0.3


# -- the paper's evaluation of isotropy enhancement ---------------------------------------------
def anisotropic(labels_on_top, n=2400, d=16, seed=0):
    """Two labels in a narrow cone: every vector shares a large offset, and one dominant
    direction holds most of the variance. ``labels_on_top``: the labels lie on that dominant
    direction; otherwise it is noise and the labels lie on a quiet direction."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)) * 0.5 + 100.0
    X[:, 0] += 30.0 * (2 * y - 1) if labels_on_top else 300.0 * rng.normal(size=n)
    if not labels_on_top:
        X[:, 1] += 1.0 * (2 * y - 1)
    return X, y


def enhanced_accuracy(labels_on_top, seed=0):
    X, y = anisotropic(labels_on_top, seed=seed)
    fit, dev = np.arange(1500), np.arange(1500, 1800)
    return analyses.enhancement_accuracy(X[:1800], X[1800:], y[:1800], y[1800:], fit, dev,
                                         n_removed=1, n_clusters=2, seed=seed)


@pytest.mark.parametrize("seed", [0, 1])
def test_enhancement_rescues_a_classifier_on_a_narrow_cone_whose_labels_lie_off_its_axis(seed):
    """The evaluation can find that enhancement helps: the classifier, fed the vectors as they
    are (not standardized), cannot find the labels under the offset and the dominant noise
    direction within its 10 epochs; every enhancement removes the offset, and it can."""
    acc = enhanced_accuracy(labels_on_top=False, seed=seed)
    assert list(acc) == list(analyses.ENHANCEMENTS)
    assert acc["none"] < 0.7
    assert min(acc[m] for m in analyses.ENHANCEMENTS[1:]) > 0.9


@pytest.mark.parametrize("seed", [0, 1])
def test_enhancement_hurts_when_the_dominant_direction_carries_the_labels(seed):
    """The twin: the labels lie on the dominant direction (as the paper finds after
    fine-tuning), so removing it globally, or the cluster means that encode it, costs them."""
    acc = enhanced_accuracy(labels_on_top=True, seed=seed)
    assert acc["none"] > 0.99 and acc["zero-mean"] > 0.99  # the mean alone carries nothing
    assert acc["global"] < 0.6 and acc["cluster zero-mean"] < 0.6


def test_the_paper_classifier_refuses_bad_settings_by_name_and_needs_two_labels():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), np.repeat([0, 1], 30)
    fit, dev = np.arange(0, 60, 2), np.arange(1, 60, 2)
    assert np.isnan(analyses.classifier_accuracies({"X": X}, {"X": X}, np.zeros(60, int), y, fit, dev)["X"])
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['lr'\]"):
        analyses.classifier_accuracies({"X": X}, {"X": X}, y, y, fit, dev, classifier={"lr": 0.1})
    with pytest.raises(ValueError, match="epochs must be an integer"):
        analyses.classifier_settings({"epochs": 0})
    with pytest.raises(ValueError, match="learning_rate"):
        analyses.classifier_settings({"learning_rate": -1.0})
    with pytest.raises(ValueError, match="same representations"):
        analyses.classifier_accuracies({"X": X}, {"Y": X}, y, y, fit, dev)
    with pytest.raises(ValueError, match="n_inits"):
        analyses.classifier_accuracies({"X": X}, {"X": X}, y, y, fit, dev, n_inits=0)
    assert analyses.classifier_settings() == analyses.ENHANCEMENT_CLASSIFIER
    assert analyses.classifier_settings({"learning_rate": 3e-5})["learning_rate"] == 3e-5  # the code's


# -- chapter 8 ------------------------------------------------------------------------------------
def test_isotropy_study_sees_the_stretched_direction_of_the_finetuned_state(isotropy_setup):
    study = isotropy_setup
    assert len(study.measures) == 6  # 2 states x 3 layers
    S = study.summary().loc["toy"]
    assert S["elongated_finetuned"] > S["elongated_pretrained"]
    assert S["isoscore_finetuned"] < S["isoscore_pretrained"]
    facts = study.facts()
    assert facts["more_elongated"] == 1 and facts["isoscore_down"] == 1
    # the stretched direction is noise: removing it costs the probe nothing, no more than a random one
    assert S["probe_finetuned_none"] == S["probe_finetuned_top D removed"] == 1.0
    assert facts["top_matters"] == 0 and facts["cost_post"] == "0.000"


def test_top_directions_matter_when_they_carry_the_labels():
    """The twin: the labels live on the dominant direction, so removing it costs accuracy and
    removing a random direction does not."""
    rng = np.random.default_rng(5)
    train, test = word_task(split="train"), word_task(20, seed=1, split="test")

    def labelled(d):
        X = rng.normal(size=(2, d.n_items, 16)) * 0.3
        X[:, :, 0] += 20.0 * (d.y % 2)  # the 4 labels at the corners of a square spanned by
        X[:, :, 1] += 20.0 * (d.y // 2)  # the two dominant directions
        return X

    states = {s: {0: labelled(d), 5: labelled(d)} for s, d in (("train", train), ("test", test))}
    study = toy_study(train, test, states, n_removed=2, n_top=3, removed_grid=[2])
    S = study.summary().loc["toy"]
    assert S["probe_finetuned_none"] > 0.95 and S["probe_finetuned_top D removed"] < 0.6
    assert S["probe_finetuned_random D removed"] > 0.9
    assert study.facts()["top_matters"] == 1


def test_a_degenerate_layer_and_a_one_sentence_split_give_gaps_not_errors():
    rng = np.random.default_rng(6)
    train = word_task(1, split="train")  # one sentence: no held-out sentence to choose a probe on
    test = word_task(5, seed=1, split="test")
    states = {
        s: {0: layers_for(d, rng), 5: layers_for(d, rng)} for s, d in (("train", train), ("test", test))
    }
    states["train"][5][0] = 1.0  # the finetuned embedding layer is constant
    study = toy_study(train, test, states, n_removed=1, n_top=2, removed_grid=[1])
    assert len(study.measures) == 5  # 3 pretrained layers + 2 finetuned ones
    assert study.probes["accuracy"].isna().all() and study.curves.empty
    assert np.isnan(study.summary().loc["toy", "probe_finetuned_none"])


def test_isotropy_record_validates_and_round_trips(isotropy_setup, tmp_path):
    study = isotropy_setup
    record = study.record(model="toy", fingerprint="f", model_info=INFO, max_sentences=0, settings=None)
    path = results.write_record(tmp_path, record)
    again = results.read_record(path)
    assert again == record
    assert again.tasks["toy"].n_removed == 1 and again.tasks["toy"].property == "log frequency"
    table = claims.for_chapter(record)  # the claims on chapter 8 alone, judged on this record
    assert list(table.index) == [c.id for c in claims.CLAIMS if c.reads == ("08_isotropy",)]
    assert table.loc["rp-elongated", "ours"].startswith(
        "more elongated directions after fine-tuning on 1 of 1"
    )


def test_isotropy_record_holds_every_fine_tuning_seed(isotropy_setup, tmp_path):
    """A further seed's study measures the fine-tuned state alone, with the ridge probes at
    the last layer only and no removal curves; the record then holds each seed's last-layer
    figures, the first seed's equal to its own fields."""
    rng = np.random.default_rng(5)
    train, test = word_task(split="train"), word_task(20, seed=1, split="test")
    other = {split: {0: layers_for(d, rng), 5: layers_for(d, rng, stretch=1.0)}  # nothing stretched
             for split, d in (("train", train), ("test", test))}
    seed2 = toy_study(train, test, other, n_removed=1, n_top=3, removed_grid=[1, 2],
                      states=("finetuned",), probes="last", layers="last")
    assert set(seed2.measures["state"]) == {"finetuned"} and seed2.curves.empty
    assert set(seed2.measures["layer"]) == set(seed2.content["layer"]) == {2}
    every = toy_study(train, test, other, n_removed=1, n_top=3, states=("finetuned",), probes="last")
    assert set(every.measures["layer"]) == {0, 1, 2}
    pd.testing.assert_frame_equal(seed2.last_layer(), every.last_layer())
    assert seed2.finetuned_last() == every.finetuned_last()
    assert set(seed2.probes["layer"]) == {2} and set(seed2.probes["variant"]) == set(analyses.VARIANTS)
    bare = toy_study(train, test, other, n_removed=1, n_top=3, states=("finetuned",), probes=False)
    assert bare.probes.empty and bare.finetuned_last()["toy"]["probe none"] is None
    record = isotropy_setup.record(model="toy", fingerprint="f", model_info=INFO, max_sentences=0,
                                   settings=None, seeds=[seed2])
    task = record.tasks["toy"]
    assert set(task.finetuned_seeds) == set(analyses.SEED_MEASURES)
    assert task.finetuned_seeds["isoscore"][0] == pytest.approx(task.isoscore["finetuned"])
    assert task.finetuned_seeds["elongated"][0] == task.elongated["finetuned"]
    assert task.finetuned_seeds["elongated"][1] < task.elongated["finetuned"]  # the unstretched seed
    for v in analyses.SEED_PROBES:
        assert task.finetuned_seeds[f"probe {v}"][0] == pytest.approx(task.probe["finetuned"][v])
        assert 0 <= task.finetuned_seeds[f"probe {v}"][1] <= 1
    assert results.read_record(results.write_record(tmp_path, record)) == record
    with pytest.raises(ValueError, match="states: unknown"):
        toy_study(train, test, other, states=("tuned",))
    with pytest.raises(ValueError, match="probes must be"):
        toy_study(train, test, other, probes="first")
    with pytest.raises(ValueError, match="layers must be"):
        toy_study(train, test, other, layers="first")


def test_the_record_holds_the_paper_enhancement_evaluation_of_every_seed(isotropy_setup, tmp_path):
    """The paper's evaluation runs on the last layer of every state, and of every further
    fine-tuning seed; the record holds it, and the scorecard's claim reads it."""
    rng = np.random.default_rng(7)
    train, test = word_task(split="train"), word_task(20, seed=1, split="test")
    other = {split: {0: layers_for(d, rng), 5: layers_for(d, rng)}
             for split, d in (("train", train), ("test", test))}
    seed2 = toy_study(train, test, other, n_removed=1, n_top=3, states=("finetuned",), probes=False)
    e = isotropy_setup.enhancement
    assert set(e["state"]) == set(analyses.STATES) and set(e["layer"]) == {2}
    assert list(e.loc[e["state"] == "finetuned", "method"]) == list(analyses.ENHANCEMENTS)
    assert (e["D"] == 12).all() and e["accuracy"].between(0, 1).all()
    table = analyses.enhancement_table(isotropy_setup, [seed2])
    assert sorted(set(table.loc[table["state"] == "finetuned", "seed"])) == [0, 1]
    assert set(table.loc[table["state"] == "pretrained", "seed"]) == {0}  # the state every seed shares
    assert (table.loc[table["method"] == "none", "gain"] == 0).all()
    facts = analyses.enhancement_facts(table)
    assert facts["enh_seeds"] == 2 and set(facts) >= {"enh_global_post", "enh_cluster_zero_mean_pre"}
    record = isotropy_setup.record(model="toy", fingerprint="f", model_info=INFO, max_sentences=0,
                                   settings=None, seeds=[seed2])
    assert record.enhancement_evaluation == results.PAPER_ENHANCEMENT_EVALUATION
    assert record.enhancement_clusters == 27 and record.enhancement_classifier["learning_rate"] == 1e-3
    task = record.tasks["toy"]
    assert task.enhanced_removed == 12 and set(task.enhanced_pretrained) == set(analyses.ENHANCEMENTS)
    assert [len(v) for v in task.enhanced_finetuned.values()] == [2] * 5
    first = e[e["state"] == "finetuned"].set_index("method")["accuracy"]
    assert task.enhanced_finetuned["global"][0] == pytest.approx(first["global"])
    assert results.read_record(results.write_record(tmp_path, record)) == record
    assert claims.for_chapter(record).loc["rp-enhancement", "verdict"] in (claims.HOLDS, claims.FAILS)
    # without the evaluation the record says so, and the claim cannot be tested
    bare = toy_study(train, test, other, n_removed=1, n_top=3, removed_grid=[1], enhancement=False)
    assert bare.enhancement.empty
    record = bare.record(model="toy", fingerprint="f", model_info=INFO, max_sentences=0, settings=None)
    assert record.enhancement_evaluation == "none" and record.tasks["toy"].enhanced_finetuned is None
    assert claims.for_chapter(record).loc["rp-enhancement", "verdict"] == claims.UNTESTABLE
    with pytest.raises(ValueError, match="enhancement_removed=16"):
        toy_study(train, test, other, n_removed=1, enhancement_removed=16)
    with pytest.raises(ValueError, match="enhancement_clusters"):
        toy_study(train, test, other, n_removed=1, enhancement_clusters=0)


def test_isotropy_study_names_a_task_without_a_run():
    with pytest.raises(ValueError, match=r"\['pos'\]"):
        analyses.isotropy_study({}, {}, ["pos"])


# -- chapter 9 ------------------------------------------------------------------------------------
def blocky(n_items, rng, groups):
    """Layers 0..L-1: layers of one group share a representation, plus a little noise."""
    base = {g: rng.normal(size=(n_items, 8)) for g in set(groups)}
    return np.stack([base[g] + 0.05 * rng.normal(size=(n_items, 8)) for g in groups])


def test_cka_study_finds_the_blocks_it_was_given_and_the_droppable_layers(tmp_path):
    rng = np.random.default_rng(3)
    train, test = word_task(), word_task(10, seed=1, split="test")
    pre = blocky(train.n_items, rng, [0, 1, 2, 3, 4, 5, 6])
    post = blocky(train.n_items, rng, [0, 1, 1, 1, 2, 2, 2])  # layers 1-3 and 4-6 alike
    held_out = blocky(test.n_items, rng, [0, 1, 1, 2, 2, 2, 2])  # other blocks on the test items
    runs = {"toy": FakeRun({"train": {0: pre, 9: post}, "test": {0: pre[:, :test.n_items], 9: held_out}},
                           dropping=[0.9, 0.895, 0.8, 0.9])}
    # by default CKA reads the held-out (test) items, as the paper its validation examples
    default = analyses.cka_study(runs, {"toy": {"train": train, "test": test}}, ["toy"])
    assert default.blocks["toy", "finetuned"].blocks == ((1, 2), (3, 6))
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        analyses.cka_study(runs, {"toy": {"train": train, "test": test}}, ["toy"], split="dev")
    study = analyses.cka_study(runs, {"toy": {"train": train, "test": test}}, ["toy"], max_items=None,
                               split="train")
    assert study.blocks["toy", "finetuned"].blocks == ((1, 3), (4, 6))
    assert study.layers["toy"] == list(range(7))
    same = study.same_layer()
    assert same.shape == (1, 7) and (same.to_numpy() < 0.5).all()  # nothing alike across states
    assert study.droppable(0.01) == {"toy": 1}  # k = 3 within tolerance, but k = 2 is not
    facts = study.facts(0.01)
    assert facts["n_droppable"] == 1 and facts["sharper"] == 1 and facts["top_in_block"] == 1
    record = study.record(model="toy", fingerprint="f", model_info=INFO)
    assert results.read_record(results.write_record(tmp_path, record)) == record
    assert "toy 1 (loss at 1: 0.005)" in claims.for_chapter(record).loc["plb-drop", "ours"]


def test_cka_blocks_keep_their_layer_numbers_across_a_left_out_layer():
    rng = np.random.default_rng(4)
    train = word_task()
    post = blocky(train.n_items, rng, [0, 1, 1, 1, 2, 2, 2])
    post[2] = 1.0  # layer 2 is constant: left out of the matrices
    runs = {"toy": FakeRun({"train": {0: post.copy(), 9: post}}, dropping=[0.9, 0.9])}
    study = analyses.cka_study(runs, {"toy": {"train": train, "test": train}}, ["toy"], max_items=None)
    assert study.layers["toy"] == [0, 1, 3, 4, 5, 6]
    assert study.blocks["toy", "finetuned"].blocks == ((1, 3), (4, 6))
    assert list(study.same_layer().columns) == [0, 1, 3, 4, 5, 6]


def test_cka_study_refuses_a_model_with_no_varied_transformer_layer():
    train = word_task()
    X = np.ones((2, train.n_items, 4))
    X[0] = np.random.default_rng(0).normal(size=(train.n_items, 4))
    runs = {"toy": FakeRun({"train": {0: X, 9: X}}, dropping=[0.9, 0.9])}
    with pytest.raises(ValueError, match="toy: every transformer layer is constant"):
        analyses.cka_study(runs, {"toy": {"train": train, "test": train}}, ["toy"])
    with pytest.raises(ValueError, match="tasks is empty"):
        analyses.cka_study(runs, {}, [])


def test_droppable_layers_stops_at_the_first_layer_that_costs_too_much():
    assert cka.droppable_layers([0.9, 0.9, 0.9], 0.0) == 2
    assert cka.droppable_layers([0.9, 0.85, 0.9, 0.9], 0.01) == 0
    assert cka.droppable_layers([0.9], 0.01) == 0
    with pytest.raises(ValueError, match="missing"):
        cka.droppable_layers([0.9, np.nan], 0.01)


def test_the_chapter_figures_draw_a_panel_per_task(isotropy_setup):
    import matplotlib.pyplot as plt

    from ftgeo import plotting

    study = isotropy_setup
    assert len(plotting.isotropy_by_layer(study).axes) == 3  # 3 measures x 1 task
    assert len(plotting.local_structure(study).axes) == 3
    assert len(plotting.elongated_directions(study).axes) == 2
    removal = plotting.removal_curves(study).axes[0].lines
    assert len(removal) == 2 * 2 + 2  # states x (top, random), and each state's baseline
    assert len(plotting.enhancement_by_layer(study).axes[0].lines) == 2 * 2 + 1
    methods = plotting.enhancement_methods(analyses.enhancement_table(study)).axes[0]
    assert len(methods.lines) == 2 + 1  # a marker series per state, and the zero line
    assert [t.get_text() for t in methods.get_xticklabels()] == list(analyses.ENHANCEMENTS[1:])
    assert len(methods.lines[1].get_xdata()) == 4  # the fine-tuned state: one marker per method
    menu = plotting.variance_menu(study)
    assert [t.name for t in menu.data] == ["pretrained", "finetuned"]
    plt.close("all")


def test_header_holds_what_every_record_shares():
    from types import SimpleNamespace

    config = SimpleNamespace(model_type="bert", num_hidden_layers=2, hidden_size=8)
    loaded = SimpleNamespace(spec=SimpleNamespace(fingerprint="abc"), encoder=SimpleNamespace(config=config))
    settings = SimpleNamespace(as_dict=lambda: {"epochs": 3})
    h = results.header("tiny", loaded, 20, settings)
    assert h == {
        "model": "tiny",
        "fingerprint": "abc",
        "model_info": results.ModelInfo("bert", 2, 8),
        "max_sentences": 20,
        "settings": {"epochs": 3},
    }
    assert results.header("tiny", loaded)["settings"] is None


# -- isotropy on every token (Rajaee & Pilehvar 2021) ----------------------------------------
def test_token_sentences_keep_whole_sentences_within_the_budget(minilm):
    d = word_task(30)
    every, counts = analyses.token_sentences(minilm.tokenizer, d, None)
    assert every.tolist() == list(range(30))
    n_tokens = sum(counts.values())
    assert n_tokens == sum(len(minilm.tokenizer(list(s), is_split_into_words=True,
                                                add_special_tokens=False)["input_ids"])
                           for s in d.sentences)
    some, same_counts = analyses.token_sentences(minilm.tokenizer, d, n_tokens // 2, seed=1)
    assert same_counts == counts  # the frequency corpus is every sentence either way
    assert 0 < len(some) < 30 and np.all(np.diff(some) > 0)
    lengths = [len(minilm.tokenizer(list(d.sentences[i]), is_split_into_words=True,
                                    add_special_tokens=False)["input_ids"]) for i in some]
    assert sum(lengths) <= n_tokens // 2
    with pytest.raises(ValueError, match="max_tokens"):
        analyses.token_sentences(minilm.tokenizer, d, 0)


def test_isotropy_study_reads_every_token_of_the_training_sentences(minilm, store):
    """Token mode: the measures read one vector per subword token of the training text
    (special tokens left out), for both states; the probes still read the items."""
    rng = np.random.default_rng(0)
    train, test = word_task(12, seed=0), word_task(6, seed=1, split="test")
    states = {s: {0: layers_for(d, rng), 5: layers_for(d, rng)}
              for s, d in (("train", train), ("test", test))}

    class TokenRun(FakeRun):
        def load_model(self):
            return minilm  # the "fine-tuned" state is the same model: the same measures

    study = analyses.isotropy_study({"toy": TokenRun(states)}, {"toy": {"train": train, "test": test}},
                                    ["toy"], model=minilm, n_clusters=2, n_top=2, removed_grid=[1],
                                    store=store)
    expected = sum(len(minilm.tokenizer(list(s), is_split_into_words=True,
                                        add_special_tokens=False)["input_ids"])
                   for s in train.sentences)
    assert study.n_vectors == {"toy": expected}
    assert study.properties == {"toy": "log token frequency"}
    m = study.measures.set_index(["state", "layer"])
    assert sorted(set(m.index.get_level_values("layer"))) == list(range(minilm.n_layers))
    pd_cols = ["partition", "average_cosine", "isoscore"]
    np.testing.assert_allclose(m.loc["pretrained", pd_cols].to_numpy(),
                               m.loc["finetuned", pd_cols].to_numpy())
    assert set(study.probes["layer"]) == {0, 1, 2}  # the items' three toy layers
    record = study.record(model="toy", fingerprint="f", model_info=INFO, max_sentences=0, settings=None)
    assert record.vectors == "tokens" and record.tasks["toy"].n_vectors == expected
    with pytest.raises(ValueError, match="needs the pretrained model"):
        analyses.isotropy_study({"toy": TokenRun(states)}, {"toy": {"train": train, "test": test}}, ["toy"])
