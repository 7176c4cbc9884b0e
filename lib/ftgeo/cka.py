"""Centered kernel alignment (CKA) between representations, and the block structure of
a layer-by-layer CKA matrix.

Linear CKA (Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of Neural Network
Representations Revisited", ICML) of ``X : (n_samples, n_features_x)`` and
``Y : (n_samples, n_features_y)`` with the same rows, both column-centered::

    CKA(X, Y) = ||YᵀX||²_F / (||XᵀX||_F ||YᵀY||_F)

which equals HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for the linear Gram matrices
``K = XXᵀ`` and ``L = YYᵀ`` but only needs feature-by-feature products, so 20,000 rows cost
no 20,000 x 20,000 matrix. The *debiased* form replaces HSIC by the unbiased estimator of
Song, Smola, Gretton, Bedo & Borgwardt (2012, JMLR, Eq. 5), written here in feature space;
it is near 0 for independent data however many features there are, where the plain form
drifts upward with n_features / n_samples.

:func:`gram_cka` is the textbook Gram-matrix form, O(n_samples²), kept as a cross-check.
:func:`cka_matrix` gives the layer-by-layer matrix of one model state or across two;
:func:`block_structure` finds the contiguous blocks of layers that Phang, Liu & Bowman (2021)
describe in fine-tuned models.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._util import check, check_Xy

__all__ = ["BlockStructure", "banded_fit", "block_structure", "blocks_beyond_banded", "cka_matrix",
           "droppable_layers", "gram_cka", "linear_cka"]


@dataclass(frozen=True)
class _Centered:
    """A column-centered matrix with what every CKA against it needs, computed once."""

    X: np.ndarray  # (n_samples, n_features), centered, float32 or float64 (or a bfloat16 tensor)
    self_term: float  # ||XᵀX||²_F, or its debiased counterpart
    row_sq: np.ndarray | None  # ||x_i||² (debiased form only)
    total_sq: float  # ||X||²_F


def _prepare(X: np.ndarray, debiased: bool, dtype, name: str = "X", device=None) -> _Centered:
    check_Xy(X, name=name)
    X = np.asarray(X)
    n = X.shape[0]
    check(n >= (4 if debiased else 2),
          f"{name} needs at least {4 if debiased else 2} rows for "
          f"{'debiased' if debiased else 'linear'} CKA, got {n}")
    # the mean in float64, the centered copy directly in the working precision
    bf16 = isinstance(dtype, str) and dtype == "bfloat16"
    Xc = np.subtract(X, X.mean(axis=0, dtype=np.float64), dtype=np.float32 if bf16 else dtype)
    row_sq = np.einsum("ij,ij->i", Xc, Xc, dtype=np.float64) if debiased else None
    total_sq = float(row_sq.sum()) if debiased else float("nan")
    if bf16:
        import torch  # only this option needs it; torch's CPU kernels accumulate in float32

        Xc = torch.from_numpy(Xc).to(torch.bfloat16)
    if device is not None and device.type != "cpu":
        import torch

        Xc = (Xc if bf16 else torch.from_numpy(Xc)).to(device)
    cross = _cross_sq(Xc, Xc)
    prepared = _Centered(Xc, 0.0, row_sq, total_sq)
    return _Centered(Xc, _hsic(prepared, prepared, cross) if debiased else cross, row_sq, total_sq)


def _cross_sq(X: np.ndarray, Y: np.ndarray) -> float:
    """||XᵀY||²_F with the smaller side of the product first, accumulated in float64."""
    if isinstance(X, np.ndarray):
        product = X.T @ Y
    elif str(X.dtype) == "torch.bfloat16":  # see _bf16_product
        product = _bf16_product(X, Y)
    else:  # float32 or float64 tensors on a GPU: the product there, its square summed in float64
        return float((X.T @ Y).double().square().sum())
    return float(np.einsum("ij,ij->", product, product, dtype=np.float64))


# rows per bfloat16 product: on the default model's POS representations the error against
# float64 was 7.9e-4 with no chunks, 2.0e-4 at 2,048 rows, 6.3e-5 at 512 and 6.7e-5 at 128,
# and 128 took twice as long (measured on the 2-core machine this book is built on)
_BF16_CHUNK = 512


def _bf16_product(X, Y) -> np.ndarray:
    """XᵀY for bfloat16 tensors, as float32, summed over chunks of rows.

    The CPU kernel accumulates in float32 but rounds its output to bfloat16 (8 significant
    bits). One rounding of the whole product would put a 2^-9 relative error on its largest
    entries, which dominate ||XᵀY||² when a few features have outsized variance, as in
    BERT; rounding each chunk's partial product instead makes those errors independent, so
    they average out over the chunks.
    """
    import torch

    out = torch.zeros(X.shape[1], Y.shape[1], device=X.device)
    for start in range(0, X.shape[0], _BF16_CHUNK):
        stop = start + _BF16_CHUNK
        out += X[start:stop].T @ Y[start:stop]
    return out.cpu().numpy()


def _hsic(a: _Centered, b: _Centered, cross_sq: float) -> float:
    """The unbiased HSIC estimator of Song et al. (2012) for linear kernels, times n(n-3).

    With K = XXᵀ, L = YYᵀ for centered X, Y and K̃, L̃ their copies with a zero diagonal:
    tr(K̃L̃) = ||XᵀY||² - sum_i a_i b_i (a_i = ||x_i||², b_i = ||y_i||²); 1ᵀK̃1 = -||X||²;
    1ᵀK̃L̃1 = sum_i a_i b_i. Song et al.'s Eq. 5, tr(K̃L̃) + 1ᵀK̃1 1ᵀL̃1 / ((n-1)(n-2))
    - 2/(n-2) 1ᵀK̃L̃1, then becomes the expression below.
    """
    n = a.X.shape[0]
    ab = float(a.row_sq @ b.row_sq)
    return cross_sq - n / (n - 2) * ab + a.total_sq * b.total_sq / ((n - 1) * (n - 2))


def _cka(a: _Centered, b: _Centered, debiased: bool) -> float:
    cross = _cross_sq(a.X, b.X)
    numerator = _hsic(a, b, cross) if debiased else cross
    denominator = np.sqrt(a.self_term * b.self_term)
    check(denominator > 0, "CKA is undefined for a matrix with zero variance "
          "(all rows equal after centering)")
    return float(numerator / denominator)


def linear_cka(X: np.ndarray, Y: np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA of two representations of the same rows, computed in feature space.

    X : ndarray of shape (n_samples, n_features_x)
    Y : ndarray of shape (n_samples, n_features_y)
    debiased : use the unbiased HSIC estimator (Song et al. 2012); it can be slightly
        negative for unrelated data

    Invariant to orthogonal rotations, isotropic scaling and translations of either argument.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 5))
    >>> round(linear_cka(X, X), 6), round(linear_cka(X, 3 * X + 1), 6)
    (1.0, 1.0)
    """
    check_Xy(X, name="X")
    check_Xy(Y, name="Y")
    check(X.shape[0] == Y.shape[0],
          f"X and Y must have the same rows, got {X.shape[0]} and {Y.shape[0]}")
    return _cka(_prepare(X, debiased, np.float64, "X"), _prepare(Y, debiased, np.float64, "Y"),
                debiased)


