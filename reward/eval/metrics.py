"""Pairwise accuracy against users' actual choices, as PIGBench reports it; pure (numpy only), tested with literals.

A method's output for a test pair is a *preference for image 1* in [0, 1] (1 = image 1, 0 = image 2, 0.5 = tie; a
probability in score mode) or `None` (no decision, e.g. the judge's answer could not be parsed). The predicted
winner is image 1 above 0.5, image 2 below, a tie at exactly 0.5.

Definitions (the paper reports "with tie" and "without tie" without defining them; these are our choices):

- **Labelled ties** (label 0: the user saw no difference, e.g. Pick-a-Pic's 0.5/0.5) have no correct answer: they are
  left out of both accuracies and counted (`n_label_ties`).
- **Accuracy with tie**: over the other pairs, a right winner scores 1, a wrong one 0, a predicted tie 0.5. A pair
  without a decision also scores 0.5 (it is as uninformative as a tie, and dropping it would reward methods that
  fail); its rate is reported separately (`undecided_rate`).
- **Accuracy without tie**: the same, over the pairs with a predicted winner only (predicted ties and undecided pairs
  excluded); `tie_rate` and `undecided_rate` say how many were excluded. `None` when no pair is left.
- **Position consistency**: the fraction of pairs judged in both orders, both decided, whose two orders named the
  same winner.
- Accuracies are pooled over pairs (micro average, the paper's "accuracy over test pairs"); the per-user accuracy
  distribution (each user's own accuracy with tie) is reported beside it.
- **95% confidence intervals**: percentile bootstrap, `n_resamples` resamples with a fixed seed. The unit resampled
  is the *user* (a cluster bootstrap: a user's pairs share one context and one taste, so they are not independent)
  when there are at least `MIN_USERS_FOR_USER_BOOTSTRAP` users with evaluable pairs, otherwise the *pair* (with a
  handful of clusters a cluster bootstrap understates the spread). Every method of a run is resampled with the same
  seed, so their intervals come from the same resampled user sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

MIN_USERS_FOR_USER_BOOTSTRAP = 10


@dataclass(frozen=True)
class PairOutcome:
    """One method's output on one test pair.

    Attributes:
        user_id: whose pair it is.
        label: 1 or 2 (the image the user preferred), 0 for a labelled tie.
        preference: preference for image 1 in [0, 1], or `None` (no decision).
        consistent: both presentation orders named the same winner (`None` when not judged in both orders).
    """

    user_id: str
    label: int
    preference: float | None
    consistent: bool | None = None


def predicted_winner(preference: float | None) -> int | None:
    """1 above 0.5, 2 below, 0 (tie) at exactly 0.5, `None` without a decision."""
    if preference is None:
        return None
    if not 0.0 <= preference <= 1.0 or math.isnan(preference):
        raise ValueError(f"A preference must lie in [0, 1], got {preference}.")
    return 0 if math.isclose(preference, 0.5, abs_tol=1e-12) else (1 if preference > 0.5 else 2)


def pair_score(label: int, preference: float | None) -> float | None:
    """Score of one pair for the accuracy with tie: 1 right, 0 wrong, 0.5 tie or no decision; `None` for label 0."""
    if label not in (0, 1, 2):
        raise ValueError(f"A label must be 1, 2 or 0 (tie), got {label!r}.")
    if label == 0:
        return None
    winner = predicted_winner(preference)
    if winner is None or winner == 0:
        return 0.5
    return 1.0 if winner == label else 0.0


def _unit_sums(outcomes: Sequence[PairOutcome], statistic: str, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Per resampling unit (user or pair): (sum of scores, number of counted pairs) for `statistic`."""
    if statistic not in ("with_tie", "without_tie"):
        raise ValueError(f"statistic must be 'with_tie' or 'without_tie', got {statistic!r}.")
    if unit not in ("users", "pairs"):
        raise ValueError(f"unit must be 'users' or 'pairs', got {unit!r}.")
    sums: dict[object, list[float]] = {}
    for i, o in enumerate(outcomes):
        score = pair_score(o.label, o.preference)
        if score is None or (statistic == "without_tie" and predicted_winner(o.preference) in (None, 0)):
            continue
        key = o.user_id if unit == "users" else i
        entry = sums.setdefault(key, [0.0, 0.0])
        entry[0] += score
        entry[1] += 1
    if unit == "users":  # users whose pairs are all excluded still count as (empty) clusters
        for o in outcomes:
            sums.setdefault(o.user_id, [0.0, 0.0])
    values = np.array(list(sums.values()), dtype=np.float64).reshape(-1, 2)
    return values[:, 0], values[:, 1]


def accuracy(outcomes: Sequence[PairOutcome], statistic: str = "with_tie") -> float | None:
    """Pooled accuracy with or without ties (module docstring); `None` when no pair counts."""
    num, den = _unit_sums(outcomes, statistic, "pairs")
    return float(num.sum() / den.sum()) if den.sum() > 0 else None


