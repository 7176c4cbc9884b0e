"""The spatial structure of labels: DirectProbe summaries, label distances, spatial similarity.

The measures of Zhou & Srikumar (2022), section 3, on top of :class:`ftgeo.DirectProbe`:

* the **clusters** of a representation: DirectProbe's partition of the labelled points
  into clusters of one label each whose convex hulls do not overlap. A representation
  is *linearly separable* for the task iff every label is one cluster;
* the **distance between two labels**: as the authors' code computes it, the mean over
  pairs of clusters (one of each label) of the distance between their convex hulls (twice
  the max-margin SVM's margin), after dropping clusters of 5 points or fewer. With one
  cluster per label this is the distance between the labels' hulls;
* a label's **minimum distance**: its distance to the nearest other label;
* the **spatial similarity** of two linearly separable representations of the same labels:
  the Pearson correlation of their label-pair distance vectors, over the labels both
  contain (blank, NaN, where either is not separable, as in the paper's Table 7).

A DirectProbe fit is the costly step, so :func:`directprobe_summary` caches its outcome
in the store, keyed by the exact points and labels: the chapters that share a
representation (train-test similarity, cluster counts, trajectories) fit it once.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._util import array_digest, check, check_Xy, report_status
from .directprobe import DirectProbe, LabelTest, linearly_separable, spatial_similarity, test_labels

log = logging.getLogger(__name__)

SPATIAL_VERSION = 1
#: the reference code drops clusters of 5 points or fewer before measuring distances
MIN_CLUSTER_SIZE = 6


@dataclass(frozen=True)
class ClusterSummary:
    """What the chapters need from a DirectProbe fit.

    classes : ndarray (n_labels,), the labels present, sorted (integer label codes)
    cluster_labels : ndarray (n_clusters,), the label of each cluster
    assignments : ndarray (n_points,), the cluster of each point
    distances : ndarray (n_clusters, n_clusters), distances between the hulls of clusters of
        different labels (NaN between two clusters of the same label: not computed)
    fit_seconds : wall time of the fit and its distances when it was computed (a cached
        summary keeps the time of the fit that made it); None where unknown
    """

    classes: np.ndarray
    cluster_labels: np.ndarray
    assignments: np.ndarray
    distances: np.ndarray
    fit_seconds: float | None = None

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

    def cluster_sizes(self) -> np.ndarray:
        """(n_clusters,): the number of points in each cluster."""
        return np.bincount(self.assignments, minlength=self.n_clusters)

    def label_distances(self, *, min_size: int = MIN_CLUSTER_SIZE, reduce: str = "mean"
                        ) -> np.ndarray:
        """(n_labels, n_labels): the distance between two labels, in ``classes`` order.

        As the reference code computes it (Zhou & Srikumar 2022): clusters of fewer than
        ``min_size`` points are dropped (default 6: "5 or fewer" go), and the distance of two
        labels is the **mean** hull distance over the pairs of their remaining clusters. With
        one cluster per label (a linearly separable representation) the mean and the minimum
        agree. A pair of labels with no cluster left is NaN (the reference writes 0); the
        diagonal is 0.

        min_size : clusters with fewer points are left out (1 keeps every cluster)
        reduce : ``"mean"`` (the reference) or ``"min"`` (the closest pair of clusters)

        >>> s = ClusterSummary(np.array([0, 1]), np.array([0, 0, 1]), np.repeat([0, 1, 2], 6),
        ...                    np.array([[0., 1, 4], [1, 0, 2], [4, 2, 0]]))
        >>> s.label_distances().tolist(), s.label_distances(reduce="min").tolist()
        ([[0.0, 3.0], [3.0, 0.0]], [[0.0, 2.0], [2.0, 0.0]])
        """
        check(int(min_size) == min_size and min_size >= 1,
              f"min_size must be an integer >= 1, got {min_size!r}")
        check(reduce in ("mean", "min"), f"reduce must be 'mean' or 'min', got {reduce!r}")
        codes = np.searchsorted(self.classes, self.cluster_labels)
        keep = np.flatnonzero(self.cluster_sizes() >= min_size)
        total = np.zeros((self.n_labels, self.n_labels))
        count = np.zeros((self.n_labels, self.n_labels))
        low = np.full((self.n_labels, self.n_labels), np.inf)
        for i in keep:
            for j in keep:
                if codes[i] != codes[j]:
                    total[codes[i], codes[j]] += self.distances[i, j]
                    count[codes[i], codes[j]] += 1
                    low[codes[i], codes[j]] = min(low[codes[i], codes[j]], self.distances[i, j])
        with np.errstate(invalid="ignore", divide="ignore"):
            L = total / count if reduce == "mean" else np.where(count > 0, low, np.nan)
        np.fill_diagonal(L, 0.0)
        return L

    def min_distances(self, **how) -> dict[int, float]:
        """Each label's distance to its nearest other label (:meth:`label_distances`, with
        its keyword arguments); NaN for a label with no cluster left or no other label."""
        return dict(zip(self.classes.tolist(), _nearest(self.label_distances(**how)), strict=True))

    def distance_vector(self, labels: np.ndarray | None = None, **how) -> np.ndarray:
        """Label-pair distances (i < j) over ``labels`` (default: all of ``classes``);
        keyword arguments as for :meth:`label_distances`."""
        labels = self.classes if labels is None else np.asarray(labels)
        missing = np.setdiff1d(labels, self.classes)
        check(len(missing) == 0, f"labels {missing.tolist()} are not in this representation")
        idx = np.searchsorted(self.classes, labels)
        L = self.label_distances(**how)[np.ix_(idx, idx)]
        return L[np.triu_indices(len(idx), 1)]

    def centroids(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(n_labels, n_features): the mean of each label's points, in ``classes`` order."""
        X, y = np.asarray(X), np.asarray(y)
        return np.stack([X[y == c].mean(axis=0) for c in self.classes])


