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

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._util import array_digest, check, check_count, check_Xy, keyed_tasks, one_blas_thread, progress

log = logging.getLogger(__name__)
_WARNED_BF16: list[bool] = []  # the no-native-bfloat16 warning, once a process


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
    if n < Z.shape[1]:
        # fewer rows than features: the kernel form W = Zᵀ (Z Zᵀ/n + l2 I)⁻¹ Y / n, the same
        # weights from an n x n eigendecomposition instead of a d x d one
        G = Z @ Z.T / n
        with one_blas_thread():
            evals, U = np.linalg.eigh(G)
        C = U.T @ Y / n
        return [Z.T @ (U @ (C / (np.clip(evals, 0, None) + l2)[:, None])) for l2 in l2_grid]
    S = Z.T @ Z / n
    with one_blas_thread():
        evals, V = np.linalg.eigh(S)
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


HIDDEN_SIZES = (32, 64, 128, 256)
#: Zhou & Srikumar (2022): the regulariser from 1e-7 to 1 on a log grid (scikit-learn's alpha)
MLP_ALPHA_GRID = tuple(10.0 ** -k for k in range(7, -1, -1))

#: The columns of :attr:`ProbeGridResult.dev`, one row per candidate setting.
_DEV_COLUMNS = ("hidden1", "hidden2", "alpha", "dev_accuracy", "epochs")

#: Bump when the probe's training changes, so that cached grids (:func:`probe_grid`) are
#: not reused.
PROBES_VERSION = 1


def _torch_standardize(X: np.ndarray, mean: np.ndarray, scale: np.ndarray):
    import torch

    return torch.from_numpy(((np.asarray(X, dtype=np.float64) - mean) / scale).astype(np.float32))


def _class_codes(y: np.ndarray, classes: np.ndarray):
    """Index of each label in ``classes`` as a torch tensor; -1 for a label not in it
    (a dev or test label unseen in training, which is then never predicted)."""
    import torch

    y = np.asarray(y)
    return torch.from_numpy(np.where(np.isin(y, classes), np.searchsorted(classes, y), -1))


class _MLPBatch:
    """M two-hidden-layer ReLU networks of one shape, trained together as batched tensors.

    Each network has its own weights, regulariser and random initialization; Adam is
    elementwise, so training them together is the same as training them one by one. The
    loss of each is scikit-learn's ``MLPClassifier`` objective on a mini-batch of B points:
    the mean cross-entropy plus ``alpha / (2 B) * sum ||W||^2`` (biases excluded).
    """

    def __init__(self, n_features: int, hidden: tuple[int, int], n_classes: int,
                 alpha: Sequence[float], seeds: Sequence[int]):
        import torch

        self.alpha = self.alpha_all = torch.tensor(list(alpha), dtype=torch.float32)[:, None, None]
        sizes = [n_features, *hidden, n_classes]
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            W = torch.empty((len(seeds), fan_in, fan_out))
            for m, seed in enumerate(seeds):
                # Glorot-uniform initialization, as scikit-learn's MLPClassifier (Glorot & Bengio 2010)
                g = torch.Generator().manual_seed(int(seed) * 1000 + fan_in * 7 + fan_out)
                bound = (6.0 / (fan_in + fan_out)) ** 0.5
                W[m] = (torch.rand((fan_in, fan_out), generator=g) * 2 - 1) * bound
            self.weights.append(W.requires_grad_())
            self.biases.append(torch.zeros((len(seeds), 1, fan_out), requires_grad=True))

    def parameters(self):
        return [*self.weights, *self.biases]

    def to(self, device) -> _MLPBatch:
        """Move the networks to ``device`` (initialized on the CPU first, so that a GPU
        starts from the same weights); nothing happens on the CPU."""
        if device.type != "cpu":
            self.alpha = self.alpha_all = self.alpha_all.to(device)
            self.set_parameters([p.detach().to(device).requires_grad_() for p in self.parameters()])
        return self

    def set_parameters(self, params) -> None:
        k = len(self.weights)
        self.weights, self.biases = list(params[:k]), list(params[k:])

    def select(self, keep, opt, learning_rate: float):
        """Keep only the networks where ``keep`` is true; returns an Adam carrying their state."""
        old = self.parameters()
        keep = keep.to(old[0].device)
        new = [p.detach()[keep].clone().requires_grad_() for p in old]
        self.set_parameters(new)
        self.alpha = self.alpha[keep]
        new_opt = _adam(new, learning_rate)
        for p, q in zip(old, new, strict=True):
            state = opt.state.get(p)
            if state:
                new_opt.state[q] = {k: (v[keep].clone() if k != "step" else v.clone())
                                    for k, v in state.items()}
        return new_opt

    def logits(self, X):
        import torch

        H = X
        for k, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            H = torch.matmul(H, W) + b
            if k < len(self.weights) - 1:
                H = torch.relu(H)
        return H  # (M, n_samples, n_classes)

    def loss(self, X, t):
        import torch

        logits = self.logits(X)
        M, B, C = logits.shape
        ce = torch.nn.functional.cross_entropy(logits.reshape(M * B, C), t.repeat(M),
                                               reduction="sum") / B
        penalty = sum((self.alpha * W * W).sum() for W in self.weights) / (2 * B)
        return ce + penalty

    def state(self):
        return [p.detach().clone() for p in self.parameters()]



