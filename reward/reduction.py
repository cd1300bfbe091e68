"""Pure reductions from judge verdicts to preferences and rewards. No model code here; unit-tested with literals.

Conventions: a *preference for A* is in [0, 1]: 1 = A wins, 0 = B wins, 0.5 = tie (or, in score mode, a probability).
`None` means the judge could not decide; it is never turned into a number silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


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
