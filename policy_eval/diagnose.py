"""Does the reward chain carry signal for this user? Each link measured against the sandbox's ground truth.

    pig diagnose --user demo                                  # the policy's starting point
    pig diagnose --user demo --adapter runs/demo/<run>/adapter --out runs/demo/diagnose

1. **Renderer**: does a style cue change the image when it is the only cue, in a short prompt, anywhere inside a
   prompt of real length, and after 20 words of boilerplate? (AUC of the measured attribute between the two poles;
   0.5 = the cue is ignored, 1 = always obeyed.) Sandbox renderers only (the attributes are the toy world's).
2. **Policy**: what its samples look like: the share that keep the prompt's subject, that name at least one style
   cue the renderer knows, their length, and how many differ.
3. **Judge against the truth**: rewrites of the training prompts from known sources (hand-written for the user's
   taste and against it, the policy greedy and sampled as in training, the adapter when given), each rendered with
   `--images` shared seeds beside the plain prompt; for each source the true win rate over the plain prompt, the
   judge's preference over it, the judge's agreement with the truth on the pairs both decide, and the judge's verdict
   statuses (how often its named winner contradicts its own totals, and so on).

Needs a sandbox user (`sandbox` in user.json); models and judge settings come from the training config keys.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from rl.config import PigArguments, recipe_of


@dataclass
class DiagnoseArguments:
    adapter: str | None = field(default=None, metadata={"help": "Also diagnose this adapter's rewrites."})
    policy: str | None = field(
        default=None,
        metadata={"help": "Policy base model (default: the adapter's, else the recipe's model_name_or_path)."},
    )
    images: int = field(default=6, metadata={"help": "Shared seeds (images) per prompt and source."})
    samples: int = field(default=4, metadata={"help": "Sampled rewrites per prompt (at training's temperature)."})
    renderer_prompts: int = field(default=16, metadata={"help": "Prompts per pole in the renderer check (0 = skip)."})
    seed: int = field(default=4321, metadata={"help": "Base seed of images and samples."})
    out: str | None = field(
        default=None, metadata={"help": "Folder for diagnose.json (default runs/<user>/diagnose)."}
    )


def taste_rewrite(prompt: str, taste, against: bool = False) -> str:
    """A hand-written rewrite that asks for the user's poles (or the opposite ones), e.g. `"a sun, warm, minimal"`."""
    from localmodels import world

    words = []
    subject = world.parse_caption(prompt)["subject"]
    for axis, pole in taste.poles(subject if taste.by_subject else None).items():
        if against:
            pole = next(p for p in world.AXES[axis] if p != pole)
        words.append(world.STYLE_WORDS[(axis, pole)][0])
    return ", ".join([prompt, *words])


