"""Isotropy of a point cloud, its principal directions, and isotropy enhancement.

Pure functions of a representation matrix ``X : ndarray of shape (n_samples, n_features)``
(one row per probed item; for example one layer of :func:`ftgeo.representations`).

Measures
    - :func:`partition_isotropy`: I(X) = min_c Z(c) / max_c Z(c), Z(c) = sum_i exp(c . x_i),
      c over the unit eigenvectors of XᵀX (Mu & Viswanath 2018, "All-but-the-Top", ICLR;
      used on contextual representations by Rajaee & Pilehvar 2021). 1 = isotropic.
    - :func:`average_cosine`: the mean cosine similarity of two different rows (Ethayarajh
      2019, "How Contextual are Contextualized Word Representations?", EMNLP). 0 = isotropic
      around the origin; near 1 = all rows point the same way.
    - :func:`isoscore`: IsoScore (Rudman, Gillman, Rayne & Eickhoff 2022, "IsoScore: Measuring
      the Uniformity of Embedding Space Utilization", Findings of ACL). 1 = every direction
      holds the same variance; 0 = one direction holds all of it.
    - :func:`explained_variance`, :func:`n_directions_for` and :func:`n_dominant_directions`:
      the share of the variance along each principal direction, how many directions a given
      share needs, and how many are elongated.

Enhancement
    - :class:`DirectionRemover` (:func:`remove_top_directions`): subtract the mean and
      project out the top D principal directions ("all-but-the-top", Mu & Viswanath 2018);
      with ``directions="random"`` (:func:`remove_random_directions`), D random directions,
      the control.
    - :class:`ClusterDirectionRemover` (:func:`cluster_remove_top_directions`): the same
      within each k-means cluster (cluster-based isotropy enhancement, Rajaee & Pilehvar
      2021, ACL).
    The classes learn the mean and directions on training data and apply them to test data.
    - :func:`enhancements`: the four enhancements Rajaee & Pilehvar (2021, Findings of EMNLP)
      compare (:data:`ENHANCEMENTS`: zero-mean, clustering + zero-mean, global, cluster-based)
      on one matrix, sharing one k-means clustering, learnt on the matrix itself.

Local structure
    - :func:`kmeans_clusters`, :func:`cluster_isotropy`: isotropy inside k-means clusters.
    - :func:`direction_correlations`, :func:`direction_group_share`: how strongly the top
      directions carry a per-row quantity (a word's log frequency) or a grouping (the word
      itself).

Everything is computed in float64, from the ``n_features x n_features`` second-moment matrix
where there are more rows than features (20,000 rows of 768 features take about a second) and
from the thin SVD of the data where there are fewer; where only the top few directions are
needed (enhancement), they are computed alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ._util import check, check_Xy, one_blas_thread

log = logging.getLogger(__name__)

__all__ = [
    "ENHANCEMENTS", "ClusterDirectionRemover", "DirectionRemover", "IsotropyMeasures",
    "average_cosine", "cluster_isotropy", "cluster_remove_top_directions", "default_n_removed",
    "direction_correlations", "direction_group_share", "enhancements", "explained_variance", "isoscore",
    "isotropy", "kmeans_clusters", "n_directions_for", "n_dominant_directions",
    "partition_isotropy",
    "principal_directions", "remove_random_directions", "remove_top_directions",
]


def _as_float64(X: np.ndarray, min_rows: int = 2) -> np.ndarray:
    return _checked_array(X, min_rows, np.float64)


def _checked_array(X: np.ndarray, min_rows: int, dtype) -> np.ndarray:
    """X checked (2-D, finite, at least ``min_rows`` rows) as an array of ``dtype``."""
    check_Xy(X)
    X = np.asarray(X, dtype=dtype)
    check(X.shape[0] >= min_rows, f"X needs at least {min_rows} rows, got {X.shape[0]}")
    return X


def _gram_eigh(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For A of shape (n, d) with n <= d: the left singular vectors U (n, n) and singular
    values s (n,), largest first, from the n x n Gram matrix A Aᵀ: far cheaper than a d x d
    decomposition or LAPACK's SVD of a wide matrix. ``A @ V = U * s`` for the right
    singular vectors V."""
    G = A @ A.T
    with one_blas_thread():
        values, U = np.linalg.eigh(G)
    return U[:, ::-1], np.sqrt(np.clip(values[::-1], 0.0, None))


