"""Did the adapter learn this user? Rewrites by the adapter and by the base policy, rendered and judged for the user.

    python rl/evaluate_policy.py --user demo                          # the user's latest adapter (runs/<user>/LATEST)
    python rl/evaluate_policy.py --user demo --adapter runs/demo/grpo-.../adapter --eval_images 8
    pig evaluate --user demo --eval_prompts "a lighthouse" "a red hydrant"

For every evaluation prompt, the adapter and the same policy with the adapter disabled (the starting point) each
rewrite it (greedy, as `pig rewrite`); the original prompt and both rewrites are rendered with the same `eval_images`
seeds (common random numbers); PIGReward judges, for the user and in both orders: adapter vs base, adapter vs
original, base vs original. A preference of 0.5 means "no better"; the 95% interval is a bootstrap over prompts.
Writes `results.json` and `grid.png` (original | base | adapter per prompt) under `--eval_out`
(default `runs/<user>/eval/<adapter's run>`). Judge, renderer and models come from the same config keys as training.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rl.config import CPU_DEFAULTS, PigArguments

COMPARISONS = (("adapter", "base"), ("adapter", "original"), ("base", "original"))


@dataclass
class EvalArguments:
    adapter: str | None = field(default=None, metadata={"help": "Adapter folder (default: runs/<user>/LATEST)."})
    eval_prompts: list[str] | None = field(
        default=None,
        metadata={"help": "Prompts to rewrite (default: the user's training prompts and held-out pair prompts)."},
    )
    eval_images: int = field(default=4, metadata={"help": "Seeds (images) per prompt and rewrite."})
    eval_seed: int = field(default=1234, metadata={"help": "Base seed of the images (not the training seeds)."})
    eval_out: str | None = field(default=None, metadata={"help": "Output folder."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples for the 95% intervals."})


def parse_args(argv: list[str] | None = None) -> tuple[PigArguments, EvalArguments]:
    """Training's config keys (embedded defaults < --config YAML < flags) plus the evaluation's own; trainer keys in
    a YAML are accepted and ignored, so the training config can be reused as it is."""
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser((PigArguments, EvalArguments))
    parser.set_defaults_with_config(**CPU_DEFAULTS)
    pig_args, eval_args, _config_rest, cli_rest = parser.parse_args_and_config(
        args=argv, return_remaining_strings=True, separate_remaining_strings=True
    )
    if cli_rest:
        parser.error(f"unrecognized arguments: {' '.join(cli_rest)}")
    if not pig_args.user:
        parser.error("--user is required.")
    if eval_args.eval_images < 1:
        parser.error("--eval_images must be >= 1.")
    return pig_args, eval_args


def bootstrap_mean(values: list[float], n: int, seed: int = 0) -> tuple[float, float] | None:
    import numpy as np

    if len(values) < 2:
        return None
    data = np.asarray(values, dtype=float)
    means = data[np.random.default_rng(seed).integers(0, len(data), size=(n, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def evaluate(pig_args: PigArguments, eval_args: EvalArguments) -> dict:
    import torch
    from accelerate import PartialState

    from policies.rewriter import PromptRewriter, latest_adapter
    from reward.reduction import mean_or_none
    from reward.users import load_user
    from rl.environment import crn_seed
    from rl.tracking import image_grid
    from rl.train_policy import build_reward_stack, check_configured_models

    user = load_user(pig_args.user, pig_args.users_dir)
    adapter = Path(eval_args.adapter) if eval_args.adapter else latest_adapter(user.user_id, pig_args.runs_dir)
    prompts = eval_args.eval_prompts or list(
        dict.fromkeys([*user.training_prompts, *(h.prompt for h in user.heldout)])
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(eval_args.eval_out or Path(pig_args.runs_dir) / user.user_id / "eval" / adapter.parent.name)
    check_configured_models(pig_args)  # the policy is the adapter's recorded base model

    rewriter = PromptRewriter(adapter, device=device)
    texts = {"original": list(prompts), "adapter": rewriter.rewrite(prompts)}
    with rewriter.model.disable_adapter():
        texts["base"] = rewriter.rewrite(prompts)
    del rewriter

    pig, context, renderer, embedder = build_reward_stack(pig_args, user, device, PartialState())
    k = eval_args.eval_images
    seeds = [[crn_seed(eval_args.eval_seed, p, None, s) for s in range(k)] for p in prompts]
    names = ("original", "base", "adapter")
    flat = renderer.render(
        [texts[n][i] for i in range(len(prompts)) for n in names for _ in range(k)],
        [seeds[i][s] for i in range(len(prompts)) for _ in names for s in range(k)],
    )
    images = {n: [[None] * k for _ in prompts] for n in names}
    it = iter(flat)
    for i in range(len(prompts)):
        for n in names:
            for s in range(k):
                images[n][i][s] = next(it)

    results: dict = {"user": user.user_id, "adapter": str(adapter), "context_key": context.key, "prompts": []}
    per_prompt = {f"{a}_vs_{b}": [] for a, b in COMPARISONS}
    cells = [(i, s) for i in range(len(prompts)) for s in range(k)]
    for a, b in COMPARISONS:
        comps = pig.compare(
            [prompts[i] for i, _ in cells],
            [images[a][i][s] for i, s in cells],
            [images[b][i][s] for i, s in cells],
            context,
        )
        for i in range(len(prompts)):
            per_prompt[f"{a}_vs_{b}"].append(mean_or_none(c.preference for c in comps[i * k : (i + 1) * k]))
    fidelity = {n: embedder.similarity(texts[n], prompts) for n in ("base", "adapter")}
    for i, p in enumerate(prompts):
        results["prompts"].append(
            {
                "prompt": p,
                "base": texts["base"][i],
                "adapter": texts["adapter"][i],
                **{name: values[i] for name, values in per_prompt.items()},
                "fidelity_base": fidelity["base"][i],
                "fidelity_adapter": fidelity["adapter"][i],
            }
        )
    summary = {}
    for name, values in per_prompt.items():
        decided = [v for v in values if v is not None]
        summary[name] = {
            "preference": sum(decided) / len(decided) if decided else None,
            "ci95": bootstrap_mean(decided, eval_args.bootstrap),
            "prompts_decided": len(decided),
        }
    for n in ("base", "adapter"):
        summary[f"fidelity_{n}"] = sum(fidelity[n]) / len(prompts)
    summary["judge"] = pig.pop_metrics()
    results["summary"] = summary
    results["settings"] = {"eval_images": k, "eval_seed": eval_args.eval_seed, "judge_model": pig_args.judge_model}

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    shown = min(k, 2)
    rows = [[images[n][i][s] for s in range(shown) for n in names] for i in range(len(prompts))]
    columns = ", ".join(names)
    labels = [
        f"{p} | adapter vs base {_fmt(per_prompt['adapter_vs_base'][i])} | columns: {columns}"
        + (", then again with seed 2" if shown > 1 else "")
        for i, p in enumerate(prompts)
    ]
    image_grid(rows, labels, cell=128).save(out / "grid.png")  # the rewrites' text is in results.json
    results["out"] = str(out)
    return results


def _fmt(value: float | None) -> str:
    return "undecided" if value is None else f"{value:.2f}"


def print_report(results: dict) -> None:
    s = results["summary"]
    print(f"user {results['user']}, adapter {results['adapter']}, {len(results['prompts'])} prompts")
    print(f"{'comparison':22} {'preference':>10}  95% CI          prompts")
    for a, b in COMPARISONS:
        row = s[f"{a}_vs_{b}"]
        ci = row["ci95"]
        ci_text = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"
        print(f"{a + ' vs ' + b:22} {_fmt(row['preference']):>10}  {ci_text:14}  {row['prompts_decided']}")
    print(f"fidelity to the prompt: base {s['fidelity_base']:.3f}, adapter {s['fidelity_adapter']:.3f}")
    print(f"written: {results['out']}/results.json, grid.png")


def main(argv: list[str] | None = None) -> int:
    pig_args, eval_args = parse_args(argv)
    print_report(evaluate(pig_args, eval_args))
    return 0


if __name__ == "__main__":
    from reward.hub import ModelUnavailableError
    from reward.users import UserDataError

    try:
        sys.exit(main())
    except (FileNotFoundError, ModelUnavailableError, UserDataError) as err:  # a clear line for the known failures
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
