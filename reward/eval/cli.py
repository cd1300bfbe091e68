"""`pig bench` (the paper's main table for any per-user preference dataset) and `import` (datasets into that format).

    pig bench --dataset users --out runs/bench/demo
    pig bench --dataset data/pickapic --methods pigreward,pigreward_no_context,random --out runs/bench/pap \\
        --judge_model jeongeunnn/pigreward --reasoner_model jeongeunnn/pigreward-bootstrap --max_users 200
    python -m reward.eval.cli import pickapic --source test.parquet --out data/pickapic --max_users 500
    python -m reward.eval.cli import pigbench --source rankings.csv --out data/pigbench
    python -m reward.eval.cli import folder --source users --out data/demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import PigError
from reward.eval.baselines import DEFAULT_CLIP, METHODS
from reward.eval.bench import DEFAULT_JUDGE, BenchConfig, run_bench


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pig bench",
        description="Accuracy of PIGReward and the baselines on a per-user preference dataset: results.json, "
        "table.md, accuracy.png, per_user.png, report.html. Re-running the same command resumes.",
    )
    p.add_argument("--dataset", required=True, help="Folder of user folders (reward/eval/dataset.py), e.g. users.")
    p.add_argument("--out", required=True, help="Output folder, e.g. runs/bench/NAME (resumed if it exists).")
    p.add_argument(
        "--methods", default=",".join(METHODS), help=f"Comma-separated, in table order; from {', '.join(METHODS)}."
    )
    p.add_argument("--judge_model", default=DEFAULT_JUDGE, help="Judge model: hub id or folder.")
    p.add_argument("--reasoner_model", default=None, help="Reasoner model (default: --judge_model).")
    p.add_argument("--clip_model", default=DEFAULT_CLIP, help="CLIP-class model of `similarity`: hub id or folder.")
    p.add_argument("--max_users", type=int, default=None, help="Only the first N users (folder order).")
    p.add_argument("--seed", type=int, default=0, help="Seed of `random`, the bootstrap and the report examples.")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda...")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--batch_size", type=int, default=8, help="Conversations per VLM forward pass.")
    p.add_argument("--batch_pairs", type=int, default=8, help="Pairs per method call (saved after each call).")
    p.add_argument("--judge_max_new_tokens", type=int, default=320, help="Cap on each judge answer (tokens).")
    p.add_argument("--reasoner_max_new_tokens", type=int, default=96, help="Cap on each rationale (tokens).")
    p.add_argument("--judge_retry", type=_bool, default=True, help="Retry undecided judge answers once (true/false).")
    p.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples for the 95%% CIs.")
    p.add_argument("--ci_unit", default="auto", choices=["auto", "users", "pairs"], help="Bootstrap unit.")
    p.add_argument("--report_examples", type=int, default=8, help="Example pairs in report.html.")
    p.add_argument("--no_progress", action="store_true", help="No progress bar.")
    return p


def cmd_bench(argv: list[str]) -> int:
    """`pig bench`: run (or resume) the benchmark; prints the table; returns the exit status."""
    args = bench_parser().parse_args(argv)
    config = BenchConfig(
        dataset=args.dataset,
        out=args.out,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        judge_model=args.judge_model,
        reasoner_model=args.reasoner_model,
        clip_model=args.clip_model,
        max_users=args.max_users,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        batch_pairs=args.batch_pairs,
        judge_max_new_tokens=args.judge_max_new_tokens,
        reasoner_max_new_tokens=args.reasoner_max_new_tokens,
        judge_retry=args.judge_retry,
        bootstrap=args.bootstrap,
        ci_unit=args.ci_unit,
        report_examples=args.report_examples,
        progress=not args.no_progress,
    )
    if "similarity" in config.methods and config.clip_model == DEFAULT_CLIP and not Path(DEFAULT_CLIP).is_dir():
        _build_default_clip()
    run_bench(config)
    return 0


def _build_default_clip() -> None:
    """Builds the default CLIP of `similarity` (`.models/tiny-clip`) the first time a benchmark needs it.

    It serves only this baseline, so `make setup` leaves it out; it is built by the same command as the other local
    models, in a process of its own (the judge's package does not import the toy world)."""
    import subprocess

    command = [sys.executable, "-m", "localmodels.build", "--models_dir", str(Path(DEFAULT_CLIP).parent)]
    command += ["--only", "tiny-clip"]
    print(f"[bench] the similarity baseline's CLIP is built once, now: {' '.join(command[1:])}", flush=True)
    if subprocess.run(command).returncode != 0:
        raise PigError(f"building {DEFAULT_CLIP} failed (above); rerun `{' '.join(command[1:])}` to see why.")


def _column_map(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        canonical, sep, actual = item.partition("=")
        if not sep or not canonical or not actual:
            raise SystemExit(f"--column_map takes CANONICAL=ACTUAL, e.g. user_id=annotator; got {item!r}.")
        mapping[canonical] = actual
    return mapping


def cmd_import(argv: list[str]) -> int:
    """Import a dataset (`pigbench`, `pickapic` or `folder`) into the canonical format; prints a summary."""
    from reward.eval import importers

    p = argparse.ArgumentParser(prog="pig import", description=importers.__doc__.split("\n\n")[0])
    p.add_argument("format", choices=["pigbench", "pickapic", "folder"])
    p.add_argument("--source", required=True, help="Ranking table / parquet file or folder / folder of users.")
    p.add_argument("--out", required=True, help="Dataset folder to write.")
    p.add_argument("--overwrite", action="store_true", help="Replace a non-empty --out.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the split into references and test pairs.")
    p.add_argument("--images_dir", default=None, help="pigbench: folder the image paths are relative to.")
    p.add_argument("--min_references", type=int, default=5, help="pigbench: fewer usable prompts -> user skipped.")
    p.add_argument("--max_references", type=int, default=15, help="pigbench: references kept per user.")
    p.add_argument("--test_prompts_per_user", type=int, default=1, help="pigbench: held-out prompts per user.")
    p.add_argument("--column_map", nargs="*", default=[], help="pigbench: CANONICAL=ACTUAL column names.")
    p.add_argument("--n_references", type=int, default=8, help="pickapic: references per user.")
    p.add_argument("--max_heldout", type=int, default=10, help="pickapic: test pairs per user, at most.")
    p.add_argument("--min_heldout", type=int, default=1, help="pickapic: fewer usable test pairs -> user skipped.")
    p.add_argument("--max_users", type=int, default=None, help="pickapic: a seeded sample of N eligible users.")
    p.add_argument("--batch_size", type=int, default=64, help="pickapic: parquet rows per batch.")
    p.add_argument("--link", action="store_true", help="folder: symlink user folders instead of copying.")
    args = p.parse_args(argv)
    if args.format == "pigbench":
        importers.import_pigbench(
            args.source,
            args.out,
            images_dir=args.images_dir,
            seed=args.seed,
            min_references=args.min_references,
            max_references=args.max_references,
            test_prompts_per_user=args.test_prompts_per_user,
            column_map=_column_map(args.column_map),
            overwrite=args.overwrite,
        )
    elif args.format == "pickapic":
        importers.import_pickapic(
            args.source,
            args.out,
            seed=args.seed,
            n_references=args.n_references,
            max_heldout=args.max_heldout,
            min_heldout=args.min_heldout,
            max_users=args.max_users,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
        )
    else:
        importers.import_folder(args.source, args.out, link=args.link, overwrite=args.overwrite)
    return 0


COMMANDS = {"bench": cmd_bench, "import": cmd_import}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m reward.eval.cli {{{','.join(COMMANDS)}}} ...  (--help after a command)")
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    from common.errors import run_command

    sys.exit(run_command(main))
