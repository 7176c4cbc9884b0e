"""Spatial structure on synthetic data with known answers: cluster counts, hull distances,
minimum distances, similarity invariances, and the DirectProbe cache."""

import numpy as np
import pytest

from ftgeo import spatial
from ftgeo.spatial import directprobe_summary, similarity


def _segments(offsets, n=20, seed=0):
    """Label k: points on the segment [offset_k, offset_k + 1] x {0} (plus a tiny spread in
    y, so the hulls are 2-D); the hull distance of labels j, k is |offset_k - offset_j| - 1."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for k, o in enumerate(offsets):
        x = np.r_[o, o + 1, rng.uniform(o, o + 1, n - 2)]
        X.append(np.c_[x, rng.uniform(-1e-3, 1e-3, n)])
        y.append(np.full(n, k))
    return np.vstack(X), np.concatenate(y)


def test_label_distances_and_minimum_distances_have_the_analytic_values():
    X, y = _segments([0.0, 3.0, 10.0])
    s = directprobe_summary(X, y, store=False)
    assert s.n_clusters == 3 and s.linearly_separable
    L = s.label_distances()
    np.testing.assert_allclose(L[0, 1], 2.0, atol=2e-3)
    np.testing.assert_allclose(L[1, 2], 6.0, atol=2e-3)
    np.testing.assert_allclose(L[0, 2], 9.0, atol=2e-3)
    md = s.min_distances()
    np.testing.assert_allclose([md[0], md[1], md[2]], [2.0, 2.0, 6.0], atol=2e-3)


def test_a_label_split_in_two_counts_two_clusters_and_averages_over_them():
    # label 0 on both sides of label 1, at hull distances 2 and 4: not linearly separable,
    # 3 clusters for 2 labels; the reference averages over cluster pairs (3), not the min (2)
    X, y = _segments([0.0, 3.0, 8.0])
    y = np.where(y == 2, 0, y)
    s = directprobe_summary(X, y, store=False)
    assert s.n_clusters == 3 and s.n_labels == 2 and not s.linearly_separable
    np.testing.assert_allclose(s.label_distances()[0, 1], 3.0, atol=2e-3)
    np.testing.assert_allclose(s.label_distances(reduce="min")[0, 1], 2.0, atol=2e-3)


def test_label_distances_follow_the_reference_on_a_hand_made_case_with_small_clusters():
    # clusters: A1 (10 points), A2 (5 points: dropped), B1 (8), B2 (6), C1 (3: dropped)
    cluster_labels = np.array([0, 0, 1, 1, 2])
    assignments = np.repeat(np.arange(5), [10, 5, 8, 6, 3])
    D = np.array([[0., 0, 1, 3, 7],
                  [0, 0, 0.5, 9, 2],
                  [1, 0.5, 0, 0, 4],
                  [3, 9, 0, 0, 6],
                  [7, 2, 4, 6, 0]])
    s = spatial.ClusterSummary(np.array([0, 1, 2]), cluster_labels, assignments, D)
    L = s.label_distances()
    assert L[0, 1] == L[1, 0] == 2.0  # mean of A1-B1 (1) and A1-B2 (3); A2 is too small
    assert np.isnan(L[0, 2]) and np.isnan(L[1, 2])  # C's only cluster has 3 points
    assert s.min_distances() == {0: 2.0, 1: 2.0, 2: pytest.approx(np.nan, nan_ok=True)}
    np.testing.assert_array_equal(np.diag(L), 0.0)
    # keeping every cluster: A-B averages 4 pairs, A-C 2, B-C 2
    every = s.label_distances(min_size=1)
    assert every[0, 1] == pytest.approx((1 + 3 + 0.5 + 9) / 4)
    assert every[0, 2] == pytest.approx((7 + 2) / 2) and every[1, 2] == pytest.approx(5.0)
    assert s.label_distances(min_size=1, reduce="min")[0, 1] == 0.5
    with pytest.raises(ValueError, match="reduce"):
        s.label_distances(reduce="median")
    with pytest.raises(ValueError, match="min_size"):
        s.label_distances(min_size=0)


def test_similarity_is_blank_for_a_representation_that_is_not_linearly_separable():
    X, y = _segments([0.0, 3.0, 8.0, 12.0, 20.0])
    separable = directprobe_summary(X, y, store=False)
    assert separable.linearly_separable
    assert similarity(separable, separable) == pytest.approx(1.0)
    mixed = np.where(y == 4, 0, y)  # label 0 on both ends: two clusters
    split = directprobe_summary(X, mixed, store=False)
    assert not split.linearly_separable
    assert np.isnan(similarity(separable, split)) and np.isnan(similarity(split, separable))
    # the variant correlates the cluster-pair means anyway
    assert np.isfinite(similarity(separable, split, separable_only=False))


def test_similarity_is_one_under_rotation_and_scaling_and_ignores_missing_labels():
    rng = np.random.default_rng(1)
    centers = rng.normal(0, 10, (6, 5))
    X = np.vstack([c + rng.normal(0, 0.5, (15, 5)) for c in centers])
    y = np.repeat(np.arange(6), 15)
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a = directprobe_summary(X, y, store=False)
    b = directprobe_summary(3.0 * X @ Q + 7.0, y, store=False)
    assert similarity(a, b) == pytest.approx(1.0, abs=1e-6)
    keep = y != 5  # the second representation lacks a label: compared on the shared ones
    c = directprobe_summary(X[keep], y[keep], store=False)
    assert similarity(a, c) == pytest.approx(1.0, abs=1e-6)
    # the same clusters with the labels swapped among them: still separable, other distances
    swapped = directprobe_summary(X, np.array([2, 0, 5, 1, 4, 3])[y], store=False)
    assert swapped.linearly_separable and similarity(a, swapped) < 0.9
    two = directprobe_summary(X[y < 2], y[y < 2], store=False)  # 1 pair: no correlation
    assert np.isnan(similarity(a, two))


def test_fits_are_cached_by_content(store, monkeypatch):
    X, y = _segments([0.0, 3.0, 10.0])
    first = directprobe_summary(X, y, store=store)
    calls = []
    original = spatial.DirectProbe.fit

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(spatial.DirectProbe, "fit", counting)
    again = directprobe_summary(X, y, store=store)
    assert calls == [] and np.array_equal(first.distances, again.distances, equal_nan=True)
    # the cached summary keeps the time of the fit that made it
    assert first.fit_seconds > 0 and again.fit_seconds == first.fit_seconds
    directprobe_summary(X + 1e-3, y, store=store)  # other points: a new fit
    assert calls == [1]


def test_degenerate_representations_are_refused_by_name():
    X = np.ones((10, 4))
    assert spatial.is_degenerate(X)
    with pytest.raises(ValueError, match="every point is the same vector"):
        directprobe_summary(X, np.arange(10) % 2, store=False)
    with pytest.raises(ValueError, match="integer label codes"):
        directprobe_summary(np.eye(4), np.array(["a", "b", "a", "b"]), store=False)


# -- trajectories (chapter 05) --------------------------------------------------------------
OFFSETS = [0.0, 1.5, 5.0, 12.0]  # hull distances: 0-1 0.5, 1-2 2.5, 2-3 6, 0-2 4
LABELS = ("w", "x", "y", "z")


def _trajectory(factors, offsets=OFFSETS):
    """One sample of four segment labels, the whole space scaled by ``factors[i]`` at step i."""
    X, y = _segments(offsets, n=12)
    steps = [10 * i for i in range(len(factors))]
    return spatial.trajectory((f * X for f in factors), y, steps, LABELS, store=False), X, y


def test_label_lookup_by_name_follows_the_labels_present():
    y = np.array([3, 1, 3, 1])
    present = spatial.present_labels(LABELS, y)
    assert present == ("x", "z")
    assert spatial.label_rows(present, ["z", "x"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="'w'"):
        spatial.label_rows(present, ["w"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        spatial.present_labels(LABELS, np.array([0, 7]))


def test_uniform_scaling_scales_minimum_distances_and_spread_alike():
    traj, X, _ = _trajectory([1.0, 2.0, 3.0])
    assert traj.labels == LABELS and traj.steps.tolist() == [0, 10, 20]
    np.testing.assert_allclose(traj.min_distance[0], [0.5, 0.5, 2.5, 6.0], atol=2e-3)
    for i, f in enumerate([1.0, 2.0, 3.0]):
        np.testing.assert_allclose(traj.min_distance[i], f * traj.min_distance[0], rtol=1e-3)
        np.testing.assert_allclose(traj.label_distances[i], f * traj.label_distances[0], rtol=1e-3)
        assert traj.scale[i] == pytest.approx(f * spatial.spread(X))
    table = traj.min_distance_table()
    assert table.index.name == "step" and list(table.columns) == list(LABELS)
    assert traj.centroids.shape == (3, 4, 2)


def test_closest_labels_are_the_ones_placed_closest_and_drift_apart_when_the_space_grows():
    apart, _, _ = _trajectory([1.0, 1.5, 2.0])
    closest = apart.closest(3)
    assert set(closest.labels) == {"w", "x", "y"} and set(apart.closest(2).labels) == {"w", "x"}
    rows = spatial.label_rows(LABELS, closest.labels)
    expected = {frozenset("wx"): 0.5, frozenset("xy"): 2.5, frozenset("wy"): 4.0}
    pairs = [frozenset(LABELS[r] for r in rows[[i, j]]) for i, j in zip(*np.triu_indices(3, 1), strict=True)]
    np.testing.assert_allclose(closest.first, [expected[p] for p in pairs], atol=2e-3)
    np.testing.assert_allclose(closest.last, 2 * closest.first, rtol=1e-3)
    assert closest.share_apart == 1.0
    together, _, _ = _trajectory([1.0, 0.5])
    assert together.closest(3).share_apart == 0.0


def test_centroid_paths_keep_the_distances_of_planar_centroids():
    traj, _, _ = _trajectory([1.0, 2.0])
    paths = traj.centroid_paths(["z", "w"])
    assert paths.labels == ("z", "w") and paths.coords.shape == (2, 2, 2)
    C = traj.centroids[:, [3, 0]]  # the centroids are 2-D: a 2-component PCA is a rigid motion
    np.testing.assert_allclose(np.linalg.norm(paths.coords[1, 0] - paths.coords[0, 1]),
                               np.linalg.norm(C[1, 0] - C[0, 1]), rtol=1e-9)
    with pytest.raises(ValueError, match="not in this sample"):
        traj.centroid_paths(["nope"])


def test_the_record_holds_what_the_trajectory_computed():
    traj, _, _ = _trajectory([1.0, 2.0])
    task = traj.record(n_closest=3)
    assert task.steps == [0, 10] and list(task.min_distance) == list(LABELS)
    assert task.min_distance["z"] == traj.min_distance[:, 3].tolist()
    assert task.scale == traj.scale.tolist()
    assert task.closest_labels == list(traj.closest(3).labels)
    assert task.closest_distance_last == traj.closest(3).last.tolist()



def test_the_record_holds_every_fine_tuning_seed_with_the_first_seeds_closest_labels():
    grown, _, _ = _trajectory([1.0, 2.0])
    shrunk, _, _ = _trajectory([1.0, 0.5])  # another seed: the same start, the space shrinks
    task = grown.record(n_closest=3, seeds=[shrunk])
    assert task.min_distance_seeds[0] == task.min_distance  # the first seed's first
    assert task.min_distance_seeds[1]["z"] == shrunk.min_distance[:, 3].tolist()
    assert task.scale_seeds == [grown.scale.tolist(), shrunk.scale.tolist()]
    assert task.separable_seeds == [[True, True], [True, True]]
    names = grown.closest(3).labels
    np.testing.assert_allclose(task.closest_distance_last_seeds[1], shrunk.closest(3, names).last)
    np.testing.assert_allclose(task.closest_distance_last_seeds[1],
                               0.25 * np.asarray(task.closest_distance_last_seeds[0]), rtol=1e-3)
    assert grown.record().min_distance_seeds is None  # one seed: no per-seed fields
    longer, _, _ = _trajectory([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="same steps and labels"):
        grown.record(seeds=[longer])


def test_centroid_paths_of_several_seeds_share_axes_and_start_together():
    grown, _, _ = _trajectory([1.0, 2.0])
    shrunk, _, _ = _trajectory([1.0, 0.5])
    a, b = spatial.centroid_paths([grown, shrunk], ["z", "w"])
    np.testing.assert_allclose(a.coords[0], b.coords[0], atol=1e-12)  # step 0: the same model
    # the centroids are 2-D, so one shared 2-component PCA keeps every distance between paths
    np.testing.assert_allclose(np.linalg.norm(a.coords[1, 0] - b.coords[1, 0]),
                               np.linalg.norm(grown.centroids[1, 3] - shrunk.centroids[1, 3]), rtol=1e-9)
    alone = grown.centroid_paths(["z", "w"])
    (same,) = spatial.centroid_paths([grown], ["z", "w"])
    np.testing.assert_allclose(alone.coords, same.coords)


def test_growth_summary_over_seeds_counts_a_label_only_where_every_seed_moves_it():
    import pandas as pd

    steps = pd.Index([0, 5], name="step")
    first = pd.DataFrame([[1.0, 2.0, 3.0, 4.0], [3.0, 3.0, 3.0, 3.0]], index=steps, columns=list("abcd"))
    second = pd.DataFrame([[1.0, 2.0, 3.0, 4.0], [0.5, 3.0, 2.0, 3.0]], index=steps, columns=list("abcd"))
    one = spatial.growth_summary({"t": first})
    assert "fine-tuning seeds" not in one and one.loc["t", "grew"] == 2
    table = spatial.growth_summary({"t": first}, seeds=[{"t": first}, {"t": second}])
    row = table.loc["t"]
    # a grew on one seed and shrank on the other; b grew on both; c, d shrank on the second only
    assert (row["grew"], row["shrank"]) == (1, 1)  # b on both; d (-1, -1) on both
    assert row["grew, per seed"] == "2/1" and row["shrank, per seed"] == "1/3"
    assert row["mean change"] == pytest.approx((0.5 + (-0.5 + 1 - 1 - 1) / 4) / 2)
    assert row["sd change"] == pytest.approx(np.std([0.5, -0.375], ddof=1))
    assert row["fine-tuning seeds"] == 2 and row["separable steps"] == "2/2 of 2"
    assert table["mean change"].dtype == float and table["grew"].dtype == int


def test_growth_summary_counts_and_correlates_the_changes():
    import pandas as pd

    d = pd.DataFrame([[1.0, 2.0, 3.0, 4.0], [3.0, 3.0, 3.0, 3.0]], index=pd.Index([0, 5], name="step"),
                     columns=["a", "b", "c", "d"])
    g = spatial.growth(d)
    assert g.index.tolist() == ["a", "b", "c", "d"] and g.tolist() == [2.0, 1.0, 0.0, -1.0]
    row = spatial.growth_summary({"t": d, "two": d[["a", "b"]]})
    assert row.index.name == "task" and list(row.index) == ["t", "two"]
    assert row.loc["t", ["labels", "grew", "shrank"]].tolist() == [4, 2, 1]
    assert row.loc["t", "mean change"] == 0.5 and row.loc["t", "median change"] == 0.5
    assert row.loc["t", "corr(start, change)"] == pytest.approx(-1.0)  # closest moved most
    assert np.isnan(row.loc["two", "corr(start, change)"])  # 2 labels: no correlation


# -- layers (chapter 07) ----------------------------------------------------------------------
@pytest.mark.parametrize(("n", "expected"), [(1, [0, 1, 2, 3, 4]), (2, [0, 2, 4]), (3, [0, 3, 4]),
                                             (10, [0, 4])])
def test_every_nth_keeps_every_nth_step_and_the_last(n, expected):
    steps = [0, 100, 200, 300, 400]
    assert spatial.every_nth(steps, n) == [steps[i] for i in expected]


def test_every_nth_refuses_a_step_below_one():
    with pytest.raises(ValueError, match="got 0"):
        spatial.every_nth([0, 1], 0)


def _layers(seed=0, n_labels=4, n=10, dim=3):
    """(3, n_labels * n, dim): layer 0 one point (like [CLS] at the embedding layer), layers 1
    and 2 well-separated Gaussian clusters."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_labels), n)
    centers = rng.normal(0, 10, (2, n_labels, dim))
    X = np.stack([np.ones((len(y), dim))] + [centers[k][y] + rng.normal(0, 0.3, (len(y), dim))
                                              for k in range(2)])
    return X, y


