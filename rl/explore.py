"""Exploration by recombination: some groups get one rewrite made of the phrases their other rewrites wrote.

Why. A user with a taste on several axes wants a rewrite that names a cue for each ("warm, dark, sparse"), but the
policy samples its cues independently, so a rewrite with every right cue is rare (held000: 1 in 80 rollouts over the
first 20 steps), and the group-relative reward teaches it to name only the one cue it is sure of (docs/RESULTS.md).
Recombination puts such rewrites in front of the reward: with probability `explore_recombine` a group's last rewrite
is replaced by the prompt followed by distinct phrases drawn from the tails of the group's other rewrites
("a sun, warm tones" + "a sun, dark sky, wide shot" -> "a sun, warm tones, dark sky"). It is judged and rewarded like
any rewrite; when it wins, GRPO's update raises its probability, as off-policy guidance does in LUFFY
(arXiv 2504.14945), except that the guide here is the policy's own phrases, not a stronger model's answer.

Nothing here reads the toy world's vocabulary: phrases are the comma-separated parts of what the policy wrote after
the prompt (`policies.suffix.tail_of`), so the same operator serves a real policy and a real user. A recombination
never repeats a content word across its phrases (the reward's repetition gate would punish it, `rl.environment.
repetition`), and it fits the completion's token budget.

Wired into TRL through `GRPOTrainer(rollout_func=...)`: the trainer's own generation runs first, then the chosen
completions' token ids are replaced; TRL computes every log-probability from the ids it is given.
"""

from __future__ import annotations

import random
import re

from policies.rewriter import completion_text, extract_rewrite
from policies.suffix import apply_suffix, tail_of
from rl.environment import repetition

MIN_PHRASES = 2


def phrases_of(rewrite: str, prompt: str) -> list[str]:
    """The comma-separated phrases a rewrite adds after its prompt (`tail_of`), fragments and digits left out."""
    tail = tail_of(rewrite, prompt) or ""
    parts = [" ".join(p.strip(" .;:").split()) for p in tail.split(",")]
    return [p for p in parts if len(p) >= 3 and not re.search(r"\d", p)]


def recombine(prompt: str, rewrites: list[str], rng: random.Random, max_phrases: int = 4, fits=None) -> str | None:
    """The prompt followed by up to `max_phrases` distinct phrases drawn at random from `rewrites`' tails, none
    sharing a content word with another, at least `MIN_PHRASES` of them, and not one of `rewrites` itself; `None`
    when the group's phrases cannot make one. `fits(text) -> bool` bounds its length (the token budget)."""
    pool = list(dict.fromkeys(p for r in rewrites for p in phrases_of(r, prompt)))
    rng.shuffle(pool)
    chosen: list[str] = []
    for phrase in pool:
        candidate = apply_suffix(prompt, ", ".join([*chosen, phrase]))
        if repetition(candidate, prompt) == 0.0 and (fits is None or fits(candidate)):
            chosen.append(phrase)
        if len(chosen) == max_phrases:
            break
    if len(chosen) < MIN_PHRASES:
        return None
    proposal = apply_suffix(prompt, ", ".join(chosen))
    same = {" ".join(r.lower().split()) for r in rewrites}
    return None if " ".join(proposal.lower().split()) in same else proposal


def make_rollout(share: float, num_generations: int, max_completion_length: int, seed: int = 0):
    """A `rollout_func` for TRL's GRPOTrainer: the trainer's own sampling, then in each group (the
    `num_generations` completions of one prompt, laid out back to back) with probability `share` the last
    completion replaced by a `recombine` of the others. Returns the extra field `recombined` (one bool per
    completion), which TRL passes to the reward functions and the rollout log records."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"explore_recombine is a share of groups in (0, 1], got {share}.")
    if num_generations < 3:
        raise ValueError(f"recombination needs at least 3 rewrites per group (2 to draw from), got {num_generations}.")
    rng = random.Random(seed)

    def rollout(prompts: list, trainer) -> dict:
        tokenizer = trainer.processing_class
        prompt_ids, images, fields = trainer._tokenize_prompts(prompts)
        completion_ids, logprobs = trainer._generate_single_turn(prompt_ids, images, fields, num_generations)
        completion_ids = [list(ids) for ids in completion_ids]
        eos = (getattr(trainer, "eos_token_ids", None) or [tokenizer.eos_token_id])[0]  # where sampling stops
        texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        recombined = [False] * len(completion_ids)

        def fits(text: str) -> bool:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1 <= max_completion_length

        for start in range(0, len(completion_ids) - num_generations + 1, num_generations):
            if rng.random() >= share:
                continue
            prompt = user_prompt(prompts[start])
            others = [extract_rewrite(completion_text(t)) for t in texts[start : start + num_generations - 1]]
            proposal = recombine(prompt, others, rng, fits=fits)
            if proposal is None:
                continue
            last = start + num_generations - 1
            completion_ids[last] = tokenizer(proposal, add_special_tokens=False)["input_ids"] + [eos]
            recombined[last] = True
            if logprobs is not None:  # sampling log-probabilities (vLLM) do not exist for a written completion
                logprobs[last] = [float("nan")] * len(completion_ids[last])
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "logprobs": logprobs,
            "recombined": recombined,
        }

    return rollout


def user_prompt(chat) -> str:
    """The user's prompt in a policy chat (`policies.rewriter.build_chat`): its last user turn."""
    if isinstance(chat, str):
        return chat
    turns = [m for m in chat if m.get("role") == "user"]
    if not turns:
        raise ValueError("A policy chat without a user turn: the dataset's prompts come from build_chat.")
    return completion_text([turns[-1]])
