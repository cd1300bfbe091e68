"""The paper's DPO route: judged prompt pairs from the policy's own rewrites, for TRL's `DPOTrainer`.

For each training prompt and round, the policy samples `candidates` rewrites; the environment renders them beside the
original prompt with shared seeds and PIGReward judges each against the original for the user, in both orders (the
same reward as GRPO/RLOO: preference + fidelity_weight * fidelity). The best- and worst-scoring rewrites of a group
become one (chosen, rejected) pair when their scores differ by at least `min_gap`; groups whose verdicts are all
undecided, or too close to call, give no pair (counted). Offline and one-shot, as the paper describes it: the pairs
are collected once with the starting policy, written to `pairs.jsonl`, then DPO trains the LoRA on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from common.files import atomic_write_text
from policies.rewriter import build_chat, extract_rewrite, generate_completions


@dataclass
class PairSettings:
    """Attributes:
    rounds: sampling rounds over the training prompts (pairs at most = rounds * prompts).
    candidates: rewrites sampled per prompt and round (the group judged together).
    min_gap: smallest score difference between chosen and rejected.
    max_new_tokens, temperature: sampling of the rewrites.
    prompts_per_batch: prompts whose groups are generated, rendered and judged together.
    seed: sampling seed (round r, batch b use seed + 1000 * r + b).
    """

    rounds: int = 3
    candidates: int = 4
    min_gap: float = 0.25
    max_new_tokens: int = 24
    temperature: float = 1.0
    prompts_per_batch: int = 2
    seed: int = 0


def collect_pairs(
    policy,
    tokenizer,
    env,
    prompts: list[str],
    weights: float | tuple[float, float],
    settings: PairSettings,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Sample, render, judge and pair. Returns (rows, stats); each row holds the DPO columns (`prompt` as a chat,
    `chosen`/`rejected` as assistant turns) and what produced it (`original`, rewrites, scores).

    `weights`: `(fidelity_weight, repetition_weight)` of the reward (a single number: the fidelity weight alone)."""
    fidelity_weight, repetition_weight = (weights, 0.0) if isinstance(weights, (int, float)) else weights
    from tqdm.auto import tqdm

    if settings.candidates < 2:
        raise ValueError(f"candidates must be >= 2 to form a pair, got {settings.candidates}.")
    if env.num_generations != settings.candidates:
        raise ValueError(f"the environment judges groups of {env.num_generations}, not {settings.candidates}.")
    batches = [prompts[i : i + settings.prompts_per_batch] for i in range(0, len(prompts), settings.prompts_per_batch)]
    rows: list[dict] = []
    stats = {"groups": 0, "pairs": 0, "undecided_groups": 0, "close_groups": 0}
    bar = tqdm(total=settings.rounds * len(prompts), desc="judged DPO pairs", unit="prompt", disable=not progress)
    for r in range(settings.rounds):
        for b, chunk in enumerate(batches):
            seed = settings.seed + 1000 * r + b
            completions = generate_completions(
                policy,
                tokenizer,
                chunk,
                max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                seed=seed,
                n=settings.candidates,
            )
            originals = [p for p in chunk for _ in range(settings.candidates)]
            rewrites = [extract_rewrite(c) for c in completions]
            # The batch's index is the environment's step (its image seeds and sample logs); the sampling seed is
            # already offset by settings.seed, which the environment adds again.
            result = env.compute(originals, rewrites, step=r * len(batches) + b)
            for g, original in enumerate(chunk):
                idx = range(g * settings.candidates, (g + 1) * settings.candidates)
                scored = [
                    (
                        result.preference[i]
                        + fidelity_weight * result.fidelity[i]
                        + repetition_weight * result.repetition[i],
                        i,
                    )
                    for i in idx
                    if result.preference[i] is not None and rewrites[i]
                ]
                stats["groups"] += 1
                if len(scored) < 2:
                    stats["undecided_groups"] += 1
                    continue
                (best, i_best), (worst, i_worst) = max(scored), min(scored)
                if best - worst < settings.min_gap or rewrites[i_best] == rewrites[i_worst]:
                    stats["close_groups"] += 1
                    continue
                rows.append(
                    {
                        "prompt": build_chat(original),
                        "chosen": [{"role": "assistant", "content": rewrites[i_best]}],
                        "rejected": [{"role": "assistant", "content": rewrites[i_worst]}],
                        "original": original,
                        "chosen_score": best,
                        "rejected_score": worst,
                        "chosen_preference": result.preference[i_best],
                        "rejected_preference": result.preference[i_worst],
                    }
                )
                stats["pairs"] += 1
            bar.update(len(chunk))
    bar.close()
    gaps = [row["chosen_score"] - row["rejected_score"] for row in rows]
    stats["mean_gap"] = sum(gaps) / len(gaps) if gaps else 0.0
    return rows, stats


def write_pairs(rows: list[dict], path: str | Path) -> None:
    """One JSON object per line (atomically: a crash leaves the previous file, or none)."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_pairs(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


DPO_COLUMNS = ("prompt", "chosen", "rejected")
