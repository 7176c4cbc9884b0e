"""The three papers' claims, each with its source, its test, where it applies, and a verdict.

A claim reads the chapters' typed records (:mod:`ftgeo.results`) and returns an
:class:`Outcome`: our figure in words and a verdict. The verdicts are

- ``holds``: our measurement agrees with the claim, beyond the null or spread its test states;
- ``does not hold``: it does not;
- ``not testable here``: the runs lack what the claim needs, or the claim does not apply to
  this model (the reason says which).

Every threshold is a named constant below with the reason for its value. Wherever a
difference is judged, the test has a null: Welch's t-test over probe seeds for accuracies,
Fisher's z-test for two correlations, a sign (binomial) test over labels for distances, the
best banded matrix for CKA blocks, and the binomial standard error of an accuracy on the
test set. ``tests/test_claims.py`` gives every claim a record where it holds and one where
it does not.

Two limits, stated where they matter: where a record holds several fine-tuning seeds, a
change counts only where every seed shows it (the probing test of chapter 3 instead compares
the pretrained probe with the spread of the seeds' means), but the seeds are few; and a test
that treats label pairs as independent observations (Fisher's z over distance vectors) is an
approximation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from . import cka
from .results import ModelInfo, Record

__all__ = ["CLAIMS", "Claim", "Outcome", "Untestable", "evaluate", "for_chapter", "scorecard"]

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable here"
VERDICTS = (HOLDS, FAILS, UNTESTABLE)

ZS, RP, PLB = "Zhou & Srikumar 2022", "Rajaee & Pilehvar 2021", "Phang, Liu & Bowman 2021"

#: Significance level of every one-sided test below (the usual 5%).
ALPHA = 0.05
#: One-sided 95% normal quantile, for differences judged against a standard error.
Z_ONE_SIDED = 1.645
#: Zhou & Srikumar (2022, section 4.1) saw fine-tuning fail to help in 1 of their 25
#: model-task cases; we allow the same rate of failures, rounded down (0 of 5 tasks).
PAPER_FAILURE_RATE = 1 / 25
#: Zhou & Srikumar (2022, section 4.5): the higher layers keep a spatial similarity above
#: 0.5 to the pretrained model.
SIMILARITY_FLOOR = 0.5
#: "Massive" change of local structure (Rajaee & Pilehvar 2021, section 4): we ask for the
#: word-identity share of the top directions to change by at least a quarter of its
#: pretrained value. The paper gives no number; this is our reading of "massive".
LOCAL_CHANGE = 0.25
#: "Highly anisotropic" after fine-tuning (Rajaee & Pilehvar 2021, Table 1: I(W) stays of
#: the same order as before): the claim fails if fine-tuning raises I(W) tenfold or more.
ANISOTROPY_FOLD = 10.0
#: A block structure counts when the best split's contrast beyond the best banded matrix is
#: at least this much CKA (0.05: a twentieth of CKA's range; a banded matrix scores 0).
BLOCK_MARGIN = 0.05
#: Dropping top layers "without hurting performance" (Phang et al. 2021, section 5): a loss
#: of at most one accuracy point.
DROP_TOLERANCE = 0.01


class Untestable(LookupError):
    """The runs lack what a claim needs; the message says what."""


@dataclass(frozen=True)
class Outcome:
    ours: str
    verdict: str


@dataclass(frozen=True)
class Claim:
    """One claim of one paper.

    paper_figure : the paper's own number or statement where it gives one, with
        ``paper_source`` the section, table or figure it comes from
    measure : what we measure, in words, and ``reads`` the chapters whose records it reads
    test : records -> Outcome (raises Untestable)
    applies : ModelInfo -> None if the claim applies to the model, else the reason
    """

    id: str
    paper: str
    section: str
    text: str
    paper_figure: str
    paper_source: str
    measure: str
    reads: tuple[str, ...]
    test: Callable[[Mapping[str, Record]], Outcome]
    applies: Callable[[ModelInfo], str | None] | None = None

    def evaluate(self, records: Mapping[str, Record], info: ModelInfo | None = None) -> Outcome:
        missing = [c for c in self.reads if c not in records]
        if missing:
            return Outcome(f"(no {', '.join(missing)} run for this model)", UNTESTABLE)
        info = info or records[self.reads[0]].model_info
        if self.applies is not None and (reason := self.applies(info)):
            return Outcome(f"({reason})", UNTESTABLE)
        try:
            return self.test(records)
        except Untestable as err:
            return Outcome(f"({err.args[0]})", UNTESTABLE)


# -- tests and nulls --------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return HOLDS if ok else FAILS


def welch_p(a: Sequence[float], b: Sequence[float], alternative: str) -> float:
    """One-sided p-value of Welch's t-test of mean(b) against mean(a) over seeds
    (``alternative``: 'greater' = b > a). Needs two seeds on each side.

    >>> welch_p([0.5, 0.51, 0.49], [0.7, 0.71, 0.69], "greater") < 0.001
    True
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        raise Untestable("a spread over seeds needs at least 2 probe seeds")
    if a.std() == 0 and b.std() == 0:  # no spread at all: the sign decides
        d = b.mean() - a.mean()
        return 0.0 if (d > 0 if alternative == "greater" else d < 0) else 1.0
    return float(stats.ttest_ind(b, a, equal_var=False, alternative=alternative).pvalue)


def fisher_z(r1: float, r2: float, n1: int, n2: int) -> float:
    """z statistic of r1 - r2 for two Pearson correlations over n1 and n2 pairs (Fisher 1921).

    >>> round(fisher_z(0.9, 0.5, 50, 50), 2)
    4.47
    """
    if n1 < 4 or n2 < 4:
        raise Untestable("Fisher's z-test needs at least 4 label pairs")
    clip = 1 - 1e-12
    z1, z2 = np.arctanh(np.clip([r1, r2], -clip, clip))
    return float((z1 - z2) / math.sqrt(1 / (n1 - 3) + 1 / (n2 - 3)))