def gram_cka(K: np.ndarray, L: np.ndarray, *, debiased: bool = False) -> float:
    """CKA from two (n_samples, n_samples) Gram matrices: the O(n_samples²) textbook form.

    Plain: HSIC = tr(HKHL) with the centering matrix H (Gretton et al. 2005; Kornblith et
    al. 2019, Eq. 3; the 1/(n-1)² factors cancel). Debiased: Song et al. (2012), Eq. 5.
    Use it for kernels other than the linear one, or to check :func:`linear_cka`.

    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]])
    >>> round(gram_cka(X @ X.T, X @ X.T), 6)
    1.0
    """
    K, L = np.asarray(K, dtype=np.float64), np.asarray(L, dtype=np.float64)
    n = K.shape[0]
    check(K.shape == (n, n) and L.shape == (n, n),
          f"K and L must be square of the same size, got {K.shape} and {L.shape}")

    def hsic(A, B):
        if not debiased:
            H = np.eye(n) - 1.0 / n
            return float(np.sum((H @ A @ H) * B))
        check(n >= 4, f"debiased CKA needs at least 4 rows, got {n}")
        A, B = A - np.diag(np.diag(A)), B - np.diag(np.diag(B))
        return float(np.sum(A * B) + A.sum() * B.sum() / ((n - 1) * (n - 2))
                     - 2.0 / (n - 2) * A.sum(axis=0) @ B.sum(axis=0))

    return float(hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L)))


