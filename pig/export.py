"""`pig export`: a user's trained adapter as a self-describing package to ship or serve.

    pig export runs/demo/final-s0 --out exports/demo          # a run folder
    pig export demo --out exports/demo                        # a user id: runs/demo/LATEST
    pig export demo --out exports/demo --merge                # + merged/: base + adapter in one model (safetensors)
    pig export demo --out exports/demo --push_to_hub me/pig-demo   # + upload (needs the Hub and a token)

The package (what it holds and leaves out) is `policies.export`'s; this command finds the run through the one run
reader (`reports.runs`) and writes the package's model card from what the run recorded: base model, the user's hash,
the reward and training configuration (its W&B run), the training steps and learning figures (log_history.json),
the evaluation figures when `pig evaluate` was run on this adapter, and the serving recipes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from policies.export import (
    ADAPTER_META,
    MERGED,
    ExportError,
    export_adapter,
    packaged_files,
    push_to_hub,
    serving_recipes,
    user_hash,
)
from policies.rewriter import CONTEXT_HEADER, NO_POLICY_CONTEXT, POPULATION
from reports.runs import Run, evaluation_rows, evaluations, learning_summary, read_history, resolve_run, run_config

REWARD_KEYS = (
    "algorithm",
    "compare_to",
    "fidelity_weight",
    "fidelity_floor",
    "fidelity_model",
    "judge_model",
    "reasoner_model",
    "judge_backend",
    "judge_mode",
    "judge_both_orders",
    "judge_strict",
    "renderer_model",
    "render_steps",
    "guidance_scale",
    "images_per_prompt",
    "seed_per_step",
    "dpo_rounds",
    "dpo_candidates",
    "dpo_min_gap",
)
"""PigArguments shown in the card. Left out: the user, users_dir, runs_dir, init_adapter (paths naming the user) and
settings of where things ran (devices, batch sizes, threads)."""
POLICY_KEYS = ("model_name_or_path", "dtype", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
TRAINER_KEYS = (
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "num_iterations",
    "steps_per_generation",
    "max_completion_length",
    "temperature",
    "beta",
    "epsilon",
    "loss_type",
    "scale_rewards",
    "reward_weights",
    "seed",
)
"""Trainer (TRL config) fields shown in the card, where the trainer has them (DPOConfig has no num_generations)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pig export",
        description="Write a user's trained adapter as a self-describing package (PEFT adapter, pig_adapter.json, "
        "model card README.md with serving recipes), optionally with merged weights and pushed to the Hub.",
    )
    parser.add_argument("run", help="A run folder (runs/<user>/<run>), an adapter folder, or a user id (LATEST).")
    parser.add_argument("--out", required=True, help="Folder to write the package to (created).")
    parser.add_argument("--runs_dir", default="runs", help="Where runs/<user>/LATEST is looked up for a user id.")
    parser.add_argument("--force", action="store_true", help="Write into a non-empty --out (replacing the package).")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="Also write merged/: base + adapter merged (PEFT merge_and_unload), safetensors, loadable by "
        "AutoModelForCausalLM. Costs the base model's size on disk.",
    )
    parser.add_argument("--base_model", default=None, help="Base model to merge into (default: the recorded one).")
    parser.add_argument(
        "--push_to_hub",
        metavar="REPO",
        default=None,
        help="Upload the package to the Hugging Face Hub repo REPO (owner/name) with huggingface_hub's "
        "upload_folder. Needs the network and a token (`hf auth login`); untested in this project's offline "
        "environment, where it fails with a clear message after the package is written.",
    )
    parser.add_argument("--private", action="store_true", help="With --push_to_hub: create the repo private.")
    args = parser.parse_args(argv)
    if args.push_to_hub is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", args.push_to_hub):
        parser.error(f"--push_to_hub takes a Hub repo id 'owner/name', got {args.push_to_hub!r}.")
    run = resolve_run(args.run, args.runs_dir, need_adapter=True)
    try:
        written = export_adapter(
            run.adapter_dir,
            args.out,
            model_card(run, merged=args.merge),
            force=args.force,
            merge=args.merge,
            base_model=args.base_model,
            source=run.run_dir,
        )
        print(f"exported {run.adapter_dir} (user {user_hash(run.info.user_id)}) -> {args.out}")
        for path in written:
            print(f"  {path.relative_to(args.out)}  ({_size(path)})")
        if args.push_to_hub:
            url = push_to_hub(args.out, args.push_to_hub, private=args.private)
            print(f"pushed to {url}")
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------------------------------------------ the card
def model_card(run: Run, merged: bool = False) -> str:
    """The package's README.md: what the adapter is, how it was trained and evaluated, how to serve it."""
    info, who = run.info, user_hash(run.info.user_id)
    copied = packaged_files(run.adapter_dir)
    tokenizer = ", ".join(f"`{n}`" for n in copied if not n.startswith("adapter_")) or "(none saved)"
    config = run_config(run)
    history = learning_summary(read_history(run))
    lora_r = json.loads((run.adapter_dir / "adapter_config.json").read_text(encoding="utf-8")).get("r", 16)
    hub_base = _looks_like_hub_id(info.base_model)
    header = ["---", "library_name: peft", "pipeline_tag: text-generation"]
    if hub_base:  # the Hub checks this field; a local folder name is stated in the text instead
        header.append(f"base_model: {info.base_model}")
    header += ["tags:", "- pig-rl", "- lora", f"- {info.trainer}", "- prompt-rewriting", "- personalization", "---"]
    population = info.user_id == POPULATION
    title = f"# Personalized prompt rewriter for user `{who}`"
    about = (
        f"A LoRA adapter of `{info.base_model}` that rewrites image prompts toward one user's taste. It was trained "
        f"with reinforcement learning (TRL {info.trainer.upper()}) against PIGReward, a personalized pairwise image "
        "judge that knows the user through a context of their past choices (pig-rl). The user is named by a hash of "
        "their id (first 16 hex digits of its SHA-256), not by the id."
    )
    if population:
        title = "# Population prompt rewriter: one adapter for every user, reading the user's context"
        about = (
            f"A LoRA adapter of `{info.base_model}` that rewrites image prompts toward the taste of whichever user it "
            "is given the context of: the rationales PIGReward's reasoner wrote about that user's past choices. It "
            f"was trained with reinforcement learning (TRL {info.trainer.upper()}) over a population of users, each "
            "rewrite judged by PIGReward under its own user's context (pig-rl). A new user is served as soon as "
            "their context exists: no training per user."
        )
    lines = [
        *header,
        "",
        title,
        "",
        about,
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{info.base_model}`{'' if hub_base else ' (a local folder where it was trained)'} |",
        f"| user | {'every user (give their context)' if population else f'`{who}`'} |",
        f"| trainer | {info.trainer}, {info.trained_steps} steps |",
        f"| system prompt | {info.system_prompt} |",
        f"| max new tokens | {info.max_new_tokens} |",
        f"| training temperature | {info.temperature} |",
        f"| run | `{run.name}` |",
        "",
        "## Files",
        "",
        "- `adapter_config.json`, `adapter_model.safetensors`: the PEFT LoRA adapter.",
        f"- {tokenizer}: the policy's tokenizer and chat template.",
        f"- `{ADAPTER_META}`: how the adapter must be served (system prompt, few-shot turns, token cap, temperature).",
    ]
    if merged:
        lines.append(
            f"- `{MERGED}/`: base + adapter merged (PEFT `merge_and_unload`), safetensors; "
            f"`AutoModelForCausalLM.from_pretrained('{MERGED}')` loads it without PEFT."
        )
    if info.needs_context:
        lines += ["", "## The user's context", ""] + _context_section(info)
    lines += ["", "## Training", ""]
    lines += _training_section(config, history)
    lines += ["", "## Evaluation", ""]
    lines += _evaluation_section(run)
    lines += ["", "## Use", ""]
    lines += serving_recipes(info, {f"user-{who[7:15]}": "path/to/this/package"}, lora_r)
    return "\n".join(lines) + "\n"


def _context_section(info) -> list[str]:
    """How to pass the user's context to a context-conditioned adapter (`pig_adapter.json`: `context_format`)."""
    source = info.context_source or {}
    reasoner = source.get("reasoner_model_id", "(not recorded)")
    return [
        "This adapter reads the user's context in its chat: give it one with every request, or it rewrites for "
        "nobody in particular. The context is the list of rationales PIGReward's reasoner writes about the user's "
        "past choices (one per choice: prompt, chosen image, rejected image), built once per user and cached, with "
        "no training. The adapter was trained on contexts by:",
        "",
        f"- reasoner `{reasoner}`, template `{source.get('reasoner_template', '(not recorded)')}`, generation "
        f"`{json.dumps(source.get('reasoner_generation', {}))}`",
        "",
        f"Layout (`context_format: {info.context_format}`): the system message is the system prompt, a blank line, "
        f"the line `{CONTEXT_HEADER}`, then one numbered line per rationale (`1. ...`, whitespace collapsed to one "
        f"line, `<|` and `|>` split); `{NO_POLICY_CONTEXT}` for a user with no known choices. The user turn is the "
        "prompt alone. `pig rewrite --user U` builds or reads U's context and writes this message itself "
        "(`policies.rewriter.build_chat(prompt, context=rationales)`); the recipes below show it by hand.",
    ]


def _training_section(config: dict | None, history: dict) -> list[str]:
    lines = []
    if history["steps"]:
        runtime, steps = history["train_runtime_s"], history["steps"]
        took = f" in {runtime / 60:.1f} min." if runtime is not None else "."
        lines.append(f"{steps} optimizer step{'s' if steps != 1 else ''}{took}")
        labels = {
            "reward": "reward",
            "rewards/preference/mean": "preference (judge)",
            "rewards/fidelity/mean": "fidelity term",
            "reward/ground_truth": "ground truth (sandbox user's hidden taste)",
        }
        rows = [(labels[k], v) for k, v in history.items() if k in labels]
        if rows:
            lines += ["", "| logged during training | first steps | last steps |", "|---|---|---|"]
            for label, v in rows:
                lines.append(f"| {label} | {v['first']:.3f} | {v['last']:.3f} |")
            lines.append(f"\n(means over the first and the last {rows[0][1]['steps_averaged']} logged steps)")
    else:
        lines.append("The run folder holds no log_history.json: training figures are not available.")
    if config is None:
        lines += [
            "",
            "The run recorded no configuration: it logged no W&B run (`--report_to none`), which is where "
            "rl/train_policy.py records its arguments.",
        ]
        return lines
    for title, section, keys in (
        ("Reward", "pig", REWARD_KEYS),
        ("Policy", "policy", POLICY_KEYS),
        ("Trainer", "trainer", TRAINER_KEYS),
    ):
        values = {k: config[section][k] for k in keys if k in config[section]}
        if section == "pig" and values.get("algorithm") != "dpo":
            values = {k: v for k, v in values.items() if not k.startswith("dpo_")}
        if values:
            lines += ["", f"{title} configuration:", "", "| key | value |", "|---|---|"]
            lines += [f"| `{k}` | `{json.dumps(v)}` |" for k, v in values.items()]
    return lines


def _evaluation_section(run: Run) -> list[str]:
    found = evaluations(run)
    current = [e for e in found if not e.stale]
    if not current:
        note = (
            f" (eval/{found[0].name} predates this adapter's weights: it evaluated an earlier run saved in the same "
            "folder)"
            if found
            else ""
        )
        return [
            f"No evaluation of this adapter was found{note}. `pig evaluate --user <user> --adapter <run>/adapter` "
            "writes one; export again to include it."
        ]
    evaluation = current[0]
    settings = evaluation.results.get("settings", {})
    lines = [
        f"`pig evaluate` (eval/{evaluation.name}): the adapter's rewrites against the base policy's (the same model "
        "with the adapter disabled) and against the original prompts, rendered with shared seeds. Each figure is a "
        "preference in [0, 1] (0.5 = no better) averaged over cells (prompt x sampled rewrite), with its 95% "
        "bootstrap interval; `truth` is the sandbox user's hidden taste measured on the images, `judge` is PIGReward "
        f"with the user's context. Images per cell: {settings.get('eval_images', '?')}.",
        "",
        "| prompts | decoding | cells | adapter vs base | adapter vs original | base vs original | fidelity base -> "
        "adapter | repeated or stacked cues base -> adapter |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in evaluation_rows(evaluation.results):
        cells = [_preference(row[c]) for c in ("adapter_vs_base", "adapter_vs_original", "base_vs_original")]
        fidelity = f"{_num(row['fidelity_base'])} -> {_num(row['fidelity_adapter'])}"
        repeats = f"{_num(row['repeats_base'])} -> {_num(row['repeats_adapter'])}"
        lines.append(
            f"| {row['prompt_set']} | {row['decoding']} | {row['cells']} | {' | '.join(cells)} | {fidelity} | "
            f"{repeats} |"
        )
    return lines


def _preference(view: dict) -> str:
    parts = []
    if view["ground_truth"] is not None:
        ci = view["ground_truth_ci95"]
        parts.append(f"truth {view['ground_truth']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
    if view["judge"] is not None:
        parts.append(f"judge {view['judge']:.2f}")
    return ", ".join(parts) or "-"


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _looks_like_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not name.startswith(".") and not Path(name).exists()


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