def _adam(params, learning_rate: float):
    """Adam over ``params``, fused into one kernel where PyTorch has it (CPU, CUDA): the same
    update, and on the CPU several times faster than the per-tensor loop it uses otherwise,
    which made the optimizer step about a quarter of chapter 8's small classifiers' time."""
    import torch

    return torch.optim.Adam(params, lr=learning_rate, fused=params[0].device.type in ("cpu", "cuda"))


def _train_batch(net: _MLPBatch, X, t, X_dev, t_dev, *, max_iter: int, batch_size: int,
                 learning_rate: float, patience: int, seed: int,
                 autocast: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Adam with early stopping on dev accuracy, per network; keeps each network's best epoch.

    A network whose dev accuracy has not improved for ``patience`` epochs leaves the batch
    (its parameters and Adam moments are sliced out), so the others train on alone at
    less cost; Adam is elementwise, so this does not change their training.

    X, X_dev : (n, n_features), the same inputs for every network, or (M, n, n_features),
    each network its own (then none leaves early: ``patience`` must be at least ``max_iter``).
    autocast : "bf16" runs the training steps' forward and backward passes in bfloat16
    autocast (weights, Adam and the dev evaluation stay float32)
    Returns the best dev accuracy and the epoch it was reached, each of shape (M,).
    """
    import torch

    check(X.dim() == 2 or patience >= max_iter,
          f"inputs per network need patience >= max_iter, got {patience} < {max_iter}")
    params = net.parameters()
    opt = _adam(params, learning_rate)
    M = params[0].shape[0]
    best = np.full(M, -1.0)
    best_epoch = np.zeros(M, dtype=int)
    best_state = net.state()
    waiting = np.zeros(M, dtype=int)
    active = np.arange(M)  # the global index of every network still in the batch
    g = torch.Generator().manual_seed(int(seed))
    n = len(t)
    device = params[0].device
    for epoch in range(max_iter):
        order = torch.randperm(n, generator=g).to(device)  # drawn on the CPU: the same order anywhere
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast is not None):
                loss = net.loss(X[..., idx, :], t[idx])
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = (net.logits(X_dev).argmax(-1) == t_dev).float().mean(-1).cpu().numpy()
        improved = acc > best[active]
        if improved.any():
            rows = torch.from_numpy(active[improved]).to(device)
            for s, p in zip(best_state, net.parameters(), strict=True):
                s[rows] = p.detach()[torch.from_numpy(improved).to(device)]
        best[active] = np.where(improved, acc, best[active])
        best_epoch[active] = np.where(improved, epoch + 1, best_epoch[active])
        waiting[active] = np.where(improved, 0, waiting[active] + 1)
        keep = waiting[active] < patience
        if not keep.any():
            break
        if not keep.all():
            opt = net.select(torch.from_numpy(keep), opt, learning_rate)
            active = active[keep]
    net.set_parameters([s.clone().requires_grad_() for s in best_state])
    net.alpha = net.alpha_all
    return best, best_epoch


class MLPProbe:
    """Two hidden ReLU layers, Adam, L2 regulariser, early stopping on a dev split.

    Follows the scikit-learn estimator contract; ``fit(X, y, X_dev=..., y_dev=...)`` takes
    the dev split used for early stopping (without one, a seeded tenth of the training
    data is held out). Features are standardized with the training statistics.

    Parameters
    ----------
    hidden : sizes of the two hidden layers
    alpha : the L2 regulariser as scikit-learn's ``MLPClassifier(alpha=...)`` means it:
        ``alpha / (2 B) * sum ||W||^2`` (biases excluded) added to the mean cross-entropy of
        a mini-batch of B points
    max_iter : epochs at most; patience : epochs without dev improvement before stopping
    batch_size, learning_rate : Adam's mini-batches and step size
    random_state : seed of the initialization and of the mini-batch order

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 2))
    >>> y = (X[:, 0] * X[:, 1] > 0).astype(int)       # XOR: not linearly separable
    >>> probe = MLPProbe(hidden=(32, 32), alpha=1e-2, random_state=0).fit(X, y, X_dev=X, y_dev=y)
    >>> probe.score(X, y) > 0.95
    True
    """

    def __init__(self, hidden: tuple[int, int] = (128, 128), alpha: float = 1e-4, *,
                 max_iter: int = 1000, patience: int = 10, batch_size: int = 256,
                 learning_rate: float = 1e-3, random_state: int = 0):
        self.hidden = hidden
        self.alpha = alpha
        self.max_iter = max_iter
        self.patience = patience
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, *, X_dev: np.ndarray | None = None,
            y_dev: np.ndarray | None = None) -> MLPProbe:
        import torch

        _check_mlp_settings(self.hidden, [self.alpha], self.max_iter, self.patience,
                            self.batch_size, self.learning_rate)
        check_Xy(X, y)
        if X_dev is None:
            hold = np.random.default_rng(self.random_state).permutation(len(X))[: max(1, len(X) // 10)]
            keep = np.setdiff1d(np.arange(len(X)), hold)
            X, y, X_dev, y_dev = X[keep], np.asarray(y)[keep], X[hold], np.asarray(y)[hold]
        check_Xy(X_dev, y_dev, name="X_dev")
        self.classes_ = np.unique(y)
        check(len(self.classes_) >= 2, f"y must hold at least 2 labels, got {len(self.classes_)}")
        _, self.mean_, self.scale_ = _standardize(X)
        Xt = _torch_standardize(X, self.mean_, self.scale_)
        Xd = _torch_standardize(X_dev, self.mean_, self.scale_)
        t, td = _class_codes(y, self.classes_), _class_codes(y_dev, self.classes_)
        torch.manual_seed(self.random_state)
        self.net_ = _MLPBatch(X.shape[1], tuple(self.hidden), len(self.classes_), [self.alpha],
                              [self.random_state])
        best, epoch = _train_batch(self.net_, Xt, t, Xd, td, max_iter=self.max_iter,
                                   batch_size=self.batch_size, learning_rate=self.learning_rate,
                                   patience=self.patience, seed=self.random_state)
        self.dev_accuracy_, self.n_iter_ = float(best[0]), int(epoch[0])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        import torch

        check_Xy(X)
        with torch.no_grad():
            logits = self.net_.logits(_torch_standardize(X, self.mean_, self.scale_))[0]
        return self.classes_[logits.argmax(-1).numpy()]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on (X, y)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))


def _check_mlp_settings(hidden, alpha_grid, max_iter, patience, batch_size, learning_rate) -> None:
    check(len(hidden) == 2 and all(int(h) >= 1 for h in hidden),
          f"hidden must be two layer sizes >= 1, got {hidden}")
    check(len(alpha_grid) >= 1 and all(v >= 0 for v in alpha_grid),
          f"alpha must be >= 0, got {list(alpha_grid)}")
    check(max_iter >= 1, f"max_iter must be >= 1, got {max_iter}")
    check(patience >= 1, f"patience must be >= 1, got {patience}")
    check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    check(learning_rate > 0, f"learning_rate must be > 0, got {learning_rate}")


@dataclass(frozen=True)
class ProbeGridResult:
    """The MLP-probe grid search: the chosen setting and its test accuracy over seeds.

    dev : one row per candidate (hidden1, hidden2, alpha, dev accuracy, epochs), a pandas table
    test_accuracy : ndarray of shape (n_seeds,), the chosen setting retrained with each seed
    """

    hidden: tuple[int, int]
    alpha: float
    dev_accuracy: float
    test_accuracy: np.ndarray
    dev: object

    @property
    def mean(self) -> float:
        return float(np.mean(self.test_accuracy))

    @property
    def sd(self) -> float:
        return float(np.std(self.test_accuracy, ddof=1)) if len(self.test_accuracy) > 1 else 0.0


def probe_grid(X_train: np.ndarray, y_train: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray,
               X_test: np.ndarray, y_test: np.ndarray, *,
               hidden_sizes: Sequence[int] = HIDDEN_SIZES,
               alpha_grid: Sequence[float] = MLP_ALPHA_GRID,
               n_seeds: int = 5, max_iter: int = 1000, patience: int = 10, batch_size: int = 256,
               learning_rate: float = 1e-3, random_state: int = 0, device=None,
               setting: tuple[Sequence[int], float] | None = None,
               autocast: str | None = None, store=None) -> ProbeGridResult:
    """Grid search of the MLP probe, chosen on dev, then retrained with ``n_seeds`` seeds.

    The defaults are Zhou & Srikumar's (2022) grid: hidden sizes {32, 64, 128, 256}^2 and
    alpha 1e-7 .. 1 (8 values). Every (hidden1, hidden2) shape trains its alpha variants
    together as one batched network;
    the chosen setting's seeds are trained together too.

    With ``setting=((hidden1, hidden2), alpha)`` there is no search: that setting is trained
    as the search would train it (``dev`` then has its one row) and retrained with the seeds,
    for a representation that reuses the choice made on another (such as a further
    fine-tuning seed of the same task); ``hidden_sizes`` and ``alpha_grid`` are then not
    searched.

    Parameters
    ----------
    X_train, X_dev, X_test : ndarray of shape (n_samples, n_features)
    y_train, y_dev, y_test : ndarray of shape (n_samples,)
    hidden_sizes : candidate sizes of each hidden layer (all pairs are tried)
    alpha_grid : candidate regularisers (scikit-learn's ``alpha``, see :class:`MLPProbe`)
    device : where the networks train (:func:`ftgeo._util.resolve_device`; default
        ``FTGEO_DEVICE``, else a GPU when there is one); initialization and mini-batch order
        are drawn on the CPU either way
    autocast : None (float32, as scikit-learn) or "bf16": the training steps in bfloat16
        autocast, about 1.4x faster an epoch on a CPU with AVX-512 BF16 (the grid on 15,000 x
        384 points: 5.6 s an epoch against 8.0 s), but 1.13x over whole searches of real
        representations, whose chosen settings and epochs differ; the weights, Adam and every
        accuracy stay float32
    store : the artifact cache (default ``Store()``; ``False``: no cache). The search and the
        seeds' test accuracies are kept under the data (every split's X and y), every
        setting above and the device type: a second call with the same ones (chapter 6 on
        the states chapter 3 probed, a rerun of a chapter, an interrupted build) trains
        nothing. On a CPU with the same number of torch threads a rerun gives the same
        figures bit for bit, so there the cache changes no result.
    """
    import pandas as pd

    from ._util import resolve_device

    device = resolve_device(device)

    _check_mlp_settings((1, 1), alpha_grid, max_iter, patience, batch_size, learning_rate)
    n_seeds = check_count(n_seeds, "n_seeds")
    check_probe_autocast(autocast)
    if autocast == "bf16" and device.type == "cpu" and not _WARNED_BF16:
        from .finetune import _native_bf16

        if not _native_bf16():
            _WARNED_BF16.append(True)
            log.warning("MLP probes with autocast='bf16' on a CPU without native bfloat16 "
                        "(AVX-512 BF16 or AMX): slower than float32; set it to None here")
    check(len(hidden_sizes) >= 1 and all(int(h) >= 1 for h in hidden_sizes),
          f"hidden_sizes must be sizes >= 1, got {hidden_sizes}")
    for name, X, y in (("X_train", X_train, y_train), ("X_dev", X_dev, y_dev),
                       ("X_test", X_test, y_test)):
        check_Xy(X, y, name=name)
    classes = np.unique(y_train)
    check(len(classes) >= 2, f"y_train must hold at least 2 labels, got {len(classes)}")
    if setting is None:
        shapes = [((h1, h2), alpha_grid) for h1 in hidden_sizes for h2 in hidden_sizes]
    else:
        try:
            (h1, h2), alpha = setting
            shape = (check_count(h1, "h1"), check_count(h2, "h2"))
            good = isinstance(alpha, (int, float, np.number)) and not isinstance(alpha, bool) and alpha >= 0
        except (TypeError, ValueError):
            good = False
        check(good, "setting must be ((hidden1, hidden2), alpha) with whole sizes >= 1 and "
              f"alpha >= 0, got {setting!r}")
        shapes = [(shape, [float(alpha)])]
    train = dict(max_iter=max_iter, batch_size=batch_size, learning_rate=learning_rate,
                 patience=patience, autocast=autocast)

    def build():
        dev, test = _search(X_train, y_train, X_dev, y_dev, X_test, y_test, classes, shapes,
                            n_seeds=n_seeds, random_state=random_state, device=device, **train)
        return {**{c: dev[c].to_numpy() for c in _DEV_COLUMNS}, "test_accuracy": test}, {}

    if store is False:
        arrays, _ = build()
    else:
        from .store import Store

        store = Store() if store is None else store
        parts = {"what": "probe-grid", "version": PROBES_VERSION, "device": device.type,
                 "data": array_digest(X_train, _codes(y_train), X_dev, _codes(y_dev), X_test,
                                      _codes(y_test)),
                 "shapes": [[list(map(int, h)), [float(a) for a in alphas]] for h, alphas in shapes],
                 "n_seeds": n_seeds, "random_state": int(random_state), **train}
        entry, cached = store.get_or_build("probe-grid", parts, build)
        if cached:
            log.info("MLP probe grid: from the cache, nothing trained")
        arrays = {k: np.asarray(entry[k]) for k in (*_DEV_COLUMNS, "test_accuracy")}
    dev = pd.DataFrame({c: arrays[c] for c in _DEV_COLUMNS})
    hidden, alpha, dev_accuracy = _chosen(dev)
    return ProbeGridResult(hidden, alpha, dev_accuracy, arrays["test_accuracy"].astype(float), dev)


def _chosen(dev) -> tuple[tuple[int, int], float, float]:
    """The setting with the best dev accuracy (the first in grid order among ties):
    ``((hidden1, hidden2), alpha, dev accuracy)``."""
    top = dev.sort_values("dev_accuracy", ascending=False, kind="stable").iloc[0]
    return (int(top.hidden1), int(top.hidden2)), float(top.alpha), float(top.dev_accuracy)


def _codes(y: np.ndarray) -> np.ndarray:
    """Labels as an array whose bytes identify them (strings as unicode, not object pointers)."""
    y = np.asarray(y)
    return y.astype(str) if y.dtype == object else y


def _search(X_train, y_train, X_dev, y_dev, X_test, y_test, classes, shapes, *, n_seeds: int,
            random_state: int, device, max_iter: int, batch_size: int, learning_rate: float,
            patience: int, autocast: str | None):
    """:func:`probe_grid`'s training: every shape's alphas as one batch, chosen on dev, then
    the chosen setting with ``n_seeds`` seeds. Returns (the dev table, the seeds' test
    accuracies)."""
    import pandas as pd
    import torch

    _, mean, scale = _standardize(X_train)
    Xt, Xd, Xs = (_torch_standardize(X, mean, scale).to(device) for X in (X_train, X_dev, X_test))

    t, td, ts = (_class_codes(y, classes).to(device) for y in (y_train, y_dev, y_test))
    rows = []
    for hidden, alphas in progress(shapes, desc="MLP grid", unit="shape"):
        net = _MLPBatch(X_train.shape[1], hidden, len(classes), alphas,
                        [random_state] * len(alphas)).to(device)
        best, epochs = _train_batch(net, Xt, t, Xd, td, max_iter=max_iter, batch_size=batch_size,
                                    learning_rate=learning_rate, patience=patience,
                                    seed=random_state, autocast=autocast)
        rows += [{"hidden1": hidden[0], "hidden2": hidden[1], "alpha": a, "dev_accuracy": acc,
                  "epochs": int(ep)} for a, acc, ep in zip(alphas, best, epochs, strict=True)]
    dev = pd.DataFrame(rows)
    hidden, alpha, _ = _chosen(dev)
    seeds = [random_state + 1 + k for k in range(n_seeds)]
    net = _MLPBatch(X_train.shape[1], hidden, len(classes), [alpha] * n_seeds, seeds).to(device)
    _train_batch(net, Xt, t, Xd, td, max_iter=max_iter, batch_size=batch_size,
                 learning_rate=learning_rate, patience=patience, seed=random_state + 1,
                 autocast=autocast)
    with torch.no_grad():
        test = (net.logits(Xs).argmax(-1) == ts).float().mean(-1).cpu().numpy().astype(float)
    return dev, test


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


# --------------------------------------------------------------------------------------
# Probes before and after fine-tuning (chapters 2 and 3): fitting, tables, the record
# --------------------------------------------------------------------------------------

def probe_states(X: Mapping | Iterable, data: Mapping, probe: Callable = linear_probe_layers,
                 **settings) -> dict:
    """Fit ``probe`` on each (task, state) representation, on its train, dev and test splits.

    Parameters
    ----------
    X : {(task, state): {split: X}} or an iterable of such pairs (e.g.
        :func:`ftgeo.finetune.iter_state_representations`, consumed one at a time), with
        splits "train", "dev" and "test"; X as ``probe`` takes it: ndarray of shape
        (n_layers, n_samples, n_features) for :func:`linear_probe_layers`, (n_samples,
        n_features) for :func:`probe_grid`
    data : {task: {split: TaskData}}; the labels ``y`` of each split are read from it
    probe : called as ``probe(X_train, y_train, X_dev, y_dev, X_test, y_test, **settings)``

    Returns
    -------
    {(task, state): what ``probe`` returns}, in the order of ``X``

    >>> rng = np.random.default_rng(0)
    >>> class Split:
    ...     y = np.repeat([0, 1], 20)
    >>> X = {("t", "pretrained"): {s: (Split.y[:, None] * 4 + rng.normal(size=(40, 3)))[None]
    ...                            for s in ("train", "dev", "test")}}
    >>> fitted = probe_states(X, {"t": dict.fromkeys(("train", "dev", "test"), Split())})
    >>> fitted["t", "pretrained"].test_accuracy.tolist()
    [1.0]
    """
    pairs = X.items() if isinstance(X, Mapping) else X
    fitted = {}
    for key, splits in pairs:
        y = {split: data[key[0]][split].y for split in ("train", "dev", "test")}
        fitted[key] = probe(splits["train"], y["train"], splits["dev"], y["dev"], splits["test"],
                            y["test"], **settings)
    return fitted


#: How :func:`probe_grid_seeds` tunes the probe on further fine-tuning seeds: "every seed"
#: searches the grid on every state (Zhou & Srikumar tune each representation, so a further
#: seed's figure is what their protocol gives on it); "first seed" retrains the first seed's
#: choice for the same task and state, without a search (with three seeds, the later seeds'
#: searches are 10 of chapter 3's 20 and 6 of chapter 6's 10).
GRID_SEARCHES = ("every seed", "first seed")


def check_grid_search(search: str) -> None:
    """Refuse a ``grid_search`` that is not one of :data:`GRID_SEARCHES`."""
    check(isinstance(search, str) and search in GRID_SEARCHES,
          f"grid_search must be one of {list(GRID_SEARCHES)}, got {search!r}")


def check_probe_autocast(autocast: str | None, name: str = "autocast") -> None:
    """Refuse an MLP-probe ``autocast`` other than None (float32) and "bf16"; ``name`` is what
    the message calls it."""
    check(autocast is None or autocast == "bf16",
          f"{name} must be None (float32) or 'bf16', got {autocast!r}")


def check_probe_settings(grid_search: str, probe_autocast: str | None) -> None:
    """The chapters' probe parameters, checked before any work starts."""
    check_grid_search(grid_search)
    check_probe_autocast(probe_autocast, "probe_autocast")