def _nearest(L: np.ndarray) -> list[float]:
    """Each row's smallest off-diagonal entry of a label-distance matrix; NaN for a row
    with none defined."""
    L = L.copy()
    np.fill_diagonal(L, np.nan)
    with np.errstate(all="ignore"):
        return [float(np.nanmin(r)) if np.isfinite(r).any() else float("nan") for r in L]


def similarity(a: ClusterSummary, b: ClusterSummary, *, separable_only: bool = True) -> float:
    """Spatial similarity of two representations: the Pearson correlation of their
    label-pair distance vectors over the labels both contain.

    The paper defines it for linearly separable representations only (Zhou & Srikumar 2022,
    section 3; its Table 7 leaves the other cells blank): with ``separable_only`` (the
    default) it is NaN unless both are. NaN too, with a warning, where a correlation is
    undefined: fewer than 3 shared labels (fewer than 3 pairs), a pair with no distance
    (its labels' clusters all dropped as too small), or a constant vector.

    separable_only : False also correlates the distances of non-separable representations
        (mean over cluster pairs, :meth:`ClusterSummary.label_distances`): not the paper's
    """
    if separable_only and not (a.linearly_separable and b.linearly_separable):
        log.info("spatial similarity left blank: a representation is not linearly separable")
        return float("nan")
    common = np.intersect1d(a.classes, b.classes)
    if len(common) < 3:
        log.warning("spatial similarity undefined: only %d shared labels", len(common))
        return float("nan")
    va, vb = a.distance_vector(common), b.distance_vector(common)
    both = np.isfinite(va) & np.isfinite(vb)
    if both.sum() < 3:
        log.warning("spatial similarity undefined: fewer than 3 label pairs with a distance")
        return float("nan")
    va, vb = va[both], vb[both]
    if va.std() == 0 or vb.std() == 0:
        log.warning("spatial similarity undefined: a distance vector is constant")
        return float("nan")
    return spatial_similarity(va, vb)


def split_similarity(X: Mapping[tuple[str, str], Mapping[str, np.ndarray]], data: Mapping,
                     *, max_items: int | None = None, store=None
                     ) -> tuple[dict[tuple[str, str, str], ClusterSummary], dict[tuple[str, str], float]]:
    """DirectProbe on the training and test sets of every (task, state), and their spatial
    similarity (chapter 3's protocol, Zhou & Srikumar 2022 §4.1).

    Parameters
    ----------
    X : {(task, state): {split: ndarray of shape (n_items, n_features)}}, with splits "train"
        and "test" (:func:`ftgeo.finetune.iter_state_representations` at one layer)
    data : {task: {split: TaskData}}, the labels
    max_items : None (the paper's protocol) for every item; N fits a seeded sample of whole
        sentences with at most N items of each split (the same sample in every state)

    Returns
    -------
    clusters : {(task, state, split): ClusterSummary}
    similarity : {(task, state): Pearson r, NaN unless both splits are linearly separable}
    """
    rows = {(task, split): data[task][split].sample_index(max_items, seed=0)
            for task, _ in X for split in ("train", "test")}
    clusters = {(task, state, split): directprobe_summary(x[split][rows[task, split]],
                                                          data[task][split].y[rows[task, split]],
                                                          store=store)
                for (task, state), x in X.items() for split in ("train", "test")}
    sims = {(task, state): similarity(clusters[task, state, "train"], clusters[task, state, "test"])
            for task, state in X}
    return clusters, sims


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


def directprobe_summary(X: np.ndarray, y: np.ndarray, *, store=None, tol: float = 1e-9,
                        distances: bool = True) -> ClusterSummary:
    """Fit DirectProbe on (X, y) and compute the cluster distances, cached in the store.

    Parameters
    ----------
    X : ndarray of shape (n_points, n_features)
    y : ndarray of shape (n_points,), integer label codes
    store : the artifact cache (default ``Store()``); ``False`` computes without caching
    distances : False for the clusters alone (their number, who is in which), with every
        distance NaN: the hull distances between clusters of different labels (one SVM per
        pair) are most of a fit's time when a representation needs many clusters
    """
    from .store import Store

    X = np.asarray(X)
    y = np.asarray(y)
    check_Xy(X, y)
    check(np.issubdtype(y.dtype, np.integer), f"y must hold integer label codes, got {y.dtype}")
    check(not is_degenerate(X), "every point is the same vector (e.g. [CLS] at the embedding "
          "layer): DirectProbe has nothing to separate; skip this representation")

    def build():
        what = (f"DirectProbe on {len(X)} points x {X.shape[1]} features, {len(np.unique(y))} labels"
                + ("" if distances else " (clusters only)"))
        log.info(what)
        report_status(what, force=True)
        start = time.perf_counter()
        # a separability test of the same data just before (trajectory, similarity_to_pretrained)
        # leaves its certificates: a separable fit then needs no test of its own
        labels = _LAST_LABEL_TEST.pop(digest, None) if digest is not None else None
        probe = DirectProbe(tol=tol).fit(X, y, labels=labels)
        arrays = {"classes": probe.classes_.astype(np.int64),
                  "cluster_labels": probe.cluster_labels_.astype(np.int64),
                  "assignments": probe.labels_,
                  # same-label distances are never used
                  "distances": (probe.distances(same_label=False) if distances
                                else np.full((probe.n_clusters_,) * 2, np.nan))}
        seconds = time.perf_counter() - start
        log.info("%s: %d clusters, %d overlap tests, %.1f s", what, probe.n_clusters_,
                 probe.n_lp_tests_, seconds)
        return arrays, {"n_points": len(X), "n_clusters": int(probe.n_clusters_),
                        "n_lp_tests": int(probe.n_lp_tests_), "seconds": seconds}

    digest = None if store is False else array_digest(X, y)
    if store is False:
        arrays, meta = build()
    else:
        store = Store() if store is None else store
        entry, _ = store.get_or_build("directprobe", _fit_parts(digest, tol, distances), build)
        arrays = {k: np.asarray(entry[k]) for k in
                  ("classes", "cluster_labels", "assignments", "distances")}
        meta = entry.meta
    seconds = meta.get("seconds")  # absent from entries cached before it was recorded
    return ClusterSummary(arrays["classes"], arrays["cluster_labels"], arrays["assignments"],
                          arrays["distances"], None if seconds is None else float(seconds))


