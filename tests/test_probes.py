"""The linear probe: known answers on synthetic data, and clear errors."""

import numpy as np
import pytest

from ftgeo.probes import LinearProbe, linear_probe_layers


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