def seed_setting(search: str, first: ProbeGridResult | None):
    """The ``setting`` to give :func:`probe_grid` on a further fine-tuning seed's state:
    None (search) for "every seed" or where the first seed has no result, else the setting
    ``first`` chose.

    >>> seed_setting("every seed", None) is None
    True
    """
    check_grid_search(search)
    if search == "every seed" or first is None:
        return None
    return first.hidden, first.alpha


def probe_grid_seeds(X_seeds: Sequence[Mapping], data: Mapping, *, grid_search: str = "every seed",
                     **grid) -> list[dict]:
    """:func:`probe_grid` on each (task, state) of each fine-tuning seed's representations.

    X_seeds : one {(task, state): {split: X}} per fine-tuning seed, the first seed's first
    grid_search : :data:`GRID_SEARCHES`; with "first seed", a (task, state) of a later seed
        retrains the setting the first seed chose for it
    grid : the rest of :func:`probe_grid`'s keyword arguments

    Returns one {(task, state): ProbeGridResult} per seed, as :func:`probe_states`.
    """
    check_grid_search(grid_search)
    check(len(X_seeds) >= 1, "X_seeds must hold at least the first seed's representations")
    first = probe_states(X_seeds[0], data, probe_grid, **grid)
    fitted = [first]
    for X in X_seeds[1:]:
        fitted.append({})
        for key, splits in (X.items() if isinstance(X, Mapping) else X):
            fitted[-1].update(probe_states({key: splits}, data, probe_grid,
                                           setting=seed_setting(grid_search, first.get(key)), **grid))
    return fitted


