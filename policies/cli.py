"""`pig rewrite`: rewrite prompts with a user's trained adapter (or the bare base policy, for comparison).

pig rewrite --user demo "a lighthouse" "a red hydrant"      # the user's latest adapter (runs/<user>/LATEST)
pig rewrite --user newcomer "a sun"                         # no adapter of their own: the population model, given
                                                            # the user's context (pig/rewrite.py finds both)
pig rewrite --adapter runs/population/<run>/adapter --context ctx.json "a sun"   # a context-conditioned adapter
pig rewrite --adapter runs/demo/grpo-.../adapter "a sun"    # a specific exported adapter
pig rewrite --user demo --compare "a sun"                   # base policy vs personalized, side by side
pig rewrite --user demo --temperature 1 --seed 3 "a sun"    # sample, as in training
pig rewrite --user demo --file prompts.txt --out rewrites.jsonl --batch_size 16   # a file of prompts, JSONL out

A prompts file holds one prompt per line; blank lines and lines starting with `#` are skipped. Its rewrites are
written as JSON lines ({"line", "prompt", "rewrite"}, plus "base_rewrite" with --compare), in the file's order, to
--out or to stdout, batch by batch (a progress bar goes to stderr). Sampling (--temperature > 0) seeds each batch with
--seed plus the index of its first prompt, so a sampled file's rewrites depend on --batch_size; greedy ones do not
(up to float rounding between padded batches).

A context-conditioned adapter (the population model, or a per-user run started from it) reads the user's context in
its chat (`policies.rewriter.build_chat`): `--context FILE` gives it (a context JSON as `pig context --json` prints it,
or a text file of rationales, one per line); `pig rewrite --user U` (pig/rewrite.py, which may use the judge's
reasoner) reads U's cached context or builds it. This module only serves: it imports nothing of the judge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_rewrite(argv: list[str], resolve=None) -> int:
    """`pig rewrite`. `resolve(args) -> (adapter folder, the user's rationales or None, notes)` picks the adapter and
    the context (pig/rewrite.py: the user's own adapter, else the population model with the user's context); the
    default, `own_adapter`, takes --adapter or the user's LATEST and no context but --context's."""
    parser = argparse.ArgumentParser(prog="pig rewrite", description="Rewrite prompts for one user.")
    parser.add_argument("prompts", nargs="*", help="Prompts to rewrite (or --file).")
    parser.add_argument("--file", help="Rewrite the prompts of this file (one per line; blank and # lines skipped).")
    parser.add_argument("--out", help="With --file: write the JSONL here instead of stdout.")
    parser.add_argument("--batch_size", type=int, default=8, help="With --file: prompts per generate call.")
    parser.add_argument("--user", help="Use this user's latest adapter (runs/<user>/LATEST).")
    parser.add_argument("--adapter", help="Adapter folder (overrides --user).")
    parser.add_argument("--runs_dir", default="runs", help="Where runs/<user>/LATEST is looked up.")
    parser.add_argument("--users_dir", default="users", help="Where --user's folder is (its context's references).")
    parser.add_argument(
        "--context",
        help="For a context-conditioned adapter: the user's context, a JSON file as `pig context --json` prints it "
        "or a text file, one rationale per line (default with --user: the user's cached context, else built).",
    )
    parser.add_argument(
        "--reasoner_model",
        default=None,
        help="With --user and a context-conditioned adapter: the reasoner that builds a missing context (default: "
        "the one recorded with the adapter).",
    )
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
    from policies.rewriter import PromptRewriter

    if not args.adapter and not args.user:
        parser.error("give --user (latest adapter) or --adapter PATH.")
    context_file = None
    if args.context:
        try:
            context_file = read_context_file(args.context)
        except ValueError as err:
            parser.error(str(err))
    adapter, context, notes = (resolve or own_adapter)(args)
    if context_file is not None:
        context = context_file
        notes = [*notes, f"context: {len(context)} rationales from {args.context}"]
    personal = PromptRewriter(adapter, base_model=args.base_model, device=args.device)
    if context_file is not None and not personal.needs_context:
        parser.error(f"--context is for a context-conditioned adapter; {adapter} was trained on the prompt alone.")
    if context_file is not None and personal.info.context_nearest:
        notes = [
            *notes,
            f"warning: {adapter} was trained reading the {personal.info.context_nearest} rationales nearest each "
            "prompt; --context gives it the whole file (serve with --user U, without --context, to pick them)",
        ]
    decoding = dict(temperature=args.temperature, seed=args.seed)
    for note in notes:  # where the adapter and the context come from: on stderr when stdout is JSON
        print(note, file=sys.stderr if args.json or file_prompts is not None else sys.stdout)
    if file_prompts is not None:
        return rewrite_file(personal, file_prompts, args.out, args.batch_size, args.compare, decoding, context)
    rewrites = personal.rewrite(args.prompts, context=context, **decoding)
    base = None
    if args.compare:  # the same weights without the LoRA, with the plain chat: the untrained policy
        base = personal.rewrite_base(args.prompts, **decoding)
    if args.json:
        rows = [
            {"prompt": p, "rewrite": r, **({"base_rewrite": b} if base else {})}
            for p, r, b in zip(args.prompts, rewrites, base or [None] * len(rewrites))
        ]
        # how many rationales the policy read (one count per prompt when it reads those nearest each prompt)
        if callable(context):
            read = [len(texts) for texts in context(args.prompts)]
        else:
            read = None if context is None else len(context)
        info = {"adapter": str(adapter), "context_rationales": read}
        print(json.dumps({**info, "notes": notes, "rewrites": rows}, indent=2, ensure_ascii=False))
        return 0
    print(f"adapter: {adapter}")
    for i, (prompt, rewrite) in enumerate(zip(args.prompts, rewrites)):
        print(f"{prompt}\n  -> {rewrite}")
        if base:
            print(f"  (base policy: {base[i]})")
    return 0


def own_adapter(args) -> tuple[Path, None, list[str]]:
    """The adapter `pig rewrite` serves without help: --adapter, else the user's own (runs/<user>/LATEST)."""
    from policies.rewriter import latest_adapter

    return Path(args.adapter) if args.adapter else latest_adapter(args.user, args.runs_dir), None, []


def read_context_file(path: str | Path) -> list[str]:
    """A user's rationales from a file: a context JSON (`{"rationales": [{"text": ...}, ...]}`, as `pig context
    --json` prints it and runs/<user>/context/ caches it) or text, one rationale per line (blank lines skipped).

    Raises:
        ValueError: the file is missing, unreadable, or a JSON file without rationales.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--context {path} does not exist (or is not a file).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"--context {path} is not UTF-8 text ({err}).") from err
    if path.suffix == ".json":
        try:
            data = json.loads(text)
            rationales = [r["text"] for r in data["rationales"]]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(
                f"--context {path} is not a context JSON ({type(err).__name__}: {err}): expected "
                '{"rationales": [{"text": ...}, ...]} as `pig context --user U --json` prints it.'
            ) from err
        if not all(isinstance(r, str) for r in rationales):
            raise ValueError(f"--context {path}: every rationale's text must be a string.")
        return rationales
    return [line.strip() for line in text.splitlines() if line.strip()]


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


def rewrite_file(
    rewriter, prompts: list[tuple[int, str]], out: str | None, batch_size: int, compare: bool, decoding, context=None
):
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
                rewrites = rewriter.rewrite(texts, context=context, **batch_decoding)
                base = [None] * len(batch)
                if compare:
                    base = rewriter.rewrite_base(texts, **batch_decoding)
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
