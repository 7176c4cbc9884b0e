"""The spatial structure of labels: DirectProbe summaries, label distances, spatial similarity.

The measures of Zhou & Srikumar (2022), section 3, on top of :class:`ftgeo.DirectProbe`:

* the **clusters** of a representation: DirectProbe's partition of the labelled points
  into clusters of one label each whose convex hulls do not overlap. A representation
  is *linearly separable* for the task iff every label is one cluster;
* the **distance between two labels**: the smallest distance between the convex hulls of
  a cluster of one and a cluster of the other (twice the max-margin SVM's margin). With
  one cluster per label this is the distance between the labels' hulls;
* a label's **minimum distance**: its distance to the nearest other label;
* the **spatial similarity** of two representations of the same labels: the Pearson
  correlation of their label-pair distance vectors, over the labels both contain.

A DirectProbe fit is the costly step, so :func:`directprobe_summary` caches its outcome
in the store, keyed by the exact points and labels: the chapters that share a
representation (train-test similarity, cluster counts, trajectories) fit it once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from ._util import check, check_Xy, report_status
from .directprobe import DirectProbe, spatial_similarity

log = logging.getLogger(__name__)

SPATIAL_VERSION = 1


@dataclass(frozen=True)
class ClusterSummary:
    """What the chapters need from a DirectProbe fit.

    classes : ndarray (n_labels,), the labels present, sorted (integer label codes)
    cluster_labels : ndarray (n_clusters,), the label of each cluster
    assignments : ndarray (n_points,), the cluster of each point
    distances : ndarray (n_clusters, n_clusters), distances between the hulls of clusters of
        different labels (NaN between two clusters of the same label: not computed)
    """

    classes: np.ndarray
    cluster_labels: np.ndarray
    assignments: np.ndarray
    distances: np.ndarray

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_labels)

    @property
    def n_labels(self) -> int:
        return len(self.classes)

    @property
    def linearly_separable(self) -> bool:
        """Every label is one cluster: a linear classifier separates all labels pairwise."""
        return self.n_clusters == self.n_labels

    def label_distances(self) -> np.ndarray:
        """(n_labels, n_labels): the smallest hull distance between clusters of two labels
        (0 on the diagonal), in ``classes`` order.

        >>> s = ClusterSummary(np.array([0, 1]), np.array([0, 0, 1]), np.zeros(3, int),
        ...                    np.array([[0., 1, 4], [1, 0, 3], [4, 3, 0]]))
        >>> s.label_distances().tolist()
        [[0.0, 3.0], [3.0, 0.0]]
        """
        codes = np.searchsorted(self.classes, self.cluster_labels)
        L = np.full((self.n_labels, self.n_labels), np.inf)
        for i in range(self.n_clusters):
            for j in range(self.n_clusters):
                if codes[i] != codes[j]:
                    L[codes[i], codes[j]] = min(L[codes[i], codes[j]], self.distances[i, j])
        np.fill_diagonal(L, 0.0)
        return L

    def min_distances(self) -> dict[int, float]:
        """Each label's distance to its nearest other label."""
        L = self.label_distances()
        np.fill_diagonal(L, np.inf)
        return dict(zip(self.classes.tolist(), L.min(axis=1).tolist(), strict=True))

    def distance_vector(self, labels: np.ndarray | None = None) -> np.ndarray:
        """Label-pair distances (i < j) over ``labels`` (default: all of ``classes``)."""
        labels = self.classes if labels is None else np.asarray(labels)
        missing = np.setdiff1d(labels, self.classes)
        check(len(missing) == 0, f"labels {missing.tolist()} are not in this representation")
        idx = np.searchsorted(self.classes, labels)
        L = self.label_distances()[np.ix_(idx, idx)]
        return L[np.triu_indices(len(idx), 1)]

    def centroids(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(n_labels, n_features): the mean of each label's points, in ``classes`` order."""
        X, y = np.asarray(X), np.asarray(y)
        return np.stack([X[y == c].mean(axis=0) for c in self.classes])


def similarity(a: ClusterSummary, b: ClusterSummary) -> float:
    """Spatial similarity of two representations: the Pearson correlation of their
    label-pair distance vectors over the labels both contain. NaN, with a warning, where a
    correlation is undefined: fewer than 3 shared labels (fewer than 3 pairs), or a
    constant vector (e.g. every label at the same distance)."""
    common = np.intersect1d(a.classes, b.classes)
    if len(common) < 3:
        log.warning("spatial similarity undefined: only %d shared labels", len(common))
        return float("nan")
    va, vb = a.distance_vector(common), b.distance_vector(common)
    if va.std() == 0 or vb.std() == 0:
        log.warning("spatial similarity undefined: a distance vector is constant")
        return float("nan")
    return spatial_similarity(va, vb)


def spread(X: np.ndarray) -> float:
    """The scale of a representation: the root mean squared distance of its points to their
    mean. Distances divided by it do not change when the whole space is scaled.

    X : ndarray of shape (n_samples, n_features)

    >>> spread(np.array([[0.0, 0.0], [2.0, 0.0]]))
    1.0
    """
    X = np.asarray(X, dtype=np.float64)
    check(X.ndim == 2 and len(X) >= 1, f"X must be a non-empty 2-D array, got shape {X.shape}")
    return float(np.sqrt(((X - X.mean(axis=0)) ** 2).sum(axis=1).mean()))


def is_degenerate(X: np.ndarray) -> bool:
    """True if every row of X is the same point (e.g. ``[CLS]`` at the embedding layer,
    which does not depend on the sentence): no geometry to measure.

    >>> is_degenerate(np.ones((3, 2))), is_degenerate(np.eye(2))
    (True, False)
    """
    X = np.asarray(X)
    return bool(len(X) == 0 or np.all(X == X[:1]))


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def directprobe_summary(X: np.ndarray, y: np.ndarray, *, store=None,
                        tol: float = 1e-9) -> ClusterSummary:
    """Fit DirectProbe on (X, y) and compute the cluster distances, cached in the store.

    Parameters
    ----------
    X : ndarray of shape (n_points, n_features)
    y : ndarray of shape (n_points,), integer label codes
    store : the artifact cache (default ``Store()``); ``False`` computes without caching
    """
    from .store import Store

    X = np.asarray(X)
    y = np.asarray(y)
    check_Xy(X, y)
    check(np.issubdtype(y.dtype, np.integer), f"y must hold integer label codes, got {y.dtype}")
    check(not is_degenerate(X), "every point is the same vector (e.g. [CLS] at the embedding "
          "layer): DirectProbe has nothing to separate; skip this representation")

    def build():
        what = f"DirectProbe on {len(X)} points x {X.shape[1]} features, {len(np.unique(y))} labels"
        log.info(what)
        report_status(what, force=True)
        probe = DirectProbe(tol=tol).fit(X, y)
        arrays = {"classes": probe.classes_.astype(np.int64),
                  "cluster_labels": probe.cluster_labels_.astype(np.int64),
                  "assignments": probe.labels_,
                  # same-label distances are never used
                  "distances": probe.distances(same_label=False)}
        return arrays, {"n_points": len(X), "n_clusters": int(probe.n_clusters_),
                        "n_lp_tests": int(probe.n_lp_tests_)}

    if store is False:
        arrays, _ = build()
    else:
        store = Store() if store is None else store
        parts = {"what": "directprobe", "version": SPATIAL_VERSION, "tol": tol,
                 "data": _digest(X, y)}
        entry, _ = store.get_or_build("directprobe", parts, build)
        arrays = {k: np.asarray(entry[k]) for k in
                  ("classes", "cluster_labels", "assignments", "distances")}
    return ClusterSummary(arrays["classes"], arrays["cluster_labels"], arrays["assignments"],
                          arrays["distances"])