#: A change of accuracy smaller than this is rounding, not a change (means of equal figures
#: can differ in the last bits).
CHANGE_TOL = 1e-9


def probing_table(mlp: Mapping[tuple[str, str], ProbeGridResult],
                  similarity: Mapping[tuple[str, str], float], *,
                  seeds: Sequence[Mapping[tuple[str, str], ProbeGridResult]] | None = None,
                  similarity_seeds: Sequence[Mapping[tuple[str, str], float]] | None = None):
    """Chapter 3's result table (pandas DataFrame, one row per task, index ``task``).

    Columns: the MLP probe's mean and sd test accuracy before ("pretrained") and after
    ("finetuned") fine-tuning, their difference ("change"), the train-test spatial
    similarity before and after, "fine-tuning helps" ("yes" where the change is > 0) and
    the number of "fine-tuning seeds". Before fine-tuning the sd is over probe seeds; after
    it, with several fine-tuning seeds, the mean and sd are over fine-tuning seeds (each
    seed's figure the mean over its probe seeds) and the similarity is the mean over the
    seeds where it is defined; with one, as before fine-tuning.

    Parameters
    ----------
    mlp : {(task, state): ProbeGridResult} for states "pretrained" and "finetuned"
    similarity : {(task, state): Pearson r} (:func:`ftgeo.spatial.similarity`)
    seeds, similarity_seeds : one such mapping per fine-tuning seed, holding (at least) the
        "finetuned" state, the first seed's being ``mlp`` and ``similarity``; None: one seed

    >>> r = lambda *acc: ProbeGridResult((8, 8), 1e-3, 0.9, np.array(acc), None)
    >>> mlp = {("pos", "pretrained"): r(0.5, 0.6), ("pos", "finetuned"): r(0.8, 0.8)}
    >>> sim = {("pos", "pretrained"): 0.9, ("pos", "finetuned"): np.nan}
    >>> t = probing_table(mlp, sim, seeds=[mlp, {("pos", "finetuned"): r(0.6, 0.6)}],
    ...                   similarity_seeds=[sim, {("pos", "finetuned"): 0.7}])
    >>> t.loc["pos", ["MLP finetuned", "change", "similarity finetuned"]].round(3).tolist()
    [0.7, 0.15, 0.7]
    """
    import pandas as pd

    seeds = [mlp] if seeds is None else list(seeds)
    similarity_seeds = [similarity] if similarity_seeds is None else list(similarity_seeds)
    rows = {}
    for task in keyed_tasks(mlp):
        a = mlp[task, "pretrained"]
        means = np.array([result[task, "finetuned"].mean for result in seeds])
        sims = np.array([np.nan if sim.get((task, "finetuned")) is None else sim[task, "finetuned"]
                         for sim in similarity_seeds], dtype=float)
        several = len(means) > 1
        rows[task] = {"MLP pretrained": a.mean, "sd pretrained": a.sd,
                      "MLP finetuned": float(means.mean()),
                      "sd finetuned": float(np.std(means, ddof=1)) if several
                      else mlp[task, "finetuned"].sd,
                      "change": float(means.mean()) - a.mean,
                      "similarity pretrained": similarity[task, "pretrained"],
                      "similarity finetuned": float(np.nanmean(sims)) if np.isfinite(sims).any()
                      else np.nan,
                      "fine-tuning seeds": len(means)}
    table = pd.DataFrame(rows).T.rename_axis("task")
    table["fine-tuning seeds"] = table["fine-tuning seeds"].astype(int)
    # a change within rounding of 0 (means of equal accuracies) is no help
    table["fine-tuning helps"] = np.where(table["change"] > CHANGE_TOL, "yes", "no")
    return table


