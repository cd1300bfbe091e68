"""`pig rewrite`: rewrite prompts with a user's trained adapter (or the bare base policy, for comparison).

pig rewrite --user demo "a lighthouse" "a red hydrant"      # the user's latest adapter (runs/<user>/LATEST)
pig rewrite --adapter runs/demo/grpo-.../adapter "a sun"    # a specific exported adapter
pig rewrite --user demo --compare "a sun"                   # base policy vs personalized, side by side
pig rewrite --user demo --temperature 1 --seed 3 "a sun"    # sample, as in training
"""

from __future__ import annotations

import argparse
import json


def cmd_rewrite(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pig rewrite", description="Rewrite prompts for one user.")
    parser.add_argument("prompts", nargs="+", help="Prompts to rewrite.")
    parser.add_argument("--user", help="Use this user's latest adapter (runs/<user>/LATEST).")
    parser.add_argument("--adapter", help="Adapter folder (overrides --user).")
    parser.add_argument("--runs_dir", default="runs")
    parser.add_argument("--base_model", default=None, help="Base model (default: the one recorded with the adapter).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compare", action="store_true", help="Also show the base policy's rewrite.")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); 1 = as in training.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of sampling (with --temperature > 0).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.temperature < 0:
        parser.error("--temperature must be >= 0 (0 = greedy).")
    from policies.rewriter import PromptRewriter, latest_adapter

    if not args.adapter and not args.user:
        parser.error("give --user (latest adapter) or --adapter PATH.")
    adapter = args.adapter or latest_adapter(args.user, args.runs_dir)
    personal = PromptRewriter(adapter, base_model=args.base_model, device=args.device)
    decoding = dict(temperature=args.temperature, seed=args.seed)
    rewrites = personal.rewrite(args.prompts, **decoding)
    base = None
    if args.compare:
        with personal.model.disable_adapter():  # the same weights without the LoRA: the untrained policy
            base = personal.rewrite(args.prompts, **decoding)
    if args.json:
        rows = [
            {"prompt": p, "rewrite": r, **({"base_rewrite": b} if base else {})}
            for p, r, b in zip(args.prompts, rewrites, base or [None] * len(rewrites))
        ]
        print(json.dumps({"adapter": str(adapter), "rewrites": rows}, indent=2, ensure_ascii=False))
        return 0
    print(f"adapter: {adapter}")
    for i, (prompt, rewrite) in enumerate(zip(args.prompts, rewrites)):
        print(f"{prompt}\n  -> {rewrite}")
        if base:
            print(f"  (base policy: {base[i]})")
    return 0