def _variances(X: np.ndarray) -> np.ndarray:
    """The covariance's eigenvalues (ddof 1), largest first, shape (n_features,): from the
    thin SVD of the centred data when there are no more rows than features, else from the
    covariance's eigenvalues alone (no eigenvectors)."""
    n, d = X.shape
    centered = X - X.mean(axis=0)
    if n <= d:
        G = centered @ centered.T
        with one_blas_thread():
            s = np.sqrt(np.clip(np.linalg.eigvalsh(G)[::-1], 0.0, None))
        return np.r_[s ** 2 / (n - 1), np.zeros(d - len(s))]
    S = centered.T @ centered / (n - 1)
    with one_blas_thread():
        return np.clip(np.linalg.eigvalsh(S)[::-1], 0.0, None)


def _eigh_descending(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with one_blas_thread():
        values, vectors = np.linalg.eigh(S)
    return np.clip(values[::-1], 0.0, None), vectors[:, ::-1]


# ---------------------------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------------------------

def partition_isotropy(X: np.ndarray, *, both_signs: bool = True) -> float:
    """Partition-function isotropy I(X) in (0, 1] (Mu & Viswanath 2018).

    ``Z(c) = sum_i exp(c . x_i)`` is evaluated at every unit eigenvector ``c`` of ``XᵀX``
    *and at its negation*: an eigenvector's sign is arbitrary (LAPACK picks one), and taking
    both makes the value independent of that choice. Log-sum-exp keeps it finite for long
    vectors. Like the original definition, the measure is not scale-free: scaling X up
    pushes it towards 0, since exp magnifies the spread of the projections.

    X : ndarray of shape (n_samples, n_features); rows are not centered (the common mean
    direction is part of what the measure detects).
    both_signs : False evaluates Z at each eigenvector with whatever sign the eigensolver
        returned, as Rajaee & Pilehvar's code does: the value then depends on those signs

    >>> rng = np.random.default_rng(0)
    >>> round(partition_isotropy(rng.normal(size=(20000, 10))), 1)
    1.0
    >>> partition_isotropy(rng.normal(size=(2000, 10)) * np.r_[30.0, np.ones(9)]) < 1e-6
    True
    """
    both, one = _partition_values(_as_float64(X, 1), both_signs=both_signs)
    return both if both_signs else one


def _partition_values(X: np.ndarray, *, both_signs: bool = True) -> tuple[float, float]:
    """I(X) with both signs of every eigenvector and with the solver's sign alone (NaN for
    the first when ``both_signs`` is False), from one decomposition: the eigenvectors of XᵀX,
    or, with fewer rows than features, X's right singular vectors and the null space, where
    every projection is 0 and so Z = n."""
    n, d = X.shape
    if n < d:
        U, s = _gram_eigh(X)
        projections = U * s  # X @ V: the projections on the right singular vectors
        null = [np.log(n)]  # rank <= n < d: the null space is never empty
    else:
        _, vectors = _eigh_descending(X.T @ X)
        projections, null = X @ vectors, []  # c . x_i for every eigenvector c
    if both_signs:
        plus, minus = _logsumexp_both_signs(projections)
    else:
        plus, minus = _logsumexp_columns(projections), None
    one = np.concatenate([plus, null])
    one_value = float(np.exp(one.min() - one.max()))
    if minus is None:
        return float("nan"), one_value
    both = np.concatenate([one, minus])
    return float(np.exp(both.min() - both.max())), one_value


def _logsumexp_columns(A: np.ndarray) -> np.ndarray:
    top = A.max(axis=0)
    return top + np.log(np.exp(A - top).sum(axis=0))


def _logsumexp_both_signs(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(_logsumexp_columns(A), _logsumexp_columns(-A))`` through one scratch array."""
    top, bottom = A.max(axis=0), A.min(axis=0)
    scratch = np.subtract(A, top)
    plus = top + np.log(np.exp(scratch, out=scratch).sum(axis=0))
    np.subtract(bottom, A, out=scratch)  # -A - max(-A)
    minus = -bottom + np.log(np.exp(scratch, out=scratch).sum(axis=0))
    return plus, minus


def average_cosine(X: np.ndarray, n_pairs: int | None = None, random_state: int = 0) -> float:
    """Mean cosine similarity between two different rows of X (Ethayarajh 2019).

    ``n_pairs=None`` (the default) averages over *all* pairs ``i != j`` exactly, in
    O(n_samples * n_features): with unit rows ``u_i``, the sum over ordered pairs is
    ``||sum_i u_i||² - n_samples``. An integer draws that many random pairs of different
    rows with ``random_state`` instead, as Ethayarajh did; the exact form needs no seed and
    does not depend on the row order. Zero rows are refused.

    >>> average_cosine(np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]))
    0.3333333333333333
    """
    X = _as_float64(X)
    norms = np.linalg.norm(X, axis=1)
    check(bool(np.all(norms > 0)), f"X has {int(np.sum(norms == 0))} all-zero row(s); cosine "
          "similarity is undefined for them: drop them first")
    U = X / norms[:, None]
    n = len(U)
    if n_pairs is None:
        total = U.sum(axis=0)
        return float((total @ total - n) / (n * (n - 1)))
    check(isinstance(n_pairs, (int, np.integer)) and n_pairs >= 1,
          f"n_pairs must be None (all pairs) or a positive integer, got {n_pairs!r}")
    rng = np.random.default_rng(random_state)
    i = rng.integers(0, n, n_pairs)
    j = (i + rng.integers(1, n, n_pairs)) % n  # uniform over the rows other than i
    return float(np.einsum("ij,ij->i", U[i], U[j]).mean())


def _isoscore_from_variances(variances: np.ndarray) -> float:
    """IsoScore from the variances along the principal directions (Rudman et al. 2022, Alg. 1).

    The variance vector is scaled to norm sqrt(d); its distance to the all-ones vector,
    divided by sqrt(2 (d - sqrt d)), is the isotropy defect delta in [0, 1]; then
    phi = (d - delta² (d - sqrt d))² / d² is the share of dimensions used, and IsoScore
    rescales phi from [1/d, 1] to [0, 1].
    """
    d = len(variances)
    norm = np.linalg.norm(variances)
    check(norm > 0, "X has zero variance: all rows are equal, so IsoScore is undefined")
    scaled = variances * np.sqrt(d) / norm
    defect = np.linalg.norm(scaled - 1.0) / np.sqrt(2 * (d - np.sqrt(d)))
    phi = (d - defect ** 2 * (d - np.sqrt(d))) ** 2 / d ** 2
    return float((d * phi - 1) / (d - 1))


def isoscore(X: np.ndarray) -> float:
    """IsoScore of X in [0, 1] (Rudman et al. 2022): how evenly the variance is spread
    over the principal directions. Scale-, rotation- and translation-invariant.

    X : ndarray of shape (n_samples, n_features), n_features >= 2

    >>> rng = np.random.default_rng(0)
    >>> round(isoscore(rng.normal(size=(20000, 5))), 2)
    1.0
    >>> round(isoscore(np.c_[rng.normal(size=(1000, 1)), np.zeros((1000, 4))]), 6)
    0.0
    """
    X = _as_float64(X)
    check(X.shape[1] >= 2, f"IsoScore needs at least 2 features, got {X.shape[1]}")
    return _isoscore_from_variances(_variances(X))


@dataclass(frozen=True)
class IsotropyMeasures:
    """The three measures of one point cloud (see :func:`isotropy`)."""

    partition: float
    average_cosine: float
    isoscore: float
    #: I(X) at each eigenvector with the sign the solver returned (Rajaee & Pilehvar's code),
    #: from the same decomposition; not part of :meth:`as_dict`
    partition_one_sign: float = float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"partition": self.partition, "average_cosine": self.average_cosine,
                "isoscore": self.isoscore}


def isotropy(X: np.ndarray) -> IsotropyMeasures:
    """I(X), the exact average cosine and IsoScore of X, sharing one pass over the data.

    >>> rng = np.random.default_rng(0)
    >>> m = isotropy(rng.normal(size=(20000, 8)))
    >>> bool(m.partition > 0.85), bool(abs(m.average_cosine) < 0.01), bool(m.isoscore > 0.99)
    (True, True, True)
    """
    X = _as_float64(X)
    check(X.shape[1] >= 2, f"isotropy needs at least 2 features, got {X.shape[1]}")
    both, one = _partition_values(X)
    return IsotropyMeasures(partition=both, average_cosine=average_cosine(X),
                            isoscore=_isoscore_from_variances(_variances(X)), partition_one_sign=one)


def explained_variance(X: np.ndarray) -> np.ndarray:
    """Share of the total variance along each principal direction, largest first.

    Returns ndarray of shape (min(n_samples, n_features),) summing to 1 (trailing zero
    variances of a rank-deficient X are dropped).

    >>> explained_variance(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [2.0, 1.0]]))
    array([0.8, 0.2])
    """
    X = _as_float64(X)
    variances = _variances(X)
    total = variances.sum()
    check(total > 0, "X has zero variance: all rows are equal")
    return variances[: min(X.shape)] / total


def n_directions_for(shares: np.ndarray, share: float = 0.9) -> int:
    """How many of the top principal directions hold at least ``share`` of the variance.

    shares : the output of :func:`explained_variance`

    >>> n_directions_for(np.array([0.5, 0.3, 0.2]), 0.8)
    2
    """
    check(0 < share <= 1, f"share must be in (0, 1], got {share}")
    shares = np.asarray(shares, dtype=np.float64)
    cumulative = np.cumsum(shares) / shares.sum()
    return int(min(np.searchsorted(cumulative, share - 1e-12) + 1, len(shares)))


def n_dominant_directions(shares: np.ndarray, factor: float = 10.0) -> int:
    """How many principal directions are *elongated*: hold at least ``factor`` times the
    variance share ``1 / n`` that each of ``n`` directions has in an isotropic cloud.

    Our operationalization of the "elongated directions" of Rajaee & Pilehvar (2021),
    who do not fix a threshold. shares : the output of :func:`explained_variance`

    >>> n_dominant_directions(np.array([0.6, 0.2, 0.15] + [0.05 / 97] * 97))  # >= 10 / 100
    3
    """
    check(factor > 0, f"factor must be > 0, got {factor}")
    shares = np.asarray(shares, dtype=np.float64)
    return int(np.sum(shares / shares.sum() >= factor / len(shares)))


def default_n_removed(n_features: int) -> int:
    """Mu & Viswanath's rule of thumb for D, the directions to remove: about n_features / 100.

    >>> default_n_removed(384), default_n_removed(768)
    (4, 8)
    """
    return max(1, int(round(n_features / 100)))


# ---------------------------------------------------------------------------------------------
# Enhancement: removing directions
# ---------------------------------------------------------------------------------------------

def principal_directions(X: np.ndarray, n_directions: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean of X and its top principal directions.

    Returns ``(mean, components)``: ndarray of shape (n_features,) and ndarray of shape
    (n_directions, n_features) with orthonormal rows, largest variance first.
    """
    X = _as_float64(X, 1)
    _check_n_removed(n_directions, X.shape[1], name="n_directions")
    mean = X.mean(axis=0)
    if len(X) == 1:
        return mean, np.eye(X.shape[1])[:n_directions]
    return mean, _top_directions(X - mean, n_directions)