def _fit_parts(digest: str, tol: float, distances: bool) -> dict:
    """The store key of a DirectProbe fit (:func:`directprobe_summary`) of the data ``digest``."""
    parts = {"what": "directprobe", "version": SPATIAL_VERSION, "tol": tol, "data": digest}
    if not distances:  # the full fit's key stays as it was: its cached entries still count
        parts["distances"] = False
    return parts


#: the last separable :func:`separable` test computed in this process, by data digest (one
#: entry: a DirectProbe fit of the same data, which usually follows, reuses its certificates)
_LAST_LABEL_TEST: dict[str, LabelTest] = {}


def separable(X: np.ndarray, y: np.ndarray, *, store=None, tol: float = 1e-9) -> bool:
    """Whether (X, y) is linearly separable, every label one cluster
    (:func:`ftgeo.directprobe.linearly_separable`), cached in the store.

    The reference's protocol for states along fine-tuning and for layers: a distance or a
    similarity is computed only where this holds, so a state that fails it needs no fit.
    A cached DirectProbe fit of the same data answers without a new test.
    """
    from .store import Store

    X, y = np.asarray(X), np.asarray(y)
    check_Xy(X, y)
    check(np.issubdtype(y.dtype, np.integer), f"y must hold integer label codes, got {y.dtype}")
    if is_degenerate(X):
        return False
    if store is False:
        return linearly_separable(X, y, tol=tol)
    store = Store() if store is None else store
    digest = array_digest(X, y)
    for distances in (True, False):  # a fit answers too
        entry = store.load("directprobe", _fit_parts(digest, tol, distances))
        if entry is not None:
            return len(np.asarray(entry["cluster_labels"])) == len(np.asarray(entry["classes"]))

    def build():
        what = f"separability of {len(X)} points x {X.shape[1]} features, {len(np.unique(y))} labels"
        log.info(what)
        report_status(what, force=True)
        test = test_labels(X, y, tol=tol)
        _LAST_LABEL_TEST.clear()
        if test.separable:  # kept for the fit that usually follows (directprobe_summary)
            _LAST_LABEL_TEST[digest] = test
        flag = test.separable
        return {"separable": np.array([flag])}, {"n_points": len(X), "separable": bool(flag)}

    parts = {"what": "separable", "version": SPATIAL_VERSION, "tol": tol, "data": digest}
    entry, _ = store.get_or_build("separable", parts, build)
    return bool(np.asarray(entry["separable"])[0])


