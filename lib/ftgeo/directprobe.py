"""DirectProbe: label clusters whose convex hulls do not overlap (Zhou & Srikumar 2021).

The algorithm is that of the reference code (utahnlp/DirectProbe, with the stopping rule of
its 2022 fix):

1. every point starts as its own cluster; clusters of the same label are merged closest
   first, the distance being that between cluster means;
2. *phase 1* merges to the end with no checks (one cluster per label). If no two clusters
   of different labels overlap there, that is the answer. Otherwise the first state of the
   phase-1 path that has an overlap is found (overlap only persists as clusters grow), and
3. *phase 2* restarts from the state just before it: the closest same-label pairs are popped
   in turn, and a merge is accepted only if the merged cluster's convex hull overlaps the
   hull of no cluster of another label. A rejected pair is dropped; merging goes on until
   no candidate pair is left (the 2022 paper's appendix F describes an older loop that
   stopped after a fixed number of tries: that bug is not reproduced).

What differs from the reference is *how* overlap is decided, never *what* is decided. Two
hulls are disjoint iff a separating hyperplane exists; any hyperplane that separates two
sets also separates their subsets, so hyperplanes are kept per label pair and tried first.
The exact test is a linear program solved by constraint generation: a max-margin LP on a
small working set of points, checked against all points, with the violators added to the
same HiGHS model, whose dual simplex restarts from the last basis; an
infeasible working set proves overlap (its points are in both hulls' subsets), a hyperplane
that separates every point proves disjointness. Overlap witnesses are kept too: a cluster
pair that contains both sides of a witness overlaps.

Before the LP, Fisher's direction and a nearest-point search (Wolfe's algorithm on the set
of differences a - b) answer where the LP's answer is certain: the exact test's margin,
over hyperplanes with |w_i| <= 1, is half the L1 distance between the hulls (LP duality),
so hulls closer than twice the tolerance overlap for it, and a hyperplane that clears
every point by far more than the LP's own tolerance is one it would find too. Pairs in
between go to the LP. The caches are tried for all the candidates of a merge at once, and
the exact tests go to the likeliest overlap first: this changes how much is computed,
never what is decided. So does the LP's warm start: the points that carried the last LP
of a label pair (its tight constraints, or its overlap witness) start the next LP of that
pair when most of them lie in the two clusters, which late in phase 1's search and in
phase 2 are the same two large clusters, one of them grown by a few points.

Distances between final clusters are twice the margin of a hard-margin linear SVM between
them, which equals the Euclidean distance between the two hulls.
"""

from __future__ import annotations

import heapq
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.cluster.hierarchy import linkage

from ._util import check, check_Xy, keyed_tasks, one_blas_thread, progress_bar

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# The exact hull-overlap test
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hyperplane:
    """``w . x + b > 0`` on one side (the first set), ``< 0`` on the other."""

    w: np.ndarray
    b: float

    def separates(self, A: np.ndarray, B: np.ndarray, eps: float = 0.0) -> bool:
        """Strictly, by more than ``eps * max|w_i|`` on every point.

        One criterion for every test in this module: a pair counts as separated iff some
        hyperplane clears every point by more than ``eps`` times its largest coefficient,
        which is the margin the exact LP maximizes (|w_i| <= 1).
        """
        m = eps * float(np.abs(self.w).max())
        return bool((A @ self.w + self.b > m).all() and (B @ self.w + self.b < -m).all())

    def flipped(self) -> Hyperplane:
        return Hyperplane(-self.w, -self.b)


def _mean_direction(A: np.ndarray, B: np.ndarray, eps: float) -> Hyperplane | None:
    """The hyperplane orthogonal to the difference of means, if it separates A from B."""
    w = A.mean(axis=0) - B.mean(axis=0)
    if not np.any(w):
        return None
    lo, hi = (A @ w).min(), (B @ w).max()
    h = Hyperplane(w, -float(lo + hi) / 2)
    return h if h.separates(A, B, eps) else None


_HIGHS_GREETED = False


def _new_highs(highspy):
    """A silent ``highspy.Highs``. The first one of a process prints HiGHS's banner to the
    C-level stdout before any option can be set; it is sent to /dev/null (library code is
    silent but for logging)."""
    global _HIGHS_GREETED
    if _HIGHS_GREETED:
        h = highspy.Highs()
    else:
        sys.stdout.flush()
        try:
            saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        except OSError:  # no stdout to protect (fd 1 closed)
            h = highspy.Highs()
        else:
            try:
                os.dup2(null, 1)
                h = highspy.Highs()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
                os.close(null)
        _HIGHS_GREETED = True
    h.setOptionValue("output_flag", False)
    return h


class _MarginLP:
    """max t s.t. A w + b >= t, B w + b <= -t, |w_i| <= 1, t <= 1, with rows added as it goes.

    Constraint generation adds the violated points to the working set and solves again.
    Solving each enlarged LP from scratch repeats the work of the last one; here the
    rows are added to one HiGHS model (``highspy``), whose dual simplex restarts from the
    last optimal basis, which stays dual feasible when rows are added. On the two hardest
    clusters of 12,500 POS words (2,366 and 1,035 points, 384-d) the rounds then take
    3 s in all instead of 18 s. The LP and its tolerances are those of scipy's
    ``linprog(method="highs")``, which runs the same solver (HiGHS).

    The model outlives one test, too (see :meth:`_Clusters._exact`): the rows of points that
    left the two clusters are deleted, and the next test of the label pair starts from the
    rows and basis left. The frame the rows were written in (``mu``, ``local``: the LP's
    points are ``(x - mu) / local``) is kept with them; ``side`` and ``ref`` give each row's
    side (+1 for A, -1 for B) and its point's index into A or B.
    """

    def __init__(self, n_features: int, mu: np.ndarray, local: float):
        import highspy

        self._inf = highspy.kHighsInf
        self._optimal = highspy.HighsModelStatus.kOptimal
        self.h = _new_highs(highspy)
        d = self.d = n_features
        # variables: w (d), b, t; minimize -t
        self.h.addVars(d + 2, np.r_[-np.ones(d), -self._inf, -self._inf],
                       np.r_[np.ones(d), self._inf, 1.0])
        self.h.changeColCost(d + 1, -1.0)
        self.mu, self.local = mu, local
        self.side = np.zeros(0, dtype=np.int8)
        self.ref = np.zeros(0, dtype=np.int64)

    def add(self, Z: np.ndarray, side: int, ref: np.ndarray) -> None:
        """Rows ``side * (z . w + b) - t >= 0`` for the points ``Z`` (side +1 for A, -1 for B),
        which are points ``ref`` of A or B."""
        n, d = Z.shape
        if n == 0:
            return
        self.side = np.r_[self.side, np.full(n, side, dtype=np.int8)]
        self.ref = np.r_[self.ref, ref]
        M = np.empty((n, d + 2))
        M[:, :d] = side * Z
        M[:, d] = side
        M[:, d + 1] = -1.0
        self.h.addRows(n, np.zeros(n), np.full(n, self._inf), n * (d + 2),
                       np.arange(n, dtype=np.int32) * (d + 2),
                       np.tile(np.arange(d + 2, dtype=np.int32), n), M.ravel())
        self._check_rows()

    def keep(self, rows: np.ndarray) -> None:
        """Delete every row but ``rows`` (a boolean mask over the rows, in order)."""
        drop = np.flatnonzero(~rows).astype(np.int32)
        if len(drop):
            self.h.deleteRows(len(drop), drop)
        self.side, self.ref = self.side[rows], self.ref[rows]
        self._check_rows()

    def _check_rows(self) -> None:
        """The model's rows are the points the bookkeeping says (an overlap is proved on them)."""
        if self.h.getNumRow() != len(self.side):  # pragma: no cover - HiGHS refused a change
            raise RuntimeError(f"margin LP holds {self.h.getNumRow()} rows, expected {len(self.side)}")

    def solve(self) -> tuple[float, np.ndarray, float]:
        """(t, w, b) at the optimum of the rows added so far."""
        self.h.run()
        status = self.h.getModelStatus()
        if status != self._optimal:  # pragma: no cover - the LP is always feasible and bounded
            raise RuntimeError(f"margin LP failed: {self.h.modelStatusToString(status)}")
        x = np.asarray(self.h.getSolution().col_value)
        return float(x[-1]), x[:self.d], float(x[self.d])


def _interpolating_plane(Za: np.ndarray, Zb: np.ndarray) -> tuple[np.ndarray, float]:
    """The minimum-norm (w, b) with Za w + b = 1 and Zb w + b = -1, by least squares."""
    Z1 = np.hstack([np.vstack([Za, Zb]), np.ones((len(Za) + len(Zb), 1))])
    target = np.r_[np.ones(len(Za)), -np.ones(len(Zb))]
    try:  # the dual form: an n x n system, n <= n_features + 1
        sol = Z1.T @ np.linalg.solve(Z1 @ Z1.T, target)
    except np.linalg.LinAlgError:  # duplicates make the system singular
        sol = np.linalg.lstsq(Z1, target, rcond=None)[0]
    return sol[:-1], float(sol[-1])


