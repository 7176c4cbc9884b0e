"""The isotropy (chapter 8) and CKA (chapter 9) analyses of fine-tuned runs, as functions:
task data and runs in, tables and the chapter's results record out. The notebooks call
these and draw; the measures themselves are in :mod:`ftgeo.isotropy` and :mod:`ftgeo.cka`.

    study = isotropy_study(runs, data, tasks, max_items=5000)
    study.last_layer()            # the measures at each task's last layer, per state
    enhancement_table(study)      # the paper's enhancement evaluation, per method and state
    study.record(**header)        # results.IsotropyRecord

    study = cka_study(runs, data, tasks)
    study.blocks["pos", "finetuned"].blocks
    study.record(**header)        # results.CKARecord

``header`` holds the fields every record shares (:func:`ftgeo.results.header`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import cka, isotropy, results, spatial
from ._util import check, one_torch_thread, progress
from .finetune import state_steps
from .probes import linear_probe_layers

__all__ = [
    "CKAStudy",
    "ENHANCEMENTS",
    "ENHANCEMENT_CLASSIFIER",
    "IsotropyStudy",
    "STATES",
    "VARIANTS",
    "classifier_accuracies",
    "classifier_settings",
    "cka_study",
    "enhancement_accuracy",
    "enhancement_facts",
    "enhancement_table",
    "enhancement_variants",
    "isotropy_study",
    "item_words",
    "layer_isotropy",
    "probe_accuracy",
    "sentence_holdout",
    "surface_property",
    "token_sentences",
]

STATES = results.STATES
ENHANCEMENTS = isotropy.ENHANCEMENTS
#: The classifier Rajaee & Pilehvar (2021) train on frozen, enhanced representations, as their
#: code does (Sara-Rajaee/clusterbased_isotropy_enhancement, its classification part): one
#: hidden ReLU layer of ``hidden`` units, no regulariser, Adam with step ``learning_rate``,
#: mini-batches of ``batch_size``, ``epochs`` epochs, the epoch with the best dev accuracy kept.
#: The vectors go in as they are: a standardizing classifier would undo what the enhancements
#: do to the scale of each direction. One change: the code's step is 3e-5, for an input of 64
#: token vectors of 768 features flattened; on one item vector (384 features here) 10 epochs at
#: that step leave the classifier near chance on small sets, and underfit on large ones (on
#: MiniLM's pretrained last layer, a held-out fifth of POS's training sentences: 0.65 accuracy,
#: against 0.89 at 1e-3), so the step is Adam's default, 1e-3. ``{"learning_rate": 3e-5}`` as
#: the changes of :func:`classifier_settings` restores the code's.
ENHANCEMENT_CLASSIFIER = {"hidden": 100, "learning_rate": 1e-3, "batch_size": 32, "epochs": 10}


def classifier_settings(changes: Mapping[str, float] | None = None) -> dict[str, float]:
    """:data:`ENHANCEMENT_CLASSIFIER` with ``changes`` applied (None or {}: as it is).

    >>> classifier_settings({"learning_rate": 1e-3})["learning_rate"]
    0.001
    """
    changes = dict(changes or {})
    unknown = sorted(set(changes) - set(ENHANCEMENT_CLASSIFIER))
    check(not unknown, f"classifier: unknown setting(s) {unknown}; use {sorted(ENHANCEMENT_CLASSIFIER)}")
    settings = {**ENHANCEMENT_CLASSIFIER, **changes}
    for name in ("hidden", "batch_size", "epochs"):
        v = settings[name]
        check(isinstance(v, (int, np.integer)) and v >= 1,
              f"classifier: {name} must be an integer >= 1, got {v!r}")
    rate = settings["learning_rate"]
    check(rate > 0, f"classifier: learning_rate must be > 0, got {rate!r}")
    return settings


#: The representations the ridge probes of :func:`enhancement_variants` compare (what removing
#: directions costs a standardized linear probe, per layer): untouched, the top D principal
#: directions removed (Mu & Viswanath 2018), D random directions removed (the control), and
#: the top D removed within each k-means cluster (Rajaee & Pilehvar 2021b).
VARIANTS = ("none", "top D removed", "random D removed", "per cluster")
#: An accuracy difference the chapter's summary counts as a change: half a point, about one
#: standard error of an accuracy near 0.9 on 3,600 test items (sqrt(0.9 * 0.1 / 3600) = 0.005).
ACCURACY_MARGIN = 0.005


# ---------------------------------------------------------------------------------------------
# What each item stands for
# ---------------------------------------------------------------------------------------------


def item_words(d) -> np.ndarray | None:
    """The word each item of ``d`` (a :class:`ftgeo.TaskData`) stands for, lower-cased: the
    word itself, or the dependent of a pair; None for sentence tasks."""
    if d.item_kind == "sentence":
        return None
    column = 1 if d.item_kind == "word" else 2
    return np.array([d.sentences[s][w].lower() for s, w in d.items[:, [0, column]]])


def surface_property(d) -> tuple[str, np.ndarray]:
    """Per item, the surface property the top directions are tested for: ``("log
    frequency", ...)``, the log count of the item's word in ``d``'s sentences, or for
    sentence tasks ``("log length", ...)``, the log number of words (both sentences of a pair)."""
    if d.item_kind == "sentence":
        lengths = [len(d.sentences[s]) + (len(d.second[s]) if d.second else 0) for s in d.items[:, 0]]
        return "log length", np.log(lengths)
    counts = Counter(w.lower() for sentence in d.sentences for w in sentence)
    return "log frequency", np.log([counts[w] for w in item_words(d)])


# ---------------------------------------------------------------------------------------------
# Probes on enhanced representations
# ---------------------------------------------------------------------------------------------


def sentence_holdout(
    items: np.ndarray, fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``items`` (column 0: the sentence) split by sentence into the rows a probe is
    fitted on and the rows its L2 weight is chosen on: ``(fit, dev)``, ``fraction`` of the
    sentences (at least one) held out, chosen with ``seed``. No sentence is on both sides."""
    check(0 < fraction < 1, f"fraction must lie in (0, 1), got {fraction}")
    sentences = np.unique(items[:, 0])
    n_dev = max(1, int(round(fraction * len(sentences))))
    dev = np.random.default_rng(seed).permutation(sentences)[:n_dev]
    is_dev = np.isin(items[:, 0], dev)
    return np.flatnonzero(~is_dev), np.flatnonzero(is_dev)


def probe_accuracy(
    train: np.ndarray,
    test: np.ndarray,
    y_train: np.ndarray,
    y_test: np.ndarray,
    fit: np.ndarray,
    dev: np.ndarray,
) -> float:
    """Test accuracy of chapter 1's ridge probe fitted on ``train[fit]``, its L2 weight chosen
    on ``train[dev]``; NaN when the fitting rows hold a single label (tiny smoke runs)."""
    if len(np.unique(y_train[fit])) < 2:
        return float("nan")
    result = linear_probe_layers(
        train[fit][None], y_train[fit], train[dev][None], y_train[dev], test[None], y_test
    )
    return float(result.test_accuracy[0])


def enhancement_variants(
    X_train: np.ndarray, X_test: np.ndarray, fit: np.ndarray, n_removed: int, n_clusters: int, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{variant: (train, test)}`` for each of :data:`VARIANTS`; every transformation is
    learned on ``X_train[fit]`` only and applied to both splits."""
    out = {"none": (X_train, X_test)}
    removers = {
        "top D removed": isotropy.DirectionRemover(n_removed),
        "random D removed": isotropy.DirectionRemover(n_removed, "random", random_state=seed),
        "per cluster": isotropy.ClusterDirectionRemover(
            n_removed, min(n_clusters, len(fit)), random_state=seed
        ),
    }
    for name, remover in removers.items():
        remover.fit(X_train[fit])
        out[name] = (remover.transform(X_train), remover.transform(X_test))
    return out


def classifier_accuracies(
    train: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    y_train: np.ndarray,
    y_test: np.ndarray,
    fit: np.ndarray,
    dev: np.ndarray,
    *,
    n_inits: int = 1,
    seed: int = 0,
    classifier: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """``{name: test accuracy}`` of the paper's classifier (:data:`ENHANCEMENT_CLASSIFIER`, with
    the changes in ``classifier``) trained on ``train[name][fit]`` for each representation
    ``name``, its epoch chosen on ``train[name][dev]``: the mean over ``n_inits``
    initializations (seeds ``seed``, ``seed + 1``, ...). One network per representation, trained
    side by side, each with the same initial weights and the same mini-batches. NaN when the
    fitting rows hold one label.

    train, test : name -> ndarray of shape (n_samples, n_features), the same names and shapes;
    used as they are (not standardized)

    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 200)
    >>> X = rng.normal(size=(400, 8)) + 3.0 * y[:, None]
    >>> fit, dev = np.arange(0, 400, 2), np.arange(1, 400, 2)
    >>> classifier_accuracies({"X": X}, {"X": X}, y, y, fit, dev)["X"] > 0.95
    True
    """
    import torch

    from .probes import _class_codes, _MLPBatch, _train_batch

    names = list(train)
    check(names and set(test) == set(names), f"train and test must name the same representations, "
          f"got {sorted(train)} and {sorted(test)}")
    shapes = {train[k].shape[1:] for k in names} | {test[k].shape[1:] for k in names}
    check(len(shapes) == 1 and all(train[k].ndim == 2 and len(train[k]) == len(train[names[0]])
                                   and test[k].shape == test[names[0]].shape for k in names),
          "train and test: every representation must be (n_samples, n_features) with the same shape")
    check(isinstance(n_inits, (int, np.integer)) and n_inits >= 1,
          f"n_inits must be an integer >= 1, got {n_inits!r}")
    check(len(fit) >= 1 and len(dev) >= 1, f"fit and dev need a row each, got {len(fit)} and {len(dev)}")
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    classes = np.unique(y_train[fit])
    if len(classes) < 2:
        return dict.fromkeys(names, float("nan"))

    def stack(arrays, rows=slice(None)):
        return torch.from_numpy(np.stack([np.asarray(arrays[k][rows], dtype=np.float32) for k in names]))

    c = classifier_settings(classifier)
    X_fit, X_dev, X_test = stack(train, fit), stack(train, dev), stack(test)
    t_fit, t_dev = _class_codes(y_train[fit], classes), _class_codes(y_train[dev], classes)
    correct = np.zeros(len(names))
    for init in range(seed, seed + n_inits):
        net = _MLPBatch(X_fit.shape[-1], (c["hidden"],), len(classes), [0.0] * len(names),
                        [init] * len(names))
        with one_torch_thread():
            _train_batch(net, X_fit, t_fit, X_dev, t_dev, max_iter=c["epochs"], batch_size=c["batch_size"],
                         learning_rate=c["learning_rate"], patience=c["epochs"], seed=init)
            with torch.no_grad():
                predicted = net.logits(X_test).argmax(-1).numpy()  # (n_names, n_test)
        correct += np.mean(classes[predicted] == y_test[None], axis=1)
    return {k: float(v / n_inits) for k, v in zip(names, correct, strict=True)}


def enhancement_accuracy(
    X_train: np.ndarray,
    X_test: np.ndarray,
    y_train: np.ndarray,
    y_test: np.ndarray,
    fit: np.ndarray,
    dev: np.ndarray,
    *,
    n_removed: int,
    n_clusters: int,
    seed: int = 0,
    n_inits: int = 1,
    classifier: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Rajaee & Pilehvar's (2021) evaluation of isotropy enhancement: ``{method: test accuracy}``
    for each of :data:`ENHANCEMENTS`, the paper's classifier (:func:`classifier_accuracies`)
    trained on the enhanced ``X_train[fit]`` and scored on the enhanced ``X_test``.

    As the authors' code does, each enhancement is learnt on the training and test vectors
    together (unsupervised: no label is read); ``n_clusters`` is capped at their number.
    X_train, X_test : ndarray of shape (n_samples, n_features), one layer's item vectors
    """
    check(X_train.ndim == X_test.ndim == 2 and X_train.shape[1] == X_test.shape[1],
          f"X_train and X_test must be 2-D with the same features, got {X_train.shape} and {X_test.shape}")
    both = np.concatenate([X_train, X_test])
    enhanced = isotropy.enhancements(both, n_removed, min(n_clusters, len(both)), random_state=seed)
    n = len(X_train)
    train = {m: E[:n] for m, E in enhanced.items()}
    test = {m: E[n:] for m, E in enhanced.items()}
    return classifier_accuracies(train, test, y_train, y_test, fit, dev, n_inits=n_inits, seed=seed,
                                 classifier=classifier)


