"""DirectProbe: known answers on synthetic data, the exact hull test against brute force,
the fast overlap test against the exact one and the caches against a plain implementation,
order independence, the appendix-F stopping bug, and clear errors."""

import itertools

import numpy as np
import pytest

from ftgeo.directprobe import (
    DirectProbe,
    hull_distance,
    hull_overlap,
    point_to_hull,
    spatial_similarity,
)


def _partition(labels):
    groups = {}
    for i, c in enumerate(labels):
        groups.setdefault(c, set()).add(i)
    return {frozenset(g) for g in groups.values()}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 5, 9])
def test_separated_blobs_give_one_cluster_per_label(seed, k):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 30, (k, 16))
    y = np.repeat(np.arange(k), 25)
    X = centers[y] + rng.normal(0, 1, (len(y), 16))
    dp = DirectProbe().fit(X, y)
    assert dp.n_clusters_ == k and dp.first_overlap_step_ is None
    assert _partition(dp.labels_) == _partition(y)
    assert len(dp.distance_vector()) == k * (k - 1) // 2


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_xor_gives_three_clusters_for_two_labels(seed):
    rng = np.random.default_rng(seed)
    corners = [((0, 0), "a"), ((10, 10), "a"), ((0, 10), "b"), ((10, 0), "b")]
    X = np.vstack([rng.normal(0, 1, (30, 2)) + c for c, _ in corners])
    y = np.repeat([lab for _, lab in corners], 30)
    dp = DirectProbe().fit(X, y)
    assert dp.n_clusters_ == 3
    per_label = sorted(np.unique(dp.labels_[y == lab]).size for lab in ("a", "b"))
    assert per_label == [1, 2]  # one label's blobs merged; the other's would cross it
    for blob in range(4):  # no blob is split
        assert np.unique(dp.labels_[blob * 30:(blob + 1) * 30]).size == 1


def test_distance_equals_the_analytic_hull_distance():
    rng = np.random.default_rng(0)
    A = rng.uniform(0, 1, (60, 3))
    B = rng.uniform(0, 1, (60, 3)) + [4, 0, 0]
    A[0], B[0] = [1, 0.5, 0.5], [4, 0.5, 0.5]  # the cubes' facing faces are 3 apart
    A[1], B[1] = [1, 0.2, 0.9], [4, 0.7, 0.1]
    assert hull_distance(A, B) == pytest.approx(3.0, rel=1e-6)
    # two segments in 2-D: the nearest points are an end point and an interior point
    P = np.array([[0.0, 0.0], [0.0, 2.0]])
    Q = np.array([[3.0, 1.0], [5.0, 4.0]])
    assert hull_distance(P, Q) == pytest.approx(3.0, rel=1e-6)


def test_distance_vector_and_spatial_similarity():
    rng = np.random.default_rng(1)
    centers = np.array([[0.0, 0], [10, 0], [0, 20]])
    y = np.repeat([0, 1, 2], 20)
    X = centers[y] + rng.uniform(-1, 1, (60, 2))
    dp = DirectProbe().fit(X, y)
    v = dp.distance_vector()
    assert v.shape == (3,) and (v > 0).all()
    D = dp.distances()
    assert np.allclose(D, D.T) and np.allclose(np.diag(D), 0)
    assert spatial_similarity(v, 2 * v + 1) == pytest.approx(1.0)
    assert spatial_similarity(v, -v) == pytest.approx(-1.0)


def _brute_force_overlap(A, B):
    """Separating-axis test in 2-D over every direction and normal between two points."""
    pts = np.vstack([A, B])
    axes = []
    for p, q in itertools.combinations(pts, 2):
        d = q - p
        if np.linalg.norm(d) > 0:
            axes += [d, np.array([-d[1], d[0]])]
    for ax in axes:
        a, b = A @ ax, B @ ax
        if a.max() < b.min() - 1e-12 or b.max() < a.min() - 1e-12:
            return False
    return True