def cka_matrix(layers: Sequence[np.ndarray], other: Sequence[np.ndarray] | None = None, *,
               debiased: bool = False, dtype=np.float32, device=None) -> np.ndarray:
    """Layer-by-layer linear CKA.

    layers : sequence of n_layers arrays of shape (n_samples, n_features), or one array of
        shape (n_layers, n_samples, n_features), as :func:`ftgeo.representations` returns
    other : the layers of a second model state on the same rows; ``None`` compares
        ``layers`` with itself (a symmetric matrix, each pair computed once)
    dtype : precision of the feature products. float32 (the default) halves the time on
        a CPU; the products are summed in float64, which keeps CKA within about 1e-6 of the
        float64 value. Pass ``np.float64`` for full precision, or ``"bfloat16"`` for about
        twice float32's speed on a CPU with bfloat16 instructions: the centered inputs are
        rounded to 8 significant bits, the products accumulate in float32, and CKA stays
        within about 1e-4 of the float64 value (1.2e-4 at most on the default model's
        stored POS, DEP and TREC-50 representations; ``tests/test_cka.py`` checks 1e-4 on
        synthetic layers with outlier features).
    device : where the feature products run (:func:`ftgeo._util.resolve_device`; default
        ``FTGEO_DEVICE``, else a GPU when there is one); on the CPU, NumPy computes them

    Returns ndarray of shape (n_layers, n_layers_other): entry [i, j] compares layer i of
    ``layers`` with layer j of ``other``.
    """
    check(len(layers) >= 1, "layers is empty")
    if str(dtype) in ("bfloat16", "torch.bfloat16"):
        dtype = "bfloat16"
    else:
        try:
            known = np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float64))
        except TypeError:
            known = False
        check(known, f"dtype must be float32, float64 or 'bfloat16', got {dtype!r}")
    from ._util import resolve_device

    device = resolve_device(device)
    a = [_prepare(X, debiased, dtype, f"layers[{i}]", device) for i, X in enumerate(layers)]
    n = a[0].X.shape[0]
    check(all(p.X.shape[0] == n for p in a), "every layer must have the same rows")
    if other is None:
        out = np.empty((len(a), len(a)))
        for i, j in itertools.combinations_with_replacement(range(len(a)), 2):
            out[i, j] = out[j, i] = 1.0 if i == j else _cka(a[i], a[j], debiased)
        return out
    b = [_prepare(Y, debiased, dtype, f"other[{i}]", device) for i, Y in enumerate(other)]
    check(all(p.X.shape[0] == n for p in b),
          f"other must have the same rows as layers ({n}), got {b[0].X.shape[0]}")
    return np.array([[_cka(p, q, debiased) for q in b] for p in a])


@dataclass(frozen=True)
class BlockStructure:
    """Contiguous blocks of layers in a square similarity matrix (see :func:`block_structure`).

    blocks : tuple of (first, last) layer indices, inclusive, covering every layer in order
    within, between : mean similarity of two different layers of one block / of two blocks
    score : within - between, the block-diagonality score; 0 = no block structure, and at
        most 1 for a CKA matrix
    """

    blocks: tuple[tuple[int, int], ...]
    within: float
    between: float

    @property
    def score(self) -> float:
        return self.within - self.between

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def labels(self) -> np.ndarray:
        """The block of every layer, ndarray of shape (n_layers,)."""
        return np.concatenate([np.full(b - a + 1, k) for k, (a, b) in enumerate(self.blocks)])


