"""Exploration by recombination (`rl/explore.py`): the rewrite it writes, and how it enters TRL's rollout."""

from __future__ import annotations

import os
import random

import pytest

from rl.environment import repetition
from rl.explore import make_rollout, phrases_of, recombine, user_prompt
from tests.test_training import _tiny_argv

GROUP = [
    "a sun, warm tones, highly detailed",
    "a sun, dark sky, wide shot",
    "a sun, sparse composition, warm light",
]


def test_phrases_are_what_a_rewrite_adds_after_its_prompt():
    assert phrases_of("a sun, warm tones, highly detailed.", "a sun") == ["warm tones", "highly detailed"]
    assert phrases_of("a sun, 8k, lone framing", "a sun") == ["lone framing"]  # digits: fragments
    assert phrases_of("a sun", "a sun") == []


def test_a_recombination_is_the_prompt_and_distinct_phrases_of_the_group():
    pool = {p for r in GROUP for p in phrases_of(r, "a sun")}
    seen = set()
    for seed in range(30):
        proposal = recombine("a sun", GROUP, random.Random(seed))
        assert proposal is not None and proposal.startswith("a sun, ")
        phrases = proposal[len("a sun, ") :].split(", ")
        assert 2 <= len(phrases) <= 4 and set(phrases) <= pool and len(set(phrases)) == len(phrases)
        assert repetition(proposal, "a sun") == 0.0  # "warm tones" and "warm light" never together
        assert proposal not in GROUP
        seen.add(proposal)
    assert len(seen) > 5  # random draws, not one fixed combination
    assert recombine("a sun", GROUP, random.Random(3)) == recombine("a sun", GROUP, random.Random(3))


def test_no_recombination_without_two_phrases_or_room():
    assert recombine("a sun", ["a sun, warm tones", "a sun"], random.Random(0)) is None
    assert recombine("a sun", ["a sun, warm tones", "a sun, warm light"], random.Random(0)) is None  # one cue word
    assert recombine("a sun", GROUP, random.Random(0), fits=lambda text: len(text) <= 12) is None
    short = recombine("a sun", GROUP, random.Random(0), fits=lambda text: len(text.split(", ")) <= 3)
    assert short is not None and len(short.split(", ")) == 3


def test_the_users_prompt_is_the_chats_last_user_turn():
    from policies.rewriter import build_chat

    assert user_prompt(build_chat("a red apple", context=["1. likes warm"])) == "a red apple"
    with pytest.raises(ValueError, match="user turn"):
        user_prompt([{"role": "system", "content": "x"}])


@pytest.mark.parametrize("share, generations", [(0.0, 4), (1.5, 4), (0.5, 2)])
def test_a_bad_share_or_group_is_refused(share, generations):
    with pytest.raises(ValueError, match="share|at least 3"):
        make_rollout(share, generations, 24)


def test_the_rollout_replaces_a_groups_last_completion_with_its_recombination(tiny_models, tmp_path, monkeypatch):
    """The real trainer (tiny models) with `--explore_recombine 1`: its rollout_func is ours; the policy's sampling is
    replaced by known rewrites (a tiny random policy writes no phrases), and the last of each group comes back as the
    recombination's token ids, closed by the token sampling stops at, flagged in `recombined`."""
    from rl.train_policy import build_trainer, parse_args

    monkeypatch.setenv("WANDB_MODE", "disabled")
    argv = _tiny_argv(tiny_models, tmp_path, "--max_steps", "1", "--report_to", "none", "--explore_recombine", "1")
    args, training_args, model_args = parse_args([*argv, "--max_completion_length", "64"])
    trainer, _ = build_trainer(args, training_args, model_args)
    tokenizer, n = trainer.processing_class, training_args.num_generations
    assert trainer.rollout_func is not None and n >= 3
    rows = list(trainer.train_dataset)[:2]
    prompts = [row["prompt"] for row in rows for _ in range(n)]
    written = [f"{row['original_prompt']}, {GROUP[i % 3].split(', ', 1)[1]}" for row in rows for i in range(n)]
    eos = trainer.eos_token_ids[0]

    def sampled(prompt_ids, images, fields, num_generations):
        assert len(prompt_ids) == len(prompts) and num_generations == n
        return [tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in written], None

    monkeypatch.setattr(trainer, "_generate_single_turn", sampled)
    out = trainer.rollout_func(prompts, trainer)
    assert out["recombined"] == [i % n == n - 1 for i in range(len(prompts))]
    for i, ids in enumerate(out["completion_ids"]):
        assert ids[-1] == eos and len(ids) <= 64
        text = tokenizer.decode(ids[:-1])
        if i % n != n - 1:
            assert text == written[i]
            continue
        prompt = rows[i // n]["original_prompt"]
        group = written[i - n + 1 : i]
        assert text.startswith(prompt + ", ") and text not in group
        assert set(text[len(prompt) + 2 :].split(", ")) <= {p for w in group for p in phrases_of(w, prompt)}
    chat = tokenizer.apply_chat_template(prompts[0], add_generation_prompt=True, return_dict=True)
    assert out["prompt_ids"][0] == chat["input_ids"]


def test_exploration_is_for_grpo_only(tmp_path):
    from common.errors import ConfigError
    from rl.train_policy import parse_args

    os.environ.setdefault("WANDB_MODE", "disabled")
    base = ["--user", "demo", "--runs_dir", str(tmp_path), "--explore_recombine"]
    with pytest.raises(ConfigError, match="grpo"):
        parse_args([*base, "0.5", "--algorithm", "rloo"], check_models=False)
    with pytest.raises(ConfigError, match="share"):
        parse_args([*base, "2"], check_models=False)
