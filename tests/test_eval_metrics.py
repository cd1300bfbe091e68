"""Metrics of the benchmark, checked against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from reward.eval.baselines import preference_from_scores, reference_similarity
from reward.eval.metrics import (
    PairOutcome,
    accuracy,
    bootstrap_ci,
    bootstrap_mean,
    choose_ci_unit,
    distribution,
    pair_score,
    per_user_accuracy,
    predicted_winner,
    summarize,
)


def _outcomes(rows):
    return [PairOutcome(*row) for row in rows]


# user a: right, wrong, predicted tie, labelled tie; user b: undecided, right (probability 0.8), wrong (0.3 for 1)
ROWS = [
    ("a", 1, 1.0, True),
    ("a", 2, 1.0, True),
    ("a", 1, 0.5, False),
    ("a", 0, 1.0, True),
    ("b", 2, None, None),
    ("b", 1, 0.8, True),
    ("b", 1, 0.3, False),
]


def test_predicted_winner_and_pair_score():
    assert [predicted_winner(p) for p in (1.0, 0.51, 0.5, 0.49, 0.0, None)] == [1, 1, 0, 2, 2, None]
    assert pair_score(1, 1.0) == 1.0 and pair_score(2, 1.0) == 0.0
    assert pair_score(1, 0.5) == 0.5 and pair_score(2, None) == 0.5  # a tie or no decision: half right
    assert pair_score(0, 1.0) is None  # a labelled tie has no right answer
    with pytest.raises(ValueError, match="label"):
        pair_score(3, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predicted_winner(1.5)


def test_accuracies_by_hand():
    outcomes = _outcomes(ROWS)
    # with tie: 6 evaluable pairs, scores 1, 0, .5, .5, 1, 0 -> 3 / 6
    assert accuracy(outcomes, "with_tie") == pytest.approx(0.5)
    # without tie: decided pairs only (right, wrong, right, wrong) -> 2 / 4
    assert accuracy(outcomes, "without_tie") == pytest.approx(0.5)
    better = _outcomes([("a", 1, 1.0), ("a", 2, 0.0), ("a", 1, 0.5), ("a", 2, 1.0)])
    assert accuracy(better, "with_tie") == pytest.approx(2.5 / 4)
    assert accuracy(better, "without_tie") == pytest.approx(2 / 3)
    assert accuracy(_outcomes([("a", 1, 0.5), ("a", 0, 1.0)]), "without_tie") is None


def test_summary_rates_and_counts():
    s = summarize(_outcomes(ROWS), unit="pairs", n_resamples=200, seed=0)
    assert s["n_pairs"] == 7 and s["n_label_ties"] == 1 and s["n_evaluable"] == 6 and s["n_decided"] == 4
    assert s["tie_rate"] == pytest.approx(1 / 6) and s["undecided_rate"] == pytest.approx(1 / 6)
    assert s["position_consistency"] == pytest.approx(4 / 6)  # 6 flags that are not None, 4 True
    assert s["per_user"]["a"] == {"with_tie": 0.5, "without_tie": 0.5, "pairs": 4, "evaluable": 3}
    assert s["per_user"]["b"]["with_tie"] == pytest.approx(0.5) and s["per_user"]["b"]["without_tie"] == 0.5
    assert s["per_user_with_tie"]["mean"] == pytest.approx(0.5) and s["n_users"] == 2


def test_per_user_accuracy_and_distribution():
    per_user = per_user_accuracy(_outcomes([("u", 1, 1.0), ("u", 1, 0.0), ("v", 2, 0.0), ("w", 0, 1.0)]))
    assert [per_user[k]["with_tie"] for k in ("u", "v", "w")] == [0.5, 1.0, None]
    d = distribution([0.5, 1.0, None, 0.0])
    assert d == {"n": 3, "mean": 0.5, "median": 0.5, "std": pytest.approx(np.sqrt(1 / 6)), "min": 0.0, "max": 1.0}


def test_user_bootstrap_by_hand():
    # Two users, one pair each: one right, one wrong. Resampling users gives accuracies 0, .5, 1 with
    # probabilities 1/4, 1/2, 1/4, so the 2.5th and 97.5th percentiles are 0 and 1.
    outcomes = _outcomes([("a", 1, 1.0), ("b", 1, 0.0)])
    assert bootstrap_ci(outcomes, "with_tie", "users", n_resamples=2000, seed=0) == (0.0, 1.0)
    # Resampling users keeps a user's pairs together: user a has 3 right pairs, b 1 wrong, so a resample's accuracy
    # is 1 (a, a), 3/4 (a, b) or 0 (b, b); resampling pairs also gives 1/4 and 1/2.
    clustered = _outcomes([("a", 1, 1.0)] * 3 + [("b", 1, 0.0)])
    assert bootstrap_ci(clustered, "with_tie", "users", n_resamples=4000, seed=1) == (0.0, 1.0)
    assert bootstrap_ci(clustered, "with_tie", "pairs", n_resamples=4000, seed=1) == (0.25, 1.0)
    rng = np.random.default_rng(1)  # the user-level resampling distribution, computed directly
    idx = rng.integers(0, 2, size=(4000, 2))
    nums, dens = np.array([3.0, 0.0])[idx].sum(1), np.array([3.0, 1.0])[idx].sum(1)
    expected = tuple(np.percentile(nums / dens, [2.5, 97.5]))
    assert bootstrap_ci(clustered, "with_tie", "users", n_resamples=4000, seed=1) == pytest.approx(expected)


def test_bootstrap_is_seeded_and_degenerate_cases():
    rng = np.random.default_rng(0)
    outcomes = _outcomes([(str(i % 13), 1, float(rng.random() < 0.6)) for i in range(200)])
    a = bootstrap_ci(outcomes, "with_tie", "users", 500, seed=3)
    assert a == bootstrap_ci(outcomes, "with_tie", "users", 500, seed=3)
    assert a != bootstrap_ci(outcomes, "with_tie", "users", 500, seed=4)
    assert a[0] <= accuracy(outcomes) <= a[1]
    perfect = _outcomes([(str(i), 1, 1.0) for i in range(5)])
    assert bootstrap_ci(perfect, "with_tie", "users", 100, seed=0) == (1.0, 1.0)
    assert bootstrap_ci(_outcomes([("a", 1, 1.0)] * 5), "with_tie", "users") is None  # one user: no interval
    assert bootstrap_ci(_outcomes([("a", 1, 1.0)]), "with_tie", "pairs") is None


def test_bootstrap_mean_is_the_same_bootstrap_with_one_pair_per_unit():
    # `pig evaluate`'s interval of a mean over cells and the benchmark's interval over pairs are one computation:
    # the pair-unit interval of decided pairs equals the interval of the mean of their scores.
    rng = np.random.default_rng(2)
    outcomes = _outcomes([(str(i), 1, float(rng.random() < 0.7)) for i in range(40)])
    scores = [pair_score(o.label, o.preference) for o in outcomes]
    assert bootstrap_mean(scores, 700, seed=5) == bootstrap_ci(outcomes, "with_tie", "pairs", 700, seed=5)
    rng = np.random.default_rng(5)  # computed directly: mean of each resample, then the 2.5th and 97.5th percentiles
    means = np.asarray(scores)[rng.integers(0, 40, size=(700, 40))].mean(axis=1)
    assert bootstrap_mean(scores, 700, seed=5) == tuple(np.percentile(means, [2.5, 97.5]))
    assert bootstrap_mean([0.25, 0.25, 0.25], 50) == (0.25, 0.25)
    assert bootstrap_mean([0.7], 50) is None and bootstrap_mean([], 50) is None
    with pytest.raises(ValueError, match="n_resamples >= 1"):
        bootstrap_mean([0.0, 1.0], 0)


def test_ci_unit_choice():
    few = _outcomes([(str(i), 1, 1.0) for i in range(9)] + [("x", 0, 1.0)])  # 9 users with evaluable pairs
    many = _outcomes([(str(i), 1, 1.0) for i in range(10)])
    assert choose_ci_unit(few) == "pairs" and choose_ci_unit(many) == "users"
    assert choose_ci_unit(few, "users") == "users"
    with pytest.raises(ValueError, match="auto"):
        choose_ci_unit(few, "people")


def test_similarity_helpers():
    chosen = np.array([[1.0, 0.0], [0.0, 1.0]])
    rejected = np.array([[-1.0, 0.0], [-1.0, 0.0]])
    candidates = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    # mean cos to chosen minus mean cos to rejected: (0.5 - (-1)), (-0.5 - 1), (0.5 - 0)
    assert reference_similarity(candidates, chosen, rejected).tolist() == [1.5, -1.5, 0.5]
    assert [preference_from_scores(*s) for s in ((0.2, 0.1), (0.1, 0.2), (0.3, 0.3))] == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="at least one"):
        reference_similarity(candidates, chosen[:0], rejected)