@pytest.mark.parametrize("seed", range(40))
def test_hull_overlap_agrees_with_brute_force_in_2d(seed):
    rng = np.random.default_rng(seed)
    n_a, n_b = rng.integers(1, 7, 2)
    A = rng.normal(0, 1, (n_a, 2))
    B = rng.normal(rng.uniform(0, 2.5), 1, (n_b, 2))
    overlap, plane, witness = hull_overlap(A, B)
    assert overlap == _brute_force_overlap(A, B)
    if overlap:
        assert witness is not None
    else:
        assert plane.separates(A, B)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_result_does_not_depend_on_point_order(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(80, 3))
    y = rng.integers(0, 3, 80)
    ref = DirectProbe().fit(X, y)
    perm = rng.permutation(80)
    again = DirectProbe().fit(X[perm], y[perm])
    assert again.n_clusters_ == ref.n_clusters_
    mapped = {frozenset(int(perm[i]) for i in g) for g in _partition(again.labels_)}
    assert mapped == _partition(ref.labels_)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_no_early_stop_where_the_old_loop_would_have_stopped(seed):
    """Appendix F (Zhou & Srikumar 2022): a loop of m tries (m = clusters at the restart)
    stopped while mergeable pairs were left. Here phase 2 needs more tries than m, and the
    result is maximal: merging any two final clusters of a label would overlap another."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 2))
    y = (rng.random(60) < 0.5).astype(int)
    dp = DirectProbe().fit(X, y)
    assert dp.phase2_tries_ > dp.phase2_start_clusters_  # the old loop would stop early
    clusters = [np.flatnonzero(dp.labels_ == k) for k in range(dp.n_clusters_)]
    for i, j in itertools.combinations(range(dp.n_clusters_), 2):
        if dp.cluster_labels_[i] != dp.cluster_labels_[j]:
            assert not hull_overlap(X[clusters[i]], X[clusters[j]])[0]
            continue
        merged = np.r_[clusters[i], clusters[j]]
        others = [c for k, c in enumerate(clusters) if dp.cluster_labels_[k] != dp.cluster_labels_[i]]
        assert any(hull_overlap(X[merged], X[o])[0] for o in others)


def test_identical_points_with_different_labels_stay_apart():
    X = np.array([[0.0, 0], [0, 0], [1, 1], [1.1, 1], [5, 5], [5, 5.1]])
    y = np.array([0, 1, 0, 0, 1, 1])
    dp = DirectProbe().fit(X, y)
    assert dp.first_overlap_step_ == 0
    assert dp.labels_[0] != dp.labels_[1]


def test_predict_assigns_to_the_nearest_hull():
    X = np.array([[0.0, 0], [1, 0], [0, 1], [5, 5], [6, 5], [5, 6]])
    y = np.array(["a", "a", "a", "b", "b", "b"])
    dp = DirectProbe().fit(X, y)
    assert list(dp.predict(np.array([[0.2, 0.2], [4.0, 4.0], [2.0, 2.0]]))) == ["a", "b", "a"]
    assert dp.score(X, y) == 1.0


def test_point_to_hull_matches_exact_distances():
    square = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1]])
    P = np.array([[0.5, 0.5], [2.0, 0.5], [2.0, 2.0], [-1.0, -1.0]])
    np.testing.assert_allclose(point_to_hull(P, square), [0, 1, np.sqrt(2), np.sqrt(2)], atol=1e-6)


def test_bad_input_is_refused():
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="at least 2 labels"):
        DirectProbe().fit(X, np.zeros(10))
    with pytest.raises(ValueError, match="more points than labels"):
        DirectProbe().fit(X[:2], np.array([0, 1]))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        DirectProbe().fit(bad, np.arange(10) % 2)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        DirectProbe().fit(bad, np.arange(10) % 2)
    with pytest.raises(ValueError, match=r"y must have shape \(n_samples,\) = \(10,\)"):
        DirectProbe().fit(X, np.arange(9) % 2)
    with pytest.raises(ValueError, match="one cluster per label"):
        rng = np.random.default_rng(0)
        Xx = rng.normal(size=(60, 2))
        DirectProbe().fit(Xx, (rng.random(60) < 0.5).astype(int)).distance_vector()


def _naive_directprobe(X, y):
    """The reference algorithm written plainly: no caches, no sphere filter, a fresh exact
    test for every pair, phase 1 by repeated global closest-pair search."""
    scale = float(np.abs(X - X.mean(0)).max())

    def overlap(P, Q):
        return hull_overlap(X[P], X[Q], scale=scale)[0]

    def state_overlaps(clusters):
        return any(y[P[0]] != y[Q[0]] and overlap(P, Q)
                   for P, Q in itertools.combinations(clusters, 2))

    def closest_same_label(clusters, allowed=None):
        best = None
        for i, j in itertools.combinations(range(len(clusters)), 2):
            P, Q = clusters[i], clusters[j]
            if y[P[0]] != y[Q[0]] or (allowed is not None and (i, j) not in allowed):
                continue
            d = np.linalg.norm(X[P].mean(0) - X[Q].mean(0))
            if best is None or d < best[0]:
                best = (d, i, j)
        return best

    clusters = [[i] for i in range(len(X))]
    path = [list(map(list, clusters))]
    while (best := closest_same_label(clusters)) is not None:
        _, i, j = best
        clusters = [c for k, c in enumerate(clusters) if k not in (i, j)] + [clusters[i] + clusters[j]]
        path.append(list(map(list, clusters)))
    if not state_overlaps(path[-1]):
        return path[-1]
    first = next(s for s, state in enumerate(path) if state_overlaps(state))
    clusters = path[max(first - 1, 0)]
    tried = set()
    while True:
        # all untried same-label pairs, closest first
        pairs = sorted((np.linalg.norm(X[P].mean(0) - X[Q].mean(0)), tuple(sorted(P)), tuple(sorted(Q)))
                       for P, Q in itertools.combinations(clusters, 2)
                       if y[P[0]] == y[Q[0]] and (tuple(sorted(P)), tuple(sorted(Q))) not in tried)
        if not pairs:
            return clusters
        _, P, Q = pairs[0]
        tried.add((P, Q))
        merged = list(P) + list(Q)
        if any(y[R[0]] != y[P[0]] and overlap(merged, R) for R in clusters):
            continue
        clusters = [c for c in clusters if tuple(sorted(c)) not in (P, Q)] + [merged]


@pytest.mark.parametrize("seed", range(8))
def test_assignments_equal_a_plain_implementation_of_the_reference(seed):
    rng = np.random.default_rng(seed)
    n = 30
    X = rng.normal(size=(n, 2 + seed % 3))
    y = rng.integers(0, 2 + seed % 2, n)
    if seed % 2:  # identical points with different labels, as in embedding layers
        X[1] = X[0]
        y[1] = (y[0] + 1) % 2
    dp = DirectProbe().fit(X, y)
    plain = _naive_directprobe(X, y)
    assert _partition(dp.labels_) == {frozenset(c) for c in plain}


def _hull_pairs(seed):
    """(kind, A, B): pairs of point sets in 3 to 8 dimensions, random ("random", some apart,
    some interleaved), sharing a point, touching at a vertex, 1e-6 and 0.5 apart, and flat
    (interleaved inside a plane of the space)."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(3, 9))
    pairs = []
    for _ in range(30):
        n_a, n_b = rng.integers(1, 3 * d, 2)
        pairs.append(("random", rng.normal(size=(n_a, d)), rng.normal(rng.uniform(0, 3), 1, (n_b, d))))
    A, B = rng.normal(size=(20, d)), rng.normal(size=(15, d))
    pairs.append(("shared point", A, np.r_[B, A[:1]]))
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    A = A - np.maximum(A @ u, 0)[:, None] * u  # A in the half-space u.x <= 0, B in u.x >= 0,
    B = B - np.minimum(B @ u, 0)[:, None] * u  # both with the origin
    A[0] = B[0] = 0
    pairs += [("touching", A, B), ("1e-6 apart", A, B + 1e-6 * u), ("0.5 apart", A, B + 0.5 * u)]
    flat = rng.normal(size=(2, d))
    pairs.append(("flat", rng.normal(size=(12, 2)) @ flat, rng.normal(0.3, 1, (12, 2)) @ flat))
    return pairs