def _top_directions(centered: np.ndarray, k: int) -> np.ndarray:
    """The top ``k`` eigenvectors of ``centeredᵀ centered`` as rows, largest first.

    Only the top few are needed, so the full d x d eigendecomposition is avoided where it
    can be: with no more rows than features, the thin SVD of the data itself (its rank is at
    most n); with few directions of many features, Lanczos iteration (ARPACK) on the
    covariance, which needs matrix-vector products only. Both agree with the full
    decomposition to rounding (up to each vector's sign, which removal does not see).
    """
    n, d = centered.shape
    if k == 0:
        return np.empty((0, d))
    if n <= d:
        U, s = _gram_eigh(centered)
        if k <= len(s) and s[k - 1] > 1e-8 * s[0]:
            return (centered.T @ (U[:, :k] / s[:k])).T
        _, _, vt = np.linalg.svd(centered, full_matrices=False)  # directions of no variance
        return vt[:k] if k <= len(vt) else np.linalg.svd(centered)[2][:k]
    scatter = centered.T @ centered
    if 4 * k <= d and d >= 64:
        from scipy.sparse.linalg import ArpackNoConvergence, eigsh

        try:
            values, vectors = eigsh(scatter, k=k, which="LA", v0=np.ones(d))
            return vectors[:, np.argsort(-values)].T
        except ArpackNoConvergence:  # pragma: no cover - then the full decomposition
            log.info("ARPACK did not converge for the top %d directions; using eigh", k)
    _, vectors = _eigh_descending(scatter)
    return vectors[:, :k].T