def sign_p(n_up: int, n_down: int) -> float:
    """One-sided p-value of the sign test that ups outnumber downs (ties left out).

    >>> sign_p(9, 1) < ALPHA, sign_p(5, 5) < ALPHA, sign_p(0, 0)
    (True, False, 1.0)
    """
    n = n_up + n_down
    return 1.0 if n == 0 else float(stats.binomtest(n_up, n, 0.5, alternative="greater").pvalue)


def accuracy_se(p: float, n: int) -> float:
    """Binomial standard error of an accuracy ``p`` on ``n`` test items.

    >>> round(accuracy_se(0.9, 100), 3)
    0.03
    """
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def num(x: float | None, what: str) -> float:
    if x is None or not np.isfinite(x):
        raise Untestable(f"{what} is undefined in this run")
    return float(x)


def tasks_of(record: Record, exclude: Sequence[str] = ()) -> dict:
    tasks = {k: v for k, v in record.tasks.items() if k not in exclude}
    if not tasks:
        raise Untestable("no task" + (f" other than {', '.join(exclude)}" if exclude else "") + " was run")
    return tasks


def most(n: int, of: int) -> bool:
    return 2 * n > of


def relative_changes(
    first: Mapping[str, float | None], last: Mapping[str, float | None], scale_first: float, scale_last: float
) -> dict[str, float]:
    """Each label's change of distance relative to the representation's spread
    (:func:`ftgeo.spatial.spread`): invariant to scaling the whole space."""
    out = {}
    for label, a in first.items():
        b = last.get(label)
        if a is not None and b is not None and np.isfinite(a) and np.isfinite(b):
            out[label] = b / scale_last - a / scale_first
    return out


def count_signs(changes: Mapping[str, float], tol: float = 1e-9) -> tuple[int, int]:
    v = np.asarray(list(changes.values()), float)
    return int((v > tol).sum()), int((v < -tol).sum())


# -- Zhou & Srikumar 2022 ---------------------------------------------------------------
def _finetuned_sample(v) -> list[float]:
    """The fine-tuned MLP accuracies a test compares: one per fine-tuning seed (each the mean
    over its probe seeds) when the record has several, else the one run's probe seeds."""
    seeds = v.mlp_finetuned_seeds or []
    return list(seeds) if len(seeds) >= 2 else list(v.mlp_finetuned)


def _spread(t) -> str:
    n = {len(v.mlp_finetuned_seeds or []) for v in t.values()}
    if max(n, default=0) >= 2:
        return f"the spread over {max(n)} fine-tuning seeds"
    return "the probe-seed spread"


def _help_p(v) -> float:
    """Welch's p that fine-tuning raised the MLP probe's accuracy (one-sided)."""
    return welch_p(v.mlp_pretrained, _finetuned_sample(v), "greater")


def _helps(r) -> Outcome:
    t = tasks_of(r["03_probing_performance"])
    gains = {k: (np.mean(_finetuned_sample(v)) - np.mean(v.mlp_pretrained), _help_p(v))
             for k, v in t.items()}
    not_helped = [k for k, (_, p) in gains.items() if p >= ALPHA]
    allowed = math.floor(PAPER_FAILURE_RATE * len(t))
    vals = ", ".join(f"{k} {g:+.3f} (p={p:.2g})" for k, (g, p) in gains.items())
    return Outcome(
        f"gain beyond {_spread(t)} on {len(t) - len(not_helped)} of {len(t)} tasks "
        f"(allowed failures: {allowed}): {vals}",
        verdict(len(not_helped) <= allowed),
    )


def _separable(t, why: str) -> dict:
    keep = {k: v for k, v in t.items() if v.separable_pretrained and v.separable_finetuned}
    if not keep:
        raise Untestable(
            f"no task is linearly separable before and after fine-tuning, and the paper "
            f"defines {why} only for separable representations"
        )
    return keep


def _similarity_falls(r) -> Outcome:
    t = _separable(tasks_of(r["03_probing_performance"]), "spatial similarity")

    def after(k, v) -> list[float]:  # every fine-tuning seed's similarity where it is defined
        seeds = [x for x in (v.similarity_finetuned_seeds or []) if x is not None]
        return seeds or [num(v.similarity_finetuned, f"{k} similarity")]

    z = {
        k: [fisher_z(num(v.similarity_pretrained, f"{k} similarity"), x,
                     v.label_pairs_pretrained, v.label_pairs_finetuned) for x in after(k, v)]
        for k, v in t.items()
    }
    fell = [k for k, xs in z.items() if all(stats.norm.sf(x) < ALPHA for x in xs)]
    vals = ", ".join(f"{k} {t[k].similarity_pretrained:.2f} to "
                     + "/".join(f"{x:.2f}" for x in after(k, t[k])) for k in t)
    return Outcome(
        f"fell significantly (Fisher z, p < {ALPHA}, on every fine-tuning seed) on {len(fell)} "
        f"of {len(t)} separable tasks: {vals}",
        verdict(len(fell) == len(t)),
    )


def _lowest_when_hurt(r) -> Outcome:
    t = tasks_of(r["03_probing_performance"])
    hurt = [k for k, v in t.items() if _help_p(v) >= ALPHA]
    if not hurt:
        raise Untestable("fine-tuning helped on every task, so there is no failing case to compare")
    if len(hurt) == len(t):
        raise Untestable("fine-tuning helped on no task beyond the seed spread, so the tasks it did not "
                         "help are not singled out")
    sep = _separable(t, "spatial similarity")
    sims = {k: num(v.similarity_finetuned, f"{k} similarity") for k, v in sep.items()}
    lowest = min(sims, key=sims.get)
    return Outcome(
        f"lowest similarity after fine-tuning: {lowest} ({sims[lowest]:.2f}); not helped: {', '.join(hurt)}",
        verdict(lowest in hurt),
    )