def test_similarity_to_pretrained_is_one_for_a_rigid_motion_and_lower_when_a_label_moves():
    X, y = _layers()
    Q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    moved = X.copy()
    moved[1] = 2.0 * X[1] @ Q  # layer 1: rotated and scaled
    moved[2][y == 0] += 40.0  # layer 2: one label far away
    table = spatial.similarity_to_pretrained(X, [(0, X), (50, moved)], y, store=False)
    assert table.index.name == "layer" and table.index.tolist() == [1, 2]  # layer 0 left out
    assert table.columns.tolist() == [0, 50]
    np.testing.assert_allclose(table[0], 1.0, atol=1e-6)
    assert table.loc[1, 50] == pytest.approx(1.0, abs=1e-6) and table.loc[2, 50] < 0.9


def test_centroid_motion_of_a_known_shift():
    X, y = _layers()
    v = np.array([3.0, 4.0, 0.0])  # length 5
    moved = X.copy()
    moved[:, y == 0] += v
    motion = spatial.centroid_motion(X, moved, y)
    assert motion.displacement.shape == (3, 4, 3)
    np.testing.assert_allclose(motion.displacement[:, 0], np.tile(v, (3, 1)), atol=1e-12)
    np.testing.assert_allclose(motion.displacement[:, 1:], 0.0, atol=1e-12)
    table = motion.table()
    assert table.index.name == "layer" and table.index.tolist() == [0, 1, 2]
    np.testing.assert_allclose(table["mean motion"], 5.0 / 4)
    np.testing.assert_allclose(table["range of motion"], 5.0)
    c0 = np.stack([X[1][y == c].mean(0) for c in range(4)])
    i, j = np.triu_indices(4, 1)
    mean_distance = np.linalg.norm(c0[i] - c0[j], axis=1).mean()
    assert table.loc[1, "relative range"] == pytest.approx(5.0 / mean_distance)
    assert np.isnan(motion.scale[0])  # layer 0 is one point: no scale, no relative motion
    assert table.loc[0, ["relative mean motion", "relative range"]].isna().all()