def _check_n_removed(n: int, n_features: int, *, name: str = "n_removed") -> None:
    check(isinstance(n, (int, np.integer)) and 0 <= n < n_features,
          f"{name} must be an integer in [0, {n_features}) for {n_features} features, got {n!r}")


def _project_out(centered: np.ndarray, components: np.ndarray) -> np.ndarray:
    return centered - (centered @ components.T) @ components


class DirectionRemover:
    """Subtract the mean and project out ``n_removed`` directions, learnt on training data
    and applied to any data (scikit-learn transformer contract).

    Parameters
    ----------
    n_removed : D, the number of directions to remove (0 only centers)
    directions : ``"top"``, the top principal directions ("all-but-the-top", Mu & Viswanath
        2018), or ``"random"``, random orthonormal directions (the control)
    random_state : seed of the random directions

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
    components_ : ndarray of shape (n_removed, n_features), orthonormal rows
    """

    def __init__(self, n_removed: int, directions: str = "top", random_state: int = 0):
        self.n_removed = n_removed
        self.directions = directions
        self.random_state = random_state

    def fit(self, X: np.ndarray, y=None) -> DirectionRemover:
        X = _as_float64(X, 1)
        _check_n_removed(self.n_removed, X.shape[1])
        check(self.directions in ("top", "random"),
              f"directions must be 'top' or 'random', got {self.directions!r}")
        if self.directions == "top":
            self.mean_, self.components_ = principal_directions(X, self.n_removed)
        else:
            self.mean_ = X.mean(axis=0)
            rng = np.random.default_rng(self.random_state)
            q, _ = np.linalg.qr(rng.normal(size=(X.shape[1], self.n_removed)))
            self.components_ = q.T
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = _as_float64(X, 1)
        check(X.shape[1] == len(self.mean_),
              f"X has {X.shape[1]} features, the remover was fitted on {len(self.mean_)}")
        return _project_out(X - self.mean_, self.components_)

    def fit_transform(self, X: np.ndarray, y=None) -> np.ndarray:
        return self.fit(X).transform(X)