def _every_seed(per_seed, single) -> list:
    """A fine-tuned figure for every fine-tuning seed where the record has them, else the
    one run's ``single``."""
    return list(per_seed) if per_seed else [single]


def _after(v) -> list[int]:
    """The cluster counts after fine-tuning: one per fine-tuning seed where recorded."""
    return _every_seed(v.clusters_finetuned_seeds, v.clusters_finetuned)


def _counts(v) -> str:
    return "/".join(map(str, _after(v)))


def _fewer_clusters(r) -> Outcome:
    t = tasks_of(r["04_linearity"])
    nonlinear = {k: v for k, v in t.items() if v.clusters_pretrained > v.n_labels}
    if not nonlinear:
        raise Untestable(
            "every task is already linearly separable before fine-tuning: no cluster count can fall"
        )
    fewer = [k for k, v in nonlinear.items() if all(c < v.clusters_pretrained for c in _after(v))]
    vals = ", ".join(
        f"{k} {v.clusters_pretrained} to {_counts(v)} ({v.n_labels} labels)"
        for k, v in nonlinear.items()
    )
    return Outcome(
        f"fewer clusters (on every fine-tuning seed) on {len(fewer)} of {len(nonlinear)} tasks that "
        f"were not separable: {vals}",
        verdict(len(fewer) == len(nonlinear)),
    )


def _bert_tiny(info: ModelInfo) -> str | None:
    if (info.model_type, info.n_layers, info.hidden_size) != ("bert", 2, 128):
        return (
            f"a claim about BERT-tiny (bert, 2 layers, 128 wide); this model is {info.model_type}, "
            f"{info.n_layers} layers, {info.hidden_size} wide"
        )
    return None


def _tiny_nonlinear(r) -> Outcome:
    t = tasks_of(r["04_linearity"])
    n = sum(v.clusters_pretrained > v.n_labels for v in t.values())
    return Outcome(
        f"more clusters than labels before fine-tuning on {n} of {len(t)} tasks", verdict(most(n, len(t)))
    )


def _linear_after(r) -> Outcome:
    t = tasks_of(r["04_linearity"], exclude=("trec-50",))
    n = sum(all(c == v.n_labels for c in _after(v)) for v in t.values())
    return Outcome(
        f"linearly separable after fine-tuning (on every fine-tuning seed): {n} of {len(t)} tasks "
        f"(TREC-50 aside): " + ", ".join(f"{k} {_counts(v)} clusters, {v.n_labels} labels"
                                          for k, v in t.items()),
        verdict(n == len(t)),
    )


def _trec_nonlinear(r) -> Outcome:
    t = r["04_linearity"].tasks
    if "trec-50" not in t:
        raise Untestable("chapter 04 did not run trec-50")
    v = t["trec-50"]
    return Outcome(
        f"TREC-50: {_counts(v)} clusters for {v.n_labels} labels after fine-tuning",
        verdict(all(c > v.n_labels for c in _after(v))),
    )


def _spatial_seeds(v) -> list[dict[str, float]]:
    """Each label's change of minimum distance relative to the spread, from the first to the
    last snapshot: one mapping per fine-tuning seed where the record has them (every seed
    starts from the same pretrained state), else the one run's."""
    distances = _every_seed(v.min_distance_seeds, v.min_distance)
    scales = _every_seed(v.scale_seeds, v.scale)
    return [relative_changes({k: d[0] for k, d in m.items()}, {k: d[-1] for k, d in m.items()},
                             scale[0], scale[-1])
            for m, scale in zip(distances, scales, strict=True)]


def _tasks_where(record: Record, keeps: Callable[[Any], bool], none_kept: str) -> tuple[dict, list[str]]:
    """The tasks of ``record`` for which ``keeps`` holds, and the names of the others;
    ``none_kept`` says why a claim is untestable when no task is kept."""
    t = tasks_of(record)
    keep = {k: v for k, v in t.items() if keeps(v)}
    if not keep:
        raise Untestable(none_kept)
    return keep, [k for k in t if k not in keep]


def _spatial_tasks(r) -> tuple[dict, list[str]]:
    """Chapter 5's tasks whose first and last states are linearly separable, on every
    fine-tuning seed: the paper measures label distances only there (records without the
    flag count as separable); and the names of the others."""

    def separable(v) -> bool:
        flags = _every_seed(v.separable_seeds, v.separable)
        return all(f is None or (f[0] and f[-1]) for f in flags)

    return _tasks_where(
        r["05_spatial_structure"], separable,
        "no task is linearly separable both before and after fine-tuning on the trajectory "
        "sets (on every fine-tuning seed), and the paper measures label distances only on "
        "separable representations")


def _left_out(left: Sequence[str]) -> str:
    return f"; left out, not linearly separable there: {', '.join(left)}" if left else ""


def _seeds_note(n: int) -> str:
    return f"on every one of {n} fine-tuning seeds" if n > 1 else "one fine-tuning run"


