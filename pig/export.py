"""`pig export`: a user's trained adapter as a self-describing package to ship or serve.

    pig export runs/demo/final-s0 --out exports/demo          # a run folder
    pig export demo --out exports/demo                        # a user id: runs/demo/LATEST
    pig export demo --out exports/demo --merge                # + merged/: base + adapter in one model (safetensors)
    pig export demo --out exports/demo --push_to_hub me/pig-demo   # + upload (needs the Hub and a token)

The package holds:

- `adapter_config.json`, `adapter_model.safetensors`: the PEFT LoRA adapter, as training saved it;
- the policy's tokenizer and chat template (as training saved them next to the adapter);
- `pig_adapter.json` (`policies.rewriter.AdapterInfo`): the system prompt, token cap and training temperature the
  adapter must be served with; its `user_id` is a hash of the user's id (`reports.runs.user_hash`), not the id;
- `README.md`: a model card: base model, the user's hash, the reward and training configuration the run recorded
  (its W&B run), the training steps and learning figures (log_history.json), the evaluation figures when
  `pig evaluate` was run on this adapter, and serving recipes (`pig rewrite`, PEFT in Python, vLLM multi-LoRA);
- with `--merge`, `merged/`: PEFT's `merge_and_unload` of base + adapter saved as safetensors with the tokenizer,
  loadable by `transformers.AutoModelForCausalLM.from_pretrained`.

Left out on purpose: the adapter's `training_args.bin` (a pickle, and it records the run's paths, which name the user),
PEFT's template card (replaced), the learning-curve image (its title is the user id), sample grids and W&B files.

The command reads what training and evaluation wrote (the W&B run record, `pig evaluate`'s results) through the one
run reader, `reports.runs`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
from pathlib import Path

from common.errors import PigError
from policies.rewriter import ADAPTER_META, AdapterInfo
from reports.runs import (
    Run,
    evaluation_rows,
    evaluations,
    learning_summary,
    read_history,
    resolve_run,
    run_config,
    user_hash,
)

LEFT_OUT = {"README.md", "training_args.bin", ADAPTER_META}
"""Files of the adapter folder not copied as they are: PEFT's template card and pig_adapter.json are rewritten,
training_args.bin is a pickle holding the run's paths (which name the user)."""
MERGED = "merged"

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


class ExportError(PigError, RuntimeError):
    """The package cannot be written or pushed; the message says why and what to do."""


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
    run = resolve_run(args.run, args.runs_dir)
    try:
        written = export_adapter(run, args.out, force=args.force, merge=args.merge, base_model=args.base_model)
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


def export_adapter(
    run: Run, out: str | Path, *, force: bool = False, merge: bool = False, base_model: str | None = None
) -> list[Path]:
    """Write `run`'s package to `out`; returns the files written (merged/ as one entry per file)."""
    out = Path(out)
    _check_out(run, out, force)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(run.adapter_dir.iterdir()):
        if src.is_file() and src.name not in LEFT_OUT:
            shutil.copyfile(src, out / src.name)
            written.append(out / src.name)
    dataclasses.replace(run.info, user_id=user_hash(run.info.user_id)).save(out)
    written.append(out / ADAPTER_META)
    if (out / MERGED).is_dir():  # an earlier export's merged weights (only an export gets this far with --force)
        shutil.rmtree(out / MERGED)
    if merge:
        written += merge_adapter(out, out / MERGED, base_model or run.info.base_model)
    (out / "README.md").write_text(model_card(run, merged=merge), encoding="utf-8")
    written.append(out / "README.md")
    return written


def _check_out(run: Run, out: Path, force: bool) -> None:
    resolved = out.resolve()
    if resolved == run.run_dir.resolve() or run.run_dir.resolve() in resolved.parents:
        raise ExportError(f"--out {out} is inside the run folder {run.run_dir}: export to a folder of its own.")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file: give a folder.")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ExportError(f"--out {out} is not empty: choose another folder, or pass --force to replace it.")
        if not (out / ADAPTER_META).is_file():
            # --force replaces a package, never an arbitrary folder's contents (think `--out .`).
            raise ExportError(
                f"--out {out} is not empty and holds no {ADAPTER_META}: it is not an earlier export, so --force "
                "will not write into it. Choose an empty or new folder."
            )


