"""The fixed-suffix baseline: the one style suffix PIGReward likes best for a user, appended to every prompt.

    pig suffix --user demo                      # runs/demo/suffix/suffix.json; `pig evaluate` then compares with it
    pig suffix --user tidepool --num_candidates 8 --verdict_budget 1600

An RL rewriter can write a different rewrite for every prompt; the cheapest personalization writes the same tail on
all of them ("<prompt>, in golden tones"). Before an adapter's cost is worth paying it has to beat this.

Candidates. The base policy (the generic rewriter the adapters start from) samples `--candidate_samples` rewrites of
each of the user's training prompts at the training temperature; the tail each rewrite adds after its prompt (or
after its first comma) is a candidate, unless it repeats a word of its own prompt (a tail about one subject, "many
kites", is no suffix for the others). The `--num_candidates` most frequent tails are judged. Nothing here reads the
toy world's vocabulary: the same search serves a real user with real checkpoints.

Search. Successive halving under a budget of judge verdicts (`--verdict_budget`; default: what a default training
run spends, `training_verdicts`): each round judges every surviving candidate on every training prompt with new image
seeds shared by all candidates and the original (common random numbers), PIGReward under the user's context against
the original prompt's image, and keeps the better half; the last one standing is the suffix. Undecided verdicts count
as ties (0.5), as in training. For a sandbox user the hidden taste's verdict on the same images is recorded beside
each candidate's (never used to choose).

Writes `suffix.json` (the suffix, every candidate's scores, verdicts spent, seconds) under `--suffix_out`
(default `runs/<user>/suffix`).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from policies.suffix import SUFFIX_FILE, apply_suffix
from rl.config import PigArguments


@dataclass
class SuffixArguments:
    num_candidates: int = field(default=16, metadata={"help": "Most frequent base-policy tails judged."})
    candidates: list[str] | None = field(
        default=None,
        metadata={"help": "Suffixes to judge instead of the base policy's tails (a vocabulary of your own)."},
    )
    candidate_samples: int = field(
        default=8, metadata={"help": "Base-policy rewrites sampled per training prompt to draw candidates from."}
    )
    verdict_budget: int | None = field(
        default=None,
        metadata={
            "help": "Judge verdicts the search may spend (each comparison counts once per presentation order). "
            "Default: a default training run's (`training_verdicts` of the recipe)."
        },
    )
    suffix_seed: int = field(default=4321, metadata={"help": "Seed of the base policy's samples and of the images."})
    suffix_out: str | None = field(default=None, metadata={"help": "Output folder (default runs/<user>/suffix)."})

    def __post_init__(self):
        for name in ("num_candidates", "candidate_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.candidates is not None:
            self.candidates = list(dict.fromkeys(c.strip(" ,") for c in self.candidates))
            if not all(self.candidates):
                raise ConfigError("--candidates holds an empty suffix.")
        if self.verdict_budget is not None and self.verdict_budget < 1:
            raise ConfigError(f"--verdict_budget must be >= 1, got {self.verdict_budget}.")


# ------------------------------------------------------------------------------------------------- pure logic
def _words(text: str) -> set[str]:
    return {w[:-1] if w.endswith("s") and len(w) > 3 else w for w in re.findall(r"[a-z]+", text.lower())}


_STOP = {"a", "an", "the", "of", "in", "on", "with", "and", "at", "by", "picture", "photo", "image"}


def tail_of(rewrite: str, prompt: str) -> str | None:
    """What a rewrite adds to its prompt: the text after the prompt when it starts with it, else after its first
    comma; `None` when there is none or when it repeats a content word of the prompt (it is about that subject)."""
    text, start = rewrite.strip(), prompt.strip()
    if text.lower().startswith(start.lower()):
        tail = text[len(start) :]
    elif "," in text:
        tail = text.split(",", 1)[1]
    else:
        return None
    tail = tail.strip(" ,.;:")
    if not tail or (_words(tail) & (_words(prompt) - _STOP)):
        return None
    return tail


def candidate_suffixes(rewrites: list[list[str]], prompts: list[str], n: int) -> list[str]:
    """The `n` most frequent tails (`tail_of`) of the rewrites of each prompt, first seen first among equals."""
    counts = Counter(t for p, row in zip(prompts, rewrites) for r in row if (t := tail_of(r, p)) is not None)
    return [t for t, _ in counts.most_common(n)]


def training_verdicts(recipe: dict, compare_to: str, images_per_prompt: int, both_orders: bool) -> int:
    """Judge verdicts of one training run of `recipe` (GRPO/RLOO keys): judged batches x comparisons x orders.

    A batch of `per_device_train_batch_size` rewrites in groups of `num_generations` is judged once per
    `num_iterations` steps; each rewrite against the original and/or each pair of a group, on every image seed.
    """
    group = int(recipe["num_generations"])
    batch = int(recipe["per_device_train_batch_size"]) * int(recipe.get("gradient_accumulation_steps", 1))
    batches = math.ceil(int(recipe["max_steps"]) / int(recipe.get("num_iterations", 1)))
    per_group = (group if compare_to != "group" else 0) + (group * (group - 1) // 2 if compare_to != "original" else 0)
    return batches * (batch // group) * per_group * images_per_prompt * (2 if both_orders else 1)


def halving_plan(candidates: int, prompts: int, budget: int, orders: int) -> list[tuple[int, int]]:
    """(candidates alive, image seeds) per round of successive halving, spending at most `budget` verdicts.

    Rounds share the budget equally; a round judges each alive candidate on every prompt with its seeds and keeps
    the better half (rounded up).
    """
    rounds = max(1, math.ceil(math.log2(candidates))) if candidates > 1 else 1
    plan, alive = [], candidates
    for _ in range(rounds):
        seeds = (budget // rounds) // (alive * prompts * orders)
        if seeds < 1:
            break
        plan.append((alive, seeds))
        alive = math.ceil(alive / 2)
    if not plan:
        need = candidates * prompts * orders
        raise ConfigError(
            f"--verdict_budget {budget} cannot judge {candidates} candidates once on {prompts} prompts ({need} "
            f"verdicts): raise the budget or lower --num_candidates."
        )
    return plan


# ----------------------------------------------------------------------------------------------------- search
def search(pig_args: PigArguments, args: SuffixArguments, argv: list[str]) -> dict:
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from common.devices import resolve_device
    from common.files import atomic_write_json
    from policies.rewriter import PromptRewriter
    from policy_eval.evaluate_policy import check_models_for, free_accelerator_memory, rewrite_prompts
    from reward.users import load_user
    from rl import ground_truth
    from rl.config import recipe_of
    from rl.environment import crn_seed
    from rl.reward_stack import build_reward_stack

    started = time.perf_counter()
    user = load_user(pig_args.user, pig_args.users_dir)
    prompts = list(user.prompts)
    if not prompts:
        raise ConfigError(f"User {user.user_id!r} has no training prompts ('prompts' in user.json) to search on.")
    recipe = recipe_of(argv, pig_args.algorithm if pig_args.algorithm != "dpo" else "grpo")
    orders = 2 if pig_args.judge_both_orders else 1
    run_verdicts = training_verdicts(recipe, pig_args.compare_to, pig_args.images_per_prompt, orders == 2)
    budget = args.verdict_budget or run_verdicts
    check_models_for(pig_args, judge=True)
    device = resolve_device("auto")

    # 1. Candidates: the base policy's own tails (or the given vocabulary).
    if args.candidates:
        candidates = list(args.candidates)
    else:
        base = PromptRewriter(None, base_model=recipe["model_name_or_path"], device=device)
        base.max_new_tokens = int(recipe["max_completion_length"])
        base.train_temperature = float(recipe["temperature"])
        samples = rewrite_prompts(base, prompts, "sampled", args.candidate_samples, args.suffix_seed)
        del base
        free_accelerator_memory()
        candidates = candidate_suffixes(samples, prompts, args.num_candidates)
    if not candidates:
        raise ConfigError(
            f"The base policy's {args.candidate_samples} samples per prompt add no tail to any prompt: raise "
            "--candidate_samples, or check the policy's rewrites with `pig rewrite`."
        )
    plan = halving_plan(len(candidates), len(prompts), budget, orders)

    # 2. Successive halving, judged by PIGReward under the user's context.
    pig, context, renderer, _ = build_reward_stack(pig_args, user, device, PartialState())
    taste = ground_truth.taste_of(user)
    judged: dict[str, list[float]] = {c: [] for c in candidates}
    truth: dict[str, list[float]] = {c: [] for c in candidates}
    survived = dict.fromkeys(candidates, 0)
    alive, verdicts, seed_base = list(candidates), 0, 0
    for round_index, (_, seeds) in enumerate(tqdm(plan, desc="suffix rounds")):
        image_seeds = [
            [crn_seed(args.suffix_seed, p, round_index, seed_base + s) for s in range(seeds)] for p in prompts
        ]
        seed_base += seeds
        texts, render_seeds = [], []
        for p, row in zip(prompts, image_seeds):
            for s in row:
                texts += [p] + [apply_suffix(p, c) for c in alive]
                render_seeds += [s] * (1 + len(alive))
        images = renderer.render(texts, render_seeds)
        pair_prompts, images_a, images_b, owners = [], [], [], []
        width = 1 + len(alive)
        for block in range(len(texts) // width):
            original = images[block * width]
            prompt = texts[block * width]
            for c_index, c in enumerate(alive):
                pair_prompts.append(prompt)
                images_a.append(images[block * width + 1 + c_index])
                images_b.append(original)
                owners.append(c)
        comparisons = pig.compare(pair_prompts, images_a, images_b, context)
        verdicts += len(comparisons) * orders
        for c, comparison in zip(owners, comparisons):
            judged[c].append(0.5 if comparison.preference is None else comparison.preference)
        if taste is not None:
            for c, p, a, b in zip(owners, pair_prompts, images_a, images_b):
                truth[c].append(ground_truth.preferences(taste, [a], [b], prompts=[p])[0])
        for c in alive:
            survived[c] = round_index + 1
        alive = sorted(alive, key=lambda c: -sum(judged[c]) / len(judged[c]))[: math.ceil(len(alive) / 2)]
    best = alive[0]

    rows = [
        {
            "suffix": c,
            "judge": sum(judged[c]) / len(judged[c]) if judged[c] else None,
            "judged_pairs": len(judged[c]),
            "ground_truth": sum(truth[c]) / len(truth[c]) if truth[c] else None,
            "rounds": survived[c],
        }
        for c in candidates
    ]
    rows.sort(key=lambda r: (-r["rounds"], -(r["judge"] or 0)))
    out = Path(args.suffix_out or Path(pig_args.runs_dir) / user.user_id / "suffix")
    result = {
        "user": user.user_id,
        "suffix": best,
        "candidates": rows,
        "verdicts": verdicts,
        "verdict_budget": budget,
        "training_run_verdicts": run_verdicts,
        "renders": sum(len(prompts) * seeds * (1 + alive_n) for alive_n, seeds in plan),
        "seconds": round(time.perf_counter() - started, 1),
        "plan": [{"candidates": a, "image_seeds": s} for a, s in plan],
        "base_model": recipe["model_name_or_path"],
        "context_key": context.key,
        "judge_model": pig_args.judge_model,
        "renderer_model": pig_args.renderer_model,
        "prompts": prompts,
        "settings": {
            "num_candidates": args.num_candidates,
            "candidates_given": args.candidates is not None,
            "candidate_samples": args.candidate_samples,
            "suffix_seed": args.suffix_seed,
            "temperature": recipe["temperature"],
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / SUFFIX_FILE, result)
    result["out"] = str(out / SUFFIX_FILE)
    return result


def print_result(result: dict) -> None:
    print(f"[suffix] {result['user']}: best fixed suffix {result['suffix']!r}")
    print(
        f"[suffix] cost: {result['verdicts']} verdicts (budget {result['verdict_budget']}; a default training run "
        f"spends {result['training_run_verdicts']}), {result['renders']} renders, {result['seconds']:.0f} s"
    )
    for row in result["candidates"]:
        truth = "" if row["ground_truth"] is None else f"  ground truth {row['ground_truth']:.2f}"
        print(
            f"  rounds {row['rounds']}  judge {row['judge']:.2f} on {row['judged_pairs']:4d} pairs{truth}  "
            f"{row['suffix']!r}"
        )
    print(f"[suffix] wrote {result['out']}")


def main(argv: list[str] | None = None) -> int:
    import sys

    from policy_eval.evaluate_policy import parse_dataclasses

    argv = list(sys.argv[1:] if argv is None else argv)
    pig_args, args = parse_dataclasses((PigArguments, SuffixArguments), argv)
    if not pig_args.user:
        raise ConfigError("--user is required: a user id under --users_dir (e.g. demo) or a path to a user folder.")
    print_result(search(pig_args, args, argv))
    return 0