def _apart(r) -> Outcome:
    t, left = _spatial_tasks(r)
    up, down, parts, n = [], [], [], 1
    for k, v in t.items():
        signs = [count_signs(c) for c in _spatial_seeds(v)]  # (grew, shrank) per seed
        n = max(n, len(signs))
        # a task counts only where the sign test is significant on every seed
        up += [k] if all(sign_p(g, s) < ALPHA for g, s in signs) else []
        down += [k] if all(sign_p(s, g) < ALPHA for g, s in signs) else []
        parts.append(f"{k} {'/'.join(str(g) for g, _ in signs)} grew, "
                     f"{'/'.join(str(s) for _, s in signs)} shrank")
    return Outcome(
        f"relative to the spread, labels moved apart significantly (sign test, {_seeds_note(n)}) on "
        f"{len(up)} of {len(t)} tasks, closer on {len(down)}: {', '.join(parts)}{_left_out(left)}",
        verdict(most(len(up), len(t)) and not down),
    )


def _closest_apart(r) -> Outcome:
    t, left = _spatial_tasks(r)
    per_seed: list[list[int]] = []  # [grew, shrank] per fine-tuning seed, over every task
    for v in t.values():
        lasts = _every_seed(v.closest_distance_last_seeds, v.closest_distance_last)
        scales = _every_seed(v.scale_seeds, v.scale)
        for i, (last, scale) in enumerate(zip(lasts, scales, strict=True)):
            ch = relative_changes(dict(enumerate(v.closest_distance_first)), dict(enumerate(last)),
                                  scale[0], scale[-1])
            if i == len(per_seed):
                per_seed.append([0, 0])
            g, s = count_signs(ch)
            per_seed[i][0] += g
            per_seed[i][1] += s
    p = [sign_p(g, s) for g, s in per_seed]
    return Outcome(
        "pairs of the three closest labels further apart relative to the spread "
        f"({_seeds_note(len(per_seed))}): " + "/".join(f"{g} of {g + s}" for g, s in per_seed)
        + " (sign test p=" + "/".join(f"{x:.2g}" for x in p) + f") over {', '.join(t)}{_left_out(left)}",
        verdict(all(x < ALPHA for x in p)),
    )


def _cross(r, source: str):
    m = r["06_cross_task"]
    if m.target != "ps-fxn" or f"finetuned on {source}" not in m.states:
        raise Untestable(f"the cross-task run does not probe PS-fxn after fine-tuning on {source}")
    return m.states["pretrained"], m.states[f"finetuned on {source}"]


def _cross_drop(r, source: str) -> tuple[list[float], list[float], float]:
    """Welch's p that fine-tuning on ``source`` lowered the PS-fxn probe, one per fine-tuning
    seed (each seed's probe seeds against the pretrained probe's), with the seeds' mean
    accuracies and the pretrained mean."""
    a, b = _cross(r, source)
    runs = _every_seed(b.mlp_seeds, b.mlp)
    return [welch_p(a.mlp, x, "less") for x in runs], [float(np.mean(x)) for x in runs], float(np.mean(a.mlp))


def _accuracies(means: Sequence[float], p: Sequence[float]) -> str:
    return "/".join(f"{x:.4f}" for x in means) + " (Welch p=" + "/".join(f"{x:.2g}" for x in p) + ")"


def _psrole_keeps(r) -> Outcome:
    p, means, before = _cross_drop(r, "ps-role")
    return Outcome(
        f"PS-fxn MLP accuracy {before:.4f} pretrained, {_accuracies(means, p)} after PS-role "
        f"({_seeds_note(len(p))}; a drop counts where Welch p < {ALPHA} on every seed)",
        verdict(not all(x < ALPHA for x in p)),
    )


def _pos_hurts(r) -> Outcome:
    p, means, before = _cross_drop(r, "pos")
    return Outcome(
        f"PS-fxn MLP accuracy {before:.4f} pretrained, {_accuracies(means, p)} after POS "
        f"({_seeds_note(len(p))}; a drop counts where Welch p < {ALPHA} on every seed)",
        verdict(all(x < ALPHA for x in p)),
    )


def _pos_shrinks(r) -> Outcome:
    a, b = _cross(r, "pos")
    signs = [count_signs(relative_changes(a.min_distance, d, a.scale, scale))
             for d, scale in zip(_every_seed(b.min_distance_seeds, b.min_distance),
                                 _every_seed(b.scale_seeds, b.scale), strict=True)]
    p = [sign_p(s, g) for g, s in signs]
    return Outcome(
        f"relative to the spread, {'/'.join(str(s) for _, s in signs)} PS-fxn labels' minimum distances "
        f"shrank and {'/'.join(str(g) for g, _ in signs)} grew after POS ({_seeds_note(len(p))}; sign "
        "test p=" + "/".join(f"{x:.2g}" for x in p) + ")",
        verdict(all(x < ALPHA for x in p)),
    )


def _final_similarities(v) -> list[list[float | None]]:
    """Each transformer layer's similarity to pretrained at the last snapshot: one list per
    fine-tuning seed where the record has them."""
    return _every_seed(v.final_similarity_seeds, v.final_similarity)


def _layer_tasks(r, layers: Sequence[int]) -> tuple[dict, list[str]]:
    """Chapter 7's tasks whose similarity to pretrained is defined at each of ``layers``
    (indices into the transformer layers) on every fine-tuning seed, and the names of the
    others. The paper defines the similarity only on linearly separable representations and
    leaves such tasks out of its layer figures (TREC-50); a claim is tested on the rest."""

    def defined(v) -> bool:
        return all(s and all(s[i] is not None and np.isfinite(s[i]) for i in layers)
                   for s in _final_similarities(v))

    return _tasks_where(
        r["07_layers"], defined,
        "no task has a defined similarity (a linearly separable layer before and after "
        "fine-tuning, on every fine-tuning seed) at the layers the claim compares")