def merge_adapter(adapter_dir: Path, out: Path, base_model: str) -> list[Path]:
    """Base + adapter merged into plain weights (PEFT `merge_and_unload`), saved as safetensors with the tokenizer
    and pig_adapter.json (the merged model still needs its system prompt and token cap)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common.hub import check_models, load_kwargs
    from policies.rewriter import check_adapter_files, check_adapter_fits

    check_models({"base model (--base_model)": base_model})
    check_adapter_files(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32, **load_kwargs())
    check_adapter_fits(adapter_dir, base, base_model)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter_dir), **load_kwargs(weights=False)).save_pretrained(str(out))
    shutil.copyfile(adapter_dir / ADAPTER_META, out / ADAPTER_META)
    return sorted(p for p in out.rglob("*") if p.is_file())


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload the package with huggingface_hub (create the repo if needed). Any failure (offline, no token, no
    permission, network) becomes an ExportError naming the cause and how to push the written package later."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="pig export")
    except Exception as err:  # offline mode, missing token, HTTP and connection errors: one message, cause chained
        raise ExportError(
            f"could not push {folder} to the Hub repo {repo_id} ({type(err).__name__}: {err}). The package in "
            f"{folder} is complete: push it later from a machine with the Hub, e.g. `hf upload {repo_id} {folder}`."
        ) from err
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")


# ------------------------------------------------------------------------------------------------------ the card
def model_card(run: Run, merged: bool = False) -> str:
    """The package's README.md: what the adapter is, how it was trained and evaluated, how to serve it."""
    info, who = run.info, user_hash(run.info.user_id)
    copied = sorted(p.name for p in run.adapter_dir.iterdir() if p.is_file() and p.name not in LEFT_OUT)
    tokenizer = ", ".join(f"`{n}`" for n in copied if not n.startswith("adapter_")) or "(none saved)"
    config = run_config(run)
    history = learning_summary(read_history(run))
    lora_r = json.loads((run.adapter_dir / "adapter_config.json").read_text(encoding="utf-8")).get("r", 16)
    hub_base = _looks_like_hub_id(info.base_model)
    header = ["---", "library_name: peft", "pipeline_tag: text-generation"]
    if hub_base:  # the Hub checks this field; a local folder name is stated in the text instead
        header.append(f"base_model: {info.base_model}")
    header += ["tags:", "- pig-rl", "- lora", f"- {info.trainer}", "- prompt-rewriting", "- personalization", "---"]
    lines = [
        *header,
        "",
        f"# Personalized prompt rewriter for user `{who}`",
        "",
        f"A LoRA adapter of `{info.base_model}` that rewrites image prompts toward one user's taste. It was trained "
        f"with reinforcement learning (TRL {info.trainer.upper()}) against PIGReward, a personalized pairwise image "
        "judge that knows the user through a context of their past choices (pig-rl). The user is named by a hash of "
        "their id (first 16 hex digits of its SHA-256), not by the id.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{info.base_model}`{'' if hub_base else ' (a local folder where it was trained)'} |",
        f"| user | `{who}` |",
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
    lines += ["", "## Training", ""]
    lines += _training_section(config, history)
    lines += ["", "## Evaluation", ""]
    lines += _evaluation_section(run)
    lines += ["", "## Use", ""]
    lines += serving_recipes(info, {f"user-{who[7:15]}": "path/to/this/package"}, lora_r)
    return "\n".join(lines) + "\n"


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


# -------------------------------------------------------------------------------------------------- serving recipes
def peft_script(adapters: dict[str, str], prompts: list[str]) -> str:
    """A standalone Python script (transformers + peft only) serving several users' exported adapters on one base
    model: the base is loaded once, each adapter with `load_adapter`, and `set_adapter` picks the user per request.
    Greedy; the rewrite is the answer's first line. `pig rewrite` also blocks 3-grams repeated within the answer."""
    return f"""import json

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

ADAPTERS = {json.dumps(adapters)}  # name -> exported folder, all of one base model
PROMPTS = {json.dumps(prompts)}

infos = {{name: json.load(open(f"{{folder}}/pig_adapter.json")) for name, folder in ADAPTERS.items()}}
first = next(iter(ADAPTERS))
tokenizer = AutoTokenizer.from_pretrained(ADAPTERS[first])
base = AutoModelForCausalLM.from_pretrained(infos[first]["base_model"], dtype=torch.float32)  # loaded once
model = PeftModel.from_pretrained(base, ADAPTERS[first], adapter_name=first)
for name, folder in ADAPTERS.items():
    if name != first:
        model.load_adapter(folder, adapter_name=name)
model.eval()


def rewrite(name, prompt):
    info = infos[name]
    model.set_adapter(name)
    chat = [{{"role": "system", "content": info["system_prompt"]}}]
    for question, answer in info["few_shot"]:
        chat += [{{"role": "user", "content": question}}, {{"role": "assistant", "content": answer}}]
    chat.append({{"role": "user", "content": prompt}})
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=info["max_new_tokens"], do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    return answer.splitlines()[0] if answer else ""


for prompt in PROMPTS:
    for name in ADAPTERS:
        print(json.dumps({{"adapter": name, "prompt": prompt, "rewrite": rewrite(name, prompt)}}))
"""


def serving_recipes(info: AdapterInfo, adapters: dict[str, str], lora_r: int) -> list[str]:
    """Markdown: `pig rewrite`, PEFT in Python (several adapters, one base) and vLLM multi-LoRA."""
    name, folder = next(iter(adapters.items()))
    modules = " ".join(f"{n}={f}" for n, f in adapters.items())
    system = json.dumps(info.system_prompt).replace("'", "'\\''")  # inside the shell's single quotes
    return [
        "With pig-rl installed:",
        "",
        "```bash",
        f'pig rewrite --adapter {folder} "a lighthouse on a cliff"',
        f"pig rewrite --adapter {folder} --file prompts.txt --out rewrites.jsonl",
        "```",
        "",
        "Many users on one base model with PEFT (load the base once, one `load_adapter` per user, `set_adapter` per "
        "request; add one entry per exported adapter to `ADAPTERS`):",
        "",
        "```python",
        peft_script(adapters, ["a lighthouse on a cliff"]).rstrip(),
        "```",
        "",
        f"Many users on one base model with vLLM's multi-LoRA serving (not run in pig-rl's tests: they have no GPU). "
        f"`--max-lora-rank` must be at least the adapter's rank ({lora_r}); `--max-loras` is how many adapters one "
        "batch may mix. Each exported folder is one `--lora-modules name=folder`; a request names its user's adapter "
        f"as the model, with the system prompt and token cap of `{ADAPTER_META}`:",
        "",
        "```bash",
        f"vllm serve {info.base_model} --enable-lora --max-lora-rank {max(16, lora_r)} --max-loras 4 \\",
        f"    --lora-modules {modules}",
        "curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{",
        f'  "model": "{name}", "temperature": 0, "max_tokens": {info.max_new_tokens},',
        f'  "messages": [{{"role": "system", "content": {system}}},',
        '               {"role": "user", "content": "a lighthouse on a cliff"}]}\'',
        "```",
        "",
        *(
            [f"Send the few-shot turns of `{ADAPTER_META}` as user/assistant messages before the prompt.", ""]
            if info.few_shot
            else []
        ),
        "Pushing the package to the Hugging Face Hub: `pig export ... --push_to_hub owner/name` (or "
        "`hf upload owner/name <folder>`); it needs the network and a token, and was not tested where this package "
        "was made (no Hub access there).",
    ]
