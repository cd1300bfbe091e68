"""`pig rewrite`: rewrite prompts with a user's trained adapter (or the bare base policy, for comparison).

pig rewrite --user demo "a lighthouse" "a red hydrant"      # the user's latest adapter (runs/<user>/LATEST)
pig rewrite --adapter runs/demo/grpo-.../adapter "a sun"    # a specific exported adapter
pig rewrite --user demo --compare "a sun"                   # base policy vs personalized, side by side
pig rewrite --user demo --temperature 1 --seed 3 "a sun"    # sample, as in training
pig rewrite --user demo --file prompts.txt --out rewrites.jsonl --batch_size 16   # a file of prompts, JSONL out

A prompts file holds one prompt per line; blank lines and lines starting with `#` are skipped. Its rewrites are
written as JSON lines ({"line", "prompt", "rewrite"}, plus "base_rewrite" with --compare), in the file's order, to
--out or to stdout, batch by batch (a progress bar goes to stderr). Sampling (--temperature > 0) seeds each batch with
--seed plus the index of its first prompt, so a sampled file's rewrites depend on --batch_size; greedy ones do not
(up to float rounding between padded batches).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_rewrite(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pig rewrite", description="Rewrite prompts for one user.")
    parser.add_argument("prompts", nargs="*", help="Prompts to rewrite (or --file).")
    parser.add_argument("--file", help="Rewrite the prompts of this file (one per line; blank and # lines skipped).")
    parser.add_argument("--out", help="With --file: write the JSONL here instead of stdout.")
    parser.add_argument("--batch_size", type=int, default=8, help="With --file: prompts per generate call.")
    parser.add_argument("--user", help="Use this user's latest adapter (runs/<user>/LATEST).")
    parser.add_argument("--adapter", help="Adapter folder (overrides --user).")
    parser.add_argument("--runs_dir", default="runs", help="Where runs/<user>/LATEST is looked up.")
    parser.add_argument("--base_model", default=None, help="Base model (default: the one recorded with the adapter).")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1...")
    parser.add_argument("--compare", action="store_true", help="Also show the base policy's rewrite.")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); 1 = as in training.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of sampling (with --temperature > 0).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.temperature < 0:
        parser.error("--temperature must be >= 0 (0 = greedy).")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}.")
    if bool(args.prompts) == bool(args.file):
        parser.error("give prompts to rewrite, or --file FILE (one of them).")
    if args.out and not args.file:
        parser.error("--out goes with --file (prompts given on the command line are printed).")
    if args.json and args.file:
        parser.error("--json goes with prompts on the command line; --file always writes JSON lines.")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        parser.error(f"--out {args.out}: its folder does not exist. Create it first.")
    if args.out and args.file and Path(args.out).resolve() == Path(args.file).resolve():
        parser.error("--out is the --file itself: write the rewrites to another file.")
    file_prompts = None
    if args.file:
        try:
            file_prompts = read_prompts(args.file)
        except ValueError as err:
            parser.error(str(err))
    from policies.rewriter import PromptRewriter, latest_adapter

    if not args.adapter and not args.user:
        parser.error("give --user (latest adapter) or --adapter PATH.")
    adapter = args.adapter or latest_adapter(args.user, args.runs_dir)
    personal = PromptRewriter(adapter, base_model=args.base_model, device=args.device)
    decoding = dict(temperature=args.temperature, seed=args.seed)
    if file_prompts is not None:
        return rewrite_file(personal, file_prompts, args.out, args.batch_size, args.compare, decoding)
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


def read_prompts(path: str | Path) -> list[tuple[int, str]]:
    """(line number, prompt) for each prompt of a prompts file: one per line, blank lines and `#` lines skipped.

    Raises:
        ValueError: the file is missing, not UTF-8 text, or holds no prompt.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--file {path} does not exist (or is not a file). Give a text file, one prompt per line.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"--file {path} is not UTF-8 text ({err}). Save it as UTF-8, one prompt per line.") from err
    prompts = [
        (i, line.strip()) for i, line in enumerate(lines, 1) if line.strip() and not line.strip().startswith("#")
    ]
    if not prompts:
        raise ValueError(
            f"--file {path} holds no prompt ({len(lines)} lines, all blank or # comments). Put one prompt per line."
        )
    return prompts


def rewrite_file(rewriter, prompts: list[tuple[int, str]], out: str | None, batch_size: int, compare: bool, decoding):
    """Rewrite `prompts` in batches, one JSON line per prompt, written as each batch finishes (a long file's
    finished part is on disk if the run stops)."""
    from tqdm import tqdm

    sink = open(out, "w", encoding="utf-8") if out else sys.stdout  # noqa: SIM115 (closed below, stdout is not)
    try:
        with tqdm(total=len(prompts), desc="rewriting", unit="prompt", file=sys.stderr) as bar:
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start : start + batch_size]
                texts = [p for _, p in batch]
                # Sampling is seeded per batch; offsetting by the batch's first index keeps batches' draws apart.
                batch_decoding = {**decoding, "seed": decoding["seed"] + start}
                rewrites = rewriter.rewrite(texts, **batch_decoding)
                base = [None] * len(batch)
                if compare:
                    with rewriter.model.disable_adapter():
                        base = rewriter.rewrite(texts, **batch_decoding)
                for (line, prompt), rewrite, base_rewrite in zip(batch, rewrites, base):
                    row = {"line": line, "prompt": prompt, "rewrite": rewrite}
                    if compare:
                        row["base_rewrite"] = base_rewrite
                    sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()
                bar.update(len(batch))
    finally:
        if out:
            sink.close()
    if out:
        print(f"{len(prompts)} rewrites -> {out}", file=sys.stderr)
    return 0