def _top_above_half(r) -> Outcome:
    t, left = _layer_tasks(r, [-1])
    top = {k: [float(s[-1]) for s in _final_similarities(v)] for k, v in t.items()}
    n = max(len(x) for x in top.values())
    return Outcome(
        f"top layer's similarity to pretrained at the end ({_seeds_note(n)}): "
        + ", ".join(f"{k} " + "/".join(f"{x:.2f}" for x in xs) for k, xs in top.items()) + _left_out(left),
        verdict(all(x > SIMILARITY_FLOOR for xs in top.values() for x in xs)),
    )


def _lower_change_less(r) -> Outcome:
    t, left = _layer_tasks(r, [0, -1])
    up = down = 0
    n = 1
    for v in t.values():
        pairs = v.n_labels * (v.n_labels - 1) // 2
        z = [fisher_z(float(s[0]), float(s[-1]), pairs, pairs) for s in _final_similarities(v)]
        n = max(n, len(z))
        # a task counts only where every fine-tuning seed shows the difference
        up += all(stats.norm.sf(x) < ALPHA for x in z)
        down += all(stats.norm.cdf(x) < ALPHA for x in z)
    return Outcome(
        f"first transformer layer significantly more similar to pretrained than the top one on {up} of "
        f"{len(t)} tasks, less on {down} (Fisher z, {_seeds_note(n)}){_left_out(left)}",
        verdict(most(up, len(t)) and not down),
    )


# -- Rajaee & Pilehvar 2021 -------------------------------------------------------------
def _iso(r) -> dict:
    return tasks_of(r["08_isotropy"])


def _seeds(v, measure: str, single) -> list[float]:
    """The fine-tuned values of ``measure`` for every fine-tuning seed where the record has
    them, else the one run's ``single``."""
    return [num(x, measure) for x in _every_seed((v.finetuned_seeds or {}).get(measure), single)]


def _not_more_isotropic(r) -> Outcome:
    t = _iso(r)
    rose = [
        k
        for k, v in t.items()
        if all(a > num(v.isoscore["pretrained"], "IsoScore") and b > num(v.partition["pretrained"], "I(W)")
               for a, b in zip(_seeds(v, "isoscore", v.isoscore["finetuned"]),
                               _seeds(v, "partition", v.partition["finetuned"]), strict=True))
    ]
    n = max(len(_seeds(v, "isoscore", v.isoscore["finetuned"])) for v in t.values())
    spread = f"on every one of {n} fine-tuning seeds" if n > 1 else "one estimate per state: no spread"
    return Outcome(
        f"IsoScore and I(W) of the last layer both rose on {len(rose)} of {len(t)} tasks ({spread})",
        verdict(len(rose) < len(t)),
    )


def _stays_anisotropic(r) -> Outcome:
    t = _iso(r)
    fold = {
        k: [x / max(num(v.partition["pretrained"], "I(W)"), 1e-300)
            for x in _seeds(v, "partition", v.partition["finetuned"])]
        for k, v in t.items()
    }
    return Outcome(
        "I(W) after / before fine-tuning, last layer (each fine-tuning seed): "
        + ", ".join(f"{k} " + "/".join(f"{x:.2g}x" for x in xs) for k, xs in fold.items()),
        verdict(all(x < ANISOTROPY_FOLD for xs in fold.values() for x in xs)),
    )


def _local_change(r) -> Outcome:
    t = {k: v for k, v in _iso(r).items() if v.word_share.get("pretrained") is not None}
    if not t:
        raise Untestable("no word or pair task in the isotropy run")
    rel = {
        k: [abs(x - v.word_share["pretrained"]) / v.word_share["pretrained"]
            for x in _seeds(v, "word_share", v.word_share["finetuned"])]
        for k, v in t.items()
    }
    n = sum(all(x >= LOCAL_CHANGE for x in xs) for xs in rel.values())
    return Outcome(
        "word-identity share of the top directions changed by (each fine-tuning seed) "
        + ", ".join(f"{k} " + "/".join(f"{x:.0%}" for x in xs) for k, xs in rel.items()),
        verdict(most(n, len(rel))),
    )


def _elongated(r) -> Outcome:
    t = _iso(r)
    after = {k: _seeds(v, "elongated", v.elongated["finetuned"]) for k, v in t.items()}
    before = {k: num(v.elongated["pretrained"], "elongated") for k, v in t.items()}
    # a task counts up (down) only if every fine-tuning seed moved that way; else a tie
    up = sum(all(x > before[k] for x in xs) for k, xs in after.items())
    down = sum(all(x < before[k] for x in xs) for k, xs in after.items())
    p = sign_p(up, down)
    return Outcome(
        f"more elongated directions after fine-tuning on {up} of {len(t)} tasks, fewer on {down} "
        f"(every fine-tuning seed; sign test p={p:.2g})",
        verdict(p < ALPHA),
    )


def _top_carries(r) -> Outcome:
    """Removing the top D directions costs the fine-tuned ridge probe more than removing D
    random ones (beyond 1.645 SE of the difference), and more than it costs the pretrained
    probe: each is counted over the tasks where every fine-tuning seed shows it, and the
    claim holds where both counts are most tasks."""
    t = _iso(r)
    beyond, costlier = 0, 0
    per_task = []
    for name, v in t.items():
        pr, seeds = v.probe["finetuned"], v.finetuned_seeds or {}
        none, top, rnd = (
            [num(x, "probe accuracy") for x in _every_seed(seeds.get(f"probe {k}"), pr[k])]
            for k in ("none", "top D removed", "random D removed")
        )
        pre = v.probe["pretrained"]
        cost_pre = num(pre["none"], "probe") - num(pre["top D removed"], "probe")
        se = [math.sqrt(2) * accuracy_se(n, v.n_test) for n in none]
        beyond += all(b - a > Z_ONE_SIDED * e for a, b, e in zip(top, rnd, se, strict=True))
        costlier += all(n - a > cost_pre for n, a in zip(none, top, strict=True))
        per_task.append(f"{name} " + "/".join(f"{n - a:+.3f}" for n, a in zip(none, top, strict=True)))
    return Outcome(
        f"removing the top D directions costs the fine-tuned probe more than D random ones (beyond "
        f"1.645 SE) on {beyond} of {len(t)} tasks, and more than it costs the pretrained probe on {costlier} "
        f"(every fine-tuning seed; cost per seed: {', '.join(per_task)})",
        verdict(most(beyond, len(t)) and most(costlier, len(t))),
    )