class ClusterDirectionRemover:
    """Cluster-based isotropy enhancement (Rajaee & Pilehvar 2021, ACL): k-means clusters,
    then within each cluster subtract its mean and project out its top ``n_removed``
    principal directions. New rows go to the nearest cluster centre and get that cluster's
    transformation (scikit-learn transformer contract).

    Parameters
    ----------
    n_removed : D, directions removed per cluster (a cluster with at most D rows is only
        centered)
    n_clusters : k of k-means
    random_state : seed of k-means

    Attributes
    ----------
    centers_ : ndarray of shape (n_clusters, n_features), the k-means centres
    removers_ : list of fitted :class:`DirectionRemover`, one per cluster
    labels_ : ndarray of shape (n_samples,), the cluster of every training row
    """

    def __init__(self, n_removed: int, n_clusters: int = 10, random_state: int = 0):
        self.n_removed = n_removed
        self.n_clusters = n_clusters
        self.random_state = random_state

    def fit(self, X: np.ndarray, y=None, *, clusters: np.ndarray | None = None
            ) -> ClusterDirectionRemover:
        """clusters : the cluster of every row, ints in [0, n_clusters), each cluster
        non-empty (one clustering shared by several removers); None runs k-means."""
        X = _as_float64(X, 1)
        _check_n_removed(self.n_removed, X.shape[1])
        if clusters is None:
            self.labels_ = kmeans_clusters(X, self.n_clusters, self.random_state)
        else:
            clusters = np.asarray(clusters)
            check(clusters.shape == (len(X),)
                  and np.array_equal(np.unique(clusters), np.arange(self.n_clusters)),
                  f"clusters must give each of the {len(X)} rows a cluster in "
                  f"[0, {self.n_clusters}), every cluster used")
            self.labels_ = clusters.astype(np.int64)
        self.centers_ = np.stack([X[self.labels_ == c].mean(axis=0)
                                  for c in range(self.n_clusters)])
        self.removers_ = []
        for c in range(self.n_clusters):
            part = X[self.labels_ == c]
            k = self.n_removed if len(part) > self.n_removed else 0
            self.removers_.append(DirectionRemover(k).fit(part))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The nearest cluster centre of every row, ndarray of shape (n_samples,)."""
        X = _as_float64(X, 1)
        distances = ((X ** 2).sum(1)[:, None] - 2 * X @ self.centers_.T
                     + (self.centers_ ** 2).sum(1)[None])
        return distances.argmin(axis=1)

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = _as_float64(X, 1)
        return self._apply(X, self.predict(X))

    def fit_transform(self, X: np.ndarray, y=None, *, clusters: np.ndarray | None = None
                      ) -> np.ndarray:
        self.fit(X, clusters=clusters)
        return self._apply(_as_float64(X, 1), self.labels_)

    def _apply(self, X: np.ndarray, clusters: np.ndarray) -> np.ndarray:
        """Each row transformed by the remover of its cluster."""
        out = np.empty_like(X)
        for c, remover in enumerate(self.removers_):
            rows = clusters == c
            if rows.any():
                out[rows] = remover.transform(X[rows])
        return out


def remove_top_directions(X: np.ndarray, n_removed: int) -> np.ndarray:
    """All-but-the-top (Mu & Viswanath 2018): subtract the mean, then project out the top
    ``n_removed`` principal directions. Returns a float64 array of X's shape.

    >>> X = np.array([[0.0, 0.0], [4.0, 1.0], [8.0, 0.0]])
    >>> remove_top_directions(X, 1).round(3)
    array([[ 0.   , -0.333],
           [ 0.   ,  0.667],
           [ 0.   , -0.333]])
    """
    return DirectionRemover(n_removed).fit_transform(X)


def remove_random_directions(X: np.ndarray, n_removed: int, random_state: int = 0) -> np.ndarray:
    """The control of :func:`remove_top_directions`: subtract the mean and project out
    ``n_removed`` random orthonormal directions (uniform on the sphere, from ``random_state``).
    """
    return DirectionRemover(n_removed, "random", random_state).fit_transform(X)


def kmeans_clusters(X: np.ndarray, n_clusters: int, random_state: int = 0, n_init: int = 1) -> np.ndarray:
    """k-means cluster of every row: scikit-learn's Lloyd iterations from a k-means++ start,
    ``n_init`` starts (the best kept), computed in float32.

    One start, as in Rajaee & Pilehvar's code, which runs one k-means (SciPy's ``kmeans2``
    from k random rows, 10 iterations); ours iterates to convergence from a k-means++ start.
    Float32 halves the distance computations' cost; on the book's token vectors (up to
    50,000 x 384 per layer) k-means was a third of chapter 8's time with three float64 starts.

    Returns ndarray of shape (n_samples,), ints in [0, n_clusters).

    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> labels = kmeans_clusters(X, 2)
    >>> bool(labels[0] == labels[1] != labels[2] == labels[3])
    True
    """
    from sklearn.cluster import KMeans

    X = _checked_array(X, 1, np.float32)  # straight to float32: no float64 copy on the way
    check(isinstance(n_clusters, (int, np.integer)) and 1 <= n_clusters <= len(X),
          f"n_clusters must be an integer in [1, {len(X)}] for {len(X)} rows, got {n_clusters!r}")
    check(isinstance(n_init, (int, np.integer)) and n_init >= 1,
          f"n_init must be an integer >= 1, got {n_init!r}")
    if n_clusters == 1:
        return np.zeros(len(X), dtype=np.int64)
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=random_state)
    return km.fit(X).labels_.astype(np.int64)


def cluster_remove_top_directions(X: np.ndarray, n_removed: int, n_clusters: int = 10,
                                  random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:class:`ClusterDirectionRemover` fitted and applied to X.

    Returns ``(X_enhanced, clusters)``: float64 of X's shape and ndarray of shape (n_samples,).
    """
    remover = ClusterDirectionRemover(n_removed, n_clusters, random_state)
    return remover.fit_transform(X), remover.labels_


