"""CKA: properties with known answers, the feature-space and Gram-space forms against each
other, a held-out check against the published ``ckatorch`` package, and block structure."""

import numpy as np
import pytest
from scipy.stats import ortho_group

from ftgeo import cka


def pair(n=300, d=20, e=12, seed=0, noise=1.0):
    """Y is a noisy linear function of X, so CKA is strictly between 0 and 1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) @ np.diag(np.linspace(0.2, 3, d))
    Y = X @ rng.normal(size=(d, e)) + noise * rng.normal(size=(n, e))
    return X, Y


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cka_of_x_with_itself_is_one(seed, debiased):
    X, _ = pair(seed=seed)
    assert cka.linear_cka(X, X, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cka_is_invariant_to_rotation_isotropic_scaling_and_translation(seed, debiased):
    X, Y = pair(seed=seed)
    value = cka.linear_cka(X, Y, debiased=debiased)
    assert 0.05 < value < 0.99
    rng = np.random.default_rng(seed + 10)
    Q = ortho_group.rvs(X.shape[1], random_state=seed)
    for X2 in (X @ Q, 7.5 * X, X + rng.normal(size=X.shape[1]) * 100):
        assert cka.linear_cka(X2, Y, debiased=debiased) == pytest.approx(value, abs=1e-10)
        assert cka.linear_cka(Y, X2, debiased=debiased) == pytest.approx(value, abs=1e-10)


def test_cka_is_not_invariant_to_an_anisotropic_scaling():
    X, Y = pair()
    stretched = X * np.linspace(1, 20, X.shape[1])
    assert abs(cka.linear_cka(stretched, Y) - cka.linear_cka(X, Y)) > 1e-3


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_feature_space_and_gram_space_agree(seed, debiased):
    X, Y = pair(n=120, d=30, e=50, seed=seed)
    feature = cka.linear_cka(X, Y, debiased=debiased)
    gram = cka.gram_cka(X @ X.T, Y @ Y.T, debiased=debiased)
    assert feature == pytest.approx(gram, abs=1e-8)


def test_debiased_cka_is_near_zero_for_independent_matrices_with_many_features():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(200, 2000)), rng.normal(size=(200, 2000))
    assert abs(cka.linear_cka(X, Y, debiased=True)) < 0.02
    assert cka.linear_cka(X, Y) > 0.5  # the plain form is biased upward here


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(200, 10, 30), (500, 64, 64), (1000, 384, 100)])
def test_linear_cka_equals_the_published_ckatorch(shape, debiased):
    import torch
    from ckatorch.core import cka_base

    n, d, e = shape
    X, Y = pair(n, d, e, seed=d, noise=3.0)
    theirs = float(cka_base(torch.from_numpy(X), torch.from_numpy(Y), kernel="linear",
                            unbiased=debiased))
    assert cka.linear_cka(X, Y, debiased=debiased) == pytest.approx(theirs, abs=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cka_matrix_matches_pairwise_cka(dtype):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, 16))
    layers = np.stack([base @ rng.normal(size=(16, 16)) + k * rng.normal(size=(400, 16))
                       for k in range(5)])
    M = cka.cka_matrix(layers, dtype=dtype)
    assert M.shape == (5, 5) and np.allclose(M, M.T) and np.allclose(np.diag(M), 1)
    expected = np.array([[cka.linear_cka(a, b) for b in layers] for a in layers])
    assert np.allclose(M, expected, atol=1e-6 if dtype == np.float32 else 1e-12)
    other = layers[::-1][:4] * 2.0
    across = cka.cka_matrix(layers, other, dtype=dtype)
    assert across.shape == (5, 4)
    assert np.allclose(across, expected[:, ::-1][:, :4], atol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_bfloat16_is_within_1e_4_of_float64(debiased):
    # layers like a transformer's: a shared drift, a large mean, and two outlier features
    rng = np.random.default_rng(3)
    n, d = 5000, 96
    layers = [rng.normal(size=(n, d))]
    for _ in range(4):
        layers.append(layers[-1] @ np.linalg.qr(rng.normal(size=(d, d)))[0]
                      + 0.6 * rng.normal(size=(n, d)))
    layers = np.stack(layers).astype(np.float32)
    layers[:, :, 5] *= 40
    layers += 15.0
    exact = cka.cka_matrix(layers, debiased=debiased, dtype=np.float64)
    fast = cka.cka_matrix(layers, debiased=debiased, dtype="bfloat16")
    assert np.ptp(exact) > 0.3  # a matrix with a range of values, not all near 0 or 1
    assert np.abs(fast - exact).max() < 1e-4
    across = cka.cka_matrix(layers[:2], layers[2:], debiased=debiased, dtype="bfloat16")
    assert np.abs(across - exact[:2, 2:]).max() < 1e-4


@pytest.mark.parametrize("call, message", [
    (lambda: cka.linear_cka(np.ones((5, 2)), np.ones((6, 2))), "same rows"),
    (lambda: cka.linear_cka(np.ones((5, 2)), np.random.default_rng(0).normal(size=(5, 2))),
     "zero variance"),
    (lambda: cka.linear_cka(np.zeros((3, 2)) + [[0, 1]], np.eye(3)[:, :2], debiased=True), "4 rows"),
    (lambda: cka.cka_matrix([np.eye(4), np.eye(5)]), "same rows"),
    (lambda: cka.cka_matrix([np.eye(4)], dtype=np.int32), "dtype"),
    (lambda: cka.cka_matrix([np.eye(4)], dtype="bf16"), "bfloat16"),
    (lambda: cka.block_structure(np.ones((2, 3))), "square"),
    (lambda: cka.block_structure(np.triu(np.ones((4, 4)))), "symmetric"),
    (lambda: cka.block_structure(np.eye(4), n_blocks=4), "n_blocks"),
])
def test_bad_input_is_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def block_matrix(sizes, within=0.9, between=0.3, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    S = np.where(labels[:, None] == labels[None], within, between)
    S = S + noise * rng.uniform(-1, 1, S.shape)
    S = (S + S.T) / 2
    np.fill_diagonal(S, 1.0)
    return S


@pytest.mark.parametrize("sizes", [(3, 4), (2, 5, 6), (4, 3)])
def test_block_structure_recovers_planted_blocks(sizes):
    found = cka.block_structure(block_matrix(sizes))
    ends = np.cumsum(sizes)
    assert found.blocks == tuple((int(e - s), int(e - 1)) for s, e in zip(sizes, ends, strict=True))
    assert found.score == pytest.approx(0.6, abs=0.05)
    assert cka.block_structure(block_matrix(sizes), offset=1).blocks[0][0] == 1


def test_block_structure_of_a_flat_matrix_scores_near_zero():
    S = block_matrix((7,), within=0.6, noise=0.05, seed=3)
    assert cka.block_structure(S).score < 0.1
    assert cka.block_structure(block_matrix((3, 4))).score > 0.5


def test_cka_matrix_of_a_real_block_diagonal_stack_has_its_blocks():
    rng = np.random.default_rng(1)
    first, second = rng.normal(size=(600, 32)), rng.normal(size=(600, 32))
    layers = [first + 0.1 * k * rng.normal(size=first.shape) for k in range(3)]
    layers += [second + 0.1 * k * rng.normal(size=second.shape) for k in range(4)]
    found = cka.block_structure(cka.cka_matrix(layers))
    assert found.blocks == ((0, 2), (3, 6))


def test_block_structure_of_two_layers_is_one_unscored_block():
    found = cka.block_structure(np.array([[1.0, 0.7], [0.7, 1.0]]), offset=1)
    assert found.blocks == ((1, 2),) and found.within == 0.7 and np.isnan(found.score)


def test_the_tensor_path_of_a_gpu_gives_the_numpy_value():
    """On a GPU the centered layers are torch tensors and the products run there; the same
    code on CPU tensors must give NumPy's ||XᵀY||² (float32 products, float64 sums)."""
    import torch

    from ftgeo.cka import _cross_sq

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(300, 20)).astype(np.float32), rng.normal(size=(300, 30)).astype(np.float32)
    expected = _cross_sq(X, Y)
    assert _cross_sq(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(expected, rel=1e-5)
    bf = _cross_sq(torch.from_numpy(X).bfloat16(), torch.from_numpy(Y).bfloat16())
    assert bf == pytest.approx(expected, rel=2e-2) and bf != expected