def _enhancement(r) -> Outcome:
    """The paper's evaluation (section 6): a classifier trained on each enhancement of the
    last layer's vectors. A task counts as helped when, on every fine-tuning seed, the best
    enhancement beat the vectors as they are by more than 1.645 standard errors of the
    difference of two test accuracies; the claim holds unless most tasks were helped."""
    from .results import PAPER_ENHANCEMENT_EVALUATION

    m = r["08_isotropy"]
    if m.enhancement_evaluation != PAPER_ENHANCEMENT_EVALUATION:
        raise Untestable(
            "enhancement was scored by retraining a standardized probe on the enhanced vectors, which "
            "can hardly gain from removing directions: rerun chapter 8 for the paper's evaluation"
            if m.enhancement_evaluation == "retrained probe"
            else "chapter 8 ran without the paper's enhancement evaluation"
        )
    t = {k: v for k, v in tasks_of(m).items() if v.enhanced_finetuned}
    if not t:
        raise Untestable("no task holds the paper's enhancement evaluation")

    def best_gains(accuracy: Mapping[str, Sequence[float | None]], n_test: int) -> list[tuple[float, float]]:
        """Per fine-tuning seed: the best enhancement's gain in accuracy, and its 1.645-SE margin."""
        out = []
        for i, base in enumerate(accuracy["none"]):
            base = num(base, "accuracy on the vectors as they are")
            best = max(num(accuracy[x][i], f"accuracy with {x}") for x in accuracy if x != "none")
            out.append((best - base, Z_ONE_SIDED * math.sqrt(2) * accuracy_se(base, n_test)))
        return out

    post = {k: best_gains(v.enhanced_finetuned, v.n_test) for k, v in t.items()}
    helped = [k for k, g in post.items() if all(gain > margin for gain, margin in g)]
    pre_helped = 0
    for v in t.values():
        pre = v.enhanced_pretrained or {}
        if pre.get("none") is not None and all(x is not None for x in pre.values()):
            ((gain, margin),) = best_gains({k: [x] for k, x in pre.items()}, v.n_test)
            pre_helped += gain > margin
    return Outcome(
        f"the best of the four enhancements raised the fine-tuned classifier's accuracy beyond 1.645 SE "
        f"on every fine-tuning seed on {len(helped)} of {len(t)} tasks (pretrained: on {pre_helped}); "
        "best change, each seed: " + ", ".join(f"{k} {_per_seed([g for g, _ in x])}"
                                                for k, x in post.items()),
        verdict(not most(len(helped), len(t))),
    )


# -- Phang, Liu & Bowman 2021 -----------------------------------------------------------
def _blocks(v, state: str, matrix=None):
    from .cka import blocks_beyond_banded

    C = np.asarray(getattr(v, f"cka_{state}") if matrix is None else matrix, float)
    if len(C) < 3 or not np.isfinite(C).all():
        raise Untestable("block structure needs at least 3 layers with a defined CKA")
    return blocks_beyond_banded(C, offset=v.layers[0])


def _cka_tasks(r, states=("finetuned",)) -> dict:
    """{task: {state: BlockStructure, "seeds": [BlockStructure of each fine-tuning seed's
    fine-tuned matrix]}} for the tasks whose matrices have a block structure (3 layers or
    more); Untestable if none has. A record from one seed has its one fine-tuned matrix."""
    out = {}
    for k, v in tasks_of(r["09_cka"]).items():
        try:
            out[k] = {s: _blocks(v, s) for s in states}
            matrices = _every_seed(v.cka_finetuned_seeds, v.cka_finetuned)
            out[k]["seeds"] = [_blocks(v, "finetuned", m) for m in matrices]
        except Untestable:
            continue
    if not out:
        raise Untestable("block structure needs at least 3 layers with a defined CKA, on some task")
    return out


def _per_seed(values) -> str:
    return "/".join(f"{x:+.3f}" if isinstance(x, float) else str(x) for x in values)


def _block_diagonal(r) -> Outcome:
    t = _cka_tasks(r)
    score = {k: [b.score for b in v["seeds"]] for k, v in t.items()}
    n = sum(all(x >= BLOCK_MARGIN for x in xs) for xs in score.values())
    return Outcome(
        "fine-tuned block contrast beyond the best banded matrix (each fine-tuning seed; a task "
        "counts if every seed clears the margin): "
        + ", ".join(f"{k} {_per_seed(x)}" for k, x in score.items()),
        verdict(most(n, len(t))),
    )


def _sharper(r) -> Outcome:
    t = _cka_tasks(r, ("pretrained", "finetuned"))
    d = {k: [b.score - v["pretrained"].score for b in v["seeds"]] for k, v in t.items()}
    n = sum(all(x >= BLOCK_MARGIN for x in xs) for xs in d.values())
    return Outcome(
        "change of block contrast beyond the banded fit (each fine-tuning seed): "
        + ", ".join(f"{k} {_per_seed(x)}" for k, x in d.items()),
        verdict(most(n, len(t))),
    )


def _late_block(r) -> Outcome:
    t = _cka_tasks(r)
    n = 0
    for v in t.values():
        n += all(b.score >= BLOCK_MARGIN and b.blocks[-1][1] > b.blocks[-1][0] for b in v["seeds"])
    return Outcome(
        f"the top layer shares a block (beyond the banded fit) with a lower layer on {n} of {len(t)} tasks "
        "(on every fine-tuning seed)",
        verdict(most(n, len(t))),
    )


