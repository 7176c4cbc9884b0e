"""Classifier probes.

:class:`LinearProbe` is the baseline of chapter 1: a ridge (least-squares) classifier on
standardized features with one-hot targets. It is solved in closed form, so it is exact and
deterministic, and one eigendecomposition of the feature covariance serves a whole grid of
L2 weights (:func:`linear_probe_layers`), which makes a per-layer baseline for every task a
matter of seconds on a CPU.

A known limit of least-squares classifiers is *masking*: classes whose means lie on one line
can leave the middle class never predicted (Hastie, Tibshirani & Friedman 2009, section 4.2).
In representations with hundreds of dimensions this rarely matters, but it makes the ridge
probe a lower bound on linear decodability; the MLP probe does not share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._util import check, check_Xy, progress


def _standardize(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    return (X - mean) / scale, mean, scale


def _ridge_path(Z: np.ndarray, codes: np.ndarray, n_classes: int, l2_grid: Sequence[float]
                ) -> list[np.ndarray]:
    """Weights of the ridge classifier for every L2 weight of ``l2_grid``.

    Minimizes ``(1/n) ||Z W - Y||^2 + l2 ||W||^2`` with ``Y`` the centred one-hot targets;
    ``Z`` is standardized (zero mean), so the intercept is the class prior and drops out of
    the argmax comparison up to that constant, which :class:`LinearProbe` adds back.
    """
    n = len(Z)
    Y = np.eye(n_classes)[codes]
    Y -= Y.mean(axis=0)
    evals, V = np.linalg.eigh(Z.T @ Z / n)
    B = V.T @ (Z.T @ Y / n)
    return [V @ (B / (np.clip(evals, 0, None) + l2)[:, None]) for l2 in l2_grid]


class LinearProbe:
    """Ridge classifier on standardized features (scikit-learn estimator contract).

    Parameters
    ----------
    l2 : weight of ``l2 * ||W||^2`` added to the mean squared error of the one-hot targets

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    mean_, scale_ : ndarray of shape (n_features,), the standardization of the training data
    coef_ : ndarray of shape (n_classes, n_features); intercept_ : ndarray of shape (n_classes,)

    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(-3, 1, (50, 2)), rng.normal(3, 1, (50, 2))]
    >>> y = np.r_[np.zeros(50, int), np.ones(50, int)]
    >>> LinearProbe().fit(X, y).score(X, y)
    1.0
    """

    def __init__(self, l2: float = 1e-2):
        self.l2 = l2

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        check(self.l2 > 0, f"l2 must be > 0, got {self.l2}")
        (fitted,) = LinearProbe.path(X, y, [self.l2])
        self.__dict__.update(fitted.__dict__)
        return self

    @staticmethod
    def path(X: np.ndarray, y: np.ndarray, l2_grid: Sequence[float]) -> list[LinearProbe]:
        """Fitted probes for every L2 weight of ``l2_grid``, from one eigendecomposition."""
        check_Xy(X, y)
        classes, codes = np.unique(y, return_inverse=True)
        check(len(classes) >= 2, f"y must hold at least 2 labels, got {len(classes)}")
        Z, mean, scale = _standardize(X)
        prior = np.bincount(codes, minlength=len(classes)) / len(codes)
        probes = []
        for l2, W in zip(l2_grid, _ridge_path(Z, codes, len(classes), l2_grid), strict=True):
            probe = LinearProbe(l2)
            probe.classes_, probe.mean_, probe.scale_ = classes, mean, scale
            probe.coef_, probe.intercept_ = W.T, prior
            probes.append(probe)
        return probes

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        check_Xy(X)
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return Z @ self.coef_.T + self.intercept_

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on (X, y)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))


@dataclass(frozen=True)
class LayerProbeResult:
    """Per-layer linear-probe results: arrays of shape (n_layers,)."""

    test_accuracy: np.ndarray
    dev_accuracy: np.ndarray
    l2: np.ndarray


DEFAULT_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def linear_probe_layers(X_train: np.ndarray, y_train: np.ndarray, X_dev: np.ndarray,
                        y_dev: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *,
                        l2_grid: Sequence[float] = DEFAULT_L2_GRID) -> LayerProbeResult:
    """A :class:`LinearProbe` per layer, its L2 weight chosen on dev, accuracy on test.

    Parameters
    ----------
    X_train, X_dev, X_test : ndarray of shape (n_layers, n_samples, n_features)
    y_train, y_dev, y_test : ndarray of shape (n_samples,)
    l2_grid : candidate L2 weights (ties on dev go to the larger weight)
    """
    for name, X in (("X_train", X_train), ("X_dev", X_dev), ("X_test", X_test)):
        check(np.ndim(X) == 3, f"{name} must have shape (n_layers, n_samples, n_features), "
              f"got {np.shape(X)}")
    check(len(X_train) == len(X_dev) == len(X_test),
          f"the three splits have different layer counts: {len(X_train)}, {len(X_dev)}, "
          f"{len(X_test)}")
    check(len(l2_grid) >= 1 and min(l2_grid) > 0, f"l2_grid must hold weights > 0, got {l2_grid}")
    grid = sorted(l2_grid, reverse=True)
    test_acc, dev_acc, chosen = [], [], []
    for layer in progress(range(len(X_train)), desc="linear probe", unit="layer"):
        best = None
        for probe in LinearProbe.path(X_train[layer], y_train, grid):
            dev = probe.score(X_dev[layer], y_dev)
            if best is None or dev > best[0]:
                best = (dev, probe.l2, probe.score(X_test[layer], y_test))
        dev_acc.append(best[0])
        chosen.append(best[1])
        test_acc.append(best[2])
    return LayerProbeResult(np.asarray(test_acc), np.asarray(dev_acc), np.asarray(chosen))