def label_centroids(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n_labels, n_features): the mean of each label's points, labels in sorted order
    (the order of :attr:`ClusterSummary.classes`)."""
    X, y = np.asarray(X), np.asarray(y)
    return np.stack([X[y == c].mean(axis=0) for c in np.unique(y)])


# -- label lookup ---------------------------------------------------------------------------
def present_labels(labels: Sequence[str], y: np.ndarray) -> tuple[str, ...]:
    """The names of the labels present in ``y``, in code order: the row order of every
    per-label array here (:attr:`ClusterSummary.classes`, centroids, label distances).

    labels : the task's label vocabulary (``y`` holds indices into it)
    y : ndarray of shape (n_samples,), integer label codes

    >>> present_labels(["a", "b", "c"], np.array([2, 0, 2]))
    ('a', 'c')
    """
    y = np.asarray(y)
    check(np.issubdtype(y.dtype, np.integer), f"y must hold integer label codes, got {y.dtype}")
    codes = np.unique(y)
    check(len(codes) == 0 or (codes[0] >= 0 and codes[-1] < len(labels)),
          f"y holds codes {codes.tolist()} outside the vocabulary of {len(labels)} labels")
    return tuple(str(labels[c]) for c in codes)


def label_rows(present: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """The rows of the labels ``names`` in a per-label array whose rows are ``present``
    (from :func:`present_labels`).

    >>> label_rows(("a", "c", "d"), ["d", "a"]).tolist()
    [2, 0]
    """
    present = list(present)
    missing = [n for n in names if n not in present]
    check(not missing, f"labels {missing} are not in this sample; present: {present}")
    return np.array([present.index(n) for n in names], dtype=np.int64)


# -- chapter 05: labels along a fine-tuning trajectory --------------------------------------
@dataclass(frozen=True)
class ClosestLabels:
    """The labels closest to each other at the first snapshot, and how far apart they are.

    labels : tuple of str, the labels with the smallest minimum distance at the first step
    first, last : ndarray of shape (n_pairs,), the hull distance of each pair of them (i < j,
        in the order of ``labels``) at the first and at the last step
    """

    labels: tuple[str, ...]
    first: np.ndarray
    last: np.ndarray

    @property
    def share_apart(self) -> float:
        """The share of pairs that ended further apart than they started (NaN with no pair)."""
        return float((self.last > self.first).mean()) if len(self.first) else float("nan")


@dataclass(frozen=True)
class CentroidPaths:
    """Label centroids along a trajectory, projected by one PCA fitted on all of them.

    steps : ndarray of shape (n_steps,)
    labels : tuple of str, the labels followed
    coords : ndarray of shape (n_steps, n_labels, n_components)
    """

    steps: np.ndarray
    labels: tuple[str, ...]
    coords: np.ndarray


def _principal_axes(centred: np.ndarray, n_components: int) -> np.ndarray:
    """(n_components, n_features): the top principal axes of the rows of ``centred`` (rows
    whose mean has been removed), from its SVD."""
    check(1 <= n_components <= min(centred.shape),
          f"n_components must be in [1, {min(centred.shape)}], got {n_components}")
    _, _, Vt = np.linalg.svd(centred, full_matrices=False)
    return Vt[:n_components]


@dataclass(frozen=True)
class Trajectory:
    """DirectProbe's view of one labelled sample at every snapshot of a fine-tuning run.

    steps : ndarray of shape (n_steps,), the snapshot steps
    labels : tuple of str, the labels present in the sample (:func:`present_labels` order)
    min_distance : ndarray of shape (n_steps, n_labels), each label's distance to its nearest
        other label
    label_distances : ndarray of shape (n_steps, n_labels, n_labels), hull distances between
        labels (:meth:`ClusterSummary.label_distances`)
    centroids : ndarray of shape (n_steps, n_labels, n_features), the mean of each label
    scale : ndarray of shape (n_steps,), the :func:`spread` of the representation
    separable : ndarray of shape (n_steps,), bool: the step's representation is linearly
        separable (one DirectProbe cluster per label). With ``separable_only`` (the
        reference's protocol) the distances of the other steps are NaN
    """

    steps: np.ndarray
    labels: tuple[str, ...]
    min_distance: np.ndarray
    label_distances: np.ndarray
    centroids: np.ndarray
    scale: np.ndarray
    separable: np.ndarray | None = None

    def min_distance_table(self):
        """The minimum distances as a pandas DataFrame: one row per step (index ``step``),
        one column per label."""
        import pandas as pd

        return pd.DataFrame(self.min_distance, index=pd.Index(self.steps.tolist(), name="step"),
                            columns=list(self.labels))

    def closest(self, n: int = 3, names: Sequence[str] | None = None) -> ClosestLabels:
        """The ``n`` labels with the smallest minimum distance at the first step, and their
        pairwise hull distances at the first and last step (Zhou & Srikumar 2022, Fig. 3).

        names : these labels instead (e.g. another fine-tuning seed's closest labels)
        """
        check(n >= 1, f"n must be >= 1, got {n}")
        if names is None:
            names = self.min_distance_table().iloc[0].sort_values().index[:n].tolist()
        idx = label_rows(self.labels, names)
        pairs = np.triu_indices(len(idx), 1)
        first = self.label_distances[0][np.ix_(idx, idx)][pairs]
        last = self.label_distances[-1][np.ix_(idx, idx)][pairs]
        return ClosestLabels(tuple(names), first, last)

    def centroid_paths(self, names: Sequence[str], n_components: int = 2) -> CentroidPaths:
        """The centroids of the labels ``names`` at every step, projected by one PCA fitted on
        all of those centroids together (so the paths share axes); :func:`centroid_paths`
        projects several trajectories on shared axes."""
        return centroid_paths([self], names, n_components)[0]

    def record(self, n_closest: int = 3, seeds: Sequence[Trajectory] = ()):
        """This trajectory as chapter 5's :class:`ftgeo.results.SpatialTask`.

        seeds : the trajectories of the further fine-tuning seeds' runs (same sample, steps
            and labels): the record then holds every seed's minimum distances, spread,
            separability and distances of the closest labels (this trajectory's closest
            labels, chosen at step 0, which every seed shares), this trajectory's first
        """
        from .results import SpatialTask

        for other in seeds:
            check(np.array_equal(other.steps, self.steps) and other.labels == self.labels,
                  "seeds: every seed's trajectory must follow the same steps and labels; got steps "
                  f"{other.steps.tolist()} for {self.steps.tolist()}")
        closest = self.closest(n_closest)
        every = [self, *seeds]

        def distances(t: Trajectory) -> dict[str, list[float | None]]:
            return {lab: _floats(t.min_distance[:, i]) for i, lab in enumerate(t.labels)}

        def separable(t: Trajectory) -> list[bool] | None:
            return None if t.separable is None else [bool(v) for v in t.separable]

        per_seed = {}
        if seeds:
            per_seed = {"min_distance_seeds": [distances(t) for t in every],
                        "scale_seeds": [t.scale.tolist() for t in every],
                        "closest_distance_last_seeds": [_floats(t.closest(n_closest, closest.labels).last)
                                                        for t in every]}
            if all(t.separable is not None for t in every):
                per_seed["separable_seeds"] = [separable(t) for t in every]
        return SpatialTask(self.steps.tolist(), distances(self), self.scale.tolist(),
                           list(closest.labels), _floats(closest.first), _floats(closest.last),
                           separable(self), **per_seed)


def _floats(values) -> list[float | None]:
    """Finite values as floats, the others (NaN: undefined) as None.

    >>> _floats([1, float("nan")])
    [1.0, None]
    """
    return [float(v) if np.isfinite(v) else None for v in values]


def centroid_paths(trajectories: Sequence[Trajectory], names: Sequence[str],
                   n_components: int = 2) -> list[CentroidPaths]:
    """The centroids of the labels ``names`` at every step of each trajectory (one per
    fine-tuning seed, say), projected by one PCA fitted on all of those centroids together,
    so that every path shares the axes.

    Returns one :class:`CentroidPaths` per trajectory, in order.
    """
    check(len(trajectories) >= 1, "trajectories is empty")
    C = [t.centroids[:, label_rows(t.labels, names)] for t in trajectories]  # (n_steps, n_names, n_features)
    flat = np.concatenate([c.reshape(-1, c.shape[-1]) for c in C])
    mean = flat.mean(axis=0)
    axes = _principal_axes(flat - mean, n_components)
    return [CentroidPaths(t.steps, tuple(names), ((c - mean) @ axes.T))
            for t, c in zip(trajectories, C, strict=True)]


def trajectory(representations: Iterable[np.ndarray], y: np.ndarray, steps: Sequence[int],
               labels: Sequence[str], *, separable_only: bool = True, store=None) -> Trajectory:
    """Cluster one labelled sample with DirectProbe at every step of a trajectory.

    Parameters
    ----------
    representations : one ndarray of shape (n_samples, n_features) per step (read lazily:
        a generator keeps one step in memory at a time)
    y : ndarray of shape (n_samples,), integer label codes, the same at every step
    steps : the step of each representation
    labels : the label vocabulary (``y`` indexes it)
    separable_only : the reference's protocol (Zhou & Srikumar's ``batch_probing``): label
        distances only where the step's representation is linearly separable, NaN elsewhere
        (their code writes 0). With one cluster per label, the clustering the reference
        applies across steps is the labels themselves, and a step is separable under it
        exactly when DirectProbe's own fit has one cluster per label, so the two agree
        wherever a distance is defined. False keeps the distances of the per-step
        DirectProbe clusters (mean over cluster pairs) at every step: a variant
    store : passed to :func:`directprobe_summary`
    """
    y, steps = np.asarray(y), np.asarray(steps)
    present = present_labels(labels, y)
    min_distance, label_distances, centroids, scale, flags = [], [], [], [], []
    for X in representations:
        blank = np.where(np.eye(len(present), dtype=bool), 0.0, np.nan)
        if separable_only and not separable(X, y, store=store):  # no fit needed: all blank
            flags.append(False)
            L = blank
        else:
            summary = directprobe_summary(X, y, store=store)
            flags.append(summary.linearly_separable)
            # the fit has the last word: should it find an overlap the test missed, the step
            # is not separable and stays blank
            L = summary.label_distances() if summary.linearly_separable or not separable_only \
                else blank
        min_distance.append(_nearest(L))
        label_distances.append(L)
        centroids.append(label_centroids(X, y))
        scale.append(spread(X))
    check(len(scale) == len(steps), f"{len(scale)} representations for {len(steps)} steps")
    return Trajectory(steps, present, np.asarray(min_distance, dtype=np.float64),
                      np.stack(label_distances), np.stack(centroids),
                      np.asarray(scale, dtype=np.float64), np.asarray(flags, dtype=bool))


def growth(min_distance):
    """Each label's change of minimum distance from the first to the last step, largest first.

    min_distance : pandas DataFrame, one row per step, one column per label
    (:meth:`Trajectory.min_distance_table`); returns a pandas Series indexed by label.
    """
    return (min_distance.iloc[-1] - min_distance.iloc[0]).sort_values(ascending=False)


def _start_change_corr(d) -> float:
    """The correlation across labels between the first step's minimum distance and its change
    to the last step (NaN with fewer than 3 labels or a constant column)."""
    g = growth(d)
    if len(g) <= 2:
        return float("nan")
    with np.errstate(all="ignore"):
        return float(np.corrcoef(d.iloc[0], g.loc[d.columns])[0, 1])


def growth_summary(min_distance: Mapping[str, object], *,
                   seeds: Sequence[Mapping[str, object]] | None = None):
    """One row per task: at how many steps the labels are linearly separable (the others have
    no distances), how many labels' minimum distance grew and shrank from the first to
    the last step, the mean and median change, and the correlation across labels between the
    starting distance and the change (NaN with fewer than 3 labels).

    min_distance : {task: DataFrame of steps x labels} (:meth:`Trajectory.min_distance_table`)
    seeds : one such mapping per fine-tuning seed, the first seed's being ``min_distance``.
        Then "grew" and "shrank" count the labels that grew (shrank) on every seed, "grew,
        per seed" and "shrank, per seed" give each seed's counts joined by "/", "separable
        steps" each seed's count; "mean change", "median change" and "corr(start, change)"
        are means over the seeds where they are defined, "sd change" the sd of the mean
        change over seeds; and "fine-tuning seeds" is their number

    >>> import pandas as pd
    >>> d = pd.DataFrame({"a": [1.0, 2.0], "b": [1.0, 0.5]}, index=[0, 10])
    >>> t = growth_summary({"pos": d}, seeds=[{"pos": d}, {"pos": d.assign(b=[1.0, 1.5])}])
    >>> row = t.loc["pos"]
    >>> int(row["grew"]), int(row["shrank"]), row["grew, per seed"], float(row["mean change"])
    (1, 0, '1/2', 0.5)
    """
    import pandas as pd

    every = None if seeds is None else list(seeds)
    rows = {}
    for task, d in min_distance.items():
        g = growth(d)
        row = {"labels": len(g), "separable steps": f"{int(d.notna().any(axis=1).sum())} of {len(d)}",
               "grew": int((g > 0).sum()), "shrank": int((g < 0).sum()),
               "mean change": float(g.mean()), "median change": float(g.median()),
               "corr(start, change)": _start_change_corr(d)}
        if every is not None:
            tables = [s[task] for s in every]
            changes = pd.DataFrame({k: growth(t) for k, t in enumerate(tables)})  # labels x seeds
            means = changes.mean().to_numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # no seed defined: the mean is NaN
                row = {"labels": len(g),
                       "separable steps": "/".join(str(int(t.notna().any(axis=1).sum())) for t in tables)
                                          + f" of {len(d)}",
                       "grew": int((changes > 0).all(axis=1).sum()),
                       "shrank": int((changes < 0).all(axis=1).sum()),
                       "grew, per seed": "/".join(str(int((changes[k] > 0).sum())) for k in changes),
                       "shrank, per seed": "/".join(str(int((changes[k] < 0).sum())) for k in changes),
                       "mean change": float(np.nanmean(means)),
                       "sd change": (float(np.nanstd(means, ddof=1)) if np.isfinite(means).sum() > 1
                                     else float("nan")),
                       "median change": float(np.nanmean(changes.median().to_numpy())),
                       "corr(start, change)": float(np.nanmean([_start_change_corr(t) for t in tables])),
                       "fine-tuning seeds": len(tables)}
        rows[task] = row
    table = pd.DataFrame(rows).T.rename_axis("task")
    # one text column makes every column object-typed, which round() would leave unrounded
    numbers = [c for c in ("mean change", "sd change", "median change", "corr(start, change)")
               if c in table]
    table[numbers] = table[numbers].astype(float)
    integers = [c for c in ("labels", "grew", "shrank", "fine-tuning seeds") if c in table]
    table[integers] = table[integers].astype(int)
    return table


def mean_table(tables: Sequence[object]):
    """The cell-wise mean of DataFrames of one shape (one per fine-tuning seed), over the
    tables where a cell is defined (NaN where none is), on the first's index and columns.

    >>> import pandas as pd
    >>> a = pd.DataFrame({"x": [1.0, np.nan]}, index=[0, 10])
    >>> mean_table([a, a + 1]).x.tolist()
    [1.5, nan]
    """
    import pandas as pd

    check(len(tables) >= 1, "tables is empty")
    first = tables[0]
    stack = np.stack([np.asarray(t.reindex(index=first.index, columns=first.columns), dtype=float)
                      for t in tables])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cell no table defines stays NaN
        return pd.DataFrame(np.nanmean(stack, axis=0), index=first.index, columns=first.columns)


# -- chapter 07: layers -----------------------------------------------------------------------
def every_nth(steps: Sequence[int], n: int) -> list[int]:
    """Every ``n``-th step, and always the last one, sorted.

    >>> every_nth([0, 10, 20, 30, 40], 3)
    [0, 30, 40]
    >>> every_nth([0, 10, 20, 30], 3)
    [0, 30]
    """
    check(int(n) == n and n >= 1, f"every_nth_snapshot must be an integer >= 1, got {n}")
    check(len(steps) >= 1, "steps is empty")
    steps = [int(s) for s in steps]
    return sorted(set(steps[::int(n)]) | {steps[-1]})


def similarity_to_pretrained(pretrained: np.ndarray, states: Iterable[tuple[int, np.ndarray]],
                             y: np.ndarray, *, layers: Sequence[int] | None = None, store=None):
    """The spatial similarity of every layer of each state to the same layer of the
    pretrained model (Zhou & Srikumar 2022, section 4.5).

    Parameters
    ----------
    pretrained : ndarray of shape (n_layers, n_samples, n_features)
    states : (step, ndarray of shape (n_layers, n_samples, n_features)) pairs, read lazily
    y : ndarray of shape (n_samples,), integer label codes
    layers : the layers compared; default 1 .. n_layers - 1, leaving out the embedding layer,
        where a word's vector does not depend on its context (``[CLS]`` is one point)

    Returns
    -------
    pandas DataFrame: one row per layer (index ``layer``), one column per step
    """
    import pandas as pd

    check(np.ndim(pretrained) == 3,
          f"pretrained must have shape (n_layers, n_samples, n_features), got {np.shape(pretrained)}")
    layers = range(1, len(pretrained)) if layers is None else layers
    # the similarity is defined on separable representations only: a layer that is not
    # separable on either side is blank without a fit
    start = {k: directprobe_summary(pretrained[k], y, store=store)
             if separable(pretrained[k], y, store=store) else None for k in layers}
    table = {}
    for step, X in states:
        table[step] = pd.Series({k: float("nan") if start[k] is None or not separable(X[k], y, store=store)
                                 else similarity(directprobe_summary(X[k], y, store=store), start[k])
                                 for k in layers}, dtype=float)
    return pd.DataFrame(table).rename_axis("layer")


@dataclass(frozen=True)
class CentroidMotion:
    """How far each label's centroid moves at every layer between two model states.

    displacement : ndarray of shape (n_layers, n_labels, n_features), the later centroid minus
        the earlier one (labels in :func:`present_labels` order)
    scale : ndarray of shape (n_layers,), the mean distance between the earlier centroids
        (NaN where it is 0, e.g. ``[CLS]`` at the embedding layer)
    """

    displacement: np.ndarray
    scale: np.ndarray

    @property
    def length(self) -> np.ndarray:
        """(n_layers, n_labels): the distance each centroid travelled."""
        return np.stack([np.linalg.norm(d, axis=1) for d in self.displacement])

    def table(self):
        """One row per layer (index ``layer``): the mean motion, the range of motion (largest
        minus smallest distance travelled), and both divided by :attr:`scale` (``relative``)."""
        import pandas as pd

        rows = []
        for k, (length, scale) in enumerate(zip(self.length, self.scale, strict=True)):
            rows.append({"layer": k, "mean motion": length.mean(),
                         "range of motion": length.max() - length.min(),
                         "relative mean motion": length.mean() / scale,
                         "relative range": (length.max() - length.min()) / scale})
        return pd.DataFrame(rows).set_index("layer")

    def pca(self, n_components: int = 2) -> np.ndarray:
        """(n_layers, n_labels, n_components): the displacements projected on the principal
        axes of all layers' displacements together, so every layer shares the axes. The axes
        are those of the centred displacements (how labels move relative to one another: a
        drift shared by every label does not pick them), but the vectors themselves are
        projected uncentred, so the origin still means "did not move"."""
        flat = self.displacement.reshape(-1, self.displacement.shape[-1])
        axes = _principal_axes(flat - flat.mean(axis=0), n_components)
        return np.stack([d @ axes.T for d in self.displacement])


def centroid_motion(pretrained: np.ndarray, finetuned: np.ndarray, y: np.ndarray) -> CentroidMotion:
    """The displacement of every label's centroid at every layer, from one state to another
    (Zhou & Srikumar 2022, section 4.5).

    pretrained, finetuned : ndarray of shape (n_layers, n_samples, n_features), the same items
    y : ndarray of shape (n_samples,), integer label codes
    """
    pretrained, finetuned, y = np.asarray(pretrained), np.asarray(finetuned), np.asarray(y)
    check(pretrained.ndim == 3 and pretrained.shape == finetuned.shape,
          f"pretrained and finetuned must have the same shape (n_layers, n_samples, n_features), "
          f"got {pretrained.shape} and {finetuned.shape}")
    check(len(y) == pretrained.shape[1], f"y has {len(y)} entries for {pretrained.shape[1]} samples")
    present = np.unique(y)
    displacement, scale = [], np.full(len(pretrained), np.nan, dtype=pretrained.dtype)
    for k in range(len(pretrained)):
        c0 = np.stack([pretrained[k][y == c].mean(0) for c in present])
        c1 = np.stack([finetuned[k][y == c].mean(0) for c in present])
        displacement.append(c1 - c0)
        mean_distance = np.linalg.norm(c0[:, None] - c0[None], axis=-1)[np.triu_indices(len(c0), 1)].mean()
        if mean_distance > 0:
            scale[k] = mean_distance
    return CentroidMotion(np.stack(displacement), scale)


def task_table(columns: Mapping[str, object], name: str = "layer"):
    """One row per task (index ``task``) from one pandas Series per task; the Series' index
    becomes the columns, named ``name``."""
    import pandas as pd

    table = pd.DataFrame(dict(columns)).T.rename_axis("task")
    table.columns.name = name
    return table


def seed_table(tables: Sequence[object]):
    """One row per (task, fine-tuning seed) from one :func:`task_table` per fine-tuning seed
    (the first seed's first): index ("task", "fine-tuning seed"), the seed numbered from 0,
    tasks in the first table's order.

    >>> import pandas as pd
    >>> a = pd.DataFrame({1: [0.9, 0.8]}, index=pd.Index(["pos", "dep"], name="task"))
    >>> seed_table([a, a - 0.1]).index.tolist()
    [('pos', 0), ('pos', 1), ('dep', 0), ('dep', 1)]
    """
    import pandas as pd

    check(len(tables) >= 1, "tables is empty")
    table = pd.concat(list(tables), keys=range(len(tables)), names=["fine-tuning seed"])
    order = pd.MultiIndex.from_product([list(tables[0].index), range(len(tables))],
                                       names=["task", "fine-tuning seed"])
    return table.swaplevel(0, 1).reindex(order)


def layers_task(similarity_table, motion: CentroidMotion, *, seeds: Sequence[tuple] | None = None):
    """Chapter 7's :class:`ftgeo.results.LayersTask` from :func:`similarity_to_pretrained`'s
    table (its columns are the steps used) and the :func:`centroid_motion` of the task.

    seeds : one (similarity table, motion) pair per fine-tuning seed, the first seed's being
        ``(similarity_table, motion)``: the record then holds every seed's figures too
    """
    from .results import LayersTask

    def figures(sim, m):
        table = m.table()
        return (sim.to_numpy().tolist(), sim.iloc[:, -1].tolist(), table["relative mean motion"].tolist(),
                table["range of motion"].tolist(), table["relative range"].tolist())

    per_seed = {}
    if seeds is not None:
        for sim, _ in seeds:
            check(list(sim.columns) == list(similarity_table.columns)
                  and list(sim.index) == list(similarity_table.index),
                  "seeds: every seed's similarity table must have the same layers and steps")
        names = ("similarity_seeds", "final_similarity_seeds", "relative_motion_seeds",
                 "range_of_motion_seeds", "relative_range_seeds")
        per_seed = dict(zip(names, map(list, zip(*(figures(sim, m) for sim, m in seeds), strict=True)),
                            strict=True))
    return LayersTask([int(s) for s in similarity_table.columns], int(motion.displacement.shape[1]),
                      *figures(similarity_table, motion), **per_seed)


def layers_summary(final_similarity, relative_motion) -> dict[str, object]:
    """What chapter 7's summary cites.

    final_similarity : tasks x layers, the similarity to pretrained at the end of fine-tuning
        (NaN where a layer is not linearly separable, before or after); or one row per (task,
        fine-tuning seed) (:func:`seed_table`), and then a task counts only where every seed
        does
    relative_motion : tasks x layers, the relative mean motion of the label centroids (or one
        row per task and seed, as ``final_similarity``)

    Returns "n_tasks"; "n_top_defined", the tasks whose top layer has a similarity; among
    them "n_top_above_half", "min_top_sim" and "min_top_task" (NaN and "none" when no task
    has one); "n_top_lowest", the tasks whose least similar defined layer is the top one;
    "n_top_moves_most", the tasks whose centroids move most, relatively, in the top layer.

    >>> import pandas as pd
    >>> sim = pd.DataFrame({1: [0.9, np.nan], 2: [0.4, np.nan]}, index=["pos", "dep"])
    >>> motion = pd.DataFrame({1: [0.1, 0.3], 2: [0.2, 0.1]}, index=["pos", "dep"])
    >>> s = layers_summary(sim, motion)
    >>> s["n_top_defined"], s["n_top_above_half"], s["min_top_task"], s["n_top_lowest"], s["n_top_moves_most"]
    (1, 0, 'pos', 1, 1)
    """
    def every_seed(flags) -> int:  # tasks whose every row (one per seed) is True
        return int(flags.groupby(level=0, sort=False).all().sum())

    tasks = final_similarity.index.get_level_values(0)
    top = final_similarity.columns[-1]
    top_sim = final_similarity[top]
    defined = top_sim.notna().groupby(level=0, sort=False).all()
    kept = top_sim[defined.reindex(tasks).to_numpy()]  # the rows of tasks defined on every seed
    lowest = final_similarity.apply(lambda r: r.idxmin() == top if r.notna().any() else False, axis=1)
    moves = relative_motion.apply(lambda r: r.idxmax() == relative_motion.columns[-1], axis=1)
    return {"n_tasks": len(tasks.unique()), "n_top_defined": int(defined.sum()),
            "n_top_above_half": every_seed(top_sim > 0.5),
            "min_top_sim": float(kept.min()) if len(kept) else float("nan"),
            "min_top_task": str(kept.index.get_level_values(0)[kept.to_numpy().argmin()]) if len(kept)
            else "none",
            "n_top_lowest": every_seed(lowest), "n_top_moves_most": every_seed(moves)}


# -- chapter 06: a target task probed after fine-tuning on other tasks -----------------------
@dataclass(frozen=True)
class ProbedState:
    """What chapter 6 measures of the target task in one model state.

    mlp : :class:`ftgeo.probes.ProbeGridResult`, the MLP probe (train, chosen on dev, tested)
    clusters : DirectProbe's :class:`ClusterSummary` of a sample of the training split
    scale : the :func:`spread` of that sample
    """

    mlp: object
    clusters: ClusterSummary
    scale: float


def probe_state(X: Mapping[str, np.ndarray], data: Mapping, *, max_items: int | None = None,
                store=None, **grid) -> ProbedState:
    """The target task in one model state (Zhou & Srikumar 2022, section 4.4): the MLP probe
    grid (:func:`ftgeo.probes.probe_grid`, keyword arguments ``grid``) and DirectProbe on
    the training split, sampled as chapter 3 samples it.

    X : {split: ndarray of shape (n_items, n_features)} for "train", "dev" and "test"
    data : {split: TaskData}, the labels
    max_items : DirectProbe on a seeded sample of whole sentences with at most this many
        items (the same in every state); None: every item
    """
    from .probes import probe_grid

    y = {split: data[split].y for split in ("train", "dev", "test")}
    mlp = probe_grid(X["train"], y["train"], X["dev"], y["dev"], X["test"], y["test"], **grid)
    rows = data["train"].sample_index(max_items, seed=0)
    sample = X["train"][rows]
    return ProbedState(mlp, directprobe_summary(sample, y["train"][rows], store=store), spread(sample))


def _min_distance_series(state: ProbedState):
    import pandas as pd

    return pd.Series(state.clusters.min_distances(), dtype=float)


def cross_task_changes(seeds: Sequence[Mapping[str, ProbedState]], pretrained: str = "pretrained"):
    """Each target label's change of minimum distance from the pretrained state, per
    fine-tuned state and fine-tuning seed: {state: DataFrame labels x seeds} (label codes,
    in the pretrained state's order; NaN where a label has no distance).

    seeds : one {state: ProbedState} per fine-tuning seed, the first seed's first and holding
        the ``pretrained`` state too
    """
    import pandas as pd

    base = _min_distance_series(seeds[0][pretrained])
    return {name: pd.DataFrame({k: _min_distance_series(s[name]).reindex(base.index) - base
                                for k, s in enumerate(seeds)})
            for name in seeds[0] if name != pretrained}


def cross_task_table(seeds: Sequence[Mapping[str, ProbedState]], *, pretrained: str = "pretrained"):
    """Chapter 6's table: one row per model state (pandas DataFrame).

    seeds : one {state: ProbedState} per fine-tuning seed, the first seed's first and holding
        the ``pretrained`` state too; every seed holds the same fine-tuned states

    Columns: "MLP accuracy" and "sd" (pretrained: over probe seeds; fine-tuned, with several
    seeds: mean and sd over fine-tuning seeds, each seed's figure the mean over its probe
    seeds), "clusters" (each seed's, joined by "/"), "labels grew" and "labels shrank" (the
    target labels whose minimum distance grew, or shrank, from the pretrained state on every
    seed), "mean change" (the mean change of a label's minimum distance, mean over seeds),
    "similarity to pretrained" (spatial similarity, mean over the seeds where it is defined)
    and "fine-tuning seeds".
    """
    import pandas as pd

    check(len(seeds) >= 1 and pretrained in seeds[0],
          f"seeds: the first seed's states must include {pretrained!r}")
    changes = cross_task_changes(seeds, pretrained)
    base = seeds[0][pretrained]
    rows = {pretrained: {"MLP accuracy": base.mlp.mean, "sd": base.mlp.sd,
                         "clusters": str(base.clusters.n_clusters),
                         "labels grew": None, "labels shrank": None, "mean change": None,
                         "similarity to pretrained": similarity(base.clusters, base.clusters),
                         "fine-tuning seeds": None}}
    for name, change in changes.items():
        every = [s[name] for s in seeds]
        means = np.array([p.mlp.mean for p in every])
        sims = np.array([similarity(p.clusters, base.clusters) for p in every], dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no seed defined: the mean is NaN
            rows[name] = {"MLP accuracy": float(means.mean()),
                          "sd": float(np.std(means, ddof=1)) if len(means) > 1 else every[0].mlp.sd,
                          "clusters": "/".join(str(p.clusters.n_clusters) for p in every),
                          "labels grew": int((change > 0).all(axis=1).sum()),
                          "labels shrank": int((change < 0).all(axis=1).sum()),
                          "mean change": float(np.nanmean(change.mean().to_numpy())),
                          "similarity to pretrained": float(np.nanmean(sims)),
                          "fine-tuning seeds": len(every)}
    table = pd.DataFrame(rows).T
    floats = ["MLP accuracy", "sd", "mean change", "similarity to pretrained"]
    table[floats] = table[floats].astype(float)
    counts = ["labels grew", "labels shrank", "fine-tuning seeds"]
    table[counts] = table[counts].astype("Int64")  # blank (<NA>) for the pretrained state
    return table


def cross_task_states(seeds: Sequence[Mapping[str, ProbedState]], labels: Sequence[str], *,
                      pretrained: str = "pretrained") -> dict:
    """The states of chapter 6's record: {state: :class:`ftgeo.results.CrossTaskState`}, the
    first seed's figures, and for a fine-tuned state every seed's (with several seeds).

    seeds : as for :func:`cross_task_table`
    labels : the target task's label names, indexed by label code
    """
    from .results import CrossTaskState

    base = seeds[0][pretrained].clusters

    def figures(p: ProbedState) -> dict:
        return {"mlp": p.mlp.test_accuracy.tolist(), "clusters": int(p.clusters.n_clusters),
                "min_distance": {labels[k]: (float(v) if np.isfinite(v) else None)
                                 for k, v in p.clusters.min_distances().items()},
                "scale": float(p.scale), "similarity_to_pretrained": similarity(p.clusters, base)}

    states = {}
    for name, first in seeds[0].items():
        per_seed = {}
        if name != pretrained and len(seeds) > 1:
            every = [figures(s[name]) for s in seeds]
            per_seed = {f"{key}_seeds": [f[key] for f in every]
                        for key in ("mlp", "clusters", "min_distance", "scale", "similarity_to_pretrained")}
        states[name] = CrossTaskState(**figures(first), **per_seed)
    return states