def grid_choices(mlp: Mapping[tuple[str, str], ProbeGridResult]):
    """The setting :func:`probe_grid` chose for each (task, state) (pandas DataFrame, rows
    "task / state"): hidden sizes, alpha, and its dev accuracy rounded to 4 places."""
    import pandas as pd

    return pd.DataFrame({f"{task} / {state}": {"hidden": r.hidden, "alpha": r.alpha,
                                               "dev accuracy": round(r.dev_accuracy, 4)}
                         for (task, state), r in mlp.items()}).T


def probing_summary(table) -> dict[str, object]:
    """What chapter 3's summary cites from :func:`probing_table`.

    Returns
    -------
    "n_helped": tasks whose change is > 0; "not_helped": the others, comma-separated, or
    "none"; "mean_change": the mean change; "n_sim_drop": tasks whose similarity fell;
    "lowest_sim_task", "lowest_sim": the lowest similarity after fine-tuning;
    "lowest_is_unhelped": "is" if that task is one fine-tuning did not help, else "is not".

    >>> import pandas as pd
    >>> table = pd.DataFrame({"change": [0.1, -0.2], "similarity pretrained": [0.9, 0.5],
    ...                       "similarity finetuned": [0.8, 0.1]}, index=["pos", "dep"])
    >>> s = probing_summary(table)
    >>> s["n_helped"], s["not_helped"], s["n_sim_drop"], s["lowest_sim_task"], s["lowest_is_unhelped"]
    (1, 'dep', 2, 'dep', 'is')
    >>> probing_summary(table.assign(**{"similarity finetuned": np.nan}))["lowest_sim_task"]
    'none'
    """
    tasks = list(table.index)
    helped = [t for t in tasks if table.loc[t, "change"] > CHANGE_TOL]
    not_helped = [t for t in tasks if t not in helped]
    dropped = [t for t in tasks
               if table.loc[t, "similarity finetuned"] < table.loc[t, "similarity pretrained"]]
    similarity = table["similarity finetuned"].dropna()  # NaN: not separable, or < 3 labels
    lowest = similarity.idxmin() if len(similarity) else "none"
    return {"n_helped": len(helped), "not_helped": ", ".join(not_helped) if not_helped else "none",
            "mean_change": float(table["change"].mean()), "n_sim_drop": len(dropped),
            "lowest_sim_task": lowest, "lowest_sim": float(similarity.get(lowest, np.nan)),
            "lowest_is_unhelped": "is" if lowest in not_helped else "is not"}


