"""A warm start for the population model: the generic rewriter taught, by SFT, to write what a context asks for.

The population model (`rl/train_policy.py --population`) reads a user's context (the reasoner's rationales, as text)
and must learn from the reward alone which rationale asks for which words. Over 48 users and 120 steps it saw each
user's context about five times, and learned some of it (docs/RESULTS.md, "One rewriter for every user"). Issue 21
allows a warm start by supervised fine-tuning whose examples come from contexts alone, like the generic warm start
(`localmodels.rewriter_sft`): this is that warm start.

Each example is one training user's context as the policy reads it (the reasoner's rationales nearest a prompt,
`--context_nearest K`, built by the same PIGReward reasoner and cache as training) and a prompt; the target is the
prompt followed by the style phrases of what those rationales ask for, read from their text by the toy world's
teacher (`localmodels.oracle.read_context`, the same reading the judge was distilled on). No user's hidden taste is
read: a chance cue in the rationales is a chance cue in the target, as it is in the judge's reward. With real
checkpoints the same role is played by a larger instruction model asked to write the rewrite a context asks for;
nothing of the toy world reaches the policy's input, which stays the chat of `policies.rewriter.build_chat`.

The result is a context-conditioned LoRA adapter in the population model's format (`pig_adapter.json`, trainer
`sft`): serve it with `pig rewrite --adapter`, evaluate it with `pig evaluate --adapter`, and start the RL run from it:

    python -m localmodels.population_sft --population runs/users/population --context_nearest 3 \\
        --out runs/population/warmstart-k3
    accelerate launch rl/train_policy.py --population runs/users/population --context_nearest 3 \\
        --init_adapter runs/population/warmstart-k3/adapter --run_name pop-ws-k3-s0

Held-out users of the population (its manifest's `heldout`) and the held-out evaluation prompts
(`localmodels.demo_user.HELDOUT_PROMPTS`) are never in the corpus. Deterministic in its seed (one torch thread).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from localmodels import oracle, world
from localmodels.rewriter_sft import OTHER_SUBJECTS, sft_config, source_prompt

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "cpu.yaml"
"""Where the policy, judge, embedder, LoRA shape and context window come from: the recipe training runs with."""


def target_rewrite(prompt: str, asked: dict[str, str], subject: str, rng: np.random.Generator) -> str:
    """The prompt, then one style phrase per axis the context asks for (`asked`: axis -> pole) and at most one
    boilerplate phrase, the phrases after the prompt shuffled (the form of `rewriter_sft.target_rewrite`)."""
    parts = [world.style_phrase(axis, pole, subject, rng) for axis, pole in asked.items()]
    if rng.random() < 0.5:
        parts.append(world.FILLER_PHRASES[int(rng.integers(len(world.FILLER_PHRASES)))])
    parts = [parts[i] for i in rng.permutation(len(parts))]
    return ", ".join([prompt, *parts])


def corpus(pig, contexts: dict, n: int, seed: int = 0, p_other: float = 0.15) -> tuple[list[dict], dict]:
    """`n` conversational prompt-completion rows for TRL's `SFTTrainer`, and counts of what the targets ask for.

    Each row: a user drawn from `contexts` (user id -> `UserContext`), a prompt for a subject of the toy world (or,
    with probability `p_other`, one outside it: the context's subject-dependent axes are then left out), the
    rationales `pig` reads for that prompt (`PIGReward.rationales_for`), the chat the policy reads
    (`build_chat(prompt, context=rationales)`) and the target (`target_rewrite`)."""
    from localmodels.demo_user import HELDOUT_PROMPTS
    from policies.rewriter import build_chat

    rng = np.random.default_rng(seed)
    users = sorted(contexts)
    excluded = {p.lower() for p in HELDOUT_PROMPTS}
    drawn = []
    while len(drawn) < n:
        other = rng.random() < p_other
        subject = str(rng.choice(OTHER_SUBJECTS if other else list(world.SUBJECTS)))
        prompt = source_prompt(subject, rng)
        if prompt.lower() not in excluded:
            drawn.append((users[int(rng.integers(len(users)))], subject, prompt, other))
    rows, counts = [], {"examples": n, "no_cue": 0}
    by_user: dict[str, list[int]] = {}
    for i, (user_id, *_rest) in enumerate(drawn):
        by_user.setdefault(user_id, []).append(i)
    read = [None] * n
    for user_id, rows_of_user in by_user.items():  # one embedding pass per user
        prompts = [drawn[i][2] for i in rows_of_user]
        for i, rationales in zip(rows_of_user, pig.rationales_for(prompts, contexts[user_id])):
            read[i] = rationales
    for (_user_id, subject, prompt, other), rationales in zip(drawn, read):
        asked = oracle.read_context(rationales, None if other else subject)
        counts["no_cue"] += not asked
        for axis, pole in asked.items():
            counts[f"{axis}={pole}"] = counts.get(f"{axis}={pole}", 0) + 1
        rows.append(
            {
                "prompt": build_chat(prompt, context=rationales),
                "completion": [{"role": "assistant", "content": target_rewrite(prompt, asked, subject, rng)}],
            }
        )
    return rows, counts


def recipe_pigreward(recipe: dict, context_nearest: int, runs_dir: str):
    """PIGReward on CPU as `recipe` configures its reasoner (judge model, context window, prompt embedder), with
    contexts cached under `runs_dir` as training caches them."""
    from reward.pigreward import JudgeSettings, PIGReward
    from reward.similarity import TextEmbedder

    return PIGReward.from_names(
        judge=recipe["judge_model"],
        backend="transformers",
        backend_kwargs={"device": "cpu", "dtype": "float32", "batch_size": recipe["judge_batch_size"]},
        settings=JudgeSettings(context_references=recipe["context_references"], context_nearest=context_nearest),
        cache_dir=runs_dir,
        prompt_embedder=TextEmbedder(recipe["fidelity_model"], device="cpu"),
    )


def build_contexts(population: str, context_nearest: int, runs_dir: str, recipe: dict):
    """The PIGReward of the recipe (reasoner, context window, nearest-rationale embedder) and the contexts of the
    population's training users, read from the same cache training uses (built when missing)."""
    from tqdm.auto import tqdm

    from reward.users import load_population

    users, _heldout = load_population(population)
    pig = recipe_pigreward(recipe, context_nearest, runs_dir)
    contexts = {u.user_id: pig.build_context(u) for u in tqdm(users, desc="contexts", unit="user")}
    return pig, contexts


def train(rows: list[dict], out: Path, recipe: dict, steps: int, batch_size: int, learning_rate: float, seed: int):
    """SFT of a LoRA of the recipe's shape (so that `--init_adapter` fits the RL run) on `rows`; the adapter is saved
    to `out/adapter` (not merged). Returns (trainer's losses, seconds)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    started = time.time()
    torch.manual_seed(seed)
    base = recipe["model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    work = Path(tempfile.mkdtemp(prefix="pig-pop-sft-"))
    # Batches are padded to their longest row; the limit only truncates. A whole context of 8 rationales makes rows of
    # up to ~420 tokens (384 cut 14% of them, completions included), so it sits far above any row here.
    config = sft_config(work, steps, batch_size, learning_rate, seed, max_length=1024)
    peft_config = LoraConfig(
        r=recipe["lora_r"],
        lora_alpha=recipe["lora_alpha"],
        lora_dropout=recipe["lora_dropout"],
        target_modules=list(recipe["lora_target_modules"]),
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    trainer.save_model(str(out / "adapter"))
    shutil.rmtree(work, ignore_errors=True)
    return [h["loss"] for h in trainer.state.log_history if "loss" in h], time.time() - started


def main(argv: list[str] | None = None) -> None:
    import torch
    import yaml

    from policies.rewriter import CONTEXT_FORMAT, POPULATION, SYSTEM_PROMPT, AdapterInfo, PromptRewriter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--population", required=True, help="a population folder (its manifest's train users)")
    parser.add_argument("--context_nearest", type=int, default=3, help="rationales per prompt, as the RL run's")
    parser.add_argument("--out", required=True, help="the run folder; the adapter goes to OUT/adapter")
    parser.add_argument("--runs_dir", default="runs", help="where contexts are cached (the same as training's)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch_threads", type=int, default=1)
    for flag, key in (("--base_model", "model_name_or_path"), ("--judge_model", "judge_model")):
        parser.add_argument(flag, dest=key, help=f"default: the recipe's {key} (configs/cpu.yaml)")
    parser.add_argument("--fidelity_model", help="the prompt embedder that picks the nearest rationales")
    args = parser.parse_args(argv)
    if args.context_nearest < 0 or args.steps < 1:
        parser.error("--context_nearest must be >= 0 and --steps >= 1")
    out = Path(args.out)
    if (out / "adapter").exists():
        parser.error(f"{out / 'adapter'} exists: pass another --out, or delete that folder to build it again")
    torch.set_num_threads(args.torch_threads)
    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    recipe.update(
        {k: getattr(args, k) for k in ("model_name_or_path", "judge_model", "fidelity_model") if getattr(args, k)}
    )

    started = time.time()
    pig, contexts = build_contexts(args.population, args.context_nearest, args.runs_dir, recipe)
    rows, counts = corpus(pig, contexts, args.steps * args.batch_size, args.seed)
    losses, seconds = train(rows, out, recipe, args.steps, args.batch_size, args.learning_rate, args.seed)
    first = next(iter(contexts.values()))
    AdapterInfo(
        user_id=POPULATION,
        base_model=recipe["model_name_or_path"],
        system_prompt=SYSTEM_PROMPT,
        max_new_tokens=recipe["max_completion_length"],
        trained_steps=args.steps,
        trainer="sft",
        temperature=recipe["temperature"],
        context_format=CONTEXT_FORMAT,
        context_source={
            "reasoner_model_id": first.model_id,
            "reasoner_template": first.template_id,
            "reasoner_generation": first.generation,
            **({"prompt_embedder": recipe["fidelity_model"]} if args.context_nearest else {}),
        },
        context_nearest=args.context_nearest,
    ).save(out / "adapter")
    figures = {
        "command": "python -m localmodels.population_sft " + " ".join(argv if argv is not None else sys.argv[1:]),
        "users": sorted(contexts),
        "targets": counts,
        "first_loss": round(losses[0], 4) if losses else None,
        "final_loss": round(losses[-1], 4) if losses else None,
        "sft_seconds": round(seconds, 1),
        "seconds": round(time.time() - started, 1),
    }
    (out / "population_sft.json").write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    prompts, user_id = ["a sun", "a house"], sorted(contexts)[0]
    rewrites = PromptRewriter(adapter=out / "adapter").rewrite(
        prompts, context=pig.rationales_for(prompts, contexts[user_id])
    )
    figures["samples"] = {user_id: dict(zip(prompts, rewrites))}
    print(json.dumps({k: v for k, v in figures.items() if k != "users"}, indent=1))


if __name__ == "__main__":
    main()