@pytest.mark.parametrize("seed", range(6))
def test_the_fast_overlap_test_decides_as_the_exact_one(seed):
    """The fast test (mean and Fisher directions, the nearest-point search) answers where the
    exact test is certain and leaves the rest to it: the same answer for every pair, a valid
    certificate for each answer."""
    from ftgeo.directprobe import _GRAY, _nearest_points, _overlap

    decided = {True: 0, False: 0}
    fast = {}
    for kind, A, B in _hull_pairs(seed):
        scale = float(np.abs(np.r_[A, B] - np.r_[A, B].mean(0)).max())
        exact = hull_overlap(A, B, scale=scale)[0]
        overlap, plane, witness = _overlap(A, B, tol=1e-9, scale=scale)
        assert overlap == exact, kind
        if overlap:
            assert hull_overlap(A[witness[0]], B[witness[1]], scale=scale)[0], kind
        else:
            assert plane.separates(A, B, 1e-9 * scale), kind
        fast[kind] = _nearest_points(A, B, 1e-9 * scale, _GRAY * scale)
        if fast[kind] is not None:
            assert fast[kind][0] == exact, kind
            decided[exact] += 1
    assert decided[True] > 0 and decided[False] > 0  # the search itself decided both ways
    assert fast["shared point"][0] and fast["touching"][0]
    # the twin: hulls closer than the margin the search trusts are left to the exact test
    assert fast["0.5 apart"][0] is False and fast["1e-6 apart"] is None


@pytest.mark.parametrize("seed", range(3))
def test_phase2_with_interleaved_labels_equals_the_plain_implementation(seed, monkeypatch):
    """Three labels interleaved in 3 to 8 dimensions, so that phase 2 starts early and
    rejects many merges: every cache and the fast overlap test give the plain answer."""
    import ftgeo.directprobe as dp_module

    calls = {"decided": 0}
    nearest = dp_module._nearest_points

    def counted(*args, **kwargs):
        found = nearest(*args, **kwargs)
        calls["decided"] += found is not None
        return found

    monkeypatch.setattr(dp_module, "_nearest_points", counted)
    rng = np.random.default_rng(seed)
    d = 3 + 2 * seed + seed // 2
    X = rng.normal(size=(36, d))
    y = (np.floor(X[:, 0] * 2) + (X[:, 1] > 0)).astype(int) % 3  # bands of alternating labels
    dp = DirectProbe().fit(X, y)
    assert dp.phase2_tries_ > 0 and dp.phase2_rejected_ > 0
    assert calls["decided"] > 0
    assert _partition(dp.labels_) == {frozenset(c) for c in _naive_directprobe(X, y)}


