"""A new user's first personalized rewrite: seconds from their folder existing to one rewrite by the population model.

    python benchmarks/first_rewrite.py --user runs/users/population/held000        # runs/population/LATEST
    python benchmarks/first_rewrite.py --user users/demo --adapter runs/population/<run>/adapter --prompt "a gem"

What `pig rewrite --user U` does for a user with no context yet and no adapter of their own (issue 21's floor: within
60 s on this CPU, models built), part by part:

1. `imports`: torch, transformers and peft (0 when this process had them already);
2. `read user`: the user's folder (`load_user`: user.json and every reference's images, checked);
3. `load reasoner`: the reasoner recorded with the adapter (`context_source`; `--reasoner_model` names another);
4. `build context`: one rationale per reference, nothing cached (contexts go to a fresh temporary folder, never
   runs/);
5. `load policy`: the base policy and the population model's LoRA;
6. `rewrite`: one prompt, greedy, as served, with the user's context in the chat.

`cold` is their sum: a command started from nothing. `warm` is parts 4 and 6 alone (a server that keeps both models
loaded), measured again `--repeats` times with a fresh cache each time; its median is printed. Figures are meaningful
on the built models (`make setup`) and the trained population model; the tests run it on tiny ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--user", required=True, help="The new user: a folder holding user.json, or an id.")
    parser.add_argument("--users_dir", default="users", help="Where --user is, when it is an id.")
    parser.add_argument(
        "--adapter", default=None, help="A context-conditioned adapter (default: runs/population/LATEST)."
    )
    parser.add_argument("--runs_dir", default="runs", help="Where runs/population/LATEST is read (nothing written).")
    parser.add_argument(
        "--reasoner_model", default=None, help="The reasoner (default: the one recorded with the adapter)."
    )
    parser.add_argument("--prompt", default="a lighthouse", help="The prompt of the first rewrite.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="Warm measurements (context build + rewrite).")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = parser.parse_args(argv)
    if args.repeats < 0:
        parser.error(f"--repeats must be >= 0, got {args.repeats}.")
    return args


def template_named(template_id: str) -> str:
    """The file stem of the reasoner template whose `id` a context records (as `pig/rewrite.py` finds it: benchmarks
    may not import `pig`)."""
    from reward.templates import TEMPLATE_DIR, load_template

    for path in sorted(TEMPLATE_DIR.glob("*.yaml")):
        if load_template(path.stem).id == template_id:
            return path.stem
    raise FileNotFoundError(f"No template with id {template_id!r} in {TEMPLATE_DIR}.")


def measure(args: argparse.Namespace) -> dict:
    parts: dict[str, float] = {}

    def timed(name: str, fn):
        began = time.perf_counter()
        value = fn()
        parts[name] = time.perf_counter() - began
        return value

    def imports():
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401

    timed("imports", imports)
    from policies.rewriter import AdapterInfo, PromptRewriter
    from policy_eval.evaluate_policy import population_adapter
    from reward.backends import GenerationSettings
    from reward.pigreward import PIGReward
    from reward.templates import load_template
    from reward.users import load_user

    adapter = Path(args.adapter) if args.adapter else population_adapter(args.runs_dir)
    info = AdapterInfo.load(adapter)
    if not info.needs_context:
        raise SystemExit(
            f"error: {adapter} reads the prompt alone (no context_format in its pig_adapter.json): this benchmark "
            "times the population model (or another context-conditioned adapter)."
        )
    source = info.context_source or {}
    recorded = source.get("reasoner_model_id")
    reasoner = args.reasoner_model or (recorded.rsplit("@", 1)[0] if recorded else None)
    if not reasoner:
        raise SystemExit("error: the adapter records no reasoner: pass --reasoner_model.")
    template = template_named(source.get("reasoner_template") or load_template("reasoner-v1").id)
    generation = GenerationSettings(**(source.get("reasoner_generation") or {"max_new_tokens": 96}))

    user = timed("read user", lambda: load_user(args.user, args.users_dir))
    with tempfile.TemporaryDirectory(prefix="first-rewrite-") as cache:
        pig = timed(
            "load reasoner",
            lambda: PIGReward.from_names(
                judge=reasoner,
                backend_kwargs=dict(device=args.device),
                reasoner_template=template,
                reasoner_generation=generation,
                cache_dir=cache,
            ),
        )
        context = timed("build context", lambda: pig.build_context(user))
    rewriter = timed("load policy", lambda: PromptRewriter(adapter, device=args.device))
    (rewrite,) = timed("rewrite", lambda: rewriter.rewrite([args.prompt], context=context.texts))
    warm = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="first-rewrite-") as cache:
            pig.cache_dir = Path(cache)
            began = time.perf_counter()
            texts = pig.build_context(user).texts
            rewriter.rewrite([args.prompt], context=texts)
            warm.append(time.perf_counter() - began)
    return {
        "user": user.user_id,
        "references": len(user.references),
        "adapter": str(adapter),
        "reasoner": reasoner,
        "device": args.device,
        "parts_s": parts,
        "cold_s": sum(parts.values()),
        "warm_s": statistics.median(warm) if warm else parts["build context"] + parts["rewrite"],
        "warm_repeats_s": warm,
        "prompt": args.prompt,
        "rewrite": rewrite,
        "context": context.texts,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return result
    print(
        f"user {result['user']} ({result['references']} references), adapter {result['adapter']}, reasoner "
        f"{result['reasoner']}, {result['device']}"
    )
    for name, seconds in result["parts_s"].items():
        print(f"  {name:14} {seconds:8.2f} s")
    print(f"  {'cold total':14} {result['cold_s']:8.2f} s   (the folder to the first rewrite, model loads included)")
    repeats = len(result["warm_repeats_s"])
    print(
        f"  {'warm':14} {result['warm_s']:8.2f} s   (context build + rewrite, models already loaded; median of "
        f"{repeats or 'the cold run'}{' runs' if repeats else ''})"
    )
    print(f"{result['prompt']} -> {result['rewrite']}")
    return result


if __name__ == "__main__":
    main()
