"""The linear probe: known answers on synthetic data, and clear errors."""

import dataclasses

import numpy as np
import pytest

from ftgeo.probes import LinearProbe, MLPProbe, linear_probe_layers, probe_grid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separated_blobs_are_classified_perfectly(seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (4, 20))
    y = np.repeat(np.arange(4), 30)
    X = centers[y] + rng.normal(0, 0.5, (120, 20))
    probe = LinearProbe(l2=1e-3).fit(X, y)
    assert probe.score(X, y) == 1.0
    assert probe.coef_.shape == (4, 20) and list(probe.classes_) == [0, 1, 2, 3]


def test_pure_noise_is_near_chance_on_held_out_data():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(2000, 10)), rng.integers(0, 4, 2000)
    probe = LinearProbe().fit(X[:1000], y[:1000])
    assert abs(probe.score(X[1000:], y[1000:]) - 0.25) < 0.05


def test_path_equals_separate_fits():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 8)), rng.integers(0, 3, 300)
    for probe in LinearProbe.path(X, y, [1e-3, 1.0]):
        single = LinearProbe(l2=probe.l2).fit(X, y)
        np.testing.assert_allclose(probe.coef_, single.coef_)


def test_per_layer_probe_finds_the_informative_layer():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    noise = rng.normal(size=(3, 600, 16))
    noise[1, np.arange(600), y] += 4.0  # only layer 1 carries the label, one direction per class
    res = linear_probe_layers(noise[:, :400], y[:400], noise[:, 400:500], y[400:500],
                              noise[:, 500:], y[500:])
    assert res.test_accuracy.shape == (3,)
    assert res.test_accuracy[1] > 0.95 and res.test_accuracy[0] < 0.6