# -- cluster counts before and after fine-tuning -------------------------------------------
def _summary(kind, seed=0):
    """DirectProbe on 2-D blobs: "xor" (labels 0, 1 at opposite corners: 3 clusters), "two"
    (the same labels, separated: 2 clusters) or "blobs" (three separated labels: 3 clusters)."""
    from ftgeo.spatial import directprobe_summary

    rng = np.random.default_rng(seed)
    if kind == "xor":
        corners, labels = [(0, 0), (10, 10), (0, 10), (10, 0)], [0, 0, 1, 1]
    elif kind == "two":
        corners, labels = [(0, 0), (0, 10), (10, 0), (10, 10)], [0, 0, 1, 1]
    else:
        corners, labels = [(0, 0), (10, 0), (0, 10)], [0, 1, 2]
    X = np.vstack([rng.normal(0, 1, (20, 2)) + c for c in corners])
    return directprobe_summary(X, np.repeat(labels, 20), store=False)


def test_cluster_tables_and_the_linearity_summary_known_answers():
    from ftgeo import results
    from ftgeo.directprobe import (
        cluster_counts,
        linearity_summary,
        linearity_tasks,
        per_layer_table,
        shared_label_pairs,
        split_labels,
    )

    xor, two, blobs = _summary("xor"), _summary("two"), _summary("blobs")
    assert (xor.n_labels, xor.n_clusters, two.n_clusters, blobs.n_clusters) == (2, 3, 2, 3)
    clusters = {("xor", "pretrained"): xor, ("xor", "finetuned"): two,
                ("blobs", "pretrained"): blobs, ("blobs", "finetuned"): blobs}
    counts = cluster_counts(clusters)
    assert list(counts.index) == ["xor", "blobs"] and counts.index.name == "task"
    assert counts.loc["xor"].tolist() == [2, 3, 2, "no", "yes"]
    assert counts.loc["blobs"].tolist() == [3, 3, 3, "yes", "yes"]
    split = split_labels(clusters, {"xor": ["a", "b"], "blobs": ["x", "y", "z"]})
    twice = int(np.argmax(np.bincount(xor.cluster_labels)))  # the label whose blobs stay apart
    assert split.to_dict("records") == [{"task": "xor", "state": "pretrained", "label": "ab"[twice],
                                         "clusters": 2}]
    assert split_labels({("blobs", "finetuned"): blobs}, {"blobs": "xyz"}).empty
    assert linearity_summary(clusters) == {"n_linear_before": 1, "n_linear_after": 2, "n_fewer": 1,
                                           "nonlinear_after": "none"}
    # the twin: fine-tuning leaves XOR as it was
    stays = {**clusters, ("xor", "finetuned"): xor, ("blobs", "pretrained"): _summary("xor", 1)}
    assert linearity_summary(stays) == {"n_linear_before": 0, "n_linear_after": 1, "n_fewer": 0,
                                        "nonlinear_after": "xor"}
    assert shared_label_pairs(xor.classes, blobs.classes) == 1  # labels 0 and 1
    layers = {("xor", "pretrained"): [3, 4, 5], ("xor", "finetuned"): [2, 2, 2]}
    table = per_layer_table(layers)
    assert list(table.index) == ["xor / pretrained", "xor / finetuned"]
    assert list(table.columns) == [1, 2, 3] and table.columns.name == "layer"
    assert table.loc["xor / pretrained"].tolist() == [3, 4, 5]
    assert list(per_layer_table(layers, first_layer=0).columns) == [0, 1, 2]
    tasks = linearity_tasks(clusters, layers)
    assert tasks["xor"] == results.LinearityTask(2, 3, 2, [3, 4, 5], [2, 2, 2])
    assert tasks["blobs"] == results.LinearityTask(3, 3, 3, None, None)  # no per-layer counts
    # the reference's protocol for layers: a flag per layer, recorded beside the counts' None
    flags = {("xor", "pretrained"): [np.True_, False, False], ("xor", "finetuned"): [True, True, True]}
    assert per_layer_table(flags).loc["xor / pretrained"].tolist() == ["yes", "no", "no"]
    tasks = linearity_tasks(clusters, {}, layer_separable=flags)
    assert tasks["xor"] == results.LinearityTask(2, 3, 2, None, None, None, [True, False, False],
                                                 [True, True, True])
    assert type(tasks["xor"].separable_per_layer_pretrained[0]) is bool  # JSON-ready
    assert tasks["blobs"].separable_per_layer_finetuned is None


