"""A trained adapter as a self-describing package to ship or serve, and the recipes that serve it.

The package holds:

- `adapter_config.json`, `adapter_model.safetensors`: the PEFT LoRA adapter, as training saved it;
- the policy's tokenizer and chat template (as training saved them next to the adapter);
- `pig_adapter.json` (`policies.rewriter.AdapterInfo`): the system prompt, token cap and training temperature the
  adapter must be served with; its `user_id` is a hash of the user's id (`user_hash`), not the id;
- `README.md`: the model card the caller wrote (`pig export`, pig/export.py, writes it from what the run recorded;
  its "Use" section is `serving_recipes`: `pig rewrite`, PEFT in Python, vLLM multi-LoRA);
- with `merge=True`, `merged/`: PEFT's `merge_and_unload` of base + adapter saved as safetensors with the tokenizer,
  loadable by `transformers.AutoModelForCausalLM.from_pretrained`.

Left out on purpose: the adapter's `training_args.bin` (a pickle, and it records the run's paths, which name the user),
PEFT's template card (replaced), the learning-curve image (its title is the user id), sample grids and W&B files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from common.errors import PigError
from policies.rewriter import ADAPTER_META, CONTEXT_HEADER, NO_POLICY_CONTEXT, AdapterInfo, build_chat

LEFT_OUT = {"README.md", "training_args.bin", ADAPTER_META}
"""Files of the adapter folder not copied as they are: PEFT's template card and pig_adapter.json are rewritten,
training_args.bin is a pickle holding the run's paths (which name the user)."""
MERGED = "merged"


class ExportError(PigError, RuntimeError):
    """The package cannot be written or pushed; the message says why and what to do."""


def user_hash(user_id: str) -> str:
    """A stable pseudonym for a user id: the first 16 hex digits of its SHA-256.

    It lets whoever knows the id match an adapter to its user without the package revealing the id. It is not
    anonymization: a short, guessable id can be found by hashing candidates.
    """
    return "sha256:" + hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:16]


def packaged_files(adapter_dir: Path) -> list[str]:
    """The names of the adapter folder's files that the package copies as they are."""
    return sorted(p.name for p in adapter_dir.iterdir() if p.is_file() and p.name not in LEFT_OUT)


def export_adapter(
    adapter_dir: str | Path,
    out: str | Path,
    card: str,
    *,
    force: bool = False,
    merge: bool = False,
    base_model: str | None = None,
    source: str | Path | None = None,
) -> list[Path]:
    """Write the package of `adapter_dir` to `out` with `card` as its README.md; returns the files written (merged/
    as one entry per file). `source` is the folder `out` must not be inside (default: the adapter's run folder)."""
    adapter_dir, out = Path(adapter_dir), Path(out)
    info = AdapterInfo.load(adapter_dir)
    _check_out(Path(source) if source is not None else adapter_dir.parent, out, force)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in packaged_files(adapter_dir):
        shutil.copyfile(adapter_dir / name, out / name)
        written.append(out / name)
    dataclasses.replace(info, user_id=user_hash(info.user_id)).save(out)
    written.append(out / ADAPTER_META)
    if (out / MERGED).is_dir():  # an earlier export's merged weights (only an export gets this far with --force)
        shutil.rmtree(out / MERGED)
    if merge:
        written += merge_adapter(out, out / MERGED, base_model or info.base_model)
    (out / "README.md").write_text(card, encoding="utf-8")
    written.append(out / "README.md")
    return written


def _check_out(source: Path, out: Path, force: bool) -> None:
    resolved = out.resolve()
    if resolved == source.resolve() or source.resolve() in resolved.parents:
        raise ExportError(f"--out {out} is inside the run folder {source}: export to a folder of its own.")
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


# -------------------------------------------------------------------------------------------------- serving recipes
EXAMPLE_CONTEXT = [
    "The user chose the image with warm, golden light over the cold, blue one.",
    "This user prefers a simple layout with one clear subject over a crowded scene.",
]
"""Rationales shown in the recipes of a context-conditioned adapter, where a user's real context goes (`pig context
--user U --json` prints one; the reasoner recorded in pig_adapter.json's `context_source` writes them)."""


