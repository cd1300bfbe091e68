"""The environment's seed and group bookkeeping, the reward of undecided verdicts, the fidelity gate and the
ground-truth monitor, on tiny real models (random weights: the judge cannot decide, which is what some tests need)."""

from __future__ import annotations

import functools

import pytest

from rl import ground_truth


@pytest.fixture(scope="module")
def stack(tiny_models, tmp_path_factory):
    from tests.conftest import tiny_reward_stack

    # judge_max_new_tokens 1: no verdict fits in one token, every comparison is undecided
    user, *parts = tiny_reward_stack(
        tiny_models, tmp_path_factory.mktemp("runs"), render_steps=3, judge_max_new_tokens=1
    )
    return (*parts, ground_truth.taste_of(user))


def _env(stack, **kwargs):
    from rl.environment import PersonalizedEnvironment

    pig, context, renderer, embedder, taste = stack
    return PersonalizedEnvironment(
        pig,
        context,
        renderer,
        embedder,
        ground_truth=functools.partial(ground_truth.preferences, taste),
        **kwargs,
    )


def test_identical_rewrite_scores_exactly_half_and_undecided_is_a_tie(stack):
    env = _env(stack, num_generations=2, images_per_prompt=2, compare_to="both")
    logged = {}
    result = env.compute(
        ["a sun", "a sun", "a kite", "a kite"], ["a sun", "a sun", "a kite", "a kite"], 3, logged.__setitem__
    )
    # Same prompt, same group seed: the same image as the original, so the truth is a tie, whatever the seeds are.
    assert result.ground_truth == [0.5, 0.5, 0.5, 0.5]
    assert result.original_images[0][0].tobytes() == result.rewrite_images[1][0].tobytes()
    # Every verdict is undecided (one-token answers): documented as a tie, 0.5, and counted, never None.
    assert result.preference == [0.5, 0.5, 0.5, 0.5]
    assert logged["reward/undecided_fraction"] == 1.0
    assert logged["reward/ground_truth"] == 0.5
    # Identical prompts: similarity 1, so the fidelity gate is 0.
    assert result.fidelity == pytest.approx([0.0] * 4, abs=1e-5)


def test_group_seeds_are_shared_within_a_group_and_differ_between_slots(stack):
    env = _env(stack, num_generations=2, images_per_prompt=2)
    result = env.compute(["a sun", "a sun"], ["a sun", "a dark sun, many suns"], 0)
    original = result.original_images[0]
    assert original[0].tobytes() != original[1].tobytes(), "two slots must use two seeds"
    assert result.rewrite_images[0][1].tobytes() == original[1].tobytes()  # slot k of a rewrite = slot k's seed
    # A different step draws new seeds (seed_per_step): the original's image changes.
    later = env.compute(["a sun", "a sun"], ["a sun", "a dark sun, many suns"], 1)
    assert later.original_images[0][0].tobytes() != original[0].tobytes()


def test_fidelity_gate_penalises_only_below_the_floor(stack):
    env = _env(stack, num_generations=2, fidelity_floor=0.5)
    result = env.compute(["a sun", "a sun"], ["a sun, in golden tones", "quarterly tax report spreadsheet"], 0)
    assert result.similarity[0] > 0.5 and result.fidelity[0] == 0.0
    assert result.similarity[1] < 0.5 and result.fidelity[1] == pytest.approx(result.similarity[1] - 0.5)


def test_split_groups_are_refused(stack):
    env = _env(stack, num_generations=2)
    with pytest.raises(ValueError, match="not a multiple of num_generations"):
        env.compute(["a sun", "a sun", "a kite"], ["x", "y", "z"], 0)
    with pytest.raises(ValueError, match="compares rewrites of a group"):
        _env(stack, num_generations=1, compare_to="group")


@pytest.mark.parametrize(
    "rewrite, expected",
    [
        ("a sun, in orange tones, lone framing", 0.0),
        ("the sun above the hills", 0.0),
        ("", 0.0),
        ("a tent, lone framing, lone framing", -1 / 3),
        ("a tent, lone framing framing", -1 / 2),  # a stuttered word
        ("a tent, lone framing, lone framing framing", -2 / 3),  # the stutter, then the phrase it repeats
        ("a tent, Lone  Framing, lone framing,", -1 / 3),  # case, spacing and a trailing comma do not hide a repeat
        ("the the the sun", -1.0),  # capped at -1
        ("a tent, busy scene, busy framing, busy composition", -2 / 4),  # one cue stacked in three phrases
        ("a tent, in amber tones, in a park, with the sea", 0.0),  # function words may recur
        ("a tent, a tent in the snow", -1 / 2),  # without the original prompt, its words count too
    ],
)
def test_repetition_counts_repeated_phrases_stacked_cues_and_stuttered_words(rewrite, expected):
    from rl.environment import repetition

    assert repetition(rewrite) == pytest.approx(expected)


def test_repetition_lets_a_rewrite_reuse_the_original_prompts_words():
    from rl.environment import repetition

    assert repetition("a tent by the sea, the sea at night", "a tent by the sea") == 0.0
    assert repetition("a tent by the sea, the sea at night, night sky", "a tent by the sea") == pytest.approx(-1 / 3)