@pytest.mark.parametrize("seed", range(4))
def test_all_candidate_pairs_at_once_equal_one_cluster_at_a_time(seed):
    """any_overlap's blocked search for bounding spheres that meet gives each cluster the same
    candidates, in the same order, as candidates() one cluster at a time: on clusters of
    several sizes, exact duplicates with different labels, spheres that just touch, and
    points far from the origin (where the matrix-product distances lose digits)."""
    from ftgeo.directprobe import _Clusters

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, 12)) * rng.uniform(0.1, 10, 12) + (1e3 if seed % 2 else 0.0)
    y = rng.integers(0, 4, len(X))
    X[1:12:2] = X[0:12:2]  # identical points with different labels
    y[0:12:2], y[1:12:2] = 0, 1
    X[200:300:2] = X[201:300:2]  # more, in clusters of three
    y[200:300:2] = (y[201:300:2] + 1) % 4
    cl = _Clusters(X, y, 1e-9, 100)
    cl.add(np.arange(12, 40))  # a large cluster (its label: point 12's)
    X[40] = X[12] + (cl.radius[0] + 1e-3) * np.eye(12)[0]  # just outside its sphere: reaches it with a radius
    for i in range(40, len(X), 3):
        cl.add(np.arange(i, min(i + 3, len(X))))
    for i in range(12):
        cl.add(np.array([i]))
    ids = np.array(sorted(cl.points))
    for block in (7, 1024):
        near = cl.candidate_pairs(ids, block=block)
        for a in ids.tolist():
            one = cl.candidates(cl.label[a], cl.center[a], cl.radius[a])
            expected = one[one > a]
            got = near.get(a, np.zeros(0, dtype=np.int64))
            np.testing.assert_array_equal(got, expected)
    assert any(len(v) for v in near.values())
    a10 = next(a for a in ids.tolist() if cl.points[a].tolist() == [10])
    assert cl.owner[11] in near[a10]  # the duplicate with another label is a candidate


def _large_pairs(seed):
    """(kind, A, B): pairs of 100 to 150 points a side, so that a seed of a few points is a
    small part of what the LP must see: overlapping (interleaved, one shared point, one
    side inside the other, a point at the centre of points on a sphere, which a few of them
    do not surround), touching at a vertex, 1e-6 and 0.05 apart."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(4, 9))
    A, B = rng.normal(size=(150, d)), rng.normal(0.5, 1, (120, d))
    sphere = A / np.linalg.norm(A, axis=1, keepdims=True)
    pairs = [("interleaved", A, B), ("shared point", A + 4.0, np.r_[B, A[:1] + 4.0]),
             ("inside", A, 0.1 * B), ("centre", sphere, np.r_[np.zeros((1, d)), 3 + B[:5]])]
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    A = A - np.maximum(A @ u, 0)[:, None] * u
    B = B - np.minimum(B @ u, 0)[:, None] * u
    A[0] = B[0] = 0
    pairs += [("touching", A, B), ("1e-6 apart", A, B + 1e-6 * u), ("0.05 apart", A, B + 0.05 * u)]
    return pairs


@pytest.mark.parametrize("seed", range(4))
def test_a_seeded_exact_test_decides_as_the_unseeded_one(seed):
    """The warm start (the seed as the LP's first working set, the SVM's candidate and the
    nearest-point search skipped) changes what is computed, never the answer: on pairs that
    overlap, touch or nearly touch, with seeds of a few points (which alone look
    separable), the pair's own support, a support from the pair without some points, and
    every point."""
    from ftgeo.directprobe import _hull_overlap, _overlap_seeded

    rng = np.random.default_rng(seed)
    seeded = 0
    for kind, A, B in _large_pairs(seed):
        scale = float(np.abs(np.r_[A, B] - np.r_[A, B].mean(0)).max())
        exact = hull_overlap(A, B, scale=scale)[0]
        keep = np.sort(rng.choice(len(A), len(A) - 10, replace=False))
        support = _hull_overlap(A[keep], B, scale=scale)[3]
        seeds = [(rng.choice(len(A), 3, replace=False), rng.choice(len(B), 3, replace=False)),
                 (np.arange(len(A)), np.arange(len(B)))]
        own = _hull_overlap(A, B, scale=scale)[3]
        seeds += [s for s in (own, None if support is None else (keep[support[0]], support[1]))
                  if s is not None]
        for s in seeds:
            fast = _overlap_seeded(A, B, tol=1e-9, scale=scale, seed=s)
            seeded += fast[3] is not None  # the LP ran
            # and with the working set grown from the seed in small steps
            for overlap, plane, witness, *_ in (fast, _hull_overlap(A, B, scale=scale, grow=16, seed=s)):
                assert overlap == exact, kind
                if overlap:
                    assert hull_overlap(A[witness[0]], B[witness[1]], scale=scale)[0], kind
                else:
                    assert plane.separates(A, B, 1e-9 * scale), kind
    assert seeded > 0


def test_seeds_are_the_last_support_inside_the_clusters():
    """_Clusters._seed: the label pair's last support, as indices into the two clusters
    (either orientation), when at least half of each side lies there; else none."""
    from ftgeo.directprobe import _Clusters

    X = np.random.default_rng(0).normal(size=(20, 3))
    y = np.r_[np.zeros(10, dtype=int), np.ones(10, dtype=int)]
    cl = _Clusters(X, y, 1e-9, 8)
    cl.supports[0, 1] = (np.array([1, 4, 7]), np.array([12, 15]))
    idx, other = np.array([0, 1, 2, 4, 8]), np.array([11, 12, 15, 19])
    a, b = cl._seed((0, 1), True, idx, other)
    assert idx[a].tolist() == [1, 4] and other[b].tolist() == [12, 15]
    b, a = cl._seed((0, 1), False, other, idx)  # seen from label 1
    assert idx[a].tolist() == [1, 4] and other[b].tolist() == [12, 15]
    assert cl._seed((0, 1), True, np.array([1, 2, 3]), other) is None  # 1 of 3: too few
    assert cl._seed((0, 2), True, idx, other) is None  # no support for that pair


def test_warm_models_are_cut_to_the_clusters():
    """_Clusters._warm: of the label pair's kept LP models, the one with the largest share of
    its rows (on its worse side) in the two clusters, at least half, with the rows of
    other points deleted and the rest mapped to indices into the clusters; else none."""
    from ftgeo.directprobe import _Clusters, _MarginLP

    X = np.random.default_rng(0).normal(size=(20, 3))
    y = np.r_[np.zeros(10, dtype=int), np.ones(10, dtype=int)]
    cl = _Clusters(X, y, 1e-9, 8)

    def model(a, b, key=(0, 1)):
        lp = _MarginLP(3, np.zeros(3), 1.0)
        lp.add(X[a], 1, np.arange(len(a)))
        lp.add(X[b], -1, np.arange(len(b)))
        cl.lps.append((key, lp, np.r_[a, b]))
        return lp

    first, second = np.array([0, 1, 2, 4, 8]), np.array([11, 12, 15, 19])
    other_pair = model([1, 4], [12], key=(0, 2))
    lp = model([1, 4, 7], [12, 15])  # 2 of 3 and 2 of 2 rows inside
    worse = model([1, 5, 6], [12, 15])  # 1 of 3: too few
    assert cl._warm((0, 1), first, second) is lp
    assert lp.h.getNumRow() == 4 and lp.side.tolist() == [1, 1, -1, -1]
    assert first[lp.ref[:2]].tolist() == [1, 4] and second[lp.ref[2:]].tolist() == [12, 15]
    assert [m for _, m, _ in cl.lps] == [other_pair, worse]  # taken out; _exact files it again
    assert cl._warm((0, 1), first, second) is None  # only the worse model is left
    assert cl._warm((1, 2), first, second) is None  # no model of that pair


@pytest.mark.parametrize("seed", range(3))
def test_fits_with_warm_starts_equal_the_plain_implementation(seed, monkeypatch):
    """Two labels interleaved in 4 to 6 dimensions, with the nearest-point search left
    undecided so that every pair the caches miss goes to the LP: phase 2 re-tests the same
    label pair as clusters grow, the LPs go on from the pair's last model (warm) or start
    from its last support (seeded), and the result is the plain implementation's."""
    import ftgeo.directprobe as dp_module

    calls = {"seeded": 0, "warm": 0}
    seeded = dp_module._overlap_seeded

    def counted(*args, **kwargs):
        calls["seeded"] += kwargs.get("seed") is not None
        calls["warm"] += kwargs.get("warm") is not None
        return seeded(*args, **kwargs)

    monkeypatch.setattr(dp_module, "_overlap_seeded", counted)
    monkeypatch.setattr(dp_module, "_nearest_points", lambda *args, **kwargs: None)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 4 + seed))
    y = (np.sin(3 * X[:, 0]) + 0.3 * X[:, 1] > 0).astype(int)
    dp = DirectProbe().fit(X, y)
    assert calls["warm"] > 0 and dp.phase2_rejected_ > 0
    assert _partition(dp.labels_) == {frozenset(c) for c in _naive_directprobe(X, y)}