def _droppable(dropping) -> int:
    """The number of top layers that can go, each k up to it within the tolerance."""
    return cka.droppable_layers([num(a, "accuracy") for a in dropping], DROP_TOLERANCE)


def _drop(r) -> Outcome:
    t = tasks_of(r["09_cka"])
    k = {name: [_droppable(d) for d in _every_seed(v.dropping_seeds, v.dropping)] for name, v in t.items()}
    loss = {name: v.dropping[0] - v.dropping[1] for name, v in t.items() if len(v.dropping) > 1}
    n = sum(min(x) >= 1 for x in k.values())
    return Outcome(
        f"top layers droppable within {DROP_TOLERANCE} (first k that fails ends the count; each "
        "fine-tuning seed, a task counts if every seed can drop one): "
        + ", ".join(f"{name} {_per_seed(x)} (loss at 1: {loss.get(name, float('nan')):.3f})"
                    for name, x in k.items()),
        verdict(most(n, len(t))),
    )


P03, P04, P05, P06, P07 = (
    ("03_probing_performance",),
    ("04_linearity",),
    ("05_spatial_structure",),
    ("06_cross_task",),
    ("07_layers",),
)
P08, P09 = ("08_isotropy",), ("09_cka",)

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "zs-helps",
        ZS,
        "4.1",
        "Fine-tuning improves the last layer's MLP-probe accuracy on every task.",
        "improved in all cases but one of 25 (BERT-small, PS-fxn)",
        "§4.1",
        "MLP-probe test accuracy, pretrained (over probe seeds) and fine-tuned (over fine-tuning "
        "seeds, each the mean over probe seeds); Welch's t-test",
        P03,
        _helps,
    ),
    Claim(
        "zs-similarity-falls",
        ZS,
        "4.1",
        "Fine-tuning lowers the train-test spatial similarity on every task.",
        "decreased for every model and task",
        "§4.1",
        "train-test spatial similarity of separable representations; Fisher's z-test on every "
        "fine-tuning seed",
        P03,
        _similarity_falls,
    ),
    Claim(
        "zs-lowest-when-hurt",
        ZS,
        "4.1",
        "Where fine-tuning does not help, the train-test similarity after it is the lowest.",
        "0.44, the lowest similarity (BERT-small, PS-fxn)",
        "§4.1",
        "the task with the lowest similarity after fine-tuning, against the tasks not helped",
        P03,
        _lowest_when_hurt,
    ),
    Claim(
        "zs-fewer-clusters",
        ZS,
        "4.2",
        "Fine-tuning makes representations more linear: fewer clusters where a label needed several.",
        "cluster counts fall towards the number of labels",
        "§4.2",
        "DirectProbe clusters of the last layer, on tasks not separable before",
        P04,
        _fewer_clusters,
    ),
    Claim(
        "zs-tiny-nonlinear",
        ZS,
        "4.2",
        "Before fine-tuning, BERT-tiny needs more clusters than labels for most tasks.",
        "BERT-tiny is not linearly separable before fine-tuning for most tasks",
        "§4.2",
        "DirectProbe clusters against labels, pretrained",
        P04,
        _tiny_nonlinear,
        _bert_tiny,
    ),
    Claim(
        "zs-linear-after",
        ZS,
        "4.2",
        "After fine-tuning, every task but TREC-50 is linearly separable.",
        "linearly separable after fine-tuning",
        "§4.2",
        "clusters = labels after fine-tuning",
        P04,
        _linear_after,
    ),
    Claim(
        "zs-trec-nonlinear",
        ZS,
        "4.2",
        "TREC-50 stays non-linear after fine-tuning.",
        "TREC-50 stays non-linear",
        "§4.2",
        "TREC-50 clusters against labels after fine-tuning",
        P04,
        _trec_nonlinear,
    ),
    Claim(
        "zs-apart",
        ZS,
        "4.3",
        "Fine-tuning pushes labels apart: most labels' minimum distances grow.",
        "minimum distances grow during fine-tuning",
        "§4.3",
        "each label's minimum distance over the spread, first and last snapshot; sign test per task "
        "and fine-tuning seed, a task counting where every seed shows the change",
        P05,
        _apart,
    ),
    Claim(
        "zs-closest-apart",
        ZS,
        "4.3",
        "The closest labels move apart during fine-tuning.",
        "the three closest labels drift apart",
        "§4.3, Figure 3",
        "pairwise distances of the three closest labels over the spread; sign test on every "
        "fine-tuning seed",
        P05,
        _closest_apart,
    ),
    Claim(
        "zs-psrole-keeps",
        ZS,
        "4.4",
        "Fine-tuning on PS-role does not hurt the PS-fxn probe.",
        "fine-tuning on a related task keeps PS-fxn performance",
        "§4.4",
        "PS-fxn MLP accuracy over probe seeds; Welch's t-test for a drop on each fine-tuning seed, "
        "a drop counting where every seed shows one",
        P06,
        _psrole_keeps,
    ),
    Claim(
        "zs-pos-hurts",
        ZS,
        "4.4",
        "Fine-tuning on POS hurts the PS-fxn probe.",
        "fine-tuning on POS lowers PS-fxn performance",
        "§4.4",
        "PS-fxn MLP accuracy over probe seeds; Welch's t-test on every fine-tuning seed",
        P06,
        _pos_hurts,
    ),
    Claim(
        "zs-pos-shrinks",
        ZS,
        "4.4",
        "Fine-tuning on POS shrinks PS-fxn labels' minimum distances.",
        "mean change -1.68 (BERT-base)",
        "§4.4",
        "PS-fxn labels' minimum distances over the spread; sign test on every fine-tuning seed",
        P06,
        _pos_shrinks,
    ),
    Claim(
        "zs-top-above-half",
        ZS,
        "4.5",
        "Higher layers keep a spatial similarity above 0.5 to the pretrained model.",
        "above 0.5 in the higher layers",
        "§4.5",
        "top layer's similarity to pretrained at the last snapshot, on every fine-tuning seed",
        P07,
        _top_above_half,
    ),
    Claim(
        "zs-lower-change-less",
        ZS,
        "4.5",
        "Lower layers change less than higher layers.",
        "similarity to pretrained falls with height",
        "§4.5",
        "first against top transformer layer's similarity to pretrained; Fisher's z-test, a task "
        "counting where every fine-tuning seed shows the difference",
        P07,
        _lower_change_less,
    ),
    Claim(
        "rp-not-more-isotropic",
        RP,
        "3",
        "Fine-tuning does not necessarily make the space more isotropic.",
        "isotropy does not improve on every task",
        "§3, Table 1",
        "IsoScore and I(W) of the last layer",
        P08,
        _not_more_isotropic,
    ),
    Claim(
        "rp-stays-anisotropic",
        RP,
        "3",
        "Fine-tuned representations stay highly anisotropic.",
        "I(W) of the same order before and after fine-tuning",
        "§3, Table 1",
        f"I(W) after over before fine-tuning, against a {ANISOTROPY_FOLD:.0f}-fold rise",
        P08,
        _stays_anisotropic,
    ),
    Claim(
        "rp-local-structure",
        RP,
        "4",
        "Local structures that encode token identity change massively during fine-tuning.",
        "massive change in local structure",
        "§4",
        f"word-identity share of the top directions, a change of {LOCAL_CHANGE:.0%} or more",
        P08,
        _local_change,
    ),
    Claim(
        "rp-elongated",
        RP,
        "5",
        "The number of elongated directions grows after fine-tuning.",
        "dramatic growth in elongated directions",
        "§5",
        "directions with 10x an isotropic share; sign test",
        P08,
        _elongated,
    ),
    Claim(
        "rp-top-carries",
        RP,
        "5",
        "In fine-tuned representations the dominant directions carry the task's knowledge.",
        "removing them hurts fine-tuned, not pretrained, performance",
        "§5",
        "probe accuracy with the top D against D random directions removed; binomial SE",
        P08,
        _top_carries,
    ),
    Claim(
        "rp-enhancement",
        RP,
        "6",
        "Isotropy enhancement does not help fine-tuned representations.",
        "enhancement methods become ineffective",
        "§6",
        "test accuracy of a classifier trained on the last layer's vectors after zero-mean, "
        "clustering + zero-mean, global and cluster-based enhancement, against none; every "
        "fine-tuning seed, binomial SE",
        P08,
        _enhancement,
    ),
    Claim(
        "plb-blocks",
        PLB,
        "4",
        "Fine-tuned models show block-diagonal CKA: layers group into blocks.",
        "consistent block-diagonal structure (RoBERTa, ALBERT)",
        "§4, Figure 1",
        "block contrast of the fine-tuned CKA matrix beyond its best banded fit",
        P09,
        _block_diagonal,
    ),
    Claim(
        "plb-sharper",
        PLB,
        "4",
        "The block structure is sharper after fine-tuning than before.",
        "blocks emerge with fine-tuning",
        "§4, Figure 1",
        "change of the block contrast beyond the banded fit",
        P09,
        _sharper,
    ),
    Claim(
        "plb-late-block",
        PLB,
        "4",
        "The later layers of a fine-tuned model form a block of similar layers.",
        "strong similarity within the later layers",
        "§4",
        "whether the top layer shares a block beyond the banded fit",
        P09,
        _late_block,
    ),
    Claim(
        "plb-drop",
        PLB,
        "5",
        "The top layers can be dropped, with no further tuning, at little cost in accuracy.",
        "top few layers discarded without hurting performance",
        "§5",
        f"accuracy with the top k layers dropped; the first k losing more than {DROP_TOLERANCE} "
        "ends the count",
        P09,
        _drop,
    ),
)


