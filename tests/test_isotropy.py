"""Isotropy measures: properties with known answers on synthetic point clouds, and a
held-out check of IsoScore against the published ``isoscore`` package."""

import numpy as np
import pytest

from ftgeo import isotropy as iso


def gaussian(n=20000, d=64, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def stretched(n=5000, d=64, scale=50.0, seed=0):
    X = gaussian(n, d, seed)
    X[:, 0] *= scale
    return X


def dominant(n=5000, d=64, n_dominant=3, seed=0):
    """An isotropic cloud plus n_dominant strong directions (random, orthonormal) and a mean."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, n_dominant)))
    strengths = np.linspace(40, 20, n_dominant)
    return (rng.normal(size=(n, d)) + (rng.normal(size=(n, n_dominant)) * strengths) @ q.T
            + 5.0 * rng.normal(size=d))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_isotropic_gaussian_scores_near_one_and_cosine_near_zero(seed):
    m = iso.isotropy(gaussian(seed=seed))
    assert m.partition > 0.85  # sampling noise of exp(c . x) over 2 x 64 directions: about 0.88
    assert m.isoscore > 0.95
    assert abs(m.average_cosine) < 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cloud_stretched_along_one_direction_scores_near_zero(seed):
    m = iso.isotropy(stretched(seed=seed))
    assert m.partition < 1e-6
    assert m.isoscore < 0.05


def test_a_shared_offset_makes_cosines_large():
    X = gaussian(5000, 32) + 10.0
    assert iso.average_cosine(X) > 0.9
    assert iso.isoscore(X) > 0.95  # IsoScore only sees the spread, not the offset


@pytest.mark.parametrize("seed", [0, 1])
def test_removing_the_dominant_directions_restores_isotropy(seed):
    X = dominant(seed=seed)
    before = iso.isotropy(X)
    after = iso.isotropy(iso.remove_top_directions(X, 3))
    assert before.isoscore < 0.2 and before.partition < 1e-6
    assert after.isoscore > 0.9 and after.partition > 0.5 and abs(after.average_cosine) < 0.01
    # removing 3 random directions does not (another seed than dominant()'s own directions)
    assert iso.isoscore(iso.remove_random_directions(X, 3, random_state=seed + 100)) < 0.2


def test_measures_do_not_depend_on_row_order():
    X = dominant(2000, 32)
    perm = np.random.default_rng(5).permutation(len(X))
    a, b = iso.isotropy(X), iso.isotropy(X[perm])
    for name, value in a.as_dict().items():
        assert b.as_dict()[name] == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert np.allclose(iso.explained_variance(X), iso.explained_variance(X[perm]))
    words = np.random.default_rng(1).integers(0, 50, len(X))
    assert np.allclose(np.abs(iso.direction_correlations(X, words, 3)),
                       np.abs(iso.direction_correlations(X[perm], words[perm], 3)))
    assert np.allclose(iso.direction_group_share(X, words, 3),
                       iso.direction_group_share(X[perm], words[perm], 3))


def test_isotropy_agrees_with_the_single_measures():
    X = dominant(3000, 16)
    m = iso.isotropy(X)
    assert m.partition == pytest.approx(iso.partition_isotropy(X), rel=1e-9)
    assert m.isoscore == pytest.approx(iso.isoscore(X), rel=1e-9)
    assert m.average_cosine == pytest.approx(iso.average_cosine(X), rel=1e-9)


def test_sampled_average_cosine_estimates_the_exact_one():
    X = dominant(3000, 16)
    exact = iso.average_cosine(X)
    sampled = iso.average_cosine(X, n_pairs=200000, random_state=3)
    assert sampled == pytest.approx(exact, abs=0.01)
    assert sampled == iso.average_cosine(X, n_pairs=200000, random_state=3)


def test_partition_isotropy_does_not_depend_on_eigenvector_signs():
    X = dominant(2000, 16)
    assert iso.partition_isotropy(X) == pytest.approx(iso.partition_isotropy(-X), rel=1e-9)


def test_explained_variance_and_directions_needed():
    X = dominant(5000, 64, n_dominant=3)
    shares = iso.explained_variance(X)
    assert shares.sum() == pytest.approx(1.0)
    assert np.all(np.diff(shares) <= 1e-12)
    assert iso.n_directions_for(shares, 0.8) <= 3
    assert iso.n_directions_for(iso.explained_variance(gaussian(5000, 64)), 0.5) >= 25


def test_removers_learn_on_train_and_apply_to_new_rows():
    X = dominant(4000, 32)
    train, test = X[:3000], X[3000:]
    remover = iso.DirectionRemover(3).fit(train)
    assert remover.components_.shape == (3, 32)
    assert np.allclose(remover.components_ @ remover.components_.T, np.eye(3), atol=1e-10)
    out = remover.transform(test)
    assert np.abs(out @ remover.components_.T).max() < 1e-8
    assert iso.isoscore(out) > 0.85
    with pytest.raises(ValueError, match="n_removed"):
        iso.DirectionRemover(32).fit(train)
    with pytest.raises(ValueError, match="directions"):
        iso.DirectionRemover(2, directions="bottom").fit(train)


def test_cluster_remover_makes_every_cluster_isotropic():
    rng = np.random.default_rng(0)
    # three far-apart clusters, each with its own dominant direction
    parts = [dominant(1500, 24, n_dominant=1, seed=s) + 400 * rng.normal(size=24) for s in range(3)]
    X = np.concatenate(parts)
    out, clusters = iso.cluster_remove_top_directions(X, 1, n_clusters=3)
    assert len(np.unique(clusters)) == 3
    for c in range(3):
        assert iso.isoscore(out[clusters == c]) > 0.85
    assert iso.isoscore(iso.remove_top_directions(X, 1)) < 0.5  # a global removal does not do it
    local = iso.cluster_isotropy(X, clusters)
    assert local["isoscore"] < 0.2
    assert iso.cluster_isotropy(out, clusters)["isoscore"] > 0.85
    assert np.isnan(iso.cluster_isotropy(X[:6], np.arange(6))["isoscore"])  # no cluster of 10 rows
    remover = iso.ClusterDirectionRemover(1, n_clusters=3).fit(X)
    assert np.array_equal(remover.predict(X), remover.labels_)
    assert np.allclose(remover.transform(X), remover.fit_transform(X))
    # a clustering given in place of k-means: the same removal for the same clusters
    shared = iso.ClusterDirectionRemover(1, n_clusters=3).fit(X, clusters=remover.labels_)
    assert np.allclose(shared.transform(X), remover.transform(X))
    # and one that k-means would not find (a cut along the first axis) is the one used
    cut = (X[:, 0] > np.median(X[:, 0])).astype(int)
    out = iso.ClusterDirectionRemover(1, n_clusters=2).fit_transform(X, clusters=cut)
    for c in (0, 1):
        assert np.allclose(out[cut == c].mean(axis=0), 0, atol=1e-9)
    with pytest.raises(ValueError, match="every cluster used"):
        iso.ClusterDirectionRemover(1, n_clusters=4).fit(X, clusters=remover.labels_)


def clustered(seed=0, n_clusters=3, d=24):
    """Far-apart clusters, each with a mean of its own and one dominant direction of its own."""
    rng = np.random.default_rng(seed)
    return np.concatenate([dominant(800, d, n_dominant=1, seed=seed + s) + 400 * rng.normal(size=d)
                           for s in range(n_clusters)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_paper_enhancements_do_what_each_promises(seed):
    """Rajaee & Pilehvar's four enhancements, on clusters whose answers are known: zero-mean
    leaves no global mean; clustering + zero-mean no mean in any cluster; global removal no
    variance along the removed principal directions; cluster-based removal neither a mean nor
    variance along each cluster's own top directions."""
    X = clustered(seed)
    D = 2
    out = iso.enhancements(X, n_removed=D, n_clusters=3, random_state=seed)
    assert list(out) == list(iso.ENHANCEMENTS)
    assert np.array_equal(out["none"], X)
    assert np.abs(out["zero-mean"].mean(axis=0)).max() < 1e-9
    assert np.allclose(out["zero-mean"], X - X.mean(axis=0))
    clusters = iso.kmeans_clusters(X, 3, random_state=seed)  # the clustering the methods share
    assert sorted(np.bincount(clusters)) == [800, 800, 800]  # the three clusters, found
    _, top = iso.principal_directions(X, D)
    assert np.abs(out["global"] @ top.T).max() < 1e-8  # nothing left along the removed directions
    assert np.abs(out["global"].mean(axis=0)).max() < 1e-9
    assert np.linalg.norm(out["global"], axis=1).mean() < np.linalg.norm(out["zero-mean"], axis=1).mean()
    for c in range(3):
        rows = clusters == c
        assert np.abs(out["cluster zero-mean"][rows].mean(axis=0)).max() < 1e-9
        assert np.allclose(out["cluster zero-mean"][rows], X[rows] - X[rows].mean(axis=0))
        _, own = iso.principal_directions(X[rows], D)
        assert np.abs(out["cluster-based"][rows] @ own.T).max() < 1e-8
        assert np.abs(out["cluster-based"][rows].mean(axis=0)).max() < 1e-9
        assert iso.isoscore(out["cluster-based"][rows]) > 0.85
    # the clusters' means are gone, so the cluster methods leave them overlapping; globally
    # removing two directions cannot remove three far-apart means
    assert iso.isoscore(out["cluster-based"]) > iso.isoscore(out["global"])


def test_the_paper_enhancements_refuse_bad_settings_by_name():
    X = clustered(0, d=8)
    with pytest.raises(ValueError, match="n_removed"):
        iso.enhancements(X, n_removed=8, n_clusters=3)
    with pytest.raises(ValueError, match="n_clusters"):
        iso.enhancements(X[:5], n_removed=1, n_clusters=6)
    small = iso.enhancements(X[:6], n_removed=3, n_clusters=3)  # clusters of at most D rows: centered
    assert np.isfinite(small["cluster-based"]).all()


def test_direction_statistics_find_what_the_top_direction_carries():
    rng = np.random.default_rng(0)
    n, d = 4000, 32
    log_freq = rng.normal(size=n)
    words = rng.integers(0, 40, n)
    word_vectors = rng.normal(size=(40, d))
    X = rng.normal(size=(n, d))
    X[:, 0] += 30 * log_freq  # the top direction encodes frequency
    r = iso.direction_correlations(X, log_freq, 3)
    assert abs(r[0]) > 0.99 and np.all(np.abs(r[1:]) < 0.1)
    Y = rng.normal(size=(n, d)) + 10 * word_vectors[words]  # top directions encode the word
    share = iso.direction_group_share(Y, words, 3)
    assert np.all(share > 0.95)
    assert np.all(iso.direction_group_share(gaussian(n, d), words, 3) < 0.05)


@pytest.mark.parametrize("call, message", [
    (lambda: iso.isoscore(np.ones((10, 3))), "zero variance"),
    (lambda: iso.isoscore(np.zeros((10, 1)) + np.arange(10)[:, None]), "at least 2 features"),
    (lambda: iso.average_cosine(np.zeros((4, 3))), "all-zero row"),
    (lambda: iso.average_cosine(gaussian(10, 3), n_pairs=0), "n_pairs"),
    (lambda: iso.partition_isotropy(np.full((3, 2), np.nan)), "finite"),
    (lambda: iso.n_directions_for(np.array([1.0]), 1.5), "share"),
    (lambda: iso.kmeans_clusters(gaussian(10, 3), 11), "n_clusters"),
    (lambda: iso.kmeans_clusters(gaussian(10, 3), 2, n_init=0), "n_init"),
])
def test_bad_input_is_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("shape", [(500, 10), (2000, 64), (300, 384)])
def test_isoscore_equals_the_published_package(shape):
    package = pytest.importorskip("IsoScore.IsoScore", reason="the isoscore test dependency")
    X = np.random.default_rng(shape[1]).normal(size=shape) @ np.diag(np.linspace(0.1, 3, shape[1]))
    X += np.random.default_rng(1).normal(size=shape[1])
    assert iso.isoscore(X) == pytest.approx(float(package.IsoScore(X)), abs=1e-6)


def test_dominant_directions_are_counted():
    assert iso.n_dominant_directions(iso.explained_variance(gaussian(20000, 256))) == 0
    for n_dominant in (1, 3, 5):
        shares = iso.explained_variance(dominant(5000, 256, n_dominant=n_dominant))
        assert iso.n_dominant_directions(shares) == n_dominant


@pytest.mark.parametrize("flip", [0, 1, 7, 15])
def test_partition_isotropy_is_unchanged_when_one_eigenvectors_sign_is_flipped(monkeypatch, flip):
    # a common offset along the first axis, which is then XᵀX's top eigenvector: Z(c) and
    # Z(-c) differ there by orders of magnitude
    X = np.random.default_rng(0).normal(size=(2000, 16)) + 3.0 * np.eye(16)[0]
    before = iso.partition_isotropy(X)
    one_sign = iso.partition_isotropy(X, both_signs=False)
    original = iso._eigh_descending

    def flipped(S):
        values, vectors = original(S)
        vectors = vectors.copy()
        vectors[:, flip] *= -1
        return values, vectors

    monkeypatch.setattr(iso, "_eigh_descending", flipped)
    assert iso.partition_isotropy(X) == pytest.approx(before, rel=1e-9)
    # the authors' form, one sign per eigenvector, is not: it changes with some flip
    if flip == 0:
        assert iso.partition_isotropy(X, both_signs=False) != pytest.approx(one_sign, rel=1e-3)


@pytest.mark.parametrize("shape", [(40, 96), (96, 96), (400, 96)])
def test_the_fast_paths_agree_with_full_eigendecompositions(shape):
    """Fewer rows than features (thin SVD), and few directions of many features (Lanczos),
    give what the full d x d eigendecomposition gives."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=shape) * np.linspace(4, 0.1, shape[1]) + 0.3
    n, d = X.shape
    centered = X - X.mean(0)
    values, vectors = np.linalg.eigh(centered.T @ centered / (n - 1))
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
    np.testing.assert_allclose(iso._variances(X), values, atol=1e-9)
    for k in (1, 4, 20):
        _, top = iso.principal_directions(X, k)
        np.testing.assert_allclose(np.abs(np.sum(top * vectors[:, :k].T, axis=1)), 1, atol=1e-8)
    second, basis = np.linalg.eigh(X.T @ X)
    log_z = np.log(np.exp(np.c_[X @ basis, -X @ basis]).sum(0))
    assert iso.partition_isotropy(X) == pytest.approx(np.exp(log_z.min() - log_z.max()), rel=1e-6)


def test_kmeans_finds_separated_clusters_and_more_starts_never_raise_the_inertia():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 16)) * 10
    truth = rng.integers(0, 4, 800)
    X = centres[truth] + rng.normal(size=(800, 16))
    labels = iso.kmeans_clusters(X, 4, random_state=1)
    # the same partition as the truth, up to the clusters' names
    assert len({(t, c) for t, c in zip(truth, labels, strict=True)}) == 4

    def inertia(Z, labels):
        return sum(((Z[labels == c] - Z[labels == c].mean(0)) ** 2).sum() for c in np.unique(labels))

    noise = rng.normal(size=(600, 8))  # no cluster structure: starts end in different optima
    one = [inertia(noise, iso.kmeans_clusters(noise, 6, random_state=s)) for s in range(8)]
    best = [inertia(noise, iso.kmeans_clusters(noise, 6, random_state=s, n_init=5)) for s in range(8)]
    # the first of n_init starts is the single start of the same seed; the best is kept
    assert all(b <= o * (1 + 1e-5) for b, o in zip(best, one, strict=True))
    assert any(b < o * (1 - 1e-3) for b, o in zip(best, one, strict=True))


@pytest.mark.parametrize("shape", [(300, 8), (6, 10)])  # more rows than features, and fewer
def test_isotropy_gives_the_one_sign_partition_from_the_same_decomposition(shape):
    X = np.random.default_rng(5).normal(size=shape) + 1.5
    m = iso.isotropy(X)
    assert m.partition_one_sign == iso.partition_isotropy(X, both_signs=False)
    assert m.partition == iso.partition_isotropy(X)
    # both signs add Z values, so the min/max ratio can only fall; with a mean offset it does
    assert m.partition < m.partition_one_sign
    assert set(m.as_dict()) == {"partition", "average_cosine", "isoscore"}