#: The isotropy enhancements Rajaee & Pilehvar (2021, Findings of EMNLP, section 6) apply to
#: pretrained and fine-tuned representations, after the representation as it is ("none"):
#: their names for them are Zero-mean, Clustering+ZM, Global approach (Mu & Viswanath 2018) and
#: Cluster-based approach (Rajaee & Pilehvar 2021, ACL).
ENHANCEMENTS = ("none", "zero-mean", "cluster zero-mean", "global", "cluster-based")


def enhancements(X: np.ndarray, n_removed: int, n_clusters: int,
                 random_state: int = 0) -> dict[str, np.ndarray]:
    """X under each of :data:`ENHANCEMENTS`, every one learnt on X itself, the two cluster
    methods on one k-means clustering.

    - ``none``: X as it is;
    - ``zero-mean``: X minus its mean;
    - ``cluster zero-mean``: each k-means cluster minus its own mean;
    - ``global``: X minus its mean, its top ``n_removed`` principal directions projected out
      ("all-but-the-top", Mu & Viswanath 2018);
    - ``cluster-based``: within each cluster, the cluster's mean subtracted and the cluster's
      top ``n_removed`` directions projected out (Rajaee & Pilehvar 2021, ACL).

    X : ndarray of shape (n_samples, n_features). Returns ``{method: float64 array of X's
    shape}``. Rajaee & Pilehvar's code learns the enhancement on the vectors it then
    evaluates (train and evaluation sets together), as this does on whatever X holds.

    >>> X = np.array([[0.0, 0.0], [4.0, 1.0], [8.0, 0.0]])
    >>> out = enhancements(X, n_removed=1, n_clusters=1)
    >>> out["zero-mean"].mean(axis=0).round(12) + 0, out["global"].round(3)
    (array([0., 0.]), array([[ 0.   , -0.333],
           [ 0.   ,  0.667],
           [ 0.   , -0.333]]))
    """
    X = _as_float64(X, 1)
    _check_n_removed(n_removed, X.shape[1])
    clusters = kmeans_clusters(X, n_clusters, random_state)

    def per_cluster(D: int) -> np.ndarray:
        # k-means may leave a cluster empty only in degenerate data; number the used ones
        used = np.unique(clusters, return_inverse=True)[1]
        return ClusterDirectionRemover(D, int(used.max()) + 1).fit_transform(X, clusters=used)

    return {
        "none": X,
        "zero-mean": X - X.mean(axis=0),
        "cluster zero-mean": per_cluster(0),
        "global": DirectionRemover(n_removed).fit_transform(X),
        "cluster-based": per_cluster(n_removed),
    }


