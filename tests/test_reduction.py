"""Pairwise-to-reward reductions, with literal inputs."""

from __future__ import annotations

import pytest

from reward.reduction import (
    mean_or_none,
    position_consistent,
    preference_from_orders,
    swap,
)


@pytest.mark.parametrize(
    "ab, ba, expected",
    [
        (1.0, 1.0, 1.0),  # A wins in both orders
        (1.0, 0.0, 0.5),  # "always Image 1": position bias cancels out
        (0.5, 1.0, 0.75),
        (None, 0.0, 0.0),  # one order undecided: the other decides
        (None, None, None),  # nothing decided: no number invented
    ],
)
def test_preference_from_orders(ab, ba, expected):
    assert preference_from_orders(ab, ba) == expected


def test_swap():
    assert swap(1.0) == 0.0 and swap(0.5) == 0.5 and swap(None) is None and swap(0.2) == pytest.approx(0.8)


@pytest.mark.parametrize(
    "ab, ba, expected",
    [(1.0, 1.0, True), (1.0, 0.0, False), (0.5, 0.5, True), (0.5, 1.0, False), (0.7, 0.6, True), (None, 1.0, None)],
)
def test_position_consistent(ab, ba, expected):
    assert position_consistent(ab, ba) is expected


def test_mean_or_none_skips_undecided():
    assert mean_or_none([1.0, None, 0.0]) == 0.5
    assert mean_or_none([None]) is None
