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


def test_a_label_split_in_two_counts_two_clusters_and_uses_the_closest_one():
    # label 0 on both sides of label 1: not linearly separable, 3 clusters for 2 labels
    X, y = _segments([0.0, 3.0, 6.0])
    y = np.where(y == 2, 0, y)
    s = directprobe_summary(X, y, store=False)
    assert s.n_clusters == 3 and s.n_labels == 2 and not s.linearly_separable
    np.testing.assert_allclose(s.label_distances()[0, 1], 2.0, atol=2e-3)


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
    shuffled = directprobe_summary(X, rng.permutation(y), store=False)
    assert similarity(a, shuffled) < 0.9
    two = directprobe_summary(X[y < 2], y[y < 2], store=False)  # 1 pair: no correlation
    assert np.isnan(similarity(a, two))


def test_fits_are_cached_by_content(store, monkeypatch):
    X, y = _segments([0.0, 3.0, 10.0])
    first = directprobe_summary(X, y, store=store)
    calls = []
    original = spatial.DirectProbe.fit

    def counting(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(spatial.DirectProbe, "fit", counting)
    again = directprobe_summary(X, y, store=store)
    assert calls == [] and np.array_equal(first.distances, again.distances, equal_nan=True)
    directprobe_summary(X + 1e-3, y, store=store)  # other points: a new fit
    assert calls == [1]


def test_degenerate_representations_are_refused_by_name():
    X = np.ones((10, 4))
    assert spatial.is_degenerate(X)
    with pytest.raises(ValueError, match="every point is the same vector"):
        directprobe_summary(X, np.arange(10) % 2, store=False)
    with pytest.raises(ValueError, match="integer label codes"):
        directprobe_summary(np.eye(4), np.array(["a", "b", "a", "b"]), store=False)
