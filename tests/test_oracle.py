"""The toy-world teacher that the tiny PIGReward is distilled from: its answers must be what the parser and the
judge's reader expect, and its rationales must carry the user's taste."""

from __future__ import annotations

import numpy as np

from localmodels import oracle, world
from reward.parsing import parse_verdict


def test_teacher_verdicts_parse_ok_with_the_same_winner():
    rng = np.random.default_rng(0)
    for _ in range(40):
        user = oracle.SyntheticUser.sample(rng)
        _, a, b, *_ = oracle.make_reference(user, rng)
        context = [oracle.teacher_rationale(*oracle.make_reference(user, rng)[1:3], rng) for _ in range(4)]
        text, winner = oracle.teacher_verdict(context, a, b)
        verdict = parse_verdict(text)
        assert verdict.status == "ok", text
        assert verdict.winner == winner
        assert len(verdict.dimensions) == 3


def test_context_of_a_user_reveals_their_taste():
    """Across references, the axes a user cares about dominate the rationales (read back by majority)."""
    rng = np.random.default_rng(1)
    user = oracle.SyntheticUser({"palette": "warm", "layout": "sparse"}, {"palette": 1.0, "layout": 0.8})
    rationales = [oracle.teacher_rationale(*oracle.make_reference(user, rng)[1:3], rng) for _ in range(12)]
    prefs = oracle.read_context(rationales)
    assert prefs.get("palette") == "warm" and prefs.get("layout") == "sparse"


def test_read_context_takes_the_first_cue_of_a_sentence():
    bright = "The user likes bright, well lit images rather than dark ones."
    dark = "This user likes dim, night-like images rather than bright ones."
    assert oracle.read_context([bright]) == {"light": "bright"}
    assert oracle.read_context([dark]) == {"light": "dark"}
    assert oracle.read_context([]) == {}


def test_personal_dimension_follows_the_context_direction():
    warm = world.draw_scene(world.Scene("sun", "warm", "bright", "sparse", 1))
    cool = world.draw_scene(world.Scene("sun", "cool", "bright", "sparse", 1))
    likes_cool = ["The user prefers cool colours: they chose the blue and teal image over the warmer one."]
    assert oracle.teacher_verdict(likes_cool, warm, cool)[1] == 2
    likes_warm = ["This user favours a warm palette of orange and red over cool blues."]
    assert oracle.teacher_verdict(likes_warm, warm, cool)[1] == 1
    palette = parse_verdict(oracle.teacher_verdict([], warm, cool)[0]).dimensions[0]
    assert palette.name == "Colour palette" and palette.score_1 == palette.score_2  # no context, no palette prior


def test_examples_are_deterministic():
    from localmodels.judge_model import make_examples

    a, b = make_examples(12, seed=3), make_examples(12, seed=3)
    assert [e["answer"] for e in a] == [e["answer"] for e in b]
    assert {e["task"] for e in make_examples(60, seed=4)} == {"judge_cot", "judge_score", "reasoner"}
