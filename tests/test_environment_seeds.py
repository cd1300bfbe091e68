"""The seed and group bookkeeping of `PersonalizedEnvironment.compute`, on tiny real models: a group's images depend
on its prompt, step and slot only, never on which batch it came in or where in the batch it sits."""

from __future__ import annotations

import functools

import pytest

from rl import ground_truth


@pytest.fixture(scope="module")
def env(tiny_models, tmp_path_factory):
    from rl.environment import PersonalizedEnvironment
    from tests.conftest import tiny_reward_stack

    user, pig, context, renderer, embedder = tiny_reward_stack(
        tiny_models, tmp_path_factory.mktemp("runs"), render_steps=2, judge_max_new_tokens=1
    )
    truth = functools.partial(ground_truth.preferences, ground_truth.taste_of(user))
    return PersonalizedEnvironment(
        pig, context, renderer, embedder, num_generations=2, images_per_prompt=2, ground_truth=truth
    )


def _bytes(images) -> list[bytes]:
    return [im.tobytes() for im in images]


def test_a_group_renders_the_same_images_in_any_batch_and_any_position(env):
    sun = (["a sun", "a sun"], ["a sun, in golden tones", "a dark sun"])
    kite = (["a kite", "a kite"], ["a kite, lone framing", "a busy kite"])
    moon = (["a moon", "a moon"], ["a moon at night", "a bright moon"])
    first = env.compute(sun[0] + kite[0], sun[1] + kite[1], step=4)
    swapped = env.compute(kite[0] + sun[0], kite[1] + sun[1], step=4)  # the same groups, in the other order
    other_batch = env.compute(moon[0] + sun[0], moon[1] + sun[1], step=4)  # the sun group beside another group
    for result, at in ((first, 0), (swapped, 2), (other_batch, 2)):
        assert _bytes(result.original_images[at]) == _bytes(first.original_images[0])
        for i in range(2):
            assert _bytes(result.rewrite_images[at + i]) == _bytes(first.rewrite_images[i])
            assert result.ground_truth[at + i] == first.ground_truth[i]  # the truth follows its rewrite
    assert _bytes(swapped.original_images[0]) == _bytes(first.original_images[2])  # and the kite group too
    assert swapped.preference == [0.5] * 4  # every verdict undecided (1-token answers): a tie, never None
    # The same prompt at another step draws other seeds; two groups of one batch draw their own seeds.
    later = env.compute(sun[0] + kite[0], sun[1] + kite[1], step=5)
    assert _bytes(later.original_images[0])[0] != _bytes(first.original_images[0])[0]
    assert _bytes(first.original_images[0])[0] != _bytes(first.original_images[2])[0]


def test_the_seed_is_a_function_of_seed_prompt_step_and_slot_only():
    from rl.environment import crn_seed

    # Literal values: the same in every process and on every machine (a salted `hash()` would not be), so a run, its
    # resume and the image cache draw the same images for the same (seed, prompt, step, slot).
    assert crn_seed(0, "a sun", 3, 1) == 2098481251
    assert crn_seed(0, "a sun", None, 0) == 558805405
    seeds = {crn_seed(b, p, s, k) for b in (0, 1) for p in ("a sun", "a kite") for s in (None, 0, 3) for k in (0, 1)}
    assert len(seeds) == 2 * 2 * 3 * 2  # every change of one input gives another seed
    assert all(0 <= s < 2**31 for s in seeds)