def _svm_direction(Za: np.ndarray, Zb: np.ndarray) -> tuple[np.ndarray, float]:
    """A linear SVM (liblinear, C = 100) between two standardized sets: (w, b)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    X = np.vstack([Za, Zb])
    y = np.r_[np.ones(len(Za)), -np.ones(len(Zb))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # a candidate only: capped iterations, so that a hard pair fails fast to the LP
        svm = LinearSVC(C=100.0, tol=1e-4, max_iter=300, random_state=0).fit(X, y)
    return svm.coef_[0].astype(np.float64), float(svm.intercept_[0])


def hull_overlap(A: np.ndarray, B: np.ndarray, *, tol: float = 1e-9, scale: float | None = None,
                 start: int = 128, grow: int = 256
                 ) -> tuple[bool, Hyperplane | None, tuple[np.ndarray, np.ndarray] | None]:
    """Do the convex hulls of A and B intersect? Exact, up to the LP's tolerance.

    Parameters
    ----------
    A, B : ndarray of shape (n_a, n_features), (n_b, n_features)
    tol : the hulls count as disjoint iff a hyperplane clears every point by more than
        ``tol * scale * max|w_i|`` (see :meth:`Hyperplane.separates`)
    scale : the data's scale (default: the largest absolute coordinate of A and B about
        their mean); pass one value for all the tests of one analysis, so that every
        decision uses the same tolerance
    start, grow : working-set size per side at the start, and points added per round

    Returns
    -------
    (overlap, hyperplane, witness): a separating hyperplane when the hulls are disjoint
    (positive on A); when they overlap, the indices of the subsets of A and B whose hulls
    were proved to intersect.

    >>> A = np.array([[0., 0], [1, 0], [0, 1]])
    >>> hull_overlap(A, A + 2)[0], hull_overlap(A, A + 0.2)[0]
    (False, True)
    """
    return _hull_overlap(A, B, tol=tol, scale=scale, start=start, grow=grow)[:3]


def _hull_overlap(A: np.ndarray, B: np.ndarray, *, tol: float = 1e-9, scale: float | None = None,
                  start: int = 128, grow: int = 256,
                  seed: tuple[np.ndarray, np.ndarray] | None = None,
                  warm: _MarginLP | None = None):
    """:func:`hull_overlap`, with a warm start and what a later warm start needs.

    seed : indices into A and B, both sides non-empty: the LP's first working set, in
        place of the soft-margin SVM's candidate and its worst-scored points (the points
        that supported the LP of an earlier, similar pair: see :meth:`_Clusters._exact`)

    warm : the margin LP of an earlier test, its rows' ``ref`` remapped to indices into
        this A and B (rows of other points deleted; both sides non-empty): the LP goes on
        from its rows and basis, in its frame. Takes precedence over ``seed``.

    Returns (overlap, hyperplane, witness, support, lp): the first three as
    :func:`hull_overlap`; ``support`` (indices into A and B, or None where no LP ran) holds
    the points of the last LP that carry its answer: the constraints tight at the optimum
    when the hulls are disjoint, the witness when they overlap; ``lp`` the margin LP (None
    where none ran), for a later ``warm`` start. Seeds and warm starts change the working
    sets, never the criterion: a certificate is checked on every point, and an overlap is
    proved on a subset.
    """
    if warm is not None:
        mu, local = warm.mu, warm.local
    else:
        both = np.vstack([A, B])
        mu = both.mean(axis=0)
        local = float(np.abs(both - mu).max()) or 1.0
    eps = tol * (local if scale is None else scale)
    h = _mean_direction(A, B, eps)
    if h is not None:
        return False, h, None, None, None
    # The LP runs on the pair rescaled to unit size (separability is affine-invariant, and
    # HiGHS's tolerances are absolute); there the shared criterion is a margin > tol_z for
    # |w_i| <= 1, since scores are unchanged and coefficients scale with ``local``. A warm
    # start keeps its model's frame, that of a similar earlier pair: any frame gives the
    # same criterion.
    Za, Zb = (A - mu) / local, (B - mu) / local
    tol_z = eps / local

    def certificate(w: np.ndarray, b: float) -> Hyperplane | None:
        w0 = w / local
        h = Hyperplane(w0, float(b - w0 @ mu))
        return h if h.separates(A, B, eps) else None

    # Up to n_features + 1 points in general position can take any labels: the minimum-norm
    # solution of [Z 1] (w, b) = (+1, -1) then separates them exactly. It counts only if it
    # clears the criterion on every point (duplicates or collinear points defeat it).
    if len(A) + len(B) <= A.shape[1] + 1:
        u, c = _interpolating_plane(Za, Zb)
        h = certificate(u, c)
        if h is not None:
            return False, h, None, None, None
    if warm is not None:
        wa, wb = warm.ref[warm.side > 0], warm.ref[warm.side < 0]
    elif seed is not None and len(seed[0]) and len(seed[1]):
        # A warm start: the seed is the LP's first working set. The SVM below is skipped: it
        # failed on the similar pair the seed comes from, and it costs about one LP round.
        wa, wb = np.unique(seed[0]), np.unique(seed[1])
    else:
        # A soft-margin linear SVM is the next candidate, on the same terms. Where it
        # fails, its worst-scored points seed the LP's working set.
        u, c = _svm_direction(Za, Zb)
        h = certificate(u, c)
        if h is not None:
            return False, h, None, None, None
        sa, sb = Za @ u + c, Zb @ u + c
        wa = np.argsort(sa)[: min(start, len(A))]
        wb = np.argsort(-sb)[: min(start, len(B))]
    if warm is not None:
        lp = warm
    else:
        lp = _MarginLP(A.shape[1], mu, local)
        lp.add(Za[wa], 1, wa)
        lp.add(Zb[wb], -1, wb)
    while True:
        t, w, b = lp.solve()
        if t <= tol_z:
            witness = (np.sort(wa), np.sort(wb))
            return True, None, witness, witness, lp
        h = certificate(w, b)
        if h is not None:
            # the constraints tight at the optimum (HiGHS's tolerance is 1e-7, see _GRAY)
            tight = (wa[Za[wa] @ w + b <= t + _TIGHT], wb[Zb[wb] @ w + b >= -t - _TIGHT])
            return False, h, None, tight, lp
        # add the worst violators of the margin found on the working set
        sa, sb = Za @ w + b, Zb @ w + b
        bad_a = np.setdiff1d(np.flatnonzero(sa < t / 2), wa)
        bad_b = np.setdiff1d(np.flatnonzero(sb > -t / 2), wb)
        bad_a = bad_a[np.argsort(sa[bad_a])[:grow]]
        bad_b = bad_b[np.argsort(-sb[bad_b])[:grow]]
        if len(bad_a) + len(bad_b) == 0:
            # every point clears t/2 but not the tolerance: only the full sets can decide
            bad_a = np.setdiff1d(np.arange(len(A)), wa)
            bad_b = np.setdiff1d(np.arange(len(B)), wb)
            if len(bad_a) + len(bad_b) == 0:
                witness = (np.sort(wa), np.sort(wb))
                return True, None, witness, witness, lp
        lp.add(Za[bad_a], 1, bad_a)
        lp.add(Zb[bad_b], -1, bad_b)
        wa = np.r_[wa, bad_a]
        wb = np.r_[wb, bad_b]


def _nearest_points(A: np.ndarray, B: np.ndarray, eps: float, gray: float,
                    max_iter: int | None = None
                    ) -> tuple[bool, Hyperplane | None, tuple[np.ndarray, np.ndarray] | None] | None:
    """Decide overlap by the nearest points of the two hulls, where that is decisive.

    Wolfe's minimum-norm-point algorithm (Wolfe 1976, "Finding the nearest point in a
    polytope", Math. Programming 11) on the difference set {a - b}: its points are queried
    only through ``argmin_a a.x`` and ``argmax_b b.x``, as in Gilbert's and the
    Gilbert-Johnson-Keerthi algorithms, and the corral holds at most n_features + 1 pairs.
    Every iterate x = p - q (p, q in the hulls of A and B) gives two certificates:

    - disjoint: the hyperplane ``w = x`` half-way between ``min A w`` and ``max B w``, when
      its margin exceeds ``gray * max|w_i|``; it is then checked with
      :meth:`Hyperplane.separates` at ``eps``, the shared criterion;
    - overlap: ``|p - q|_1 <= 2 eps``. By LP duality the exact test's margin (the largest
      margin over ``|w_i| <= 1``) is half the L1 distance between the hulls, so the exact
      test cannot find a hyperplane clearing ``eps`` either.

    ``gray`` (much larger than ``eps``) keeps this function out of the band where the LP's
    own tolerance could tip the exact test's answer: there, and if the search stalls, it
    returns None and the caller runs the exact test. ``max_iter`` (major cycles) defaults
    to 100 + 2 * :func:`_corral_size`.

    >>> A = np.array([[0., 0], [1, 0], [0, 1]])
    >>> _nearest_points(A, A + 2, 1e-9, 1e-5)[0], _nearest_points(A, A + 0.2, 1e-9, 1e-5)[0]
    (False, True)
    """
    cap = _corral_size(A, B) + 1  # an affinely independent corral, and the pair being added
    ia, ib = np.zeros(cap, dtype=np.int64), np.zeros(cap, dtype=np.int64)
    P = np.zeros((cap, A.shape[1]))  # the corral's points a - b
    G = np.zeros((cap, cap))  # their Gram matrix
    v = A.mean(axis=0) - B.mean(axis=0)
    ia[0], ib[0] = np.argmin(A @ v), np.argmax(B @ v)
    x = P[0] = A[ia[0]] - B[ib[0]]
    G[0, 0] = x @ x
    lam = np.ones(1)
    k = 1
    for _ in range(100 + 2 * cap if max_iter is None else max_iter):
        sa, sb = A @ x, B @ x
        i, j = int(np.argmin(sa)), int(np.argmax(sb))
        gap = float(sa[i] - sb[j])  # min over the difference set of (a - b) . x
        top = float(np.abs(x).max())
        if gap > 2 * gray * top:
            h = Hyperplane(x.copy(), -float(sa[i] + sb[j]) / 2)
            return (False, h, None) if h.separates(A, B, eps) else None
        if np.abs(x).sum() <= 2 * eps:  # recomputed from the weights before it counts
            if np.abs(lam @ (A[ia[:k]] - B[ib[:k]])).sum() <= 2 * eps:
                return True, None, (np.unique(ia[:k]), np.unique(ib[:k]))
        xx = float(x @ x)
        if xx - gap <= 1e-12 * xx or k == cap or ((ia[:k] == i) & (ib[:k] == j)).any():
            return None  # x is the nearest point, up to rounding, and decides nothing
        # major cycle: add the pair that most decreases x . p
        P[k] = A[i] - B[j]
        G[k, :k + 1] = G[:k + 1, k] = P[:k + 1] @ P[k]
        ia[k], ib[k] = i, j
        lam = np.append(lam, 0.0)
        k += 1
        while True:  # minor cycles: the affine hull's nearest point, kept inside the hull
            M = np.ones((k + 1, k + 1))
            M[:k, :k] = G[:k, :k]
            M[k, k] = 0.0
            rhs = np.zeros(k + 1)
            rhs[k] = 1.0
            try:
                alpha = np.linalg.solve(M, rhs)[:k]
            except np.linalg.LinAlgError:
                return None  # an affinely dependent corral: leave it to the exact test
            if (alpha > 1e-12).all():
                lam = alpha
                break
            if lam[-1] == 0 and alpha[-1] <= 1e-12:
                return None  # the new pair gets no weight (it always does, but for rounding)
            out = alpha <= 1e-12
            theta = float(np.min(lam[out] / (lam[out] - alpha[out])))
            lam = (1 - theta) * lam + theta * alpha
            keep = lam > 1e-12
            if keep.all():  # rounding: drop the point that hit the boundary
                keep[np.flatnonzero(out)[np.argmin(lam[out])]] = False
            kept = np.flatnonzero(keep)
            n = len(kept)
            P[:n], ia[:n], ib[:n] = P[kept], ia[kept], ib[kept]
            G[:n, :n] = G[np.ix_(kept, kept)]
            lam = lam[kept] / lam[kept].sum()
            k = n
        x = lam @ P[:k]
    return None


def _corral_size(A: np.ndarray, B: np.ndarray) -> int:
    """The most affinely independent points of {a - b}: its affine dimension is at most
    min(n_features, n_a + n_b - 2).

    >>> _corral_size(np.zeros((3, 384)), np.zeros((4, 384)))
    6
    """
    return min(A.shape[1], len(A) + len(B) - 2) + 1


# Fisher's direction and the search's minor cycles solve dense systems of up to the
# corral's size. Beyond this size they run on one BLAS thread (ftgeo._util.one_blas_thread):
# on this 2-core machine, with another process busy, the fit on 10,000 PUD points at 384-d
# (17 clusters of about 600 points) took 6 s with one thread and 60 to 80 s with two; below
# it, switching the thread count costs more than it saves.
_MANY_THREADS_CORRAL = 64

# HiGHS's default primal feasibility tolerance is 1e-7 on the unit-scaled LP (scipy's
# ``linprog(method="highs")``); a margin 100 times larger is decided the same way by the LP.
_GRAY = 1e-5

# Margin LP models kept for warm starts (the newest): each holds its working set as dense
# rows, about 5 MB for 1,500 rows at 384-d (with HiGHS's own copies, a few times that).
_MAX_LPS = 12

# Point sets whose mean and scatter _Clusters keeps for Fisher's direction (the newest):
# at 768 features a scatter matrix is 4.7 MB
_MAX_MOMENTS = 32

# A constraint of the unit-scaled LP within this of the optimal margin counts as tight
# (HiGHS's primal feasibility tolerance is 1e-7, as above).
_TIGHT = 1e-6


def _overlap(A: np.ndarray, B: np.ndarray, *, tol: float, scale: float
             ) -> tuple[bool, Hyperplane | None, tuple[np.ndarray, np.ndarray] | None]:
    """:func:`hull_overlap`'s answer, sooner: the mean direction (as there), Fisher's
    direction, the nearest-point search (:func:`_nearest_points`), and :func:`hull_overlap`
    where these are undecided.

    Fisher's direction and the search answer only where the exact test's answer is certain:
    "disjoint" with a margin above ``_GRAY`` times the pair's size (where the LP finds a
    certificate too), "overlap" with hulls closer than the tolerance (where no hyperplane
    can clear it).

    >>> A = np.array([[0., 0], [1, 0], [0, 1]])
    >>> _overlap(A, A + 2, tol=1e-9, scale=1.0)[0], _overlap(A, A + 0.2, tol=1e-9, scale=1.0)[0]
    (False, True)
    """
    return _overlap_seeded(A, B, tol=tol, scale=scale)[:3]


def _overlap_seeded(A: np.ndarray, B: np.ndarray, *, tol: float, scale: float,
                    seed: tuple[np.ndarray, np.ndarray] | None = None,
                    warm: _MarginLP | None = None, moments=None):
    """:func:`_overlap`, and the LP's support and model (see :func:`_hull_overlap`).

    With a ``seed`` (the support of an earlier LP on much the same pair) or a ``warm``
    model (that LP itself), the nearest-point search and the SVM are skipped and the LP
    starts from there: such a
    pair sat in the band where both were undecided last time, and there the search costs
    about as much as the LP (hundreds of major cycles on thousands of points: 25 s on the
    full POS set's two hardest clusters, 2,356 and 1,017 points). Either way the answer is
    the exact test's.
    """
    eps = tol * scale
    h = _mean_direction(A, B, eps)
    if h is not None:
        return False, h, None, None, None
    both = np.vstack([A, B])
    local = float(np.abs(both - both.mean(axis=0)).max()) or 1.0
    if warm is not None and not 0.5 <= warm.local / local <= 2.0:
        # HiGHS's tolerances are absolute: in a frame far from the pair's own unit scale,
        # the band where they could tip the answer widens, so the pair starts afresh
        warm = None
    with one_blas_thread() if _corral_size(A, B) > _MANY_THREADS_CORRAL else nullcontext():
        h = _fisher_direction(A, B, eps, _GRAY * local, moments)
        if h is not None:
            return False, h, None, None, None
        found = (None if seed is not None or warm is not None
                 else _nearest_points(A, B, eps, _GRAY * local))
    if found is not None:
        return (*found, None, None)
    return _hull_overlap(A, B, tol=tol, scale=scale, seed=seed, warm=warm)


def _moments(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the rows of P and their scatter matrix about it (sum of outer products)."""
    mean = P.mean(axis=0)
    centred = P - mean
    return mean, centred.T @ centred


def _fisher_direction(A: np.ndarray, B: np.ndarray, eps: float, gray: float,
                      moments=None) -> Hyperplane | None:
    """Fisher's discriminant direction (pooled covariance, ridge 1e-3 of its mean
    variance), if it separates A from B with a margin above ``gray * max|w_i|``.

    moments : a function returning :func:`_moments` of A and of B, when they are kept (the
        scatter of a large cluster in many dimensions is most of this function's time, and
        a cluster meets many others); a heuristic either way: the plane is checked exactly
    """
    d = A.shape[1]
    (mean_a, scatter_a), (mean_b, scatter_b) = (moments() if moments is not None
                                                else (_moments(A), _moments(B)))
    S = (scatter_a + scatter_b) / (len(A) + len(B))
    S[np.diag_indices(d)] += 1e-3 * np.trace(S) / d + 1e-300
    try:  # S is symmetric positive definite (the ridge): Cholesky, half the work of LU
        w = scipy.linalg.solve(S, mean_a - mean_b, assume_a="pos", check_finite=False)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        return None
    lo, hi = float((A @ w).min()), float((B @ w).max())
    if not lo - hi > 2 * gray * np.abs(w).max():
        return None
    h = Hyperplane(w, -(lo + hi) / 2)
    return h if h.separates(A, B, eps) else None


# --------------------------------------------------------------------------------------
# Cluster bookkeeping
# --------------------------------------------------------------------------------------

class _Planes:
    """The separating hyperplanes of one label pair, positive on its first label, newest
    last (at most ``limit``); stacked, so that one matrix product tries them all."""

    def __init__(self, eps: float, limit: int):
        self.eps, self.limit = eps, limit
        self.items: list[Hyperplane] = []
        self.flipped: list[Hyperplane] = []  # the same, positive on the second label
        self.version = 0
        self._stacked: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def add(self, h: Hyperplane) -> None:
        _remember(self.items, h, self.limit)
        _remember(self.flipped, h.flipped(), self.limit)
        self.version += 1
        self._stacked = None

    def stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(W, b, m): normals (n_planes, n_features), offsets, and the margins
        ``eps * max|w_i|`` that :meth:`Hyperplane.separates` asks of each."""
        if self._stacked is None:
            W = np.stack([h.w for h in self.items])
            self._stacked = W, np.array([h.b for h in self.items]), self.eps * np.abs(W).max(axis=1)
        return self._stacked


class _Grow:
    """An int64 array that grows at its end (capacity doubles): ``view()`` is what it holds."""

    def __init__(self):
        self._data = np.empty(64, dtype=np.int64)
        self._n = 0

    def extend(self, values) -> None:
        values = np.asarray(values, dtype=np.int64).ravel()
        end = self._n + len(values)
        if end > len(self._data):
            self._data = np.concatenate([self._data[:self._n],
                                         np.empty(max(end, 2 * len(self._data)), dtype=np.int64)])
        self._data[self._n:end] = values
        self._n = end

    def view(self) -> np.ndarray:
        return self._data[:self._n]


class _Witnesses:
    """Overlap witnesses seen from one label: pairs (points of the label, points of another
    label) whose hulls were proved to intersect, concatenated so that one pass checks all:
    ``mine`` and ``other`` hold the points, ``mine_at`` and ``other_at`` where each witness
    starts (for ``np.*.reduceat``), ``other_sizes`` its other side's size."""

    def __init__(self):
        self.mine, self.mine_at = _Grow(), _Grow()
        self.other, self.other_at, self.other_sizes = _Grow(), _Grow(), _Grow()

    def add(self, mine: np.ndarray, other: np.ndarray) -> None:
        self.mine_at.extend([len(self.mine.view())])
        self.mine.extend(mine)
        self.other_at.extend([len(self.other.view())])
        self.other.extend(other)
        self.other_sizes.extend([len(other)])


class _Clusters:
    """Clusters as point-index arrays, with the certificates learned about them."""

    def __init__(self, X: np.ndarray, y: np.ndarray, tol: float, max_planes: int):
        self.X, self.y, self.tol, self.max_planes = X, y, tol, max_planes
        # one scale for every test, so that every decision uses the same tolerance
        self.scale = float(np.abs(X - X.mean(axis=0)).max()) or 1.0
        self.eps = tol * self.scale
        self.points: dict[int, np.ndarray] = {}
        self.label: dict[int, int] = {}
        self.center: dict[int, np.ndarray] = {}
        self.radius: dict[int, float] = {}
        # the same by cluster id, as arrays for the bounding-sphere filter; they grow with the
        # ids (add), so a test of a few label clusters does not allocate a row per point
        capacity = min(len(X), 256)
        self._centers = np.zeros((capacity, X.shape[1]))
        self._radii = np.zeros(capacity)
        self._labels = np.full(capacity, -1, dtype=np.int64)
        self._active = np.zeros(capacity, dtype=bool)
        self.members: dict[int, dict[int, None]] = defaultdict(dict)  # per label, by id
        self.owner = np.full(len(X), -1, dtype=np.int64)
        self.next_id = 0
        # per ordered label pair (a, b), a < b: hyperplanes positive on label a
        self.planes: dict[tuple[int, int], _Planes] = {}
        # per label: overlap witnesses with every other label (each is filed under both)
        self.witnesses: dict[int, _Witnesses] = defaultdict(_Witnesses)
        # per cluster pair: the hyperplane that separated them, positive on the first
        self.pair_planes: dict[int, dict[int, Hyperplane]] = defaultdict(dict)
        # per ordered label pair (a, b), a < b: the support of its last LP, as point indices
        # of label a and of label b (warm starts: see _exact)
        self.supports: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        # margin LP models for warm starts (see _exact), oldest first: (label pair, model,
        # the point index of each of its rows)
        self.lps: list[tuple[tuple[int, int], _MarginLP, np.ndarray]] = []
        self.lp_tests = 0
        # (mean, scatter) of point sets by their sorted indices, the newest _MAX_MOMENTS:
        # a cluster meets every other label's in the separability tests
        self.moments: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, idx: np.ndarray) -> int:
        cid = self.next_id
        self.next_id += 1
        if cid == len(self._radii):  # more ids than points (merged clusters): grow the arrays
            self._centers = np.concatenate([self._centers, np.zeros_like(self._centers)])
            self._radii, self._labels, self._active = (
                np.r_[a, np.zeros_like(a)] for a in (self._radii, self._labels, self._active))
        idx = np.sort(np.asarray(idx, dtype=np.int64))
        self.points[cid] = idx
        self.label[cid] = int(self.y[idx[0]])
        P = self.X[idx]
        c = P.mean(axis=0)
        self.center[cid] = c
        self.radius[cid] = float(np.sqrt(((P - c) ** 2).sum(axis=1).max()))
        self._centers[cid], self._radii[cid] = c, self.radius[cid]
        self._labels[cid], self._active[cid] = self.label[cid], True
        self.members[self.label[cid]][cid] = None
        self.owner[idx] = cid
        return cid

    def reset(self) -> None:
        """Forget every cluster, and start ids at 0 again; what was learned about points
        (hyperplanes per label pair, overlap witnesses, LP supports) stays."""
        for d in (self.points, self.label, self.center, self.radius, self.members,
                  self.pair_planes):
            d.clear()
        self._active[:] = False
        self.next_id = 0

    def remove(self, cid: int) -> None:
        self.members[self.label[cid]].pop(cid)
        for d in (self.points, self.label, self.center, self.radius):
            d.pop(cid)
        self._active[cid] = False
        for other in self.pair_planes.pop(cid, {}):
            self.pair_planes[other].pop(cid, None)

    def candidates(self, label: int, center: np.ndarray, radius: float) -> np.ndarray:
        """Active clusters of another label whose bounding spheres meet this one's (by id)."""
        n = self.next_id
        ids = np.flatnonzero(self._active[:n] & (self._labels[:n] != label))
        dist = np.sqrt(((self._centers[ids] - center) ** 2).sum(axis=1))
        # Spheres apart by more than 2 eps are separated by the shared criterion (the
        # hyperplane half-way between them clears both by more than eps). ">=" keeps
        # touching and identical points: the reference's strict ">" misses the latter.
        return ids[radius + self._radii[ids] + 2 * self.eps >= dist]

    def candidate_pairs(self, ids: np.ndarray, block: int = 1024) -> dict[int, np.ndarray]:
        """:meth:`candidates` of every cluster ``a`` of ``ids`` (active, sorted), restricted
        to the ids above ``a``, found for all clusters at once: the same arrays, in the same
        order. With thousands of clusters (phase 1's early states), one call per cluster
        costs a pass over every centre each; here the squared distances come from blocked
        matrix products instead, a pair is kept if it might pass allowing for their
        rounding error, and the few kept are decided by candidates()' own test."""
        C, R, L = self._centers[ids], self._radii[ids], self._labels[ids]
        sq = (C * C).sum(axis=1)
        # |fl(|a|^2 + |b|^2 - 2 a.b) - |a - b|^2| <= (d + 4) u (|a|^2 + |b|^2), twice for safety
        err = 2 * (C.shape[1] + 4) * np.finfo(float).eps
        out = {}
        for s in range(0, len(ids), block):
            e = min(s + block, len(ids))
            D2 = sq[s:e, None] + sq[None, s:] - 2 * (C[s:e] @ C[s:].T)
            reach = R[s:e, None] + R[None, s:] + 2 * self.eps
            slack = np.sqrt(err * (sq[s:e, None] + sq[None, s:]))
            maybe = (np.sqrt(np.maximum(D2, 0)) <= reach + slack) & (L[s:e, None] != L[None, s:])
            maybe &= np.arange(s, e)[:, None] < np.arange(s, len(ids))[None, :]
            for row, cols in zip(*_rows_of(maybe), strict=True):
                i = s + row
                js = s + cols
                dist = np.sqrt(((C[js] - C[i]) ** 2).sum(axis=1))
                out[int(ids[i])] = ids[js[R[i] + R[js] + 2 * self.eps >= dist]]
        return out

    def separations(self, idx: np.ndarray, label: int, others: np.ndarray, parts: Sequence[int] = ()
              ) -> dict[int, Hyperplane] | None:
        """Hyperplanes separating points ``idx`` (all of ``label``) from each cluster of
        ``others`` (positive on ``idx``), or None if the hulls of one pair overlap.

        Tried in order, each for all the clusters still undecided at once: the overlap
        witnesses; the hyperplanes of ``parts`` (the clusters ``idx`` was merged from, which
        they already separate from the other cluster: only the other parts' points are
        checked); those of the label pair, newest first; then the exact test, one cluster
        at a time, likeliest overlap first (the label pair's new hyperplanes are tried again
        before each).
        """
        if len(others) == 0:
            return {}
        if self._witnessed(idx, label, others):
            return None
        planes = self._from_parts(others, parts)
        A = self.X[idx]
        on_side: dict = {}  # per label pair: (its version, its hyperplanes with all of A on A's side)
        tried: dict = {}  # per cluster: the version of its label pair's hyperplanes tried on it
        rest = [o for o in map(int, others) if o not in planes]
        planes.update(self._from_label_pairs(A, label, rest, on_side, tried))
        pending = [o for o in rest if o not in planes]
        for o in self._likeliest_overlap_first(A, pending):
            h = None
            if self._gained(label, o, tried):
                h = self._from_label_pairs(A, label, [o], on_side, tried).get(o)
            if h is None:
                h = self._exact(idx, A, label, o)
            if h is None:
                return None
            planes[o] = h
        return planes

    def _witnessed(self, idx: np.ndarray, label: int, others: np.ndarray) -> bool:
        """Does a witness lie inside ``idx`` and inside one cluster of ``others``?"""
        if label not in self.witnesses:
            return False
        ws = self.witnesses[label]
        inside = np.zeros(len(self.X), dtype=bool)
        inside[idx] = True
        live = np.logical_and.reduceat(inside[ws.mine.view()], ws.mine_at.view())
        if not live.any():
            return False
        owner = self.owner[ws.other.view()]
        first = owner[ws.other_at.view()]
        live &= np.logical_and.reduceat(owner == np.repeat(first, ws.other_sizes.view()),
                                        ws.other_at.view())
        listed = np.zeros(self.next_id, dtype=bool)
        listed[others] = True
        return bool((live & listed[first]).any())

    def _from_parts(self, others: np.ndarray, parts: Sequence[int]) -> dict[int, Hyperplane]:
        """The hyperplanes filed between a part and another cluster that also clear the other
        parts' points: {other cluster: hyperplane}."""
        found: dict[int, Hyperplane] = {}
        for p in parts:
            filed = self.pair_planes.get(p, {})
            hs = [(o, filed[o]) for o in map(int, others) if o in filed and o not in found]
            if not hs:
                continue
            W = np.stack([h.w for _, h in hs])
            b = np.array([h.b for _, h in hs])
            rest = np.concatenate([self.points[q] for q in parts if q != p])
            ok = (self.X[rest] @ W.T + b > self.eps * np.abs(W).max(axis=1)).all(axis=0)
            found.update((o, h) for (o, h), good in zip(hs, ok, strict=True) if good)
        return found

    def _gained(self, label: int, other: int, tried: dict) -> bool:
        """Has the label pair of ``label`` and cluster ``other`` hyperplanes that
        :meth:`_from_label_pairs` has not tried on ``other``?"""
        store = self.planes.get(tuple(sorted((label, self.label[other]))))
        return store is not None and tried.get(other) != store.version

    def _from_label_pairs(self, A: np.ndarray, label: int, others: Sequence[int], on_side: dict,
                          tried: dict) -> dict[int, Hyperplane]:
        """The label pairs' hyperplanes that separate A from clusters ``others``, the newest
        for each: {other cluster: hyperplane}. Notes in ``on_side`` and ``tried`` what it
        computed and tried (see :meth:`separations`)."""
        groups: dict[int, list[int]] = defaultdict(list)
        for o in others:
            groups[self.label[o]].append(o)
        found: dict[int, Hyperplane] = {}
        for other_label, group in groups.items():
            mine_first = label < other_label
            key = (label, other_label) if mine_first else (other_label, label)
            store = self.planes.get(key)
            if store is None:
                continue
            W, b, m = store.stacked()
            version, good = on_side.get(key, (None, None))
            if version != store.version:
                sA = A @ W.T + b
                good = np.flatnonzero((sA > m).all(axis=0) if mine_first else (sA < -m).all(axis=0))
                on_side[key] = store.version, good
            tried.update((o, store.version) for o in group)
            if len(good) == 0:
                continue
            members = [self.points[o] for o in group]
            sizes = [len(p) for p in members]
            starts = np.cumsum([0] + sizes[:-1])
            sB = self.X[np.concatenate(members)] @ W[good].T + b[good]
            side = (sB < -m[good]) if mine_first else (sB > m[good])
            ok = np.logical_and.reduceat(side, starts, axis=0)  # (cluster, hyperplane)
            newest = good[ok.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)]
            items = store.items if mine_first else store.flipped
            found.update((group[i], items[newest[i]]) for i in np.flatnonzero(ok.any(axis=1)))
        return found

    def _likeliest_overlap_first(self, A: np.ndarray, others: list[int]) -> list[int]:
        """``others`` by the distance between their center and A's over the sum of the two
        bounding radii, smallest first: this orders the exact tests, not their answers."""
        if len(others) < 2:
            return others
        c = A.mean(axis=0)
        r = np.sqrt(((A - c) ** 2).sum(axis=1).max())
        ids = np.array(others)
        dist = np.sqrt(((self._centers[ids] - c) ** 2).sum(axis=1))
        reach = r + self._radii[ids]  # 0 for two single points (then at the same place)
        depth = np.divide(dist, reach, out=np.zeros_like(dist), where=reach > 0)
        return list(ids[np.argsort(depth, kind="stable")])

    def _exact(self, idx: np.ndarray, A: np.ndarray, label: int, other: int) -> Hyperplane | None:
        """The exact test; its certificate is remembered either way.

        The test sees the pair in the label pair's order (its first label's points as A),
        so that what it leaves serves the next test of the label pair from either side.
        The LP models are kept (the newest ``_MAX_LPS``): where most of the rows on each side
        of one of the label pair's models are points of the two clusters (the same two
        large clusters again, one of them grown by a merge, as in phase 2 and late in
        phase 1), the rows of other points are deleted and the test goes on from the rows
        and basis left (:class:`_MarginLP`). Else the pair's last LP support, where most of it lies in the
        two clusters, seeds a new LP (:func:`_overlap_seeded`): the margin LP of two such
        clusters needs a few hundred tight points per side, which the LP otherwise reaches
        in many rounds, each solved from the start.
        """
        self.lp_tests += 1
        other_idx = self.points[other]
        other_label = self.label[other]
        mine_first = label < other_label
        key = (label, other_label) if mine_first else (other_label, label)
        B = self.X[other_idx]
        first, second = (idx, other_idx) if mine_first else (other_idx, idx)
        P, Q = (A, B) if mine_first else (B, A)
        warm = self._warm(key, first, second)
        seed = None if warm is not None else self._seed(key, True, first, second)
        overlap, plane, witness, support, lp = _overlap_seeded(
            P, Q, tol=self.tol, scale=self.scale, seed=seed, warm=warm,
            moments=lambda: (self._moments(first, P), self._moments(second, Q)))
        model = lp if lp is not None else warm
        if model is not None:
            pos = model.side > 0
            ids = np.empty(len(pos), dtype=np.int64)
            ids[pos], ids[~pos] = first[model.ref[pos]], second[model.ref[~pos]]
            self.lps.append((key, model, ids))
            del self.lps[:-_MAX_LPS]
        if support is not None:
            self.supports[key] = (first[support[0]], second[support[1]])
        if overlap:
            w_first, w_second = first[witness[0]], second[witness[1]]
            self.witnesses[key[0]].add(w_first, w_second)
            self.witnesses[key[1]].add(w_second, w_first)
            return None
        if key not in self.planes:
            self.planes[key] = _Planes(self.eps, self.max_planes)
        self.planes[key].add(plane)  # positive on the first label
        return plane if mine_first else plane.flipped()

    def _warm(self, key: tuple[int, int], first: np.ndarray, second: np.ndarray
              ) -> _MarginLP | None:
        """A kept LP model of the label pair, cut to the rows of points in ``first`` (points
        of the pair's first label, sorted) and ``second``: the one with the largest share of
        its rows there, on its worse side, if that is at least half; else None. The model
        returned leaves the store (:meth:`_exact` files it again after the test)."""
        best, best_share = None, 0.5
        for k, (pair, lp, ids) in enumerate(self.lps):
            if pair != key:
                continue
            pos = lp.side > 0
            at = np.zeros(len(ids), dtype=np.int64)
            at[pos] = np.searchsorted(first, ids[pos])
            at[~pos] = np.searchsorted(second, ids[~pos])
            inside = np.zeros(len(ids), dtype=bool)
            inside[pos] = first[np.minimum(at[pos], len(first) - 1)] == ids[pos]
            inside[~pos] = second[np.minimum(at[~pos], len(second) - 1)] == ids[~pos]
            if not inside[pos].any() or not inside[~pos].any():
                continue
            share = min(inside[pos].mean(), inside[~pos].mean())
            if share >= best_share:
                best, best_share = (k, lp, at, inside), share
        if best is None:
            return None
        k, lp, at, inside = best
        del self.lps[k]
        lp.keep(inside)
        lp.ref = at[inside]
        return lp

    def _seed(self, key: tuple[int, int], mine_first: bool, idx: np.ndarray, other_idx: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray] | None:
        """The label pair's last LP support inside ``idx`` and ``other_idx`` (sorted), as
        indices into them, if at least half of it on each side lies there; else None."""
        if key not in self.supports:
            return None
        mine_s, other_s = self.supports[key] if mine_first else self.supports[key][::-1]
        at_a, at_b = np.searchsorted(idx, mine_s), np.searchsorted(other_idx, other_s)
        in_a = at_a[idx[np.minimum(at_a, len(idx) - 1)] == mine_s]
        in_b = at_b[other_idx[np.minimum(at_b, len(other_idx) - 1)] == other_s]
        if (2 * len(in_a) < len(mine_s) or 2 * len(in_b) < len(other_s)
                or len(in_a) == 0 or len(in_b) == 0):
            return None
        return in_a, in_b

    def _moments(self, idx: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`_moments` of the points ``idx`` (rows P), kept for the next test of the same
        set; only for sets large enough that the scatter costs more than looking it up."""
        if len(idx) < 64:
            return _moments(P)
        key = idx.tobytes()
        if key in self.moments:
            self.moments[key] = self.moments.pop(key)  # the newest now
        else:
            self.moments[key] = _moments(P)
            while len(self.moments) > _MAX_MOMENTS:
                self.moments.pop(next(iter(self.moments)))
        return self.moments[key]

    def file_plane(self, cid: int, other: int, plane: Hyperplane) -> None:
        self.pair_planes[cid][other] = plane
        self.pair_planes[other][cid] = plane.flipped()

    def merge_if_clear(self, a: int, b: int) -> int | None:
        """Merge clusters a and b unless the merged hull overlaps a cluster of another label.

        Returns the new id, or None.
        """
        label = self.label[a]
        idx = np.union1d(self.points[a], self.points[b])
        P = self.X[idx]
        c = P.mean(axis=0)
        r = float(np.sqrt(((P - c) ** 2).sum(axis=1).max()))
        planes = self.separations(idx, label, self.candidates(label, c, r), parts=(a, b))
        if planes is None:
            return None
        self.remove(a)
        self.remove(b)
        new = self.add(idx)
        for o, plane in planes.items():
            self.file_plane(new, o, plane)
        return new

    def any_overlap(self) -> bool:
        """Does any pair of active clusters of different labels overlap?"""
        ids = np.array(sorted(self.points), dtype=np.int64)
        near = self.candidate_pairs(ids)
        none = np.zeros(0, dtype=np.int64)
        for a in ids.tolist():
            planes = self.separations(self.points[a], self.label[a], near.get(a, none))
            if planes is None:
                return True
            for o, plane in planes.items():
                self.file_plane(a, o, plane)
        return False


def _rows_of(mask: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """The rows of a boolean matrix with a true entry, and each one's true columns."""
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return [], []
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    return rows[starts].tolist(), np.split(cols, starts[1:])


def _remember(store: list, item, limit: int) -> None:
    store.append(item)
    if len(store) > limit:
        del store[0]


# --------------------------------------------------------------------------------------
# Phase 1: merge to the end with no checks
# --------------------------------------------------------------------------------------

def _phase1_merges(X: np.ndarray, y: np.ndarray) -> list[tuple[int, int]]:
    """The merge sequence of phase 1 as pairs of point-set representatives.

    Within a label, "merge the two clusters whose means are closest" is centroid linkage
    (scipy's ``method='centroid'``); across labels, the reference's single heap pops the
    smallest next merge of any label, i.e. a k-way merge of the per-label sequences by
    their merge distances. Returns, for each global step, (first point of cluster 1,
    first point of cluster 2) in original indices.
    """
    sequences = []
    for lab in np.unique(y):
        idx = np.flatnonzero(y == lab)
        if len(idx) < 2:
            continue
        Z = linkage(X[idx], method="centroid")
        # representatives: scipy numbers merged clusters n, n+1, ...; keep a point of each
        rep = list(idx) + [0] * (len(idx) - 1)
        steps = []
        for k, (i, j, dist, _) in enumerate(Z):
            ri, rj = rep[int(i)], rep[int(j)]
            rep[len(idx) + k] = min(ri, rj)
            steps.append((float(dist), int(ri), int(rj)))
        sequences.append(steps)
    heap = [(seq[0][0], s, 0) for s, seq in enumerate(sequences)]
    heapq.heapify(heap)
    merges = []
    while heap:
        _, s, k = heapq.heappop(heap)
        merges.append(sequences[s][k][1:])
        if k + 1 < len(sequences[s]):
            heapq.heappush(heap, (sequences[s][k + 1][0], s, k + 1))
    return merges


def _state(n: int, merges: Sequence[tuple[int, int]], steps: int) -> np.ndarray:
    """Cluster of every point after the first ``steps`` merges (union-find), as root ids."""
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in merges[:steps]:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


# --------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------

class DirectProbe:
    """Clusters of each label whose convex hulls do not overlap (scikit-learn contract).

    Parameters
    ----------
    tol : numerical tolerance of the separation test (see :func:`hull_overlap`)
    max_planes : separating hyperplanes remembered per label pair

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,), the cluster of every point (0..n_clusters_-1,
        numbered by label, then by the cluster's first point)
    cluster_labels_ : ndarray of shape (n_clusters_,), each cluster's label
    n_clusters_ : int
    classes_ : ndarray of shape (n_labels,), the sorted labels
    first_overlap_step_ : the phase-1 step at which an overlap first appears (None if the
        one-cluster-per-label end state has none)
    n_lp_tests_ : exact overlap tests run (after the caches and cheap certificates)
    phase2_start_clusters_, phase2_tries_, phase2_rejected_ : clusters at the restart, merge
        candidates tried and rejected in phase 2 (0 when phase 2 was not needed). The old
        loop ``for _ in range(m)`` with m = phase2_start_clusters_ stopped after m tries.

    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (30, 5)), rng.normal(20, 1, (30, 5))]
    >>> y = np.repeat(["a", "b"], 30)
    >>> DirectProbe().fit(X, y).n_clusters_
    2
    """

    def __init__(self, *, tol: float = 1e-9, max_planes: int = 64):
        self.tol = tol
        self.max_planes = max_planes

    def fit(self, X: np.ndarray, y: np.ndarray, *, labels: LabelTest | None = None) -> DirectProbe:
        """Fit on points X (n_samples, n_features) with labels y.

        labels : :func:`test_labels` of the same X, y and ``tol``, when it was run already
            (spatial's separability test before a fit): a separable one ends the fit
            without testing the labels again
        """
        X = np.asarray(X, dtype=np.float64)
        check_Xy(X, y)
        check(self.tol >= 0, f"tol must be >= 0, got {self.tol}")
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        check(len(self.classes_) >= 2,
              f"DirectProbe needs at least 2 labels, got {len(self.classes_)}")
        check(len(X) > len(self.classes_),
              f"DirectProbe needs more points than labels, got {len(X)} points for "
              f"{len(self.classes_)} labels")
        self.X_ = X
        self.y_ = codes
        self.first_overlap_step_ = None
        self.phase2_start_clusters_ = self.phase2_tries_ = self.phase2_rejected_ = 0
        if labels is not None and labels.separable and labels.matches(X, codes, self.tol, self.max_planes):
            cl = labels._clusters  # the labels were tested on this data: they are the clusters
            self.n_lp_tests_ = cl.lp_tests
            self._finish(cl)
            return self
        cl = _Clusters(X, codes, self.tol, self.max_planes)
        # phase 1 ends with one cluster per label: when those overlap nothing the fit is done,
        # and the merge sequence (centroid linkage within every label) is never needed
        self._load(cl, codes)
        if cl.any_overlap():
            merges = _phase1_merges(X, codes)
            j = self._first_overlap(merges, cl)
            self.first_overlap_step_ = j
            start = _state(len(X), merges, j - 1) if j > 0 else np.arange(len(X))
            cl = self._phase2(start, cl)
        self.n_lp_tests_ = cl.lp_tests
        self._finish(cl)
        return self

    @staticmethod
    def _load(cl: _Clusters, roots: np.ndarray) -> None:
        cl.reset()
        for r in np.unique(roots):
            cl.add(np.flatnonzero(roots == r))

    def _first_overlap(self, merges, cl: _Clusters) -> int:
        """The first phase-1 state with an overlap (the last state overlaps: the caller
        checked it).

        The reference bisects the whole path. Overlap only persists as clusters grow, so
        any search that keeps "state hi overlaps, state lo - 1 does not" finds the same
        state; this one first gallops back from the end (hi - 1, hi - 2, hi - 4, ...) and
        bisects only the bracket it finds. On real representations the first overlap comes
        late (12,500 POS words at the last layer: 8 merges before the end), where states
        have few clusters; and a hyperplane that separates two late, large clusters
        separates every pair of their subsets, so the earlier states it then checks are
        answered from the cache. Bisection from the middle checks states of thousands of
        small clusters first, whose hyperplanes certify nothing later.
        """
        n = len(self.X_)
        self._load(cl, np.arange(n))
        if cl.any_overlap():  # identical points with different labels
            return 0
        lo, hi = 1, len(merges)  # state hi overlaps, state lo - 1 does not
        step = 1
        while lo < hi:
            mid = max(lo, hi - step)
            self._load(cl, _state(n, merges, mid))
            if cl.any_overlap():
                hi, step = mid, 2 * step
            else:
                lo = mid + 1
                break
        while lo < hi:
            mid = (lo + hi) // 2
            self._load(cl, _state(n, merges, mid))
            if cl.any_overlap():
                hi = mid
            else:
                lo = mid + 1
        return hi

    def _phase2(self, roots: np.ndarray, cl: _Clusters) -> _Clusters:
        """Closest same-label pairs first; a merge is kept only if it overlaps nothing."""
        self._load(cl, roots)
        heap: list[tuple[float, int, int]] = []
        by_label: dict[int, list[int]] = defaultdict(list)
        for cid in sorted(cl.points):
            by_label[cl.label[cid]].append(cid)
        for ids in by_label.values():
            if len(ids) < 2:
                continue
            C = np.stack([cl.center[c] for c in ids])
            D = np.sqrt(((C[:, None] - C[None]) ** 2).sum(-1))
            iu, ju = np.triu_indices(len(ids), 1)
            heap += [(float(D[i, j]), ids[i], ids[j]) for i, j in zip(iu, ju, strict=True)]
        heapq.heapify(heap)
        self.phase2_start_clusters_ = len(cl.points)
        self.phase2_tries_ = self.phase2_rejected_ = 0
        bar = progress_bar(desc="DirectProbe phase 2", unit="merge")
        while heap:
            _, a, b = heapq.heappop(heap)
            if a not in cl.points or b not in cl.points:
                continue  # one side was merged away
            self.phase2_tries_ += 1
            new = cl.merge_if_clear(a, b)
            if new is None:
                self.phase2_rejected_ += 1
                continue  # rejected for good (the pair (a, b) never comes back)
            label = cl.label[new]
            bar.update()
            for o in cl.members[label]:
                if o != new:
                    heapq.heappush(heap, (float(np.linalg.norm(cl.center[o] - cl.center[new])),
                                          o, new))
        bar.close()
        return cl

    def _finish(self, cl: _Clusters) -> None:
        ids = sorted(cl.points, key=lambda c: (cl.label[c], cl.points[c][0]))
        self.labels_ = np.empty(len(self.X_), dtype=np.int64)
        for k, cid in enumerate(ids):
            self.labels_[cl.points[cid]] = k
        self.cluster_labels_ = self.classes_[[cl.label[c] for c in ids]]
        self.n_clusters_ = len(ids)
        self._cluster_codes = np.array([cl.label[c] for c in ids])
        # the hyperplane that separated each pair of final clusters, positive on the first:
        # distances() starts from them instead of testing each pair for overlap again
        number = {cid: k for k, cid in enumerate(ids)}
        self._planes = {(number[a], number[b]): h for a, filed in cl.pair_planes.items()
                        if a in number for b, h in filed.items() if b in number}

    # ---------------------------------------------------------------- distances
    def cluster_points(self, k: int) -> np.ndarray:
        """The training points of cluster ``k``: ndarray of shape (n_points, n_features)."""
        return self.X_[self.labels_ == k]

    def distances(self, *, same_label: bool = True) -> np.ndarray:
        """Distance between every pair of final clusters: ndarray (n_clusters_, n_clusters_).

        The distance is twice the margin of a hard-margin linear SVM between the two
        clusters, which is the Euclidean distance between their convex hulls (0 for
        overlapping hulls, possible between clusters of the same label). With
        ``same_label=False``, pairs of clusters of the same label are skipped (NaN).
        """
        K = self.n_clusters_
        D = np.zeros((K, K))
        order = np.argsort(self.labels_, kind="stable")
        points = np.split(self.X_[order], np.cumsum(np.bincount(self.labels_, minlength=K))[:-1])
        for i in range(K):
            for j in range(i + 1, K):
                if same_label or self.cluster_labels_[i] != self.cluster_labels_[j]:
                    A, B = points[i], points[j]
                    D[i, j] = D[j, i] = hull_distance(A, B, tol=self.tol,
                                                      plane=self._separator(i, j, A, B))
                else:
                    D[i, j] = D[j, i] = np.nan
        return D

    def _separator(self, i: int, j: int, A: np.ndarray, B: np.ndarray) -> Hyperplane | None:
        """A hyperplane that the fit found between clusters i and j of different labels
        (positive on i); for a pair it never tested, whose bounding spheres are apart, the
        plane half-way between the spheres. None for a same-label pair."""
        planes = self._planes
        if (i, j) in planes:
            return planes[i, j]
        if self.cluster_labels_[i] == self.cluster_labels_[j]:
            return None
        ca, cb = A.mean(axis=0), B.mean(axis=0)
        w = ca - cb
        norm = float(np.linalg.norm(w))
        ra = float(np.sqrt(((A - ca) ** 2).sum(axis=1).max()))
        rb = float(np.sqrt(((B - cb) ** 2).sum(axis=1).max()))
        # w.x >= w.ca - ra |w| on A and <= w.cb + rb |w| on B: the mid-point of the two
        return Hyperplane(w, -float(w @ ca - ra * norm + w @ cb + rb * norm) / 2)

    def distance_vector(self) -> np.ndarray:
        """One distance per pair of labels (i < j in ``classes_`` order).

        Defined when every label is one cluster (``n_clusters_ == len(classes_)``).
        """
        check(self.n_clusters_ == len(self.classes_),
              f"distance_vector needs one cluster per label; this fit has {self.n_clusters_} "
              f"clusters for {len(self.classes_)} labels")
        order = np.argsort(self._cluster_codes)
        D = self.distances()[np.ix_(order, order)]
        return D[np.triu_indices(len(order), 1)]

    # ---------------------------------------------------------------- prediction
    def predict(self, X: np.ndarray, *, max_iter: int = 500) -> np.ndarray:
        """The label of the cluster whose hull is nearest to each point (as the reference).

        The point-to-hull distance is computed by Frank-Wolfe on the simplex of the
        cluster's points, all test points at once.
        """
        X = np.asarray(X, dtype=np.float64)
        check_Xy(X)
        check(X.shape[1] == self.X_.shape[1],
              f"X has {X.shape[1]} features, the probe was fitted on {self.X_.shape[1]}")
        dist = np.stack([point_to_hull(X, self.cluster_points(k), max_iter=max_iter)
                         for k in range(self.n_clusters_)], axis=1)
        return self.cluster_labels_[np.argmin(dist, axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy of :meth:`predict` on (X, y)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))


@dataclass(frozen=True, eq=False)
class LabelTest:
    """The outcome of :func:`test_labels`: ``separable``, and the certificates behind it,
    which a :meth:`DirectProbe.fit` of the same data reuses."""

    separable: bool
    _clusters: _Clusters

    def matches(self, X: np.ndarray, codes: np.ndarray, tol: float, max_planes: int) -> bool:
        """Was this test run on this data (the same arrays' values), with these settings?"""
        cl = self._clusters
        return (cl.tol == tol and cl.max_planes == max_planes and cl.X.shape == X.shape
                and np.array_equal(cl.y, codes) and (cl.X is X or np.array_equal(cl.X, X)))


def test_labels(X: np.ndarray, y: np.ndarray, *, tol: float = 1e-9, max_planes: int = 64
                ) -> LabelTest:
    """:func:`linearly_separable`, keeping what a later :meth:`DirectProbe.fit` of the same
    data can reuse (:class:`LabelTest`)."""
    X = np.asarray(X, dtype=np.float64)
    check_Xy(X, y)
    check(tol >= 0, f"tol must be >= 0, got {tol}")
    classes, codes = np.unique(np.asarray(y), return_inverse=True)
    check(len(classes) >= 2, f"a separability test needs at least 2 labels, got {len(classes)}")
    cl = _Clusters(X, codes, tol, max_planes)
    for c in range(len(classes)):
        cl.add(np.flatnonzero(codes == c))
    return LabelTest(not cl.any_overlap(), cl)


test_labels.__test__ = False  # not a test for pytest's collector


def linearly_separable(X: np.ndarray, y: np.ndarray, *, tol: float = 1e-9,
                       max_planes: int = 64) -> bool:
    """Whether the convex hulls of the labels are pairwise disjoint (every label one cluster).

    This is the test the reference's ``batch_probing`` (Zhou & Srikumar 2022) applies to a
    state along fine-tuning or to a layer, under one clustering fixed in advance: with one
    cluster per label, that clustering is the labels. It is the answer of
    ``DirectProbe(tol=tol).fit(X, y).n_clusters_ == n_labels``, decided by the same exact
    test at the same scale, but without phase 2: it stops at the first overlapping pair,
    so a state that is not separable costs one overlap test instead of a whole fit.

    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (30, 4)), rng.normal(9, 1, (30, 4))]
    >>> linearly_separable(X, np.repeat([0, 1], 30)), linearly_separable(X, np.arange(60) % 2)
    (True, False)
    """
    return test_labels(X, y, tol=tol, max_planes=max_planes).separable


def spatial_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two distance vectors (Zhou & Srikumar 2022, section 3).

    >>> spatial_similarity(np.array([1., 2, 3]), np.array([2., 4, 6]))
    1.0
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    check(a.shape == b.shape and a.ndim == 1 and len(a) >= 2,
          f"distance vectors must be 1-D of equal length >= 2, got {a.shape} and {b.shape}")
    check(a.std() > 0 and b.std() > 0, "a distance vector is constant; correlation undefined")
    return float(np.corrcoef(a, b)[0, 1])


def hull_distance(A: np.ndarray, B: np.ndarray, *, tol: float = 1e-9,
                  plane: Hyperplane | None = None) -> float:
    """Euclidean distance between the convex hulls of A and B (0 if they intersect).

    Twice the margin of the hard-margin linear SVM between A and B: solved on a working set
    of points near the separating hyperplane (scikit-learn's SVC, C = 1e6 as the reference),
    grown until every point respects the margin; the distance is then
    ``2 min_i |w.x_i + b| / ||w||`` over all points, as in the reference. Should libsvm not
    converge in ``SVM_MAX_ITER`` iterations (hulls that almost touch), it returns, with a
    warning, the lower bound that the separating plane gives.

    plane : a hyperplane known to separate A (positive) from B, such as the one a DirectProbe
        fit found for the pair; it replaces the exact overlap test, which is most of the time
        of a distance between large clusters (one that does not separate them strictly is
        ignored, and the test runs)
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import SVC

    sa = sb = None
    if plane is not None:
        sa, sb = A @ plane.w + plane.b, B @ plane.w + plane.b
        if not (sa.min() > 0 > sb.max()):
            sa = sb = None
    if sa is None:
        overlap, plane, _ = hull_overlap(A, B, tol=tol)
        if overlap:
            return 0.0
        sa, sb = A @ plane.w + plane.b, B @ plane.w + plane.b
    # any plane that separates the two sets bounds the distance from below: the LP's plane is
    # the fallback should the SVM not converge (hulls that almost touch: libsvm's dual
    # variables then grow without end, and an uncapped solve ran for many minutes)
    fallback = _separated_gap(sa, sb, plane.w)
    wa = np.argsort(sa)[:64]
    wb = np.argsort(-sb)[:64]
    for _ in range(100):
        XX = np.vstack([A[wa], B[wb]])
        yy = np.r_[np.ones(len(wa)), -np.ones(len(wb))]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            svm = SVC(kernel="linear", C=1e6, tol=1e-6, max_iter=SVM_MAX_ITER).fit(XX, yy)
        if any(issubclass(c.category, ConvergenceWarning) for c in caught):
            log.warning("hull_distance: the hard-margin SVM between %d and %d points did not "
                        "converge in %d iterations (the hulls almost touch); using the lower "
                        "bound %.3g from the separating plane of the overlap test", len(A), len(B),
                        SVM_MAX_ITER, fallback)
            return fallback
        w, b = svm.coef_[0], float(svm.intercept_[0])
        sa, sb = A @ w + b, B @ w + b
        bad_a = np.setdiff1d(np.flatnonzero(sa < 1 - 1e-4), wa)
        bad_b = np.setdiff1d(np.flatnonzero(sb > -1 + 1e-4), wb)
        if len(bad_a) + len(bad_b) == 0:
            break
        wa = np.union1d(wa, bad_a[np.argsort(sa[bad_a])[:128]])
        wb = np.union1d(wb, bad_b[np.argsort(-sb[bad_b])[:128]])
    return float(2 * np.abs(np.r_[sa, sb]).min() / np.linalg.norm(w))


#: Iterations of libsvm in :func:`hull_distance` before it falls back to the lower bound.
SVM_MAX_ITER = 500_000


def _separated_gap(sa: np.ndarray, sb: np.ndarray, w: np.ndarray) -> float:
    """The distance between two point sets that a plane ``w.x + b`` separates bounds from
    below: the sum of each set's distance to the plane (``sa``, ``sb``: the scores of the
    two sets' points; 0 if the plane does not separate them)."""
    gap = (max(sa.min(), 0.0) + max(-sb.max(), 0.0)) / max(float(np.linalg.norm(w)), 1e-300)
    return float(gap)


def point_to_hull(P: np.ndarray, C: np.ndarray, *, max_iter: int = 500, rtol: float = 1e-6
                  ) -> np.ndarray:
    """Distance of each row of P to the convex hull of the rows of C (Frank-Wolfe).

    Works on Gram matrices (``C C^T``, ``P C^T``), so an iteration costs O(n_points x
    n_hull_points) for all points at once. Stops when every point's Frank-Wolfe duality
    gap is below ``rtol`` times the squared scale of the data (or after ``max_iter``).

    Returns ndarray of shape (n_points,).

    >>> square = np.array([[0., 0], [1, 0], [0, 1], [1, 1]])
    >>> np.round(point_to_hull(np.array([[0.5, 0.5], [2., 0.5]]), square), 6).tolist()
    [0.0, 1.0]
    """
    P = np.asarray(P, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    n = len(P)
    rows = np.arange(n)
    K = C @ C.T
    kd = np.diag(K).copy()
    PC = P @ C.T
    pp = (P ** 2).sum(1)
    s = np.argmin(kd[None, :] - 2 * PC, axis=1)       # the nearest point of C
    A = np.zeros((n, len(C)))
    A[rows, s] = 1.0
    AK = K[s].copy()                                   # A K
    q = kd[s].copy()                                   # ||A C||^2 per point
    scale = float(((C - C.mean(0)) ** 2).sum(1).max() + ((P - C.mean(0)) ** 2).sum(1).max()) + 1e-300
    for _ in range(max_iter):
        G = AK - PC                                    # gradient / 2 over the weights
        s = np.argmin(G, axis=1)
        gap = (A * G).sum(1) - G[rows, s]
        if (gap <= rtol * scale).all():
            break
        dd = kd[s] - 2 * AK[rows, s] + q               # ||C_s - A C||^2
        gamma = np.clip(gap / np.maximum(dd, 1e-300), 0.0, 1.0)
        q = (1 - gamma) ** 2 * q + 2 * gamma * (1 - gamma) * AK[rows, s] + gamma ** 2 * kd[s]
        A *= (1 - gamma)[:, None]
        A[rows, s] += gamma
        AK = (1 - gamma)[:, None] * AK + gamma[:, None] * K[s]
    return np.sqrt(np.maximum(q - 2 * (A * PC).sum(1) + pp, 0.0))


# --------------------------------------------------------------------------------------
# Cluster counts before and after fine-tuning (chapters 3 and 4): tables, the record
# --------------------------------------------------------------------------------------
# ``clusters`` below maps (task, state) to a fitted summary: anything with ``classes``,
# ``cluster_labels``, ``n_labels``, ``n_clusters`` and ``linearly_separable``, such as
# :class:`ftgeo.spatial.ClusterSummary`; states are "pretrained" and "finetuned".

def shared_label_pairs(a: Sequence[int], b: Sequence[int]) -> int:
    """The number of pairs of labels that both ``a`` and ``b`` hold: the length of the
    distance vectors a spatial similarity of the two correlates.

    >>> shared_label_pairs([0, 1, 2, 3], [1, 2, 3, 7])
    3
    """
    n = len(np.intersect1d(a, b))
    return n * (n - 1) // 2


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def cluster_counts(clusters: Mapping, seeds: Sequence[Mapping] | None = None):
    """Labels and clusters before ("pretrained") and after ("finetuned") fine-tuning, and
    whether each state is linearly separable ("yes" / "no"): a pandas DataFrame, one row
    per task, index ``task``.

    seeds : one {(task, "finetuned"): summary} per fine-tuning seed, the first seed's being
        ``clusters``: the table then adds "clusters finetuned, per seed" (the counts joined
        by "/") and "linear finetuned" is "yes" only if every seed is separable
    """
    import pandas as pd

    rows = {}
    for task in keyed_tasks(clusters):
        before, after = clusters[task, "pretrained"], clusters[task, "finetuned"]
        every = [after] if seeds is None else [s[task, "finetuned"] for s in seeds]
        rows[task] = {"labels": before.n_labels, "clusters pretrained": before.n_clusters,
                      "clusters finetuned": after.n_clusters,
                      "linear pretrained": _yes_no(before.linearly_separable),
                      "linear finetuned": _yes_no(all(s.linearly_separable for s in every))}
        if seeds is not None:
            rows[task]["clusters finetuned, per seed"] = "/".join(str(s.n_clusters) for s in every)
    return pd.DataFrame(rows).T.rename_axis("task")


def split_labels(clusters: Mapping, labels: Mapping[str, Sequence[str]]):
    """The labels that need more than one cluster: a pandas DataFrame with columns task,
    state, label (its name) and clusters, one row per such label, in the order of
    ``clusters`` and, within one (task, state), most clusters first.

    labels : {task: the label names, indexed by label code}
    """
    import pandas as pd

    rows = []
    for (task, state), summary in clusters.items():
        per_label = pd.Series(summary.cluster_labels).value_counts()
        for code, n in per_label[per_label > 1].items():
            rows.append({"task": task, "state": state, "label": labels[task][code], "clusters": int(n)})
    return pd.DataFrame(rows, columns=["task", "state", "label", "clusters"])


def per_layer_table(counts: Mapping[tuple[str, str], Sequence], *, first_layer: int = 1):
    """A (task, state) x layer table: one row "task / state" per entry of ``counts``, whose
    values are per layer from ``first_layer`` on (cluster counts, or separability flags,
    shown as yes and no); columns named ``layer``."""
    import pandas as pd

    def shown(v):
        return _yes_no(v) if isinstance(v, bool | np.bool_) else v

    table = pd.DataFrame({f"{task} / {state}": [shown(x) for x in v]
                          for (task, state), v in counts.items()}).T
    table.columns = pd.RangeIndex(first_layer, first_layer + len(table.columns), name="layer")
    return table


def linearity_summary(clusters: Mapping) -> dict[str, object]:
    """What chapter 4's summary cites: "n_linear_before" and "n_linear_after", the tasks
    linearly separable before and after fine-tuning; "n_fewer", those with fewer clusters
    after; "nonlinear_after", the tasks not separable after, comma-separated, or "none"."""
    tasks = keyed_tasks(clusters)
    before = [t for t in tasks if clusters[t, "pretrained"].linearly_separable]
    after = [t for t in tasks if clusters[t, "finetuned"].linearly_separable]
    fewer = [t for t in tasks if clusters[t, "finetuned"].n_clusters < clusters[t, "pretrained"].n_clusters]
    return {"n_linear_before": len(before), "n_linear_after": len(after), "n_fewer": len(fewer),
            "nonlinear_after": ", ".join(t for t in tasks if t not in after) or "none"}


def linearity_tasks(clusters: Mapping, layer_counts: Mapping[tuple[str, str], list[int]], *,
                    seeds: Sequence[Mapping] | None = None,
                    layer_separable: Mapping[tuple[str, str], list[bool]] | None = None) -> dict:
    """The per-task part of chapter 4's record: {task: :class:`ftgeo.results.LinearityTask`}.

    layer_counts : {(task, state): clusters at each layer}; an absent entry is recorded as None
    seeds : as for :func:`cluster_counts`
    layer_separable : {(task, state): whether each layer is linearly separable}; likewise
    """
    from .results import LinearityTask

    layer_separable = layer_separable or {}

    def per_seed(t):
        return None if seeds is None else [int(s[t, "finetuned"].n_clusters) for s in seeds]

    def flags(key):
        return None if key not in layer_separable else [bool(f) for f in layer_separable[key]]

    return {t: LinearityTask(clusters[t, "pretrained"].n_labels, clusters[t, "pretrained"].n_clusters,
                             clusters[t, "finetuned"].n_clusters, layer_counts.get((t, "pretrained")),
                             layer_counts.get((t, "finetuned")), per_seed(t),
                             flags((t, "pretrained")), flags((t, "finetuned")))
            for t in keyed_tasks(clusters)}


#: chapter 4's ``per_layer``: what it computes at every transformer layer
PER_LAYER = ("separable", "clusters", None)


def check_per_layer(per_layer) -> None:
    """Refuse a ``per_layer`` other than "separable", "clusters" or None, before any work.

    >>> check_per_layer("layers")
    Traceback (most recent call last):
    ...
    ValueError: per_layer must be "separable" (the reference's protocol), "clusters" or None, got 'layers'
    """
    check(per_layer in PER_LAYER, 'per_layer must be "separable" (the reference\'s protocol), '
          f'"clusters" or None, got {per_layer!r}')
