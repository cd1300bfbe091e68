"""Pure reductions from judge verdicts to preferences and rewards. No model code here; unit-tested with literals.

Conventions: a *preference for A* is in [0, 1]: 1 = A wins, 0 = B wins, 0.5 = tie (or, in score mode, a probability).
`None` means the judge could not decide; it is never turned into a number silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def preference_from_orders(pref_ab: float | None, pref_ba: float | None) -> float | None:
    """Combine the two presentation orders of one comparison into a preference for A.

    Args:
        pref_ab: preference for A when A was shown as Image 1 (`Verdict.preference_for_1` of that call).
        pref_ba: preference for A when A was shown as Image 2 (i.e. `1 - preference_for_1` of the swapped call).

    Returns:
        The mean of the decided orders, or `None` when neither order was decided. With both orders decided,
        position-biased answers ("always Image 1") average out to 0.5 instead of deciding the reward.
    """
    decided = [p for p in (pref_ab, pref_ba) if p is not None]
    return sum(decided) / len(decided) if decided else None


def swap(preference_for_1: float | None) -> float | None:
    """Preference for the image shown second, from a preference for the image shown first."""
    return None if preference_for_1 is None else 1.0 - preference_for_1


def position_consistent(pref_ab: float | None, pref_ba: float | None) -> bool | None:
    """Whether both orders name the same winner (`None` unless both orders were decided).

    For probabilities (score mode) "same winner" means both on the same side of 0.5 (a 0.5 only agrees with 0.5).
    """
    if pref_ab is None or pref_ba is None:
        return None
    side = lambda p: 0 if math.isclose(p, 0.5, abs_tol=1e-9) else (1 if p > 0.5 else -1)  # noqa: E731
    return side(pref_ab) == side(pref_ba)


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not `None`; `None` if there are none."""
    decided = [v for v in values if v is not None]
    return sum(decided) / len(decided) if decided else None


def win_rates(
    pairs: Sequence[tuple[int, int | None]], preferences: Sequence[float | None], num_items: int
) -> tuple[list[float], list[float], int]:
    """Per-item win rates from pairwise preferences, against a reference and against the other items.

    Args:
        pairs: `(i, j)` per comparison: item `i` (shown as A) against item `j`, or against the reference (the
            original prompt's image) when `j` is `None`.
        preferences: the preference for A of each comparison (`Comparison.preference`); `None` = undecided.
        num_items: number of items (rewrites); every index of `pairs` is below it.

    Returns:
        `(vs_reference, vs_items, undecided)`: per item, the mean of its preferences against the reference and
        against the other items (item `i` is credited `p`, item `j` `1 - p`), 0.5 for an item without such a
        comparison; and the number of undecided comparisons. An undecided comparison counts as a tie (0.5): it
        carries no information, and `None` would make TRL score the rewrite like a lost comparison (`nansum`).

    Example: items 0 and 1, item 0 beats the reference (1.0) and item 1 (0.75), item 1 is undecided against the
    reference: `win_rates([(0, None), (1, None), (0, 1)], [1.0, None, 0.75], 2) == ([1.0, 0.5], [0.75, 0.25], 1)`.
    """
    if len(pairs) != len(preferences):
        raise ValueError(f"{len(pairs)} pairs but {len(preferences)} preferences: one preference per pair.")
    against_reference: list[list[float]] = [[] for _ in range(num_items)]
    against_items: list[list[float]] = [[] for _ in range(num_items)]
    undecided = 0
    for (i, j), p in zip(pairs, preferences):
        undecided += p is None
        p = 0.5 if p is None else p
        if j is None:
            against_reference[i].append(p)
        else:
            against_items[i].append(p)
            against_items[j].append(1.0 - p)
    mean = lambda values: sum(values) / len(values) if values else 0.5  # noqa: E731
    return [mean(v) for v in against_reference], [mean(v) for v in against_items], undecided