def peft_script(adapters: dict[str, str], prompts: list[str], contexts: dict[str, list[str]] | None = None) -> str:
    """A standalone Python script (transformers + peft only) serving several users' exported adapters on one base
    model: the base is loaded once, each adapter with `load_adapter`, and `set_adapter` picks the user per request.
    Greedy; the rewrite is the answer's first line. `pig rewrite` also blocks 3-grams repeated within the answer.

    `contexts`: name -> the user's rationales, for context-conditioned adapters (the population model): the script's
    `system_message` writes them into the system message exactly as `policies.rewriter.build_chat` does."""
    return f"""import json

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

ADAPTERS = {json.dumps(adapters)}  # name -> exported folder, all of one base model
PROMPTS = {json.dumps(prompts)}
# name -> the user's context (the reasoner's rationales), for an adapter whose pig_adapter.json has a context_format
CONTEXTS = {json.dumps(contexts or {})}
CONTEXT_HEADER = {json.dumps(CONTEXT_HEADER)}
NO_CONTEXT = {json.dumps(NO_POLICY_CONTEXT)}

infos = {{name: json.load(open(f"{{folder}}/pig_adapter.json")) for name, folder in ADAPTERS.items()}}
first = next(iter(ADAPTERS))
tokenizer = AutoTokenizer.from_pretrained(ADAPTERS[first])
base = AutoModelForCausalLM.from_pretrained(infos[first]["base_model"], dtype=torch.float32)  # loaded once
model = PeftModel.from_pretrained(base, ADAPTERS[first], adapter_name=first)
for name, folder in ADAPTERS.items():
    if name != first:
        model.load_adapter(folder, adapter_name=name)
model.eval()


def system_message(info, context):
    if not info.get("context_format"):
        return info["system_prompt"]
    if context is None:
        raise ValueError("this adapter reads the user's context: give their rationales")
    lines = [" ".join(str(r).split()).replace("<|", "< |").replace("|>", "| >") for r in context]
    numbered = "\\n".join(f"{{i}}. {{line}}" for i, line in enumerate([x for x in lines if x], 1)) or NO_CONTEXT
    return info["system_prompt"] + "\\n\\n" + CONTEXT_HEADER + "\\n" + numbered


def rewrite(name, prompt, context=None):
    info = infos[name]
    model.set_adapter(name)
    chat = [{{"role": "system", "content": system_message(info, context)}}]
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
        rewritten = rewrite(name, prompt, CONTEXTS.get(name))
        print(json.dumps({{"adapter": name, "prompt": prompt, "rewrite": rewritten}}))
"""


def serving_recipes(info: AdapterInfo, adapters: dict[str, str], lora_r: int) -> list[str]:
    """Markdown: `pig rewrite`, PEFT in Python (several adapters, one base) and vLLM multi-LoRA; for a
    context-conditioned adapter, each with the user's context (`EXAMPLE_CONTEXT` standing for it)."""
    name, folder = next(iter(adapters.items()))
    modules = " ".join(f"{n}={f}" for n, f in adapters.items())
    context = EXAMPLE_CONTEXT if info.needs_context else None
    system_text = build_chat("", info.system_prompt, context=context)[0]["content"]
    system = json.dumps(system_text).replace("'", "'\\''")  # inside the shell's single quotes
    pig_lines = [
        f'pig rewrite --adapter {folder} "a lighthouse on a cliff"',
        f"pig rewrite --adapter {folder} --file prompts.txt --out rewrites.jsonl",
    ]
    if info.needs_context:
        pig_lines = [
            "pig context --user U --json > context.json   # the user's context, by the judge's reasoner",
            f'pig rewrite --adapter {folder} --context context.json "a lighthouse on a cliff"',
            f'pig rewrite --adapter {folder} --user U --users_dir users "a lighthouse on a cliff"   # context '
            "read from the cache or built",
        ]
    nearest = []
    if info.context_nearest:
        embedder = info.context_source.get("prompt_embedder", "the fidelity embedder")
        nearest = [
            f"This adapter reads, for each prompt, only the {info.context_nearest} rationales whose choices' prompts "
            f"are nearest to it (cosine of `{embedder}` mean-pooled embeddings), as it was trained: `pig rewrite "
            "--user U` picks them; a server of its own must pick them the same way and put those in the system "
            "message.",
            "",
        ]
    return [
        *nearest,
        "With pig-rl installed:",
        "",
        "```bash",
        *pig_lines,
        "```",
        "",
        "Many users on one base model with PEFT (load the base once, one `load_adapter` per user, `set_adapter` per "
        "request; add one entry per exported adapter to `ADAPTERS`"
        + ("; the user's rationales go in `CONTEXTS`" if info.needs_context else "")
        + "):",
        "",
        "```python",
        peft_script(adapters, ["a lighthouse on a cliff"], {name: context} if context else None).rstrip(),
        "```",
        "",
        f"Many users on one base model with vLLM's multi-LoRA serving (not run in pig-rl's tests: they have no GPU). "
        f"`--max-lora-rank` must be at least the adapter's rank ({lora_r}); `--max-loras` is how many adapters one "
        "batch may mix. Each exported folder is one `--lora-modules name=folder`; a request names its user's adapter "
        f"as the model, with the system prompt and token cap of `{ADAPTER_META}`"
        + (" (the system message ends with the user's context, numbered as below)" if info.needs_context else "")
        + ":",
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
