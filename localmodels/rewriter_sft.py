"""The warm-start policy: SmolLM2-135M-Instruct fine-tuned (SFT) into a *generic* prompt rewriter.

Every prompt-rewriting system that learned from a reward started from a supervised rewriter (Promptist, RePrompt,
PRIP: see docs/TRAINING.md); RL from a few-shot chat model did not learn here (issue 8: its greedy rewrites were
poetic prose the renderer cannot read, its samples at temperature 1 word salad). This build teaches the policy the
*form* of a good rewrite (the user's subject, then a few comma-separated style phrases and boilerplate, as in the
prompts people write for Stable Diffusion) with styles drawn uniformly at random: the rewriter knows how to ask
for warm or cool, bright or dark, sparse or busy, but prefers none. Which one a user wants is what RL learns, per user.

The corpus is written by `localmodels.world` (the renderer's prompt language: `style_phrase`, `FILLER_PHRASES`),
as Promptist learned its vocabulary from prompts that worked on Stable Diffusion. Training prompts of the users and
the held-out evaluation prompts (`localmodels.demo_user.HELDOUT_PROMPTS`) are not in the corpus.

    python -m localmodels.rewriter_sft --out .models/smollm2-rewriter

Deterministic in its seed (one torch thread); the LoRA is merged, so the result is a plain `LlamaForCausalLM`
folder that loads by path like any hub checkpoint (real users start from their own instruction model, or from
this recipe run on it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from localmodels import world

# Nouns outside the toy world: a rewriter must keep any subject, not only the twelve the renderer can draw.
OTHER_SUBJECTS = (
    "cat",
    "dog",
    "horse",
    "bird",
    "fish",
    "flower",
    "castle",
    "lighthouse",
    "bridge",
    "car",
    "boat",
    "train",
    "robot",
    "dragon",
    "owl",
    "fox",
    "chair",
    "lamp",
    "cup",
    "clock",
    "bicycle",
    "city",
    "garden",
    "forest",
    "river",
    "island",
    "violin",
    "teapot",
    "butterfly",
    "mushroom",
    "statue",
    "tower",
    "village",
    "cake",
    "ship",
)
# How people start a prompt (no style word, no subject word in any of them).
_PROMPT_FORMS = (
    "{a} {s}",
    "{s}",
    "the {s}",
    "a picture of {a} {s}",
    "{a} {s} on a hill",
    "{a} {s} by the sea",
    "{a} {s} in a field",
    "an image of {a} {s}",
    "{a} small {s}",
    "{a} big {s}",
    "my {s}",
)


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def source_prompt(subject: str, rng: np.random.Generator) -> str:
    """A short user prompt for `subject`, e.g. `"a kite by the sea"`."""
    form = _PROMPT_FORMS[int(rng.integers(len(_PROMPT_FORMS)))]
    return form.format(a=_article(subject), s=subject)


def target_rewrite(prompt: str, subject: str, rng: np.random.Generator, p_style: float = 0.8) -> str:
    """The rewrite the generic rewriter learns: the prompt, then style phrases (uniform random poles) and boilerplate.

    Each axis is named with probability `p_style`, its pole drawn 50/50; at least one axis is named. Up to two
    boilerplate phrases are added, and the phrases after the prompt are shuffled.
    """
    axes = [a for a in world.AXES if rng.random() < p_style] or [list(world.AXES)[int(rng.integers(3))]]
    parts = [world.style_phrase(a, world.AXES[a][int(rng.integers(2))], subject, rng) for a in axes]
    n_fill = int(rng.integers(3))
    parts += [world.FILLER_PHRASES[int(i)] for i in rng.choice(len(world.FILLER_PHRASES), n_fill, replace=False)]
    parts = [parts[i] for i in rng.permutation(len(parts))]
    return ", ".join([prompt, *parts])


def sft_corpus(n: int, seed: int = 0, exclude: set[str] | None = None) -> list[dict]:
    """`n` conversational prompt-completion examples for TRL's `SFTTrainer` (`prompt` / `completion` columns).

    Args:
        n (`int`): Number of examples.
        seed (`int`, *optional*, defaults to 0): Seed of the corpus.
        exclude (`set[str]`, *optional*): Source prompts never to use (the users' training prompts and the held-out
            evaluation prompts), so that RL and evaluation see prompts the warm start never saw verbatim.
    """
    from policies.rewriter import build_chat

    rng = np.random.default_rng(seed)
    subjects = list(world.SUBJECTS) + list(OTHER_SUBJECTS)
    exclude = {p.lower() for p in (exclude or set())}
    rows = []
    while len(rows) < n:
        subject = subjects[int(rng.integers(len(subjects)))]
        prompt = source_prompt(subject, rng)
        if prompt.lower() in exclude:
            continue
        rows.append(
            {
                "prompt": build_chat(prompt),
                "completion": [{"role": "assistant", "content": target_rewrite(prompt, subject, rng)}],
            }
        )
    return rows


def sft_config(work: Path, steps: int, batch_size: int, learning_rate: float, seed: int, max_length: int):
    """TRL's `SFTConfig` of the project's warm starts on CPU: cosine schedule with 10% warm-up, completion-only loss,
    nothing saved by the trainer (the caller saves), no reporting."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(work),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 10),
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        completion_only_loss=True,
        max_length=max_length,
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def train(
    out: str | Path,
    base_model: str | Path,
    *,
    steps: int = 120,
    batch_size: int = 8,
    learning_rate: float = 5e-4,
    lora_r: int = 16,
    seed: int = 0,
    exclude: set[str] | None = None,
    num_threads: int | None = 1,
) -> dict:
    """Fine-tunes `base_model` on `sft_corpus` with a LoRA (TRL `SFTTrainer`, completion-only loss), merges it, and
    saves a plain model folder to `out` atomically. Returns measured figures."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from localmodels.smollm2 import save_atomically

    started = time.time()
    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        dataset = Dataset.from_list(sft_corpus(steps * batch_size, seed, exclude))
        work = Path(tempfile.mkdtemp(prefix="pig-sft-"))
        config = sft_config(work, steps, batch_size, learning_rate, seed, max_length=128)
        peft_config = LoraConfig(
            r=lora_r,
            lora_alpha=2 * lora_r,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            task_type="CAUSAL_LM",
        )
        trainer = SFTTrainer(
            model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
        )
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        save_atomically(trainer.model.merge_and_unload(), tokenizer, out)
        shutil.rmtree(work, ignore_errors=True)
    finally:
        torch.set_num_threads(before)
    return {
        "steps": steps,
        "batch_size": batch_size,
        "first_loss": round(losses[0], 4) if losses else None,
        "final_loss": round(losses[-1], 4) if losses else None,
        "seconds": round(time.time() - started, 1),
    }


def sample_rewrites(model_dir: str | Path, prompts: list[str], temperature: float = 1.0, seed: int = 0) -> list[str]:
    """What the built rewriter writes for `prompts` (a look at its samples; used by the build's report)."""
    from policies.rewriter import PromptRewriter

    return PromptRewriter(base_model=str(model_dir)).rewrite(prompts, temperature=temperature, seed=seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".models/smollm2-rewriter")
    parser.add_argument("--base_model", default=".models/smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    figures = train(args.out, args.base_model, steps=args.steps, seed=args.seed)
    figures["samples"] = sample_rewrites(args.out, ["a sun", "a lighthouse", "a house on a hill", "a cat"])
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