def evaluate(records: Mapping[str, Record], info: ModelInfo | None = None) -> list[tuple[Claim, Outcome]]:
    """Every claim's outcome on one model's records ``{chapter: record}``."""
    return [(c, c.evaluate(records, info)) for c in CLAIMS]


def scorecard(records: Mapping[str, Record], info: ModelInfo | None = None) -> pd.DataFrame:
    """The claims table: paper, section, claim, the paper's figure and source, what we
    measured, ours, verdict; one row per claim, numbered from 1."""
    rows = [
        {
            "paper": c.paper,
            "section": c.section,
            "claim": c.text,
            "paper's figure": c.paper_figure,
            "source": c.paper_source,
            "measure": c.measure,
            "ours": o.ours,
            "verdict": o.verdict,
            "id": c.id,
        }
        for c, o in evaluate(records, info)
    ]
    table = pd.DataFrame(rows)
    table.index = np.arange(1, len(table) + 1)
    return table


def for_chapter(record: Record) -> pd.DataFrame:
    """The claims judged on one chapter's record alone, with their outcomes on it: the table
    a chapter shows at its end (columns id, claim, ours, verdict). Claims that also read other
    chapters are left to the scorecard."""
    own = [c for c in CLAIMS if c.reads == (record.chapter,)]
    rows = [{"id": c.id, "claim": c.text, **vars(c.evaluate({record.chapter: record}))} for c in own]
    return pd.DataFrame(rows, columns=["id", "claim", "ours", "verdict"]).set_index("id")