# ---------------------------------------------------------------------------------------------
# Local structure: what the top directions carry
# ---------------------------------------------------------------------------------------------

def cluster_isotropy(X: np.ndarray, clusters: np.ndarray, min_size: int = 10) -> dict[str, float]:
    """The three measures inside each cluster, each cluster centered on its own mean,
    averaged over clusters with at least ``min_size`` rows, weighted by size (NaN when no
    cluster is that large).

    Rajaee & Pilehvar (2021) found contextual representations far more isotropic *within*
    clusters, once each cluster's mean is removed, than globally.
    """
    X = _as_float64(X)
    clusters = np.asarray(clusters)
    check(clusters.shape == (len(X),), f"clusters must have shape ({len(X)},), got {clusters.shape}")
    totals, weight = {"partition": 0.0, "average_cosine": 0.0, "isoscore": 0.0}, 0
    for c in np.unique(clusters):
        part = X[clusters == c]
        if len(part) < min_size:
            continue
        centered = part - part.mean(axis=0)
        keep = np.linalg.norm(centered, axis=1) > 0
        if keep.sum() < 2:
            continue
        for name, value in isotropy(centered[keep]).as_dict().items():
            totals[name] += value * len(part)
        weight += len(part)
    if weight == 0:  # too few rows per cluster: nothing to measure
        return {name: float("nan") for name in totals}
    return {name: value / weight for name, value in totals.items()}