def test_masking_of_collinear_classes_is_a_known_limit():
    """Least-squares classifiers cannot pick a middle class on a line (Hastie et al. 2009, 4.2):
    a documented limit of this baseline probe, which the MLP probe does not share."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    X = rng.normal(size=(600, 4))
    X[:, 0] += 4 * y
    assert LinearProbe(l2=1e-3).fit(X, y).score(X, y) < 0.9


def test_bad_input_is_refused():
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        LinearProbe().fit(np.full((4, 2), np.nan), y)
    with pytest.raises(ValueError, match=r"y must have shape \(n_samples,\) = \(4,\)"):
        LinearProbe().fit(X, y[:3])
    with pytest.raises(ValueError, match="at least 2 labels"):
        LinearProbe().fit(X, np.zeros(4))
    with pytest.raises(ValueError, match="l2 must be > 0"):
        LinearProbe(l2=0).fit(X, y)


def _xor(seed, n=400):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    return X, (X[:, 0] * X[:, 1] > 0).astype(int)


def test_mlp_probe_learns_what_a_linear_probe_cannot():
    X, y = _xor(0)
    Xd, yd = _xor(1)
    mlp = MLPProbe(hidden=(32, 32), alpha=1e-2, random_state=0).fit(X, y, X_dev=Xd, y_dev=yd)
    assert mlp.score(Xd, yd) > 0.9
    assert LinearProbe().fit(X, y).score(Xd, yd) < 0.7
    assert 1 <= mlp.n_iter_ <= mlp.max_iter


def test_mlp_probe_is_reproducible_for_a_seed():
    X, y = _xor(0)
    a = MLPProbe(hidden=(16, 16), random_state=3, max_iter=20).fit(X, y).predict(X)
    b = MLPProbe(hidden=(16, 16), random_state=3, max_iter=20).fit(X, y).predict(X)
    assert np.array_equal(a, b)


def test_probe_grid_searches_every_setting_and_retrains_with_seeds():
    X, y = _xor(0)
    Xd, yd = _xor(1)
    Xt, yt = _xor(2)
    res = probe_grid(X, y, Xd, yd, Xt, yt, hidden_sizes=(8, 32), alpha_grid=(1e-4, 1e-2),
                     n_seeds=3, max_iter=60, store=False)
    assert len(res.dev) == 2 * 2 * 2
    assert res.test_accuracy.shape == (3,) and res.mean > 0.85 and res.sd >= 0
    best = res.dev.sort_values("dev_accuracy", ascending=False).iloc[0]
    assert res.dev_accuracy == best.dev_accuracy


def test_a_reused_setting_is_the_searched_setting_without_the_search():
    X, y = _xor(0)
    Xd, yd = _xor(1)
    Xt, yt = _xor(2)
    kw = {"n_seeds": 3, "max_iter": 60, "store": False}
    searched = probe_grid(X, y, Xd, yd, Xt, yt, hidden_sizes=(8, 32), alpha_grid=(1e-4, 1e-2), **kw)
    reused = probe_grid(X, y, Xd, yd, Xt, yt, setting=(searched.hidden, searched.alpha), **kw)
    assert (reused.hidden, reused.alpha) == (searched.hidden, searched.alpha)
    assert len(reused.dev) == 1
    assert reused.dev_accuracy == pytest.approx(searched.dev_accuracy, abs=1e-9)
    np.testing.assert_array_equal(reused.test_accuracy, searched.test_accuracy)
    # another setting is trained as given, even where the search would not choose it
    other = probe_grid(X, y, Xd, yd, Xt, yt, setting=((4, 4), 1.0), **kw)
    assert (other.hidden, other.alpha) == ((4, 4), 1.0)
    for bad in [(32, 1e-3), ((32, 0), 1e-3), ((32, 32), -1.0), ((32.5, 32), 0.1)]:
        with pytest.raises(ValueError, match=r"setting must be \(\(hidden1, hidden2\), alpha\)"):
            probe_grid(X, y, Xd, yd, Xt, yt, setting=bad, **kw)


def test_probe_grid_is_kept_in_the_store_by_its_data_and_settings(store, monkeypatch):
    from ftgeo import probes

    X, y = _xor(0)
    Xd, yd = _xor(1)
    Xt, yt = _xor(2)
    y, yd, yt = (np.where(v == 1, "yes", "no").astype(object) for v in (y, yd, yt))  # string labels
    kw = {"hidden_sizes": (8, 16), "alpha_grid": (1e-4, 1e-2), "n_seeds": 2, "max_iter": 30}
    fresh = probe_grid(X, y, Xd, yd, Xt, yt, store=False, **kw)
    first = probe_grid(X, y, Xd, yd, Xt, yt, store=store, **kw)
    searches = []
    real_search = probes._search
    monkeypatch.setattr(probes, "_search", lambda *a, **k: searches.append(k) or real_search(*a, **k))
    again = probe_grid(X, y, Xd, yd, Xt, yt, store=store, **kw)
    assert searches == []  # read from the store: nothing trained
    for res in (first, again):  # and what it reads is what training gives
        assert (res.hidden, res.alpha, res.dev_accuracy) == (fresh.hidden, fresh.alpha, fresh.dev_accuracy)
        np.testing.assert_array_equal(res.test_accuracy, fresh.test_accuracy)
        assert res.dev.equals(fresh.dev)
    # other data or another setting is another entry: trained
    yd2 = yd.copy()
    yd2[0] = "yes" if yd2[0] == "no" else "no"
    changed = [dict(y_dev=yd2), dict(alpha_grid=(1e-4,)), dict(n_seeds=3), dict(setting=((8, 8), 1e-2)),
               dict(X_test=Xt + 1e-3), dict(autocast="bf16"), dict(patience=3)]
    for change in changed:
        args = {"X_train": X, "y_train": y, "X_dev": Xd, "y_dev": yd, "X_test": Xt, "y_test": yt,
                **kw, **change}
        n = len(searches)
        probe_grid(store=store, **args)
        assert len(searches) == n + 1, change
    assert len(searches) == len(changed)


def test_bf16_autocast_probes_learn_the_same_task_and_bad_values_are_refused():
    X, y = _xor(0)
    Xd, yd = _xor(1)
    Xt, yt = _xor(2)
    kw = {"hidden_sizes": (32,), "alpha_grid": (1e-4,), "n_seeds": 2, "max_iter": 60, "store": False}
    full = probe_grid(X, y, Xd, yd, Xt, yt, **kw)
    half = probe_grid(X, y, Xd, yd, Xt, yt, autocast="bf16", **kw)
    assert half.mean > 0.85 and abs(half.mean - full.mean) < 0.05
    # the steps do run in bfloat16: the trained weights differ from float32's, a little
    import torch

    from ftgeo.probes import _MLPBatch, _train_batch

    Xs, ts = torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y)
    step = {"max_iter": 5, "batch_size": 64, "learning_rate": 1e-3, "patience": 5, "seed": 0}
    nets = [_MLPBatch(2, (16, 16), 2, [1e-4], [0]) for _ in range(2)]
    _train_batch(nets[0], Xs, ts, Xs, ts, **step)
    _train_batch(nets[1], Xs, ts, Xs, ts, autocast="bf16", **step)
    W32, W16 = (net.weights[0].detach() for net in nets)
    assert not torch.equal(W32, W16) and torch.allclose(W32, W16, atol=0.05)
    with pytest.raises(ValueError, match="autocast must be None \\(float32\\) or 'bf16'"):
        probe_grid(X, y, Xd, yd, Xt, yt, autocast="fp8", **kw)


def test_batched_training_equals_training_one_network():
    """Networks trained together in one batch give what each gives when trained alone."""
    import torch

    from ftgeo.probes import _MLPBatch, _train_batch

    X, y = _xor(0, 200)
    Xt = torch.from_numpy(X.astype(np.float32))
    t = torch.from_numpy(y)
    kw = {"max_iter": 15, "batch_size": 64, "learning_rate": 1e-3, "patience": 3, "seed": 0}
    both = _MLPBatch(2, (8, 8), 2, [1e-4, 1e-2], [0, 1])
    acc_both, _ = _train_batch(both, Xt, t, Xt, t, **kw)
    alone = _MLPBatch(2, (8, 8), 2, [1e-2], [1])
    acc_alone, _ = _train_batch(alone, Xt, t, Xt, t, **kw)
    assert acc_both[1] == pytest.approx(acc_alone[0])
    np.testing.assert_allclose(both.weights[0][1].detach(), alone.weights[0][0].detach(), atol=1e-5)


def test_mlp_settings_are_checked():
    X, y = _xor(0, 50)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        MLPProbe(learning_rate=0).fit(X, y)
    with pytest.raises(ValueError, match="hidden must be two layer sizes"):
        MLPProbe(hidden=(8,)).fit(X, y)
    with pytest.raises(ValueError, match="n_seeds must be a whole number >= 1"):
        probe_grid(X, y, X, y, X, y, n_seeds=0)


# -- probes before and after fine-tuning ---------------------------------------------------
class _Split:
    """What probe_states reads from a TaskData: the labels."""

    def __init__(self, y):
        self.y = np.asarray(y)


def test_probe_states_fits_every_state_on_its_own_splits():
    from ftgeo.probes import probe_states

    rng = np.random.default_rng(0)
    y = {s: rng.integers(0, 3, 90) for s in ("train", "dev", "test")}
    data = {"t": {s: _Split(v) for s, v in y.items()}}
    # two layers; the fine-tuned state's last layer encodes the label, everything else is noise
    centres = rng.normal(0, 5, (3, 5))
    X = {("t", "pretrained"): {s: rng.normal(size=(2, 90, 5)) for s in y},
         ("t", "finetuned"): {s: np.stack([rng.normal(size=(90, 5)),
                                           centres[v] + rng.normal(0, 0.1, (90, 5))]) for s, v in y.items()}}
    fitted = probe_states(X, data)
    assert list(fitted) == [("t", "pretrained"), ("t", "finetuned")]
    assert fitted["t", "finetuned"].test_accuracy[-1] == 1.0
    assert fitted["t", "pretrained"].test_accuracy.max() < 0.6  # chance is 1/3
    lazy = probe_states(((k, v) for k, v in X.items()), data)  # an iterable of pairs will do
    assert all(np.array_equal(lazy[k].test_accuracy, fitted[k].test_accuracy) for k in X)
    # each split's own labels reach the probe, and the settings are passed on
    seen = probe_states(X, data, lambda *args, **settings: ([a[0] for a in args[1::2]], settings), l2=3)
    assert seen["t", "pretrained"] == ([y["train"][0], y["dev"][0], y["test"][0]], {"l2": 3})


def test_later_seeds_search_or_reuse_the_first_seeds_choice():
    from ftgeo.probes import probe_grid_seeds

    data = {"t": {s: _Split(_xor(k)[1]) for k, s in enumerate(("train", "dev", "test"))}}
    X = [{("t", "finetuned"): {s: _xor(k)[0] + 0.01 * seed for k, s in enumerate(("train", "dev", "test"))}}
         for seed in range(3)]
    grid = {"hidden_sizes": (16, 32), "alpha_grid": (1e-4, 1.0), "n_seeds": 2, "max_iter": 60,
            "store": False}
    every = probe_grid_seeds(X, data, **grid)
    first = probe_grid_seeds(X, data, grid_search="first seed", **grid)
    key = ("t", "finetuned")
    assert [len(s[key].dev) for s in every] == [8, 8, 8]  # a search on every seed
    assert [len(s[key].dev) for s in first] == [8, 1, 1]  # the first seed's choice, retrained
    chosen = (first[0][key].hidden, first[0][key].alpha)
    assert all((s[key].hidden, s[key].alpha) == chosen for s in first)
    np.testing.assert_array_equal(first[0][key].test_accuracy, every[0][key].test_accuracy)
    # a later seed's probe reads that seed's own representations: noise there, chance there
    noise = np.random.default_rng(5)
    X[1] = {("t", "finetuned"): {s: noise.normal(size=x.shape) for s, x in X[1][key].items()}}
    reread = probe_grid_seeds(X, data, grid_search="first seed", **grid)
    assert reread[0][key].mean > 0.85 and reread[1][key].mean < 0.65
    with pytest.raises(ValueError, match=r"grid_search must be one of \['every seed', 'first seed'\]"):
        probe_grid_seeds(X, data, grid_search="first", **grid)


def _grid_result(test, dev_accuracy=0.5):
    from ftgeo.probes import ProbeGridResult

    return ProbeGridResult((16, 16), 1e-3, dev_accuracy, np.asarray(test, float), None)


MLP = {("pos", "pretrained"): _grid_result([0.5, 0.7], 0.61234),
       ("pos", "finetuned"): _grid_result([0.8, 0.8]),
       ("dep", "pretrained"): _grid_result([0.6, 0.6]),
       ("dep", "finetuned"): _grid_result([0.5, 0.5])}


def test_probing_table_and_summary_known_answers():
    from ftgeo.probes import grid_choices, probing_summary, probing_table

    similarity = {("pos", "pretrained"): 0.9, ("pos", "finetuned"): 0.7,
                  ("dep", "pretrained"): 0.4, ("dep", "finetuned"): 0.2}
    table = probing_table(MLP, similarity)
    assert list(table.index) == ["pos", "dep"] and table.index.name == "task"
    assert list(table.columns) == ["MLP pretrained", "sd pretrained", "MLP finetuned", "sd finetuned",
                                   "change", "similarity pretrained", "similarity finetuned",
                                   "fine-tuning seeds", "fine-tuning helps"]
    assert table.loc["pos", "MLP pretrained"] == pytest.approx(0.6)
    assert table.loc["pos", "sd pretrained"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert table["change"].tolist() == pytest.approx([0.2, -0.1])
    assert table["fine-tuning helps"].tolist() == ["yes", "no"]
    s = probing_summary(table)
    assert (s["n_helped"], s["not_helped"], s["n_sim_drop"]) == (1, "dep", 2)
    assert s["mean_change"] == pytest.approx(0.05)
    assert (s["lowest_sim_task"], s["lowest_sim"], s["lowest_is_unhelped"]) == ("dep", 0.2, "is")
    # the twin: the lowest similarity on a task that fine-tuning helped
    s = probing_summary(probing_table(MLP, {**similarity, ("pos", "finetuned"): 0.1}))
    assert (s["lowest_sim_task"], s["lowest_is_unhelped"], s["n_sim_drop"]) == ("pos", "is not", 2)
    # three fine-tuning seeds: the fine-tuned mean and sd are over seeds, the similarity the
    # mean where defined, the pretrained side unchanged
    seeds = [MLP, {("pos", "finetuned"): _grid_result([0.6, 0.6]), ("dep", "finetuned"): _grid_result([0.5])},
             {("pos", "finetuned"): _grid_result([0.7]), ("dep", "finetuned"): _grid_result([0.8])}]
    sims = [similarity, {("pos", "finetuned"): np.nan, ("dep", "finetuned"): 0.4},
            {("pos", "finetuned"): 0.3, ("dep", "finetuned"): None}]
    several = probing_table(MLP, similarity, seeds=seeds, similarity_seeds=sims)
    assert several["MLP finetuned"].tolist() == pytest.approx([0.7, 0.6])
    assert several["sd finetuned"].tolist() == pytest.approx([0.1, np.std([0.5, 0.5, 0.8], ddof=1)])
    assert several["similarity finetuned"].tolist() == pytest.approx([0.5, 0.3])
    assert several["MLP pretrained"].tolist() == table["MLP pretrained"].tolist()
    assert several["fine-tuning seeds"].tolist() == [3, 3]
    # equal accuracies whose means differ by rounding: no help
    tie = {("pos", "pretrained"): _grid_result([0.15, 0.15]), ("pos", "finetuned"): _grid_result([0.1, 0.2]),
           ("dep", "pretrained"): _grid_result([0.6]), ("dep", "finetuned"): _grid_result([0.6 + 1e-12])}
    assert probing_table(tie, dict.fromkeys(tie, 0.5))["fine-tuning helps"].tolist() == ["no", "no"]
    choices = grid_choices(MLP)
    assert list(choices.index) == ["pos / pretrained", "pos / finetuned", "dep / pretrained",
                                   "dep / finetuned"]
    assert choices.loc["pos / pretrained"].tolist() == [(16, 16), 0.001, 0.6123]


def test_probing_tasks_count_shared_label_pairs_and_separability():
    from ftgeo import results
    from ftgeo.probes import probing_tasks
    from ftgeo.spatial import ClusterSummary

    def summary(classes, cluster_labels, seconds=None):
        n = len(cluster_labels)
        return ClusterSummary(np.asarray(classes), np.asarray(cluster_labels), np.zeros(0, int),
                              np.ones((n, n)), seconds)

    four, three = summary([0, 1, 2, 3], [0, 1, 2, 3], 1.0), summary([0, 1, 2], [0, 1, 2])
    split = summary([0, 1, 2, 3], [0, 0, 1, 2, 3], 4.0)  # label 0 needs two clusters
    clusters = {("pos", "pretrained", "train"): four, ("pos", "pretrained", "test"): three,
                ("pos", "finetuned", "train"): split, ("pos", "finetuned", "test"): four,
                ("dep", "pretrained", "train"): four, ("dep", "pretrained", "test"): four,
                ("dep", "finetuned", "train"): four, ("dep", "finetuned", "test"): four}
    similarity = {key: 0.5 for key in MLP}
    tasks = probing_tasks(MLP, similarity, clusters)
    assert list(tasks) == ["pos", "dep"]
    assert tasks["pos"] == results.ProbingTask([0.5, 0.7], [0.8, 0.8], 0.5, 0.5, 3, 6, True, False,
                                               mlp_finetuned_seeds=[0.8],
                                               similarity_finetuned_seeds=[0.5],
                                               directprobe_seconds={"pretrained/train": 1.0,
                                                                    "pretrained/test": None,
                                                                    "finetuned/train": 4.0,
                                                                    "finetuned/test": 1.0})
    assert (tasks["dep"].label_pairs_pretrained, tasks["dep"].separable_finetuned) == (6, True)
    results.from_dict(results.ProbingTask, dataclasses.asdict(tasks["pos"]))  # fits the schema


def test_the_mlp_regulariser_means_what_scikit_learns_alpha_means():
    """At scikit-learn's converged MLPClassifier (full batch, L-BFGS), our network with the
    same weights and the same alpha has the same objective, and its gradient vanishes: the
    two minimise one function. A penalty scaled otherwise (e.g. not divided by the batch
    size) would leave a gradient of the order of alpha * W."""
    import torch
    from sklearn.neural_network import MLPClassifier

    from ftgeo.probes import _MLPBatch

    rng = np.random.default_rng(0)
    centers = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    y = np.repeat(np.arange(3), 60)
    X = centers[y] + rng.normal(scale=0.8, size=(180, 2))
    alpha = 3.0
    sk = MLPClassifier(hidden_layer_sizes=(8, 6), alpha=alpha, solver="lbfgs", max_iter=20000,
                       tol=1e-12, random_state=0).fit(X, y)
    net = _MLPBatch(2, (8, 6), 3, [alpha], [0])
    net.set_parameters([torch.tensor(W[None], dtype=torch.float64, requires_grad=True)
                        for W in sk.coefs_]
                       + [torch.tensor(b[None, None], dtype=torch.float64, requires_grad=True)
                          for b in sk.intercepts_])
    net.alpha = net.alpha.double()
    loss = net.loss(torch.from_numpy(X), torch.from_numpy(y))
    assert loss.item() == pytest.approx(sk.loss_, rel=1e-6)
    grads = torch.autograd.grad(loss, net.parameters())
    assert max(g.abs().max().item() for g in grads) < 2e-3
    # the same weights under a penalty not divided by the batch size are far from optimal
    net.alpha = net.alpha * len(X)
    loss = net.loss(torch.from_numpy(X), torch.from_numpy(y))
    assert max(g.abs().max().item() for g in torch.autograd.grad(loss, net.parameters())) > 0.1


def test_ridge_weights_with_fewer_rows_than_features_equal_the_full_solution():
    """The kernel path (n < d) gives the weights of the closed form (ZᵀZ/n + l2 I)⁻¹ ZᵀY/n."""
    from ftgeo.probes import _ridge_path

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(30, 80))
    Z -= Z.mean(axis=0)
    codes = rng.integers(0, 4, 30)
    Y = np.eye(4)[codes]
    Y -= Y.mean(axis=0)
    for l2, W in zip((1e-3, 1.0), _ridge_path(Z, codes, 4, (1e-3, 1.0)), strict=True):
        direct = np.linalg.solve(Z.T @ Z / 30 + l2 * np.eye(80), Z.T @ Y / 30)
        np.testing.assert_allclose(W, direct, atol=1e-8)
