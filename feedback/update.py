"""`pig update`: continue a user's adapter on their current references (the choices made since included) for a set
number of steps, as a new training run that records where it started.

    pig update --user demo --steps 20                       # from runs/demo/LATEST, the default recipe
    pig update --user demo --steps 20 -- --learning_rate 2e-5 --config configs/cpu.yaml   # training flags after --
    pig update --user alice --steps 40 --from runs/population/<run>/adapter   # start from this adapter
    pig update --user alice --steps 40 --from none          # a fresh LoRA (what a first `pig train` does)

History. Each update is a run of its own, `runs/<user>/update-<time>/`, trained by `rl.train_policy.main` (what
`pig train` runs) with `--init_adapter` set to the adapter it continues (the user's own; without one the population
model, issue 21, whose context reading the run keeps), so it has its own report, W&B run, metrics and
learning curve, and its `pig_adapter.json` records its parent (`init_adapter`), the references it saw and how many of
them were choices from the page (`references`, `choices`). `runs/<user>/LATEST` then points at it; the parent run is
left as it was, so the chain of runs is the adapter's history (`pig users` shows it). A new run rather than the same
run resumed: `--resume` continues an interrupted run on the data it started with, while an update trains on new data.

The context the update trains against is the user's current one: `build_context` reuses the cached rationale of every
reference seen before (`reward/context.py`), so only the references added since go through the reasoner. Logged
choices a crashed page had not finished are finished first (`reward.choices.finish_pending`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SET_HERE = ("--user", "--init_adapter", "--max_steps", "--run_name", "--resume", "--users_dir", "--runs_dir")
"""Training flags `pig update` sets itself, refused after `--`."""


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    own, training = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        prog="pig update",
        description="Continue a user's adapter on their current references (choices made on the page included) "
        "for --steps training steps, as a new run runs/<user>/update-<time> that records its parent adapter. "
        "Arguments after `--` go to the training (rl/train_policy.py) unchanged.",
        epilog="example: pig update --user demo --steps 20 -- --learning_rate 2e-5",
    )
    parser.add_argument("--user", required=True, help="User id under --users_dir, or a path to a user folder.")
    parser.add_argument("--steps", type=int, required=True, help="Training steps of the update (max_steps).")
    parser.add_argument(
        "--from",
        dest="start",
        default="latest",
        help="latest (runs/<user>/LATEST; without one the population model, runs/population/LATEST, else a fresh "
        "LoRA), none (a fresh LoRA), or an adapter folder.",
    )
    parser.add_argument("--users_dir", default="users", help="Folder holding one sub-folder per user.")
    parser.add_argument("--runs_dir", default="runs", help="Where the runs go (runs/<user>/<run>).")
    args = parser.parse_args(own)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}.")
    for flag in SET_HERE:
        if any(a == flag or a.startswith(flag + "=") for a in training):
            parser.error(f"{flag} after `--`: pig update sets it (--user, --steps, --from, --users_dir, --runs_dir).")
    return args, training


def parent_adapter(start: str, user_id: str, runs_dir: str | Path) -> Path | None:
    """The adapter an update continues: `latest` (the user's LATEST, else the population model's, else None),
    `none`, or a folder."""
    from feedback.session import starting_adapter
    from policies.rewriter import check_adapter_files

    if start == "none":
        return None
    if start == "latest":
        return starting_adapter(user_id, runs_dir)
    check_adapter_files(start)
    return Path(start)


def main(argv: list[str] | None = None) -> int:
    from policies.rewriter import AdapterInfo
    from reward.choices import count_choices, finish_pending
    from reward.users import load_user, resolve_user_dir

    argv = list(sys.argv[1:] if argv is None else argv)
    args, training = parse_args(argv)
    folder = resolve_user_dir(args.user, args.users_dir)
    finished = finish_pending(folder)  # a page that crashed mid-write: its logged choices become references first
    user = load_user(str(folder.resolve()))
    parent = parent_adapter(args.start, user.user_id, args.runs_dir)
    counts = count_choices(folder)
    if parent is not None:
        info = AdapterInfo.load(parent)
        seen = (
            f"{info.references} references ({info.choices} from the page)"
            if info.references is not None
            else "an unrecorded number of references (an adapter saved before issue 22)"
        )
        print(f"[update] continuing {parent} ({info.trained_steps} steps, trained on {seen})")
    else:
        print("[update] starting a fresh LoRA (no adapter to continue)")
    print(
        f"[update] {user.user_id}: now {len(user.references)} references ({counts.choices} from the page, "
        f"{counts.skips} skips{f'; {finished} crashed choice(s) finished' if finished else ''}); {args.steps} steps"
    )
    run_name = time.strftime("update-%Y%m%d-%H%M%S")
    taken = Path(args.runs_dir) / user.user_id
    run_name = next(n for n in [run_name] + [f"{run_name}-{i}" for i in range(2, 100)] if not (taken / n).exists())
    train_argv = [*training, "--user", str(folder), "--users_dir", args.users_dir, "--runs_dir", args.runs_dir]
    train_argv += ["--max_steps", str(args.steps), "--run_name", run_name]
    if parent is not None:
        train_argv += ["--init_adapter", str(parent)]
    from rl.train_policy import main as train

    adapter = train(train_argv)
    print(f"[update] {adapter} (parent: {parent or 'none'}); `pig users --users_dir {args.users_dir}` lists the chain")
    return 0


if __name__ == "__main__":
    from common.errors import run_command

    sys.exit(run_command(main))