def sample_report(prompts: list[str], rewrites: list[str]) -> dict:
    """Shape of a policy's rewrites: subject kept, a known style cue named, length, diversity (pure; tested)."""
    from localmodels import world

    subject_kept = [
        world.parse_caption(r)["subject"] == world.parse_caption(p)["subject"] for p, r in zip(prompts, rewrites)
    ]
    cued = [any(world.parse_caption(r)[a] for a in world.AXES) for r in rewrites]
    return {
        "subject_kept": sum(subject_kept) / len(rewrites),
        "names_a_style_cue": sum(cued) / len(rewrites),
        "mean_words": sum(len(r.split()) for r in rewrites) / len(rewrites),
        "distinct": len(set(rewrites)) / len(rewrites),
        "examples": rewrites[:: max(1, len(rewrites) // 6)][:6],
    }


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState

    from policies.rewriter import PromptRewriter
    from policy_eval.evaluate_policy import parse_dataclasses
    from reward.users import UserDataError, load_user
    from rl import ground_truth
    from rl.environment import crn_seed
    from rl.reward_stack import build_reward_stack

    argv = list(sys.argv[1:] if argv is None else argv)
    args, opts = parse_dataclasses((PigArguments, DiagnoseArguments), argv)  # training's YAML, unknown keys refused
    if not args.user:
        raise ConfigError("--user is required: a sandbox user id under --users_dir (e.g. demo).")
    user = load_user(args.user, args.users_dir)
    taste = ground_truth.taste_of(user)
    if taste is None:
        raise UserDataError(
            f"User {user.user_id} has no 'sandbox' taste: the diagnosis measures against the ground truth of a "
            "synthetic user. For a real user use `pig evaluate` (judge only) or `pig bench`."
        )
    report: dict = {"user": user.user_id, "taste": user.sandbox}
    pig, context, renderer, _ = build_reward_stack(args, user, "cpu", PartialState())

    # 1. Renderer
    if opts.renderer_prompts:
        from localmodels.renderer_eval import evaluate_renderer

        figures = evaluate_renderer(renderer.pipe, opts.renderer_prompts, opts.seed, measure_speed=False)
        report["renderer_auc"] = {
            kind: {axis: figures[f"{prefix}{axis}/auc"] for axis in ("palette", "light", "layout")}
            for kind, prefix in (("short", ""), ("prose", "prose_"), ("late", "late_"))
        }

    # 2. Policy samples (and 3's sources)
    prompts = user.training_prompts
    sources: dict[str, list[str]] = {
        "for the taste (hand-written)": [taste_rewrite(p, taste) for p in prompts],
        "against the taste (hand-written)": [taste_rewrite(p, taste, against=True) for p in prompts],
    }
    recipe = recipe_of(argv, args.algorithm)  # the policy training would build: the same recipe, the same values
    base = opts.policy or recipe["model_name_or_path"]
    rewriter = PromptRewriter(opts.adapter, base_model=None if opts.adapter else base)
    # as training samples: its temperature, or the DPO route's pair sampling temperature (DPOConfig has none)
    temperature = rewriter.train_temperature if opts.adapter else recipe.get("temperature", args.dpo_temperature)

    def sampled() -> list[str]:  # as training samples: the training temperature, no repetition controls
        return [
            r
            for s in range(opts.samples)
            for r in rewriter.rewrite(
                prompts, temperature=temperature, seed=opts.seed + s, repetition_penalty=1.0, no_repeat_ngram_size=0
            )
        ]

    policies = {}
    if opts.adapter:
        policies["adapter"] = (rewriter.rewrite(prompts), sampled())
        with rewriter.model.disable_adapter():
            policies["base policy"] = (rewriter.rewrite(prompts), sampled())
    else:
        policies["base policy"] = (rewriter.rewrite(prompts), sampled())
    report["policy_samples"] = {}
    for name, (greedy, samples) in policies.items():
        sources[f"{name}, greedy"] = greedy
        sources[f"{name}, sampled (T={temperature})"] = samples
        report["policy_samples"][name] = sample_report(prompts * opts.samples, samples)

    # 3. Judge against the truth, source by source
    report["chain"] = {}
    for name, rewrites in sources.items():
        originals = [prompts[i % len(prompts)] for i in range(len(rewrites))]
        seeds = [
            [crn_seed(opts.seed, o, i // len(prompts), k) for k in range(opts.images)] for i, o in enumerate(originals)
        ]
        flat_o = [o for o in originals for _ in range(opts.images)]
        flat_r = [r for r in rewrites for _ in range(opts.images)]
        flat_s = [s for row in seeds for s in row]
        images_o = renderer.render(flat_o, flat_s)
        images_r = renderer.render(flat_r, flat_s)
        truth = ground_truth.preferences(taste, images_r, images_o, prompts=flat_o)
        pig.pop_metrics()
        judged = [c.preference for c in pig.compare(flat_o, images_r, images_o, context)]
        statuses = {k: round(v, 3) for k, v in pig.pop_metrics().items() if k.startswith("judge/status")}
        decided = [j for j in judged if j is not None]
        report["chain"][name] = {
            "truth_win_vs_original": sum(truth) / len(truth),
            "judge_pref_vs_original": sum(decided) / len(decided) if decided else None,
            "judge_truth_agreement": ground_truth.agreement(judged, truth),
            "pairs": len(truth),
            "judge_statuses": statuses,
        }
    out = Path(opts.out or Path(args.runs_dir) / user.user_id / "diagnose")
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnose.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"written: {out / 'diagnose.json'}")
    return 0


def print_report(report: dict) -> None:
    print(f"user {report['user']}, hidden taste {report['taste']}")
    if "renderer_auc" in report:
        print("\n1. renderer: AUC of the measured attribute between the poles (0.5 = cue ignored, 1 = obeyed)")
        for kind, row in report["renderer_auc"].items():
            print(f"   {kind:6} " + "  ".join(f"{a} {v:.2f}" for a, v in row.items()))
    print("\n2. policy samples (training temperature)")
    for name, s in report["policy_samples"].items():
        print(
            f"   {name}: subject kept {s['subject_kept']:.2f}, names a style cue {s['names_a_style_cue']:.2f}, "
            f"{s['mean_words']:.1f} words, distinct {s['distinct']:.2f}"
        )
        for example in s["examples"][:3]:
            print(f"      e.g. {example!r}")
    print("\n3. judge against the truth (rewrite vs plain prompt, shared seeds)")
    print(f"   {'source':36} {'truth wins':>10} {'judge pref':>10} {'agreement':>10} {'pairs':>6}")
    for name, row in report["chain"].items():
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(
            f"   {name:36} {f(row['truth_win_vs_original']):>10} {f(row['judge_pref_vs_original']):>10} "
            f"{f(row['judge_truth_agreement']):>10} {row['pairs']:>6}"
        )


if __name__ == "__main__":
    from common.errors import run_command

    sys.exit(run_command(main))