def test_first_overlap_is_the_first_state_of_the_phase1_path_with_an_overlap():
    """The search for phase 2's starting state (galloping back from the end, then bisecting)
    finds what a scan of every phase-1 state finds, on labels that overlap late in the path."""
    from ftgeo.directprobe import DirectProbe, _Clusters, _phase1_merges, _state

    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=80) > 0).astype(np.int64)
    dp = DirectProbe().fit(X, y)
    merges = _phase1_merges(X, y)
    scan = None
    for j in range(len(merges) + 1):
        cl = _Clusters(X, y, dp.tol, dp.max_planes)
        dp._load(cl, _state(len(X), merges, j))
        if cl.any_overlap():
            scan = j
            break
    assert scan is not None and 0 < scan < len(merges)
    assert dp.first_overlap_step_ == scan


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_growing_margin_lp_equals_a_fresh_solve_after_every_round(seed):
    """Rows added to one HiGHS model (its dual simplex restarting from the last basis), and
    rows deleted from it, give the optimum that scipy's ``linprog`` finds on the same rows
    from scratch, round after round: overlapping, touching and separated working sets."""
    from scipy.optimize import linprog

    from ftgeo.directprobe import _MarginLP

    rng = np.random.default_rng(seed)
    d = 12
    c = np.zeros(d + 2)
    c[-1] = -1.0
    for shift in (0.0, 0.5, 3.0):
        A = rng.normal(0, 1, (150, d))
        B = rng.normal(0, 1, (150, d)) + shift
        lp = _MarginLP(d, np.zeros(d), 1.0)
        ia, ib = np.zeros(0, dtype=int), np.zeros(0, dtype=int)
        for n in (10, 30, 60, 150, "cut", 120):
            if n == "cut":  # delete a third of the rows, as when points leave the clusters
                keep = rng.random(len(lp.side)) > 1 / 3
                lp.keep(keep)
                ia, ib = lp.ref[lp.side > 0], lp.ref[lp.side < 0]
                assert len(lp.side) == keep.sum() and lp.h.getNumRow() == keep.sum()
            else:
                new_a = np.setdiff1d(np.arange(n), ia)[: n // 2]
                new_b = np.setdiff1d(np.arange(n), ib)[: n // 2]
                lp.add(A[new_a], 1, new_a)
                lp.add(B[new_b], -1, new_b)
                ia, ib = np.r_[ia, new_a], np.r_[ib, new_b]
            t, w, b = lp.solve()
            M = np.vstack([np.c_[-A[ia], -np.ones(len(ia)), np.ones(len(ia))],
                           np.c_[B[ib], np.ones(len(ib)), np.ones(len(ib))]])
            ref = linprog(c, A_ub=M, b_ub=np.zeros(len(M)), method="highs",
                          bounds=[(-1, 1)] * d + [(None, None), (None, 1.0)])
            assert t == pytest.approx(-ref.fun, abs=1e-7), n
            assert np.abs(w).max() <= 1 + 1e-9
            # (w, b) attains t on the rows (up to HiGHS's feasibility tolerance)
            assert (A[ia] @ w + b >= t - 1e-6).all() and (B[ib] @ w + b <= -t + 1e-6).all()


def test_the_exact_test_prints_nothing():
    """HiGHS greets the first model of a process on the C-level stdout; the exact test
    keeps it quiet (a fresh process, so that this is that first model)."""
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from ftgeo.directprobe import hull_overlap\n"
            "A = np.array([[0., 0], [1, 0], [0, 1]])\n"
            "assert hull_overlap(A, A + 0.2)[0] and hull_overlap(A, A + 0.1)[0]\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout == "" and out.stderr == ""


def test_a_warm_model_in_a_far_frame_is_not_reused():
    """HiGHS's tolerances are absolute, so a model whose frame is far from the pair's own
    scale (here 10 times) is set aside and the pair is decided afresh, the same way."""
    from ftgeo.directprobe import _hull_overlap, _overlap_seeded

    for seed in range(3):
        rng = np.random.default_rng(seed)
        A, B = rng.normal(size=(60, 5)), rng.normal(size=(60, 5)) + 0.3  # overlapping
        overlap, *_, lp = _hull_overlap(A, B, scale=1.0)
        assert overlap and lp is not None
        lp.ref = np.r_[lp.ref]  # the same points, as indices into the scaled pair
        scaled = _overlap_seeded(10 * A, 10 * B, tol=1e-9, scale=10.0, warm=lp)
        assert scaled[0] and scaled[4] is not lp
        same = _overlap_seeded(A, B, tol=1e-9, scale=1.0, warm=lp)  # its own frame: reused
        assert same[0] and same[4] is lp


def test_hull_distance_falls_back_to_a_lower_bound_when_the_svm_does_not_converge(monkeypatch,
                                                                                 caplog):
    """Hulls that almost touch make libsvm's hard-margin solve run for minutes; capped, the
    distance is the bound that the overlap test's separating plane gives, never above the
    true distance (here about 2: the two sets lie in unit cubes whose faces are 2 apart)."""
    import logging

    from ftgeo import directprobe

    rng = np.random.default_rng(0)
    A = rng.uniform(0, 1, size=(40, 3))
    B = rng.uniform(0, 1, size=(40, 3))
    A[:, 0] += 3.0  # A in [3, 4], B in [0, 1] along x
    A[0, 0], B[0, 0] = 3.0, 1.0
    exact = directprobe.hull_distance(A, B)
    assert 2.0 - 1e-9 <= exact <= float(np.linalg.norm(A[0] - B[0])) + 1e-9
    monkeypatch.setattr(directprobe, "SVM_MAX_ITER", 1)
    with caplog.at_level(logging.WARNING, logger="ftgeo.directprobe"):
        bound = directprobe.hull_distance(A, B)
    assert "did not converge in 1 iterations" in caplog.text
    assert 0.0 < bound <= exact + 1e-9


def test_separable_labels_are_the_clusters_without_the_merge_sequence(monkeypatch):
    """One cluster per label that overlaps nothing ends the fit before phase 1's linkage; the
    linkage is computed only when the labels overlap."""
    from ftgeo import directprobe

    rng = np.random.default_rng(3)
    X = np.r_[rng.normal(0, 1, (40, 3)), rng.normal(8, 1, (40, 3)), rng.normal(-8, 1, (40, 3))]
    y = np.repeat([0, 1, 2], 40)
    expected = DirectProbe().fit(X, y)

    def no_linkage(*_):
        raise AssertionError("phase 1's merge sequence was computed")

    monkeypatch.setattr(directprobe, "_phase1_merges", no_linkage)
    probe = DirectProbe().fit(X, y)
    assert probe.n_clusters_ == 3 and np.array_equal(probe.labels_, expected.labels_)
    assert np.allclose(probe.distances(), expected.distances())
    with pytest.raises(AssertionError, match="merge sequence"):
        DirectProbe().fit(X, rng.permutation(y))  # labels that overlap need the merges


def test_distances_from_the_fits_planes_equal_those_of_a_fresh_overlap_test(monkeypatch):
    """distances() starts each pair's SVM from the hyperplane the fit found (or the plane
    between bounding spheres) instead of testing the pair for overlap again: the same
    distances, with a label split into clusters and with separable labels, and a plane
    that does not separate the pair is ignored."""
    from ftgeo import directprobe
    from ftgeo.directprobe import Hyperplane, hull_distance

    rng = np.random.default_rng(5)
    xor = np.r_[rng.normal([0, 0], 0.3, (25, 2)), rng.normal([4, 4], 0.3, (25, 2)),
                rng.normal([0, 4], 0.3, (25, 2)), rng.normal([4, 0], 0.3, (25, 2))]
    blobs = np.r_[rng.normal(0, 1, (30, 4)), rng.normal(6, 1, (30, 4)), rng.normal(-6, 1, (30, 4))]
    tests, original = [], directprobe.hull_overlap
    counting = lambda *a, **k: tests.append(1) or original(*a, **k)  # noqa: E731
    for X, y in ((xor, np.repeat([0, 1], 50)), (blobs, np.repeat([0, 1, 2], 30))):
        probe = DirectProbe().fit(X, y)
        fresh = np.zeros((probe.n_clusters_,) * 2)
        for i, j in itertools.combinations(range(probe.n_clusters_), 2):
            fresh[i, j] = fresh[j, i] = hull_distance(probe.cluster_points(i), probe.cluster_points(j))
        monkeypatch.setattr(directprobe, "hull_overlap", counting)
        tests.clear()
        np.testing.assert_allclose(probe.distances(), fresh, rtol=1e-5, atol=1e-9)
        if probe.n_clusters_ == len(np.unique(y)):  # separable: no pair is tested again
            assert tests == []
        monkeypatch.setattr(directprobe, "hull_overlap", original)
    A, B = blobs[:30], blobs[30:60]
    wrong = Hyperplane(np.ones(4), 100.0)  # positive on both sets: separates nothing
    assert hull_distance(A, B, plane=wrong) == pytest.approx(hull_distance(A, B), rel=1e-6)


def test_a_fit_reuses_a_separable_label_test_of_the_same_data_only(monkeypatch):
    from ftgeo import directprobe
    from ftgeo.directprobe import test_labels

    rng = np.random.default_rng(6)
    X = np.r_[rng.normal(0, 1, (40, 3)), rng.normal(9, 1, (40, 3))]
    y = np.repeat([0, 1], 40)
    test = test_labels(X, y)
    assert test.separable
    calls = []
    original = directprobe._Clusters.any_overlap
    monkeypatch.setattr(directprobe._Clusters, "any_overlap",
                        lambda self: calls.append(1) or original(self))
    probe = DirectProbe().fit(X, y, labels=test)
    assert calls == [] and probe.n_clusters_ == 2
    assert np.array_equal(probe.labels_, DirectProbe().fit(X, y).labels_) and len(calls) == 1
    DirectProbe().fit(X + 1.0, y, labels=test)  # other data: the test is not reused
    DirectProbe(tol=1e-6).fit(X, y, labels=test)  # other settings: likewise
    assert len(calls) == 3


def test_fisher_direction_from_kept_moments_and_a_fit_beyond_the_initial_capacity():
    """Fisher's direction from kept (mean, scatter) pairs is the one computed afresh, and
    _Clusters keeps them per point set; a fit with more points than the cluster arrays'
    initial capacity (256) grows them and finds the known clusters (XOR: one label's two
    blobs span a band that the other's two blobs lie off, so 3 clusters for 2 labels)."""
    from ftgeo.directprobe import _Clusters, _fisher_direction, _moments

    rng = np.random.default_rng(8)
    A, B = rng.normal(0, 1, (80, 6)), rng.normal(4, 1, (90, 6))
    fresh = _fisher_direction(A, B, 1e-9, 1e-5)
    kept = _fisher_direction(A, B, 1e-9, 1e-5, lambda: (_moments(A), _moments(B)))
    np.testing.assert_allclose(kept.w, fresh.w, rtol=1e-9)
    cl = _Clusters(np.r_[A, B], np.repeat([0, 1], [80, 90]), 1e-9, 64)
    idx = np.arange(80)
    assert cl._moments(idx, A) is cl._moments(idx, A)
    corners = [(0, 0), (6, 6), (0, 6), (6, 0)]
    X = np.concatenate([rng.normal(c, 0.5, (150, 2)) for c in corners])
    probe = DirectProbe().fit(X, np.repeat([0, 0, 1, 1], 150))
    assert probe.n_clusters_ == 3 and sorted(np.bincount(probe.labels_)) == [150, 150, 300]