def probing_tasks(mlp: Mapping[tuple[str, str], ProbeGridResult],
                  similarity: Mapping[tuple[str, str], float], clusters: Mapping, *,
                  seeds: Sequence[Mapping[tuple[str, str], ProbeGridResult]] | None = None,
                  similarity_seeds: Sequence[Mapping[tuple[str, str], float]] | None = None
                  ) -> dict:
    """The per-task part of chapter 3's record: {task: :class:`ftgeo.results.ProbingTask`}.

    Parameters
    ----------
    mlp, similarity, seeds, similarity_seeds : as for :func:`probing_table`
    clusters : {(task, state, split): ClusterSummary} for splits "train" and "test"
        (:func:`ftgeo.spatial.directprobe_summary`) of the first fine-tuning seed: the
        label pairs the similarity correlates are those of the labels both splits hold, and
        a state counts as separable when both splits are linearly separable; their fit times
        are recorded
    """
    from .directprobe import shared_label_pairs
    from .results import ProbingTask

    seeds = [mlp] if seeds is None else list(seeds)
    similarity_seeds = [similarity] if similarity_seeds is None else list(similarity_seeds)

    def pairs(task, state):
        return shared_label_pairs(clusters[task, state, "train"].classes,
                                  clusters[task, state, "test"].classes)

    def separable(task, state):
        return all(clusters[task, state, split].linearly_separable for split in ("train", "test"))

    def finite(x):
        return None if x is None or not np.isfinite(x) else float(x)

    return {t: ProbingTask(mlp[t, "pretrained"].test_accuracy.tolist(),
                           mlp[t, "finetuned"].test_accuracy.tolist(),
                           similarity[t, "pretrained"], similarity[t, "finetuned"],
                           pairs(t, "pretrained"), pairs(t, "finetuned"),
                           separable(t, "pretrained"), separable(t, "finetuned"),
                           mlp_finetuned_seeds=[r[t, "finetuned"].mean for r in seeds],
                           similarity_finetuned_seeds=[finite(s.get((t, "finetuned")))
                                                       for s in similarity_seeds],
                           directprobe_seconds={f"{state}/{split}": clusters[t, state, split].fit_seconds
                                                for state in ("pretrained", "finetuned")
                                                for split in ("train", "test")})
            for t in keyed_tasks(mlp)}