def direction_correlations(X: np.ndarray, values: np.ndarray, n_directions: int) -> np.ndarray:
    """Pearson correlation of each row's projection on each top principal direction with
    a per-row quantity (for example the log frequency of the word the row represents).

    Returns ndarray of shape (n_directions,); signs are arbitrary (so is a direction's).
    """
    X = _as_float64(X)
    values = np.asarray(values, dtype=np.float64)
    check(values.shape == (len(X),), f"values must have shape ({len(X)},), got {values.shape}")
    mean, components = principal_directions(X, n_directions)
    projections = (X - mean) @ components.T
    v = values - values.mean()
    p = projections - projections.mean(axis=0)
    denominator = np.linalg.norm(p, axis=0) * np.linalg.norm(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (p.T @ v) / denominator, np.nan)


def direction_group_share(X: np.ndarray, groups: np.ndarray, n_directions: int) -> np.ndarray:
    """Share of the variance along each top principal direction explained by a grouping
    of the rows (eta², the between-group over the total sum of squares), for example the
    word type of each token: 1 = the direction only tells words apart, 0 = not at all.

    Returns ndarray of shape (n_directions,). Groups with one row count fully towards eta²,
    so compare it against the same grouping on other representations, not against 0.
    """
    X = _as_float64(X)
    groups = np.asarray(groups)
    check(groups.shape == (len(X),), f"groups must have shape ({len(X)},), got {groups.shape}")
    mean, components = principal_directions(X, n_directions)
    projections = (X - mean) @ components.T
    _, codes = np.unique(groups, return_inverse=True)
    counts = np.bincount(codes)
    sums = np.zeros((len(counts), n_directions))
    np.add.at(sums, codes, projections)
    between = (sums ** 2 / counts[:, None]).sum(axis=0)  # projections have mean 0
    total = (projections ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, between / total, np.nan)