def bootstrap_ci(
    outcomes: Sequence[PairOutcome],
    statistic: str = "with_tie",
    unit: str = "users",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile-bootstrap confidence interval of `accuracy(outcomes, statistic)`, resampling `unit`s.

    Returns:
        `(low, high)`, or `None` when fewer than two units have counted pairs (nothing to resample).
    """
    num, den = _unit_sums(outcomes, statistic, unit)
    return ratio_bootstrap(num, den, n_resamples, seed, level)


def bootstrap_mean(
    values: Sequence[float], n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile-bootstrap confidence interval of the mean of `values` (each value is one resampled unit).

    Returns:
        `(low, high)`, or `None` for fewer than two values.
    """
    values = np.asarray(values, dtype=np.float64)
    return ratio_bootstrap(values, np.ones_like(values), n_resamples, seed, level)


def ratio_bootstrap(
    num: np.ndarray, den: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """The one percentile bootstrap of this project: resample units with replacement, `n_resamples` times with a
    fixed seed, and take the `level` interval of `sum(num) / sum(den)` over the resampled units (a mean when every
    `den` is 1; a pooled accuracy when units are users with `den` pairs each).

    Returns:
        `(low, high)`, or `None` when fewer than two units have `den > 0` (nothing to resample).
    """
    if n_resamples < 1 or not 0 < level < 1:
        raise ValueError(f"Need n_resamples >= 1 and 0 < level < 1, got {n_resamples}, {level}.")
    if int((den > 0).sum()) < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(n_resamples, len(num)))
    nums, dens = num[idx].sum(axis=1), den[idx].sum(axis=1)
    stats = nums[dens > 0] / dens[dens > 0]
    tail = round(50 * (1 - level), 9)  # 2.5 for 0.95, not 2.5000000000000018
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def per_user_accuracy(outcomes: Sequence[PairOutcome]) -> dict[str, dict]:
    """Each user's accuracy with and without tie and pair counts, keyed by user id (in first-seen order)."""
    by_user: dict[str, list[PairOutcome]] = {}
    for o in outcomes:
        by_user.setdefault(o.user_id, []).append(o)
    result = {}
    for user, items in by_user.items():
        result[user] = {
            "with_tie": accuracy(items, "with_tie"),
            "without_tie": accuracy(items, "without_tie"),
            "pairs": len(items),
            "evaluable": sum(o.label != 0 for o in items),
        }
    return result


def distribution(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Mean, median, standard deviation (population), min, max and count of the values that are not `None`."""
    xs = np.array([v for v in values if v is not None], dtype=np.float64)
    if xs.size == 0:
        return {"n": 0, "mean": None, "median": None, "std": None, "min": None, "max": None}
    return {
        "n": int(xs.size),
        "mean": float(xs.mean()),
        "median": float(np.median(xs)),
        "std": float(xs.std()),
        "min": float(xs.min()),
        "max": float(xs.max()),
    }


def rate(flags: Iterable[bool | None]) -> float | None:
    """Fraction of `True` among the flags that are not `None`; `None` if there are none."""
    decided = [f for f in flags if f is not None]
    return sum(decided) / len(decided) if decided else None


def choose_ci_unit(outcomes: Sequence[PairOutcome], unit: str = "auto") -> str:
    """`"users"` or `"pairs"`: `unit` itself, or for `"auto"` the rule of the module docstring."""
    if unit in ("users", "pairs"):
        return unit
    if unit != "auto":
        raise ValueError(f"ci unit must be 'auto', 'users' or 'pairs', got {unit!r}.")
    users = {o.user_id for o in outcomes if o.label != 0}
    return "users" if len(users) >= MIN_USERS_FOR_USER_BOOTSTRAP else "pairs"


def summarize(outcomes: Sequence[PairOutcome], unit: str = "users", n_resamples: int = 1000, seed: int = 0) -> dict:
    """Every figure of one method on one dataset (the row of the results table and its details).

    Args:
        outcomes: the method's output on every test pair.
        unit: bootstrap unit, `"users"` or `"pairs"` (see `choose_ci_unit`).
        n_resamples: bootstrap resamples.
        seed: bootstrap seed.
    """
    evaluable = [o for o in outcomes if o.label != 0]
    winners = [predicted_winner(o.preference) for o in evaluable]
    per_user = per_user_accuracy(outcomes)
    n = len(evaluable)
    return {
        "accuracy_with_tie": accuracy(outcomes, "with_tie"),
        "accuracy_with_tie_ci": bootstrap_ci(outcomes, "with_tie", unit, n_resamples, seed),
        "accuracy_without_tie": accuracy(outcomes, "without_tie"),
        "accuracy_without_tie_ci": bootstrap_ci(outcomes, "without_tie", unit, n_resamples, seed),
        "tie_rate": sum(w == 0 for w in winners) / n if n else None,
        "undecided_rate": sum(w is None for w in winners) / n if n else None,
        "position_consistency": rate(o.consistent for o in outcomes),
        "ci_unit": unit,
        "n_pairs": len(outcomes),
        "n_label_ties": len(outcomes) - n,
        "n_evaluable": n,
        "n_decided": sum(w in (1, 2) for w in winners),
        "n_users": len(per_user),
        "per_user": per_user,
        "per_user_with_tie": distribution(u["with_tie"] for u in per_user.values()),
    }
