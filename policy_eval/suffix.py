"""The fixed-suffix baseline: the one style suffix PIGReward likes best for a user, appended to every prompt.

    pig suffix --user demo                      # runs/demo/suffix/suffix.json; `pig evaluate` then compares with it
    pig suffix --user tidepool --num_candidates 8 --verdict_budget 1600

An RL rewriter can write a different rewrite for every prompt; the cheapest personalization writes the same tail on
all of them ("<prompt>, in golden tones"). Before an adapter's cost is worth paying it has to beat this.

Candidates. The base policy (the generic rewriter the adapters start from) samples `--candidate_samples` rewrites of
each of the user's training prompts at the training temperature; the tail each rewrite adds after its prompt (or
after its first comma), unless it repeats a word of its own prompt (a tail about one subject, "many kites", is no
suffix for the others), is cut into its comma-separated phrases, and the `--num_candidates` most frequent phrases are
the first stage's candidates; the second stage's are the best phrase, every pair of the four best and the three best
together (`combinations_of`): a user with a taste on two axes needs two cues. `--candidates` replaces both stages
with one list. Nothing here reads the toy world's vocabulary: the same search serves a real user with real
checkpoints.

Search. Successive halving under a budget of judge verdicts (`--verdict_budget`; default: what a default training
run spends, `training_verdicts`), half for each stage: each round judges every surviving candidate on every training
prompt with new image seeds shared by all candidates and the original (common random numbers), PIGReward under the
user's context against the original prompt's image, and keeps the better half; the last one standing of the second
stage is the suffix. Undecided verdicts count as ties (0.5), as in training. For a sandbox user the hidden taste's
verdict on the same images is recorded beside each candidate's (never used to choose).

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
    num_candidates: int = field(default=16, metadata={"help": "Most frequent base-policy phrases judged first."})
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


def candidate_phrases(rewrites: list[list[str]], prompts: list[str], n: int) -> list[str]:
    """The `n` most frequent phrases (comma-separated parts of `tail_of`) of the rewrites of each prompt, first seen
    first among equals; a phrase with a digit or shorter than three letters is left out (a cut-off fragment).

    Whole tails are mixtures of several cues and almost never repeat (92 distinct in 96 samples of the SmolLM2 warm
    start), so phrases are the units a suffix is built from.
    """
    counts: Counter = Counter()
    for p, row in zip(prompts, rewrites):
        for r in row:
            tail = tail_of(r, p)
            for phrase in (tail or "").split(","):
                phrase = phrase.strip(" .;:")
                if len(phrase) >= 3 and not re.search(r"\d", phrase):
                    counts[phrase] += 1
    return [t for t, _ in counts.most_common(n)]


def combinations_of(ranked: list[str], top: int = 4) -> list[str]:
    """Second-stage candidates: the best single phrase, every pair of the `top` best, and the three best together
    (a user with a taste on two or three axes needs a cue for each)."""
    from itertools import combinations

    best = ranked[:top]
    pairs = [", ".join(pair) for pair in combinations(best, 2)]
    triple = [", ".join(best[:3])] if len(best) >= 3 else []
    return list(dict.fromkeys([best[0], *pairs, *triple]))


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

    # 1. Candidates: the base policy's most frequent phrases (or the given vocabulary, judged as it is).
    if args.candidates:
        stages = [list(args.candidates)]
    else:
        base = PromptRewriter(None, base_model=recipe["model_name_or_path"], device=device)
        base.max_new_tokens = int(recipe["max_completion_length"])
        base.train_temperature = float(recipe["temperature"])
        samples = rewrite_prompts(base, prompts, "sampled", args.candidate_samples, args.suffix_seed)
        del base
        free_accelerator_memory()
        stages = [candidate_phrases(samples, prompts, args.num_candidates)]
    if not stages[0]:
        raise ConfigError(
            f"The base policy's {args.candidate_samples} samples per prompt add no phrase to any prompt: raise "
            "--candidate_samples, or check the policy's rewrites with `pig rewrite`."
        )
    # Two stages share the budget: single phrases, then combinations of the best ones (none for a given list).
    stage_budget = budget if args.candidates else budget // 2
    halving_plan(len(stages[0]), len(prompts), stage_budget, orders)  # fails early when the budget cannot do it

    # 2. Successive halving, judged by PIGReward under the user's context.
    pig, context, renderer, _ = build_reward_stack(pig_args, user, device, PartialState())
    taste = ground_truth.taste_of(user)
    judged: dict[str, list[float]] = {}
    truth: dict[str, list[float]] = {}
    survived: dict[str, str] = {}
    plans, verdicts, renders, round_index = [], 0, 0, 0

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    def fits(n: int) -> bool:
        try:
            halving_plan(n, len(prompts), stage_budget, orders)
        except ConfigError:
            return False
        return True

    stage = 0
    while stage < len(stages):
        candidates = stages[stage]
        plan = halving_plan(len(candidates), len(prompts), stage_budget, orders)
        plans.append([{"candidates": a, "image_seeds": n} for a, n in plan])
        scores: dict[str, list[float]] = {c: [] for c in candidates}
        alive = list(candidates)
        for rounds_done, (_, seeds) in enumerate(tqdm(plan, desc=f"suffix stage {stage + 1}")):
            # New image seeds every round, shared by the original and every candidate (common random numbers).
            image_seeds = [[crn_seed(args.suffix_seed, p, round_index, s) for s in range(seeds)] for p in prompts]
            round_index += 1
            texts, render_seeds = [], []
            for p, row in zip(prompts, image_seeds):
                for s in row:
                    texts += [p] + [apply_suffix(p, c) for c in alive]
                    render_seeds += [s] * (1 + len(alive))
            images = renderer.render(texts, render_seeds)
            renders += len(texts)
            width = 1 + len(alive)
            pair_prompts, images_a, images_b, owners = [], [], [], []
            for block in range(len(texts) // width):
                for c_index, c in enumerate(alive):
                    pair_prompts.append(texts[block * width])
                    images_a.append(images[block * width + 1 + c_index])
                    images_b.append(images[block * width])
                    owners.append(c)
            comparisons = pig.compare(pair_prompts, images_a, images_b, context)
            verdicts += len(comparisons) * orders
            for c, comparison in zip(owners, comparisons):
                scores[c].append(0.5 if comparison.preference is None else comparison.preference)
            if taste is not None:  # recorded, never used to choose
                for c, value in zip(owners, ground_truth.preferences(taste, images_a, images_b, prompts=pair_prompts)):
                    truth.setdefault(c, []).append(value)
            for c in alive:
                survived[c] = f"stage {stage + 1}, round {rounds_done + 1} of {len(plan)}"
            alive = sorted(alive, key=lambda c: -mean(scores[c]))[: math.ceil(len(alive) / 2)]
        for c, values in scores.items():
            judged.setdefault(c, []).extend(values)
        ranked = sorted(candidates, key=lambda c: (-len(scores[c]), -mean(scores[c])))
        if stage == 0 and not args.candidates and len(ranked) > 1:
            combined = combinations_of(ranked)
            # as many combinations as the stage's budget can judge once each (the best single phrase comes first)
            while len(combined) > 1 and not fits(len(combined)):
                combined.pop()
            stages.append(combined)
        stage += 1
    best = alive[0]

    rows = [
        {
            "suffix": c,
            "judge": mean(judged[c]),
            "judged_pairs": len(judged[c]),
            "ground_truth": mean(truth[c]) if truth.get(c) else None,
            "reached": survived[c],
        }
        for c in judged
    ]
    rows.sort(key=lambda r: (r["reached"], r["judged_pairs"], r["judge"]), reverse=True)
    out = Path(args.suffix_out or Path(pig_args.runs_dir) / user.user_id / "suffix")
    result = {
        "user": user.user_id,
        "suffix": best,
        "candidates": rows,
        "verdicts": verdicts,
        "verdict_budget": budget,
        "training_run_verdicts": run_verdicts,
        "renders": renders,
        "seconds": round(time.perf_counter() - started, 1),
        "plan": plans,
        "base_model": recipe["model_name_or_path"],
        "context_key": context.key,
        "context_nearest": pig_args.context_nearest,  # how many rationales the judge read for each prompt (0: all)
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
            f"  {row['reached']:28} judge {row['judge']:.2f} on {row['judged_pairs']:4d} pairs{truth}  "
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