def block_structure(similarity: np.ndarray, n_blocks: int | None = None,
                    offset: int = 0) -> BlockStructure:
    """The split of layers into contiguous blocks with the largest contrast between the mean
    similarity of two layers in one block and that of two layers in different blocks.

    Every split into 2 or more blocks with at least one block of 2 or more layers is tried
    (2^(n_layers - 1) splits: 4,096 for 13 layers). ``n_blocks`` fixes the number of blocks.
    With fewer than 3 layers there is no such split: the result is one block with a NaN score.
    ``offset`` is added to the layer numbers reported (1 when the matrix leaves out the
    embedding layer 0).

    similarity : ndarray of shape (n_layers, n_layers), symmetric

    >>> S = np.full((4, 4), 0.2); S[:2, :2] = S[2:, 2:] = 0.9
    >>> block_structure(S).blocks
    ((0, 1), (2, 3))
    """
    S = np.asarray(similarity, dtype=np.float64)
    check(S.ndim == 2 and S.shape[0] == S.shape[1] and S.shape[0] >= 1,
          f"similarity must be a square matrix, got shape {S.shape}")
    L = S.shape[0]
    check(np.allclose(S, S.T, atol=1e-8), "similarity must be symmetric")
    if L < 3:  # no split into 2+ blocks has a block of 2 layers: nothing to score
        within = float(S[0, 1]) if L == 2 else float("nan")
        return BlockStructure(((offset, offset + L - 1),), within, float("nan"))
    check(n_blocks is None or 2 <= n_blocks < L, f"n_blocks must be in [2, {L - 1}], got {n_blocks}")
    upper = np.triu_indices(L, 1)
    values = S[upper]
    best = None
    for cuts in itertools.product((False, True), repeat=L - 1):
        k = sum(cuts) + 1
        if k < 2 or (n_blocks is not None and k != n_blocks):
            continue
        labels = np.concatenate([[0], np.cumsum(cuts)])
        same = labels[upper[0]] == labels[upper[1]]
        if not same.any():
            continue
        within, between = values[same].mean(), values[~same].mean()
        if best is None or within - between > best[0] + 1e-12:
            best = (within - between, labels, within, between)
    _, labels, within, between = best
    blocks = tuple((int(np.flatnonzero(labels == k)[0]) + offset,
                    int(np.flatnonzero(labels == k)[-1]) + offset) for k in np.unique(labels))
    return BlockStructure(blocks, float(within), float(between))


def banded_fit(similarity: np.ndarray) -> np.ndarray:
    """The closest banded (Toeplitz) matrix in least squares: each diagonal replaced by its
    mean, so that the result depends only on the distance |i - j| between two layers.

    A layer-by-layer matrix that decays smoothly with layer distance (e.g. 0.9^|i-j|) is its
    own banded fit and has no blocks; blocks are what the banded fit leaves over
    (:func:`blocks_beyond_banded`).

    similarity : ndarray of shape (n_layers, n_layers), symmetric

    >>> S = 0.9 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
    >>> bool(np.allclose(banded_fit(S), S))
    True
    """
    S = np.asarray(similarity, dtype=np.float64)
    check(S.ndim == 2 and S.shape[0] == S.shape[1], f"similarity must be square, got {S.shape}")
    L = S.shape[0]
    offset = np.abs(np.subtract.outer(np.arange(L), np.arange(L)))
    means = np.array([S[offset == k].mean() for k in range(L)])
    return means[offset]


def blocks_beyond_banded(similarity: np.ndarray, offset: int = 0) -> BlockStructure:
    """The block structure of what the best banded matrix leaves over: :func:`block_structure`
    of ``similarity - banded_fit(similarity)``.

    Its score is the contrast of the best split into contiguous blocks beyond what layer
    distance alone explains: 0 for any banded matrix, large where some neighbouring layers
    are far more alike than others at the same distance (a block boundary).

    >>> S = np.full((6, 6), 0.3); S[:3, :3] = S[3:, 3:] = 0.9
    >>> b = blocks_beyond_banded(S); b.blocks, round(b.score, 2)
    (((0, 2), (3, 5)), 0.3)
    >>> round(blocks_beyond_banded(0.9 ** np.abs(np.subtract.outer(range(6), range(6)))).score, 6)
    0.0
    """
    S = np.asarray(similarity, dtype=np.float64)
    return block_structure(S - banded_fit(S), offset=offset)


def droppable_layers(accuracy: Sequence[float], tolerance: float) -> int:
    """How many top layers can be dropped: the largest k such that dropping each of 1 .. k
    top layers loses at most ``tolerance`` accuracy (an absolute difference: 0.01 is one
    point) against the full model (Phang, Liu & Bowman
    2021, Section 5); the first k that loses more ends the count.

    accuracy : accuracy with the top k layers dropped, k = 0, 1, ... (``accuracy[0]``: none)

    >>> droppable_layers([0.90, 0.895, 0.85, 0.899], tolerance=0.01)  # k = 3 alone does not count
    1
    >>> droppable_layers([0.90, 0.85, 0.90], tolerance=0.01)
    0
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    check(acc.ndim == 1 and len(acc) >= 1, f"accuracy must be a non-empty list, got shape {acc.shape}")
    check(np.isfinite(acc).all(), "accuracy holds a missing value; every k needs an accuracy")
    check(tolerance >= 0, f"tolerance must be >= 0, got {tolerance}")
    k = 0
    while k + 1 < len(acc) and acc[0] - acc[k + 1] <= tolerance:
        k += 1
    return k