def test_relative_motion_does_not_change_under_uniform_scaling():
    X, y = _layers()
    moved = X + np.random.default_rng(2).normal(0, 1.0, X.shape)
    a = spatial.centroid_motion(X, moved, y).table()
    b = spatial.centroid_motion(3.0 * X, 3.0 * moved, y).table()
    relative = ["relative mean motion", "relative range"]
    np.testing.assert_allclose(b.loc[1:, relative], a.loc[1:, relative], rtol=1e-9)
    absolute = ["mean motion", "range of motion"]
    np.testing.assert_allclose(b[absolute], 3 * a[absolute], rtol=1e-9)


def test_pca_of_displacements_on_a_line_puts_everything_on_pc1():
    rng = np.random.default_rng(3)
    u = rng.normal(size=8)
    u /= np.linalg.norm(u)
    t = rng.normal(size=(4, 5))  # 4 layers x 5 labels, each displacement t * u
    motion = spatial.CentroidMotion(t[..., None] * u, np.ones(4))
    P = motion.pca()
    assert P.shape == (4, 5, 2)
    np.testing.assert_allclose(P[..., 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(np.abs(P[..., 0]), np.abs(t), rtol=1e-9)  # not centred: 0 is "did not move"


def test_task_table_and_the_layers_record():
    import pandas as pd

    X, y = _layers()
    motion = spatial.centroid_motion(X, X + 1.0, y)
    sim = pd.DataFrame({0: [1.0, 1.0], 30: [0.9, 0.7]}, index=pd.Index([1, 2], name="layer"))
    table = spatial.task_table({"pos": sim.iloc[:, -1]}, name="layer")
    assert table.index.name == "task" and table.columns.name == "layer"
    assert table.loc["pos"].tolist() == [0.9, 0.7]
    task = spatial.layers_task(sim, motion)
    assert task.steps == [0, 30] and task.n_labels == 4
    assert task.similarity == [[1.0, 0.9], [1.0, 0.7]] and task.final_similarity == [0.9, 0.7]
    assert task.range_of_motion == motion.table()["range of motion"].tolist()



def test_the_layers_record_holds_every_seed_and_the_summary_counts_a_task_only_on_every_seed():
    import pandas as pd

    X, y = _layers()
    motions = [spatial.centroid_motion(X, X + 1.0, y), spatial.centroid_motion(X, X + 2.0, y)]
    sims = [pd.DataFrame({0: [1.0, 1.0], 30: [0.9, 0.7]}, index=pd.Index([1, 2], name="layer")),
            pd.DataFrame({0: [1.0, 1.0], 30: [0.8, 0.3]}, index=pd.Index([1, 2], name="layer"))]
    task = spatial.layers_task(sims[0], motions[0], seeds=list(zip(sims, motions, strict=True)))
    assert task.final_similarity == [0.9, 0.7] and task.final_similarity_seeds == [[0.9, 0.7], [0.8, 0.3]]
    assert task.similarity_seeds[1] == [[1.0, 0.8], [1.0, 0.3]] and len(task.relative_range_seeds) == 2
    assert spatial.layers_task(sims[0], motions[0]).final_similarity_seeds is None
    with pytest.raises(ValueError, match="same layers and steps"):
        spatial.layers_task(sims[0], motions[0], seeds=[(sims[0].iloc[:, :1], motions[0])])
    # per (task, seed) rows: pos is above 0.5 on one seed only
    final = spatial.seed_table([spatial.task_table({"pos": s.iloc[:, -1], "dep": sims[0].iloc[:, -1]})
                                for s in sims])
    assert final.index.names == ["task", "fine-tuning seed"]
    assert final.index.tolist() == [("pos", 0), ("pos", 1), ("dep", 0), ("dep", 1)]
    motion = final * 0 + pd.Series({1: 0.1, 2: 0.2})  # the top layer moves most, every seed
    s = spatial.layers_summary(final, motion)
    assert (s["n_tasks"], s["n_top_defined"], s["n_top_above_half"], s["n_top_lowest"]) == (2, 2, 1, 2)
    assert s["min_top_sim"] == pytest.approx(0.3) and s["min_top_task"] == "pos"
    assert s["n_top_moves_most"] == 2
    gap = final.copy()
    gap.loc[("dep", 1), 2] = np.nan  # dep's top layer is undefined on one seed
    assert spatial.layers_summary(gap, motion)["n_top_defined"] == 1


def _probed(distances, accuracy, n_points=6):
    """A ProbedState whose clusters are the labels themselves, with the given label-pair
    distances (a symmetric matrix), and an MLP probe of the given accuracies."""
    from ftgeo.probes import ProbeGridResult

    D = np.asarray(distances, dtype=float)
    k = len(D)
    summary = spatial.ClusterSummary(np.arange(k), np.arange(k), np.repeat(np.arange(k), n_points), D)
    mlp = ProbeGridResult((8, 8), 1e-3, 0.9, np.asarray(accuracy, float), None)
    return spatial.ProbedState(mlp, summary, 1.0)


def test_the_cross_task_table_and_record_cover_every_fine_tuning_seed():
    import pandas as pd

    base = np.array([[0, 1, 2, 4], [1, 0, 3, 5], [2, 3, 0, 6], [4, 5, 6, 0]], float)
    pre = _probed(base, [0.80, 0.82])
    seeds = [{"pretrained": pre, "finetuned on pos": _probed(0.5 * base, [0.70, 0.72])},
             {"finetuned on pos": _probed(base * [[1, 1, 1, 2]] * [[1], [1], [1], [2]], [0.60, 0.62])}]
    table = spatial.cross_task_table(seeds)
    row = table.loc["finetuned on pos"]
    assert row["MLP accuracy"] == pytest.approx(0.66)
    assert row["sd"] == pytest.approx(np.std([0.71, 0.61], ddof=1))
    assert row["clusters"] == "4/4" and row["fine-tuning seeds"] == 2
    # minimum distances before: 1, 1, 2, 4; seed 0 halves them all, seed 1 doubles the last label's
    assert (row["labels grew"], row["labels shrank"]) == (0, 0)
    assert row["mean change"] == pytest.approx((-(0.5 + 0.5 + 1 + 2) / 4 + 4 / 4) / 2)
    assert table.loc["pretrained", "MLP accuracy"] == pytest.approx(0.81)
    assert pd.isna(table.loc["pretrained", "labels grew"])
    states = spatial.cross_task_states(seeds, ["a", "b", "c", "d"])
    assert states["pretrained"].mlp_seeds is None and states["pretrained"].min_distance["d"] == 4.0
    pos = states["finetuned on pos"]
    assert pos.mlp == [0.70, 0.72] and pos.mlp_seeds == [[0.70, 0.72], [0.60, 0.62]]
    assert pos.min_distance_seeds[1]["d"] == 8.0 and pos.clusters_seeds == [4, 4]
    assert pos.similarity_to_pretrained_seeds[0] == pytest.approx(1.0)  # a uniform scaling
    assert spatial.cross_task_states(seeds[:1], list("abcd"))["finetuned on pos"].mlp_seeds is None



def test_clusters_alone_match_the_full_fit_and_are_cached_apart(store):
    X, y = _segments([0.0, 3.0, 6.0])
    y = np.where(y == 2, 0, y)  # 3 clusters for 2 labels
    full = directprobe_summary(X, y, store=store)
    alone = directprobe_summary(X, y, store=store, distances=False)
    assert alone.n_clusters == full.n_clusters == 3
    np.testing.assert_array_equal(alone.assignments, full.assignments)
    assert np.isnan(alone.distances).all() and not np.isnan(full.distances[0, 2])  # labels 0, 1
    # a second full call is a hit on the full entry, not the clusters-only one
    again = directprobe_summary(X, y, store=store)
    np.testing.assert_array_equal(again.distances, full.distances)


def test_a_trajectory_measures_distances_only_where_the_labels_are_separable():
    """The reference's protocol: a step whose labels are not linearly separable has no label
    distances (NaN; the reference writes 0); the per-step refit variant keeps them."""
    X, y = _segments([0.0, 3.0, 8.0, 12.0])
    mixed = X.copy()
    mixed[y == 3] -= [11.5, 0]  # label 3 now overlaps label 0: not separable
    traj = spatial.trajectory([X, mixed, X], y, [0, 5, 10], ["a", "b", "c", "d"], store=False)
    assert traj.separable.tolist() == [True, False, True]
    assert np.isnan(traj.min_distance[1]).all() and np.isfinite(traj.min_distance[[0, 2]]).all()
    np.testing.assert_allclose(traj.min_distance[0], [2.0, 2.0, 3.0, 3.0], atol=2e-3)
    record = traj.record()
    assert record.separable == [True, False, True] and record.min_distance["a"][1] is None
    refit = spatial.trajectory([X, mixed, X], y, [0, 5, 10], ["a", "b", "c", "d"],
                               separable_only=False, store=False)
    assert np.isfinite(refit.min_distance[1]).any()


def test_a_trajectory_fits_only_the_separable_steps_and_caches_the_test(store, monkeypatch):
    """A step that is not separable is decided by the separability test alone; the result is
    the one a fit at every step gives, and a second pass reads the cached tests."""
    X, y = _segments([0.0, 3.0, 8.0, 12.0])
    mixed = X.copy()
    mixed[y == 3] -= [11.5, 0]
    every = spatial.trajectory([X, mixed, X], y, [0, 5, 10], ["a", "b", "c", "d"],
                               separable_only=False, store=False)
    fits, tests = [], []
    original_fit, original_test = spatial.DirectProbe.fit, spatial.test_labels
    monkeypatch.setattr(spatial.DirectProbe, "fit",
                        lambda self, *a, **k: fits.append(1) or original_fit(self, *a, **k))
    monkeypatch.setattr(spatial, "test_labels",
                        lambda *a, **k: tests.append(1) or original_test(*a, **k))
    traj = spatial.trajectory([X, mixed, X], y, [0, 5, 10], ["a", "b", "c", "d"], store=store)
    assert len(fits) == 1 and len(tests) == 2  # X fitted once (cached), mixed only tested
    assert traj.separable.tolist() == [True, False, True]
    np.testing.assert_allclose(traj.min_distance[[0, 2]], every.min_distance[[0, 2]])
    np.testing.assert_allclose(traj.centroids, every.centroids)
    spatial.trajectory([X, mixed, X], y, [0, 5, 10], ["a", "b", "c", "d"], store=store)
    assert len(fits) == 1 and len(tests) == 2
    # a cached fit answers the test too, with or without its distances
    for distances in (True, False):
        fresh = X * (3.0 if distances else 5.0)  # data with no separability entry of its own
        directprobe_summary(fresh, y, store=store, distances=distances)
        assert spatial.separable(fresh, y, store=store) and len(tests) == 2


def test_a_step_stays_blank_when_the_fit_finds_an_overlap_the_test_did_not(monkeypatch):
    """Should the separability test and the fit ever disagree, the fit decides: no
    distances for a step whose fit is not separable."""
    X, y = _segments([0.0, 3.0, 8.0, 12.0])
    mixed = X.copy()
    mixed[y == 3] -= [11.5, 0]
    monkeypatch.setattr(spatial, "separable", lambda *a, **k: True)  # a test that misses it
    traj = spatial.trajectory([X, mixed], y, [0, 5], ["a", "b", "c", "d"], store=False)
    assert traj.separable.tolist() == [True, False]
    assert np.isnan(traj.min_distance[1]).all() and np.isfinite(traj.min_distance[0]).all()


@pytest.mark.parametrize("seed", range(4))
def test_the_separability_test_agrees_with_a_full_fit(seed):
    from ftgeo.directprobe import DirectProbe, linearly_separable

    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 0.3 if seed % 2 else 12.0, (4, 3))  # close centers overlap
    y = rng.integers(0, 4, 200)
    X = centers[y] + rng.normal(0, 1, (200, 3))
    fit = DirectProbe().fit(X, y)
    assert linearly_separable(X, y) == (fit.n_clusters_ == 4)
    assert linearly_separable(X, y) == (seed % 2 == 0)  # both outcomes occur


def test_similarity_to_pretrained_is_blank_without_a_fit_where_a_layer_is_not_separable(monkeypatch):
    X, y = _segments([0.0, 3.0, 8.0, 12.0])
    mixed = X.copy()
    mixed[y == 3] -= [11.5, 0]
    fits = []
    original = spatial.DirectProbe.fit
    monkeypatch.setattr(spatial.DirectProbe, "fit",
                        lambda self, *a, **k: fits.append(1) or original(self, *a, **k))
    pre = np.stack([X, X, mixed])
    table = spatial.similarity_to_pretrained(pre, [(5, np.stack([X, mixed, X]))], y, store=False)
    assert table.loc[1, 5] != table.loc[1, 5] and table.loc[2, 5] != table.loc[2, 5]  # NaN
    assert len(fits) == 1  # layer 1 of the pretrained model; nothing else needed a fit
    table = spatial.similarity_to_pretrained(pre, [(5, np.stack([X, 2 * X, X]))], y, store=False)
    assert table.loc[1, 5] == pytest.approx(1.0)


def test_a_fit_after_the_separability_test_does_not_test_the_labels_again(store, monkeypatch):
    from ftgeo import directprobe

    X, y = _segments([0.0, 3.0, 8.0, 12.0])
    calls = []
    original = directprobe._Clusters.any_overlap
    monkeypatch.setattr(directprobe._Clusters, "any_overlap",
                        lambda self: calls.append(1) or original(self))
    assert spatial.separable(X, y, store=store) and len(calls) == 1
    summary = directprobe_summary(X, y, store=store)
    assert len(calls) == 1 and summary.linearly_separable
    expected = directprobe_summary(X, y, store=False)  # a fit of its own: tests again
    assert len(calls) == 2
    np.testing.assert_allclose(summary.distances, expected.distances, rtol=1e-6, equal_nan=True)