# ---------------------------------------------------------------------------------------------
# One layer
# ---------------------------------------------------------------------------------------------


def layer_isotropy(
    X: np.ndarray, *, prop: np.ndarray, words: np.ndarray | None, n_clusters: int, n_top: int, seed: int = 0
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """Everything chapter 8 measures on one layer's representations ``X``.

    Returns ``(measures, content, shares)``: the global isotropy measures, the isotropy
    within ``n_clusters`` k-means clusters (``"cluster ..."``), the number of elongated
    directions and of directions holding 50% and 90% of the variance; the correlation of
    the top ``n_top`` directions with ``prop`` (``"|r| by direction"``, ``"max |r|"``) and
    the share of their variance the word explains (``"word share ..."``, NaN without
    ``words``); and the share of variance along every principal direction.
    """
    global_measures = isotropy.isotropy(X)
    measures = global_measures.as_dict()
    # the authors' form: Z at each eigenvector with the sign the solver returned
    measures["partition one sign"] = global_measures.partition_one_sign
    clusters = isotropy.kmeans_clusters(X, min(n_clusters, len(X)), random_state=seed)
    local = isotropy.cluster_isotropy(X, clusters, min_size=min(10, len(X) // n_clusters + 1))
    shares = isotropy.explained_variance(X)
    measures.update({f"cluster {k}": v for k, v in local.items()})
    measures.update(
        {
            "elongated": isotropy.n_dominant_directions(shares),
            "directions for 50%": isotropy.n_directions_for(shares, 0.5),
            "directions for 90%": isotropy.n_directions_for(shares, 0.9),
        }
    )
    top = min(n_top, X.shape[1] - 1, len(X) - 1)
    r = np.abs(isotropy.direction_correlations(X, prop, top))
    eta = isotropy.direction_group_share(X, words, top) if words is not None else np.full(top, np.nan)
    content = {
        "max |r|": np.nanmax(r) if np.isfinite(r).any() else np.nan,
        "|r| by direction": r,
        "word share": np.nanmean(eta) if words is not None else np.nan,
        "word share by direction": eta,
    }
    return measures, content, shares


# ---------------------------------------------------------------------------------------------
# Chapter 8
# ---------------------------------------------------------------------------------------------


def _check_tasks(runs: Mapping[str, Any], data: Mapping[str, Any], tasks: Sequence[str]) -> None:
    check(len(tasks) >= 1, "tasks is empty; name at least one task")
    missing = [t for t in tasks if t not in runs or t not in data]
    check(not missing, f"no run or data for tasks {missing}; pass the runs of chapter_runs(...)")


def _last(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of each (task, state)'s last layer, indexed by (task, state)."""
    return frame.loc[frame.groupby(["task", "state"])["layer"].idxmax()].set_index(["task", "state"])


#: The fine-tuned figures chapter 8 records for every fine-tuning seed (last layer): isotropy
#: measures, and the ridge probe's test accuracy on the vectors as they are and with the top D,
#: or D random, directions removed (what rp-top-carries compares).
SEED_PROBES = ("none", "top D removed", "random D removed")
SEED_MEASURES = ("partition", "isoscore", "elongated", "word_share",
                 *(f"probe {v}" for v in SEED_PROBES))


@dataclass(frozen=True)
class IsotropyStudy:
    """Chapter 8's results for a set of tasks.

    measures : one row per (task, state, layer): :func:`layer_isotropy`'s measures
    content : one row per (task, state, layer): what the top directions carry
    shares : (task, state, layer) -> share of variance along each principal direction
    probes : one row per (task, state, layer, variant): probe test accuracy and D
    curves : one row per (task, state, D, variant) at the last layer (top or random removed)
    properties : task -> the surface property tested ("log token frequency", "log
        frequency" of the item's word, or a sentence's "log length")
    n_test : task -> test items
    settings : what the measures read (``vectors``, ``max_tokens`` or ``max_items``) and
        the clustering and direction settings
    n_vectors : task -> the number of vectors the isotropy measures read (the last state's)
    enhancement : one row per (task, state, method) at the last layer: the paper's evaluation
        of isotropy enhancement (:func:`enhancement_accuracy`), the test accuracy of the
        classifier trained on the vectors enhanced by ``method`` (``"none"``: as they are), D
    """

    tasks: list[str]
    measures: pd.DataFrame
    content: pd.DataFrame
    shares: dict[tuple[str, str, int], np.ndarray]
    probes: pd.DataFrame
    curves: pd.DataFrame
    properties: dict[str, str]
    n_test: dict[str, int]
    settings: dict[str, Any]
    n_vectors: dict[str, int] = dataclasses.field(default_factory=dict)
    enhancement: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)

    def last_layer(self) -> pd.DataFrame:
        """:attr:`measures` at each task's last layer, indexed by (task, state)."""
        return _last(self.measures)

    def last_content(self) -> pd.DataFrame:
        """:attr:`content` at each task's last layer, indexed by (task, state)."""
        return _last(self.content)

    def probes_last(self) -> pd.DataFrame:
        """:attr:`probes` at each task's last layer (per state: a degenerate layer is skipped)."""
        p = self.probes
        return p.loc[p["layer"] == p.groupby(["task", "state"])["layer"].transform("max")]

    def last_shares(self, task: str, state: str) -> np.ndarray:
        """The share of variance along each principal direction of the state's last layer."""
        m = self.measures
        layer = int(m.loc[(m["task"] == task) & (m["state"] == state), "layer"].max())
        return self.shares[task, state, layer]

    def summary(self) -> pd.DataFrame:
        """One row per task: the last layer's measures as ``<measure>_<state>`` columns,
        ``probe_<state>_<variant>`` accuracies and D."""
        last, content = self.last_layer(), self.last_content()
        probe = self.probes_last().set_index(["task", "state", "variant"])["accuracy"]
        rows = {}
        for t in self.tasks:
            row: dict[str, Any] = {"layer": int(last.loc[(t, "finetuned"), "layer"])}
            for m in (
                "partition",
                "partition one sign",
                "average_cosine",
                "isoscore",
                "cluster isoscore",
                "elongated",
                "directions for 90%",
            ):
                row.update({f"{m}_{s}": float(last.loc[(t, s), m]) for s in STATES})
            row.update({f"max_r_{s}": float(content.loc[(t, s), "max |r|"]) for s in STATES})
            row.update({f"word_share_{s}": float(content.loc[(t, s), "word share"]) for s in STATES})
            row.update(
                {f"probe_{s}_{v}": float(probe.get((t, s, v), np.nan)) for s in STATES for v in VARIANTS}
            )
            row["D"] = int(self.probes.loc[self.probes["task"] == t, "D"].iloc[0])
            rows[t] = row
        return pd.DataFrame(rows).T

    def facts(self) -> dict[str, Any]:
        """The figures the chapter's summary cites, by name (counts over tasks, means)."""
        S = self.summary().astype(float)
        n = len(self.tasks)

        def fell(measure: str) -> int:
            return int((S[f"{measure}_finetuned"] < S[f"{measure}_pretrained"]).sum())

        def cost(state: str, variant: str) -> pd.Series:
            return S[f"probe_{state}_none"] - S[f"probe_{state}_{variant}"]

        word_tasks = S.index[S["word_share_pretrained"].notna()]
        one_sign = np.log10(
            S[[f"partition one sign_{s}" for s in STATES]].to_numpy()
            / S[[f"partition_{s}" for s in STATES]].to_numpy()
        )
        return {
            "n_tasks": n,
            "n_vectors": f"{sum(self.n_vectors.values()):,}",
            # how far the authors' one-sign I(W) lies above ours, in orders of magnitude
            "one_sign_median_log10": f"{np.nanmedian(one_sign):.2f}",
            "one_sign_max_log10": f"{np.nanmax(one_sign):.2f}",
            "isoscore_down": fell("isoscore"),
            "partition_down": fell("partition"),
            "isoscore_pre_mean": f"{S['isoscore_pretrained'].mean():.3f}",
            "isoscore_post_mean": f"{S['isoscore_finetuned'].mean():.3f}",
            "cluster_pre_mean": f"{S['cluster isoscore_pretrained'].mean():.3f}",
            "cluster_post_mean": f"{S['cluster isoscore_finetuned'].mean():.3f}",
            "more_elongated": int((S["elongated_finetuned"] > S["elongated_pretrained"]).sum()),
            "elongated_pre": f"{S['elongated_pretrained'].mean():.1f}",
            "elongated_post": f"{S['elongated_finetuned'].mean():.1f}",
            "top_matters": int(
                (
                    cost("finetuned", "top D removed")
                    > cost("finetuned", "random D removed") + ACCURACY_MARGIN
                ).sum()
            ),
            "cost_post": f"{cost('finetuned', 'top D removed').mean():.3f}",
            "cost_pre": f"{cost('pretrained', 'top D removed').mean():.3f}",
            "cost_random_post": f"{cost('finetuned', 'random D removed').mean():.3f}",
            "n_word_tasks": len(word_tasks),
            "word_share_down": int(
                (S.loc[word_tasks, "word_share_finetuned"] < S.loc[word_tasks, "word_share_pretrained"]).sum()
            ),
            "freq_down": int((S["max_r_finetuned"] < S["max_r_pretrained"]).sum()),
        }

    def finetuned_last(self) -> dict[str, dict[str, float | None]]:
        """Per task, the fine-tuned state's last-layer figures that the seeds are compared
        on (:data:`SEED_MEASURES`); also for a study of the fine-tuned state alone."""
        last, content = self.last_layer(), self.last_content()

        def value(frame, task, column):
            v = frame.loc[(task, "finetuned"), column]
            return None if pd.isna(v) else float(v)

        probe = (self.probes_last().set_index(["task", "state", "variant"])["accuracy"]
                 if len(self.probes) else pd.Series(dtype=float))

        def probed(task, variant):
            v = probe.get((task, "finetuned", variant), np.nan)
            return None if pd.isna(v) else float(v)

        return {t: {"partition": value(last, t, "partition"), "isoscore": value(last, t, "isoscore"),
                    "elongated": value(last, t, "elongated"),
                    "word_share": value(content, t, "word share"),
                    **{f"probe {v}": probed(t, v) for v in SEED_PROBES}}
                for t in self.tasks}

    def record(self, *, seeds: Sequence[IsotropyStudy] = (), **header) -> results.IsotropyRecord:
        """The chapter's results record; ``header`` as :func:`ftgeo.results.header` gives it.

        seeds : the studies of the further fine-tuning seeds' fine-tuned states (same
            tasks; ``isotropy_study(..., states=("finetuned",), probes="last", layers="last")``): the record
            then holds every seed's :data:`SEED_MEASURES` and enhancement evaluation, this
            study's first
        """
        S = self.summary()
        enhanced = enhancement_table(self, seeds)
        every = [self.finetuned_last()] + [study.finetuned_last() for study in seeds]
        for other in seeds:
            check(other.tasks == self.tasks, "seeds: every seed's study must cover the same tasks")

        def per_seed(task: str) -> dict[str, list[float | None]] | None:
            if not seeds:
                return None
            return {m: [values[task][m] for values in every] for m in SEED_MEASURES}

        def per_state(task: str, key: str) -> dict[str, float | None]:
            values = {s: S.loc[task, f"{key}_{s}"] for s in STATES}
            return {s: None if pd.isna(v) else float(v) for s, v in values.items()}

        def enhancement(task: str, state: str) -> dict[str, list[float | None]] | None:
            part = enhanced[(enhanced["task"] == task) & (enhanced["state"] == state)]
            if part.empty:
                return None
            table = part.pivot(index="seed", columns="method", values="accuracy")
            return {m: [None if pd.isna(v) else float(v) for v in table[m]] for m in ENHANCEMENTS}

        def removed(task: str) -> int | None:
            D = enhanced.loc[enhanced["task"] == task, "D"]
            return int(D.iloc[0]) if len(D) else None

        tasks = {
            t: results.IsotropyTask(
                int(S.loc[t, "layer"]),
                self.n_test[t],
                per_state(t, "partition"),
                per_state(t, "average_cosine"),
                per_state(t, "isoscore"),
                per_state(t, "cluster isoscore"),
                per_state(t, "elongated"),
                per_state(t, "directions for 90%"),
                per_state(t, "max_r"),
                self.properties[t],
                per_state(t, "word_share"),
                {s: {v: float(S.loc[t, f"probe_{s}_{v}"]) for v in VARIANTS} for s in STATES},
                int(S.loc[t, "D"]),
                self.n_vectors.get(t),
                per_seed(t),
                {m: v[0] for m, v in (enhancement(t, "pretrained") or {}).items()} or None,
                enhancement(t, "finetuned"),
                removed(t),
            )
            for t in self.tasks
        }
        evaluation = results.PAPER_ENHANCEMENT_EVALUATION if len(enhanced) else "none"
        return results.IsotropyRecord(**header, enhancement_evaluation=evaluation, tasks=tasks,
                                      **self.settings)


def enhancement_table(study: IsotropyStudy, seeds: Sequence[IsotropyStudy] = ()) -> pd.DataFrame:
    """The paper's enhancement evaluation of ``study`` and of the further fine-tuning seeds'
    ``seeds`` (their fine-tuned states): one row per (task, state, seed, method) with D, the
    test accuracy and ``gain``, its change from the vectors as they are (method ``"none"``).
    ``seed`` counts the fine-tuning seeds from 0 (``study``'s); the pretrained state, which
    every seed shares, is read from ``study`` alone (seed 0)."""
    columns = ["task", "state", "seed", "method", "D", "accuracy", "gain"]
    frames = []
    for k, one in enumerate([study, *seeds]):
        e = one.enhancement
        if len(e):
            frames.append((e if k == 0 else e[e["state"] == "finetuned"]).assign(seed=k))
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True)
    keys = ["task", "state", "seed"]
    none = table[table["method"] == "none"].set_index(keys)["accuracy"]
    baseline = none.reindex(pd.MultiIndex.from_frame(table[keys])).to_numpy()
    table["gain"] = table["accuracy"].to_numpy() - baseline
    return table[columns]


def enhancement_facts(table: pd.DataFrame) -> dict[str, Any]:
    """The figures chapter 8's summary cites from :func:`enhancement_table`: the number of
    fine-tuning seeds (``enh_seeds``), the classifier's mean accuracy on the vectors as they
    are (``enh_none_pre``, ``enh_none_post``), and per method its mean change of accuracy
    (``enh_<method>_pre``, ``enh_<method>_post``, ``method`` with ``_`` for spaces and
    hyphens): over seeds for each task, then over tasks."""
    check(len(table) > 0, "table is empty: the study ran without the enhancement evaluation")

    def mean(state: str, method: str, column: str) -> float:
        part = table[(table["state"] == state) & (table["method"] == method)]
        return float(part.groupby("task")[column].mean().mean())

    out: dict[str, Any] = {"enh_seeds": int(table.loc[table["state"] == "finetuned", "seed"].nunique())}
    for state, short in (("pretrained", "pre"), ("finetuned", "post")):
        out[f"enh_none_{short}"] = f"{mean(state, 'none', 'accuracy'):.3f}"
        for method in ENHANCEMENTS[1:]:
            slug = method.replace(" ", "_").replace("-", "_")
            out[f"enh_{slug}_{short}"] = f"{mean(state, method, 'gain'):+.3f}"
    return out


def token_sentences(
    tokenizer, d, max_tokens: int | None, seed: int = 0
) -> tuple[np.ndarray, Counter]:
    """The sentences of ``d`` (a :class:`ftgeo.TaskData`) whose tokens the isotropy measures
    read, and the token counts of all of ``d``'s sentences (the frequency corpus).

    Every sentence when their tokens (special tokens left out) number at most
    ``max_tokens`` (None: no limit); otherwise whole sentences in a seeded random order
    until the next would pass the limit. Returns (sorted sentence indices, Counter of ids).
    """
    check(max_tokens is None or max_tokens >= 1, f"max_tokens must be >= 1 or None, got {max_tokens}")
    kw = {"is_split_into_words": True, "add_special_tokens": False}
    ids = tokenizer([list(x) for x in d.sentences], **kw)["input_ids"]
    if d.second is not None:
        second = tokenizer([list(x) for x in d.second], **kw)["input_ids"]
        ids = [a + b for a, b in zip(ids, second, strict=True)]
    counts = Counter(t for sentence in ids for t in sentence)
    lengths = np.array([len(x) for x in ids])
    if max_tokens is None or lengths.sum() <= max_tokens:
        return np.arange(len(ids)), counts
    order = np.random.default_rng(seed).permutation(len(ids))
    chosen = order[np.cumsum(lengths[order]) <= max_tokens]
    return np.sort(chosen if len(chosen) else order[:1]), counts


def _token_measures(model, d, chosen: np.ndarray, counts: Counter, store=None):
    """Token vectors of the ``chosen`` sentences of ``d`` under ``model``, each token's log
    frequency in ``counts``, and the token ids (the grouping of the word-share measure)."""
    from .extract import token_representations

    sentences = [d.sentences[i] for i in chosen]
    second = None if d.second is None else [d.second[i] for i in chosen]
    X, ids, _ = token_representations(model, sentences, second, store=store)
    return X, np.log([counts[int(t)] for t in ids]), ids


def isotropy_study(
    runs: Mapping[str, Any],
    data: Mapping[str, Mapping[str, Any]],
    tasks: Sequence[str],
    *,
    model=None,
    vectors: str = "tokens",
    max_tokens: int | None = 50000,
    max_items: int | None = 5000,
    n_removed: int | None = None,
    n_clusters: int = 10,
    n_top: int = 10,
    removed_grid: Sequence[int] = (1, 2, 4, 8, 16, 32),
    seed: int = 0,
    store=None,
    states: Sequence[str] = STATES,
    probes: bool | str = True,
    layers: str = "every",
    enhancement: bool = True,
    enhancement_clusters: int = 27,
    enhancement_removed: int | None = 12,
    enhancement_classifier: Mapping[str, float] | None = None,
) -> IsotropyStudy:
    """Chapter 8 on the pretrained (step 0) and fine-tuned (last step) states of each task's
    run: isotropy and local structure per layer, ridge probes on the representations with
    directions removed per layer (``n_removed`` directions, None: 1% of the features), removal
    curves over ``removed_grid`` at the last layer, and the paper's evaluation of isotropy
    enhancement at the last layer (:func:`enhancement_accuracy`).

    ``runs`` maps a task to its :class:`ftgeo.finetune.FinetuneRun`, ``data`` a task to its
    ``{"train": TaskData, "test": TaskData}``; ``model`` is the pretrained model the runs
    started from (:func:`ftgeo.finetune.chapter_runs` returns all three).

    vectors : what the isotropy measures read. ``"tokens"`` (Rajaee & Pilehvar 2021): the
        contextual vector of every token of the task's training sentences, special tokens
        and padding left out, up to ``max_tokens`` tokens (whole sentences, seeded); what the
        top directions carry is tested against each token's log frequency, counted over all
        the task's training sentences, and against the token's identity. ``"items"``: the
        probed items' vectors (a word, a head-dependent pair, a [CLS]), up to ``max_items``,
        against the word's log frequency (sentence tasks: the log length).
        The probes and the enhancement evaluation always read the items, which carry the labels.
    states, probes : the states to measure, and the ridge probes to fit: True at every
        layer, with the removal curves; ``"last"`` at the last layer only (what
        :meth:`IsotropyStudy.record` keeps of a further seed); False none. A further
        fine-tuning seed's study needs ``states=("finetuned",)`` (the pretrained state is the
        same model) and ``probes="last"``, and takes ``layers="last"``
    layers : the layers whose isotropy and local structure are measured: ``"every"``, or
        ``"last"`` (all that :meth:`IsotropyStudy.record` keeps of a further seed; each layer
        of up to 50,000 token vectors x 384 took about 9 s here, mostly k-means)
    enhancement : whether to run the paper's evaluation: the four enhancements of
        :data:`ENHANCEMENTS` with ``enhancement_clusters`` k-means clusters and D =
        ``enhancement_removed`` directions (None: 1% of the features), learnt on the last
        layer's training and test items together, each scored by the paper's classifier
        (:data:`ENHANCEMENT_CLASSIFIER` with the changes in ``enhancement_classifier``) trained
        on the enhanced training items. The defaults are the authors' code's (27 clusters, D = 12, for
        BERT-base); a further seed's study runs it too.
    """
    unknown = sorted(set(states) - set(STATES))
    check(states and not unknown, f"states: unknown or no state(s) {unknown or list(states)}; "
          f"use {list(STATES)}")
    _check_tasks(runs, data, tasks)
    check(vectors in ("tokens", "items"), f"vectors must be 'tokens' or 'items', got {vectors!r}")
    check(vectors == "items" or model is not None,
          "vectors='tokens' needs the pretrained model: pass model=... (chapter_runs returns it)")
    check(n_removed is None or n_removed >= 1, f"n_removed must be >= 1 or None, got {n_removed}")
    check(n_clusters >= 1 and n_top >= 1, f"n_clusters and n_top must be >= 1, got {n_clusters}, {n_top}")
    check(isinstance(enhancement_clusters, (int, np.integer)) and enhancement_clusters >= 1,
          f"enhancement_clusters must be an integer >= 1, got {enhancement_clusters!r}")
    check(enhancement_removed is None or enhancement_removed >= 1,
          f"enhancement_removed must be >= 1 or None, got {enhancement_removed}")
    check(probes in (True, False, "last"), f"probes must be True, False or 'last', got {probes!r}")
    check(layers in ("every", "last"), f"layers must be 'every' or 'last', got {layers!r}")
    classifier = classifier_settings(enhancement_classifier)
    enhanced_rows = []
    rows, content, shares, probe_rows, curve_rows, properties, n_vectors = [], [], {}, [], [], {}, {}
    for task in progress(list(tasks), desc="isotropy", unit="task"):
        run, d_train, d_test = runs[task], data[task]["train"], data[task]["test"]
        if vectors == "tokens":
            chosen, counts = token_sentences(model.tokenizer, d_train, max_tokens, seed)
            properties[task] = "log token frequency"
        else:
            sample = d_train.sample_index(max_items, seed=seed)
            properties[task], prop = surface_property(d_train)
            words = item_words(d_train)
        fit, dev = sentence_holdout(d_train.items, seed=seed)
        enhance = len(fit) >= 2 and len(dev) >= 1  # a split with one sentence: no probe to fit
        for state, step in state_steps(run).items():
            if state not in states:
                continue
            X_train, X_test = run.representations(d_train, step), run.representations(d_test, step)
            D = n_removed if n_removed is not None else isotropy.default_n_removed(X_train.shape[-1])
            check(D < X_train.shape[-1], f"n_removed={D} must be below the {X_train.shape[-1]} features")
            key = {"task": task, "state": state}
            probe_layers = {True: range(len(X_train)), "last": [len(X_train) - 1]}.get(probes, [])
            for layer in probe_layers:
                X_all = X_train[layer]
                if spatial.is_degenerate(X_all):
                    continue
                variants = (
                    enhancement_variants(X_all, X_test[layer], fit, D, n_clusters, seed) if enhance else {}
                )
                variants = variants or dict.fromkeys(VARIANTS, (None, None))
                probe_rows += [
                    {
                        **key,
                        "layer": layer,
                        "variant": name,
                        "D": D,
                        "accuracy": probe_accuracy(A, B, d_train.y, d_test.y, fit, dev)
                        if enhance
                        else np.nan,
                    }
                    for name, (A, B) in variants.items()
                ]
            if vectors == "tokens":
                state_model = model if state == "pretrained" else run.load_model()
                V, prop_v, groups = _token_measures(state_model, d_train, chosen, counts, store)
            else:
                V, prop_v = X_train[:, sample], prop[sample]
                groups = None if words is None else words[sample]
            n_vectors[task] = V.shape[1]
            for layer, X in enumerate(V):
                if layers == "last" and layer < len(V) - 1:
                    continue
                if spatial.is_degenerate(X) or len(X) < 2:
                    continue
                m, c, s = layer_isotropy(X, prop=prop_v, words=groups, n_clusters=n_clusters,
                                         n_top=n_top, seed=seed)
                rows.append({**key, "layer": layer, **m})
                content.append({**key, "layer": layer, "property": properties[task], **c})
                shares[task, state, layer] = s
            if enhancement:
                enhanced_rows += _enhancement_rows(
                    X_train[-1], X_test[-1], d_train.y, d_test.y, fit, dev, enhancement_removed,
                    enhancement_clusters, seed, classifier, **key, layer=len(X_train) - 1)
            A, B = X_train[-1], X_test[-1]
            curves = enhance and probes is True
            for D_ in [k for k in removed_grid if k < A.shape[1] and k < len(fit) and curves]:
                for name, remover in (
                    ("top D removed", isotropy.DirectionRemover(D_)),
                    ("random D removed", isotropy.DirectionRemover(D_, "random", random_state=seed)),
                ):
                    remover.fit(A[fit])
                    curve_rows.append(
                        {
                            **key,
                            "D": D_,
                            "variant": name,
                            "accuracy": probe_accuracy(
                                remover.transform(A), remover.transform(B), d_train.y, d_test.y, fit, dev
                            ),
                        }
                    )
    return IsotropyStudy(
        list(tasks),
        pd.DataFrame(rows),
        pd.DataFrame(content),
        shares,
        pd.DataFrame(probe_rows),
        pd.DataFrame(curve_rows),
        properties,
        {t: data[t]["test"].n_items for t in tasks},
        {"vectors": vectors, "max_tokens": max_tokens if vectors == "tokens" else None,
         "max_items": max_items if vectors == "items" else None,
         "n_clusters": n_clusters, "n_top": n_top,
         "enhancement_clusters": enhancement_clusters if enhancement else None,
         "enhancement_classifier": {k: float(v) for k, v in classifier.items()} if enhancement else None},
        n_vectors,
        pd.DataFrame(enhanced_rows, columns=["task", "state", "layer", "method", "D", "accuracy"]),
    )


def _enhancement_rows(X_train, X_test, y_train, y_test, fit, dev, n_removed, n_clusters, seed, classifier,
                      **key) -> list[dict[str, Any]]:
    """:func:`enhancement_accuracy` of one state's last layer as table rows (``key``: task,
    state, layer); NaN accuracies where the layer is degenerate or no split can be held out."""
    D = n_removed if n_removed is not None else isotropy.default_n_removed(X_train.shape[-1])
    check(D < X_train.shape[-1], f"enhancement_removed={D} must be below the {X_train.shape[-1]} features")
    if spatial.is_degenerate(X_train) or len(fit) < 1 or len(dev) < 1:
        accuracy = dict.fromkeys(ENHANCEMENTS, np.nan)
    else:
        accuracy = enhancement_accuracy(X_train, X_test, y_train, y_test, fit, dev, n_removed=D,
                                        n_clusters=n_clusters, seed=seed, classifier=classifier)
    return [{**key, "method": m, "D": D, "accuracy": a} for m, a in accuracy.items()]


# ---------------------------------------------------------------------------------------------
# Chapter 9
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CKAStudy:
    """Chapter 9's results for a set of tasks.

    layers : task -> the layers kept (degenerate ones, such as a constant layer, left out)
    matrices : task -> {"pretrained", "finetuned": CKA between layers; "across": pretrained
        layer i against fine-tuned layer j}
    blocks : (task, state) -> :class:`ftgeo.cka.BlockStructure` of the transformer layers
    dropping : task x k, test accuracy with the top k layers dropped
    """

    tasks: list[str]
    layers: dict[str, list[int]]
    matrices: dict[str, dict[str, np.ndarray]]
    blocks: dict[tuple[str, str], cka.BlockStructure]
    dropping: pd.DataFrame
    n_test: dict[str, int]
    settings: dict[str, Any]

    def same_layer(self) -> pd.DataFrame:
        """CKA of each layer with itself before and after fine-tuning: task x layer."""
        return spatial.task_table(
            {t: pd.Series(np.diag(m["across"]), index=self.layers[t]) for t, m in self.matrices.items()},
            name="layer",
        )

    def block_table(self) -> pd.DataFrame:
        """One row per (task, state): the blocks found, mean CKA within and between, score."""
        rows = [
            {
                "task": t,
                "state": s,
                "blocks": " | ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in bs.blocks),
                "within": bs.within,
                "between": bs.between,
                "score": bs.score,
            }
            for (t, s), bs in self.blocks.items()
        ]
        return pd.DataFrame(rows).set_index(["task", "state"])

    def droppable(self, tolerance: float) -> dict[str, int]:
        """Task -> top layers that can be dropped (:func:`ftgeo.cka.droppable_layers`)."""
        return {t: cka.droppable_layers(self.dropping.loc[t].to_numpy(), tolerance) for t in self.tasks}

    def summary(self, tolerance: float) -> pd.DataFrame:
        """One row per task: block scores, the finetuned blocks, accuracy with all layers and
        its loss with the top layer dropped, and the layers droppable within ``tolerance``."""
        full = self.dropping[0]
        return pd.DataFrame(
            {
                "block score, pretrained": {t: self.blocks[t, "pretrained"].score for t in self.tasks},
                "block score, finetuned": {t: self.blocks[t, "finetuned"].score for t in self.tasks},
                "finetuned blocks": self.block_table().xs("finetuned", level="state")["blocks"],
                "accuracy, all layers": full,
                "loss, top layer dropped": full - self.dropping[1],
                f"layers droppable (loss <= {tolerance})": self.droppable(tolerance),
            }
        )

    def facts(self, tolerance: float) -> dict[str, Any]:
        """The figures the chapter's summary cites, by name."""
        score = {s: np.array([self.blocks[t, s].score for t in self.tasks]) for s in STATES}
        last = [self.blocks[t, "finetuned"] for t in self.tasks]
        same = self.same_layer()
        droppable = self.droppable(tolerance)
        return {
            "n_tasks": len(self.tasks),
            "sharper": int((score["finetuned"] > score["pretrained"]).sum()),
            "score_pre": f"{score['pretrained'].mean():.3f}",
            "score_post": f"{score['finetuned'].mean():.3f}",
            "top_in_block": sum(b.n_blocks >= 2 and b.blocks[-1][1] > b.blocks[-1][0] for b in last),
            "top_changed_most": int(
                sum(int(same.loc[t].idxmin()) == int(same.columns[-1]) for t in self.tasks)
            ),
            "last_layer_mean": f"{same.iloc[:, -1].mean():.3f}",
            "first_layer_mean": f"{same[[k for k in same.columns if k >= 1][0]].mean():.3f}",
            "loss_one_mean": f"{(self.dropping[0] - self.dropping[1]).mean():.3f}",
            "n_droppable": sum(v >= 1 for v in droppable.values()),
            "drop_tolerance": f"{tolerance}",
            "droppable_list": ", ".join(f"{t} {k}" for t, k in droppable.items()),
        }

    def record(self, *, seeds: Sequence[CKAStudy] = (), **header) -> results.CKARecord:
        """The chapter's results record; ``header`` as :func:`ftgeo.results.header` gives it.

        seeds : the studies of the further fine-tuning seeds' runs (same tasks): the record
            then holds every seed's fine-tuned matrix and dropping curve, this study's first
        """
        every = [self, *seeds]
        for other in seeds:
            check(other.tasks == self.tasks and other.layers == self.layers,
                  "seeds: every seed's study must cover the same tasks and layers")

        def per_seed(t):
            if not seeds:
                return None, None
            return ([s.matrices[t]["finetuned"].round(6).tolist() for s in every],
                    [[float(v) for v in s.dropping.loc[t]] for s in every])

        tasks = {
            t: results.CKATask(
                self.layers[t],
                self.matrices[t]["pretrained"].round(6).tolist(),
                self.matrices[t]["finetuned"].round(6).tolist(),
                [float(v) for v in np.diag(self.matrices[t]["across"])],
                [float(v) for v in self.dropping.loc[t]],
                self.n_test[t],
                *per_seed(t),
            )
            for t in self.tasks
        }
        return results.CKARecord(**header, tasks=tasks, **self.settings)


def cka_seed_table(studies: Sequence[CKAStudy], tolerance: float) -> pd.DataFrame:
    """Chapter 9's fine-tuned results for every fine-tuning seed (one study per seed, the
    first seed's first): per task and seed, the block score of the fine-tuned matrix and the
    top layers droppable within ``tolerance``, with the pretrained block score beside them
    (it does not depend on the seed). Index (task, seed number)."""
    rows = {}
    for k, study in enumerate(studies):
        droppable = study.droppable(tolerance)
        for t in study.tasks:
            rows[t, k] = {"block score pretrained": study.blocks[t, "pretrained"].score,
                          "block score finetuned": study.blocks[t, "finetuned"].score,
                          "layers droppable": droppable[t]}
    table = pd.DataFrame(rows).T.sort_index(level=0, sort_remaining=False)
    table.index.names = ["task", "fine-tuning seed"]
    table["layers droppable"] = table["layers droppable"].astype(int)
    return table


def cka_study(
    runs: Mapping[str, Any],
    data: Mapping[str, Mapping[str, Any]],
    tasks: Sequence[str],
    *,
    max_items: int | None = None,
    debiased: bool = False,
    seed: int = 0,
    split: str = "test",
) -> CKAStudy:
    """Chapter 9 on each task's run: linear CKA between every pair of layers of the pretrained
    (step 0) and of the fine-tuned (last step) state on the items of ``split`` (a seeded
    sample of whole sentences with at most ``max_items`` items; None: all), the block
    structure of each, and test accuracy with the top layers dropped.

    ``split`` is "test" by default: held-out examples, as Phang et al. (2021) use their
    tasks' validation sets; "train" is the other split whose states every run stores."""
    check(split in ("train", "test"), f"split must be 'train' or 'test' (the splits a run stores "
          f"at its first and last snapshot), got {split!r}")
    _check_tasks(runs, data, tasks)
    layers, matrices, blocks, dropping = {}, {}, {}, {}
    for task in progress(list(tasks), desc="CKA", unit="task"):
        run, d = runs[task], data[task][split]
        sample = d.sample_index(max_items, seed=seed)
        steps = state_steps(run)
        X0 = run.representations(d, steps["pretrained"])[:, sample]
        X1 = run.representations(d, steps["finetuned"])[:, sample]
        keep = [
            k for k in range(len(X0)) if not (spatial.is_degenerate(X0[k]) or spatial.is_degenerate(X1[k]))
        ]
        layers[task] = keep
        matrices[task] = {
            "pretrained": cka.cka_matrix(X0[keep], debiased=debiased),
            "finetuned": cka.cka_matrix(X1[keep], debiased=debiased),
            "across": cka.cka_matrix(X0[keep], X1[keep], debiased=debiased),
        }
        inner = [i for i, k in enumerate(keep) if k >= 1]  # transformer layers, not the embeddings
        check(inner, f"{task}: every transformer layer is constant over the items; nothing to compare")
        for state in STATES:
            found = cka.block_structure(matrices[task][state][np.ix_(inner, inner)])
            # positions in the matrix -> layer numbers (a degenerate layer left out leaves a gap)
            named = tuple((keep[inner[a]], keep[inner[b]]) for a, b in found.blocks)
            blocks[task, state] = dataclasses.replace(found, blocks=named)
        dropping[task] = run.evaluate_dropping(data[task]["test"])
    table = pd.DataFrame(dropping).T
    table.index.name, table.columns.name = "task", "layers dropped"
    return CKAStudy(
        list(tasks),
        layers,
        matrices,
        blocks,
        table,
        {t: data[t]["test"].n_items for t in tasks},
        {"debiased": debiased, "max_items": max_items, "split": split},
    )
