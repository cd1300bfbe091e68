"""Many users: `pig users` lists them with what the runs folder holds for each; `pig train-all` trains every user of a
folder that has no adapter yet, one after another, with the same training code as `pig train`.

    pig users                                        # users/ and runs/: context, adapters, latest evaluation
    pig users --json
    pig train-all --users_dir users                  # every user without runs/<user>/LATEST, default config
    pig train-all --users_dir users --dry_run        # who would be trained, who skipped
    pig train-all --users demo crowd --force -- --config configs/cpu.yaml --max_steps 40   # training args after --

`train-all` rather than a `--all_users` flag of `pig train`: it has arguments of its own (which users, --force,
--dry_run) that are not training arguments, and everything after `--` goes unchanged to each user's training
(`rl.train_policy.main`, what `pig train` runs), so a training flag can never be mistaken for one of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from reports.runs import (
    Run,
    context_status,
    evaluation_rows,
    latest_evaluation,
    latest_run,
    user_runs,
)

OWN_FLAGS = ("--user", "--users_dir", "--runs_dir", "--output_dir")
"""Training flags that train-all sets itself (per user) and so refuses after `--`."""


# ---------------------------------------------------------------------------------------------------- pig users
def list_users(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pig users",
        description="List the users (folders with user.json under --users_dir) with their cached context, trained "
        "adapters (runs/<user>/*/adapter, LATEST marked) and the latest evaluation of their LATEST adapter.",
    )
    parser.add_argument("--users_dir", default="users", help="Folder holding one sub-folder per user.")
    parser.add_argument("--runs_dir", default="runs", help="Where contexts, adapters and evaluations are.")
    parser.add_argument("--json", action="store_true", help="Print JSON (one object per user) instead of text.")
    args = parser.parse_args(argv)
    from reward.users import available_users

    if not Path(args.users_dir).is_dir():
        raise FileNotFoundError(
            f"--users_dir {args.users_dir} does not exist. Point it at the folder of user folders."
        )
    entries = [user_entry(name, args.users_dir, args.runs_dir) for name in available_users(args.users_dir)]
    if args.json:
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return 0
    if not entries:
        print(f"no users in {args.users_dir} (a user is a folder holding user.json; format: reward/users.py)")
        return 0
    print(f"{len(entries)} users in {args.users_dir} (runs in {args.runs_dir})")
    for entry in entries:
        print(_describe(entry))
    return 0


def user_entry(name: str, users_dir: str | Path, runs_dir: str | Path) -> dict:
    """What `pig users` reports about the user folder `users_dir/name` (a JSON-ready dict)."""
    from reward.users import UserDataError, load_user

    entry: dict = {"user_id": name, "folder": str(Path(users_dir) / name), "error": None}
    references_hash = None
    try:
        user = load_user(name, users_dir)
    except UserDataError as err:  # listed with its error: one broken folder must not hide the others
        entry["error"] = str(err)
    else:
        references_hash = user.references_hash()
        entry.update(
            user_id=user.user_id,
            references=len(user.references),
            heldout_pairs=len(user.heldout),
            training_prompts=len(user.training_prompts),
            sandbox=user.sandbox is not None,
            page_choices=_page_choices(user.root),
        )
    user_id = entry["user_id"]
    status = context_status(runs_dir, user_id, references_hash)
    entry["context"] = {"status": status.describe(), "cached": status.cached}
    runs = user_runs(runs_dir, user_id)
    latest = latest_run(runs_dir, user_id)
    entry["latest"] = latest.name if latest else None
    if latest is None and (Path(runs_dir) / user_id / "LATEST").is_file():
        entry["latest_error"] = f"{Path(runs_dir) / user_id / 'LATEST'} points at no adapter"
    entry["adapters"] = [_adapter(run, latest) for run in runs]
    entry["evaluation"] = _evaluation(latest, runs)
    return entry


def _adapter(run: Run, latest: Run | None) -> dict:
    parent = run.info.init_adapter
    return {
        "run": run.name,
        "path": str(run.adapter_dir),
        "trainer": run.info.trainer,
        "trained_steps": run.info.trained_steps,
        "latest": latest is not None and run.adapter_dir.resolve() == latest.adapter_dir.resolve(),
        # what it was trained on (None: saved before adapters recorded it) and the adapter it continued
        "references": run.info.references,
        "choices": run.info.choices,
        "parent": Path(parent).parent.name if parent else None,
    }


def _page_choices(user_dir: Path) -> dict:
    """The choices the user made on the choice page (`pig choose`), from their log (`reward.choices`)."""
    from reward.choices import count_choices

    counts = count_choices(user_dir)
    return {"choices": counts.choices, "skips": counts.skips, "pending": counts.pending, "refused": counts.refused}


def _seen(adapter: dict) -> str:
    if adapter["references"] is None:
        return ""
    return f", {adapter['references']} references incl. {adapter['choices']} page choices" + (
        f", from {adapter['parent']}" if adapter["parent"] else ""
    )


def _evaluation(latest: Run | None, runs: list[Run]) -> dict | None:
    """The newest evaluation of the LATEST adapter; without one, the newest of any of the user's adapters."""
    found = [(latest, latest_evaluation(latest))] if latest else []
    if not found or found[0][1] is None:
        found = [(run, latest_evaluation(run)) for run in runs]
        found = sorted((f for f in found if f[1] is not None), key=lambda f: f[1].path.stat().st_mtime, reverse=True)
    if not found or found[0][1] is None:
        return None
    run, evaluation = found[0]
    return {
        "run": run.name,
        "of_latest": latest is not None and run.adapter_dir.resolve() == latest.adapter_dir.resolve(),
        "path": str(evaluation.path),
        "rows": evaluation_rows(evaluation.results),
    }


def _describe(entry: dict) -> str:
    facts = (
        f"{entry['references']} references, {entry['training_prompts']} training prompts, "
        f"{entry['heldout_pairs']} held-out pairs{', sandbox' if entry['sandbox'] else ''}"
        if entry["error"] is None
        else f"UNUSABLE: {entry['error']}"
    )
    lines = [f"{entry['user_id']}  ({facts})", f"  context:  {entry['context']['status']}"]
    page = entry.get("page_choices")
    if page and (page["choices"] or page["skips"] or page["pending"] or page["refused"]):
        lines.append(
            f"  choices:  {page['choices']} made on the page (pig choose), {page['skips']} skips"
            + (f", {page['pending']} pending (finished by the next choice or pig update)" if page["pending"] else "")
            + (f", {page['refused']} refused" if page["refused"] else "")
        )
    adapters = [
        f"{a['run']} ({a['trainer']}, {a['trained_steps']} step{'s' if a['trained_steps'] != 1 else ''}{_seen(a)})"
        f"{' <- LATEST' if a['latest'] else ''}"
        for a in entry["adapters"]
    ]
    lines.append(f"  adapters: {', '.join(adapters) if adapters else 'none (pig train-all trains it)'}")
    if entry.get("latest_error"):
        lines.append(f"  LATEST:   {entry['latest_error']}")
    evaluation = entry["evaluation"]
    if evaluation is None:
        lines.append("  eval:     none (pig evaluate --user ...)")
    else:
        which = "LATEST" if evaluation["of_latest"] else "not LATEST"
        lines.append(f"  eval:     of {evaluation['run']} ({which}), {evaluation['path']}")
        for row in evaluation["rows"]:
            figures = ", ".join(
                f"{name} {_view(row[key])}"
                for key, name in (("adapter_vs_base", "vs base"), ("adapter_vs_original", "vs original"))
            )
            lines.append(
                f"            {row['prompt_set']}/{row['decoding']} ({row['cells']} cells): adapter {figures}"
            )
    return "\n".join(lines)


def _view(view: dict) -> str:
    parts = []
    if view["ground_truth"] is not None:
        parts.append(f"truth {view['ground_truth']:.2f}")
    if view["judge"] is not None:
        parts.append(f"judge {view['judge']:.2f}")
    return " / ".join(parts) or "-"


# ------------------------------------------------------------------------------------------------ pig train-all
def train_all(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, training = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        prog="pig train-all",
        description="Train every user of --users_dir one after another (rl.train_policy.main, as `pig train`), "
        "skipping users whose runs/<user>/LATEST names an adapter unless --force. Arguments after `--` go to every "
        "user's training unchanged. Stops at the first failure; rerun the same command to continue (users trained "
        "by then are skipped).",
        epilog="example: pig train-all --users_dir users -- --config configs/cpu.yaml --max_steps 40",
    )
    parser.add_argument(
        "--users_dir", default="users", help="Folder holding one sub-folder (with user.json) per user."
    )
    parser.add_argument("--runs_dir", default="runs", help="Where adapters go (runs/<user>/...); passed to training.")
    parser.add_argument("--users", nargs="+", default=None, help="Only these users (folder names); default: all.")
    parser.add_argument("--force", action="store_true", help="Train users that already have an adapter too.")
    parser.add_argument("--dry_run", action="store_true", help="Print who would be trained and who skipped; stop.")
    args = parser.parse_args(own)
    for flag in OWN_FLAGS:
        if any(a == flag or a.startswith(flag + "=") for a in training):
            parser.error(
                f"{flag} after `--`: train-all sets it for each user. Give --users_dir/--runs_dir/--users before "
                "`--`; each run goes to <runs_dir>/<user>/<run_name>."
            )
    plan = plan_training(args.users_dir, args.runs_dir, args.users, args.force)
    for name, _, reason in plan:
        print(f"[train-all] {name}: {reason}")
    todo = [(name, user_id) for name, user_id, reason in plan if reason.startswith("train")]
    print(f"[train-all] {len(todo)} to train, {len(plan) - len(todo)} skipped")
    if args.dry_run or not todo:
        return 0
    from rl.train_policy import main as train
    from rl.train_policy import parse_args

    # Check the training arguments (and every configured model) once, before the first user's hours of training.
    first_args, first_training, _ = parse_args(training_argv(todo[0][0], args.users_dir, args.runs_dir, training))
    if Path(first_args.user).name not in Path(first_training.output_dir).parts:
        parser.error(
            f"the training config's output_dir {first_training.output_dir!r} does not name the user: every user "
            "would write the same folder. Keep the default '{runs_dir}/{user}/{run}'."
        )
    done = []
    for i, (name, _) in enumerate(todo, 1):
        print(f"\n[train-all] user {i}/{len(todo)}: {name}", flush=True)
        started = time.time()
        try:
            adapter = train(training_argv(name, args.users_dir, args.runs_dir, training))
        except BaseException:
            left = [n for n, _ in todo[i - 1 :]]
            print(
                f"[train-all] stopped at {name}: {len(done)} trained, not trained: {', '.join(left)}. Rerun the same "
                "command to continue (trained users are skipped).",
                file=sys.stderr,
            )
            raise
        done.append((name, adapter, time.time() - started))
        _free_memory()
    print("\n[train-all] done:")
    for name, adapter, seconds in done:
        print(f"  {name}: {adapter} ({seconds / 60:.1f} min)")
    return 0


def plan_training(
    users_dir: str | Path, runs_dir: str | Path, only: list[str] | None = None, force: bool = False
) -> list[tuple[str, str, str]]:
    """(folder name, user id, reason) per user, in name order; the reason starts with "train" or "skip".

    Every user is loaded first (`load_user` checks the whole folder), so a broken user stops the command before any
    training, with every broken user named, not hours later.

    Raises:
        UserDataError: no users, an unknown name in `only`, or users whose data does not load.
    """
    from reward.users import UserDataError, available_users, load_user

    known = available_users(users_dir)
    if not known:
        raise UserDataError(
            f"No users in {users_dir}: a user is a folder holding user.json (format: reward/users.py). Check "
            "--users_dir."
        )
    unknown = sorted(set(only or []) - set(known))
    if unknown:
        raise UserDataError(f"--users names {unknown}, not user folders of {users_dir}. Known users: {known}.")
    names = [n for n in known if only is None or n in only]
    users, broken = {}, []
    for name in names:
        try:
            users[name] = load_user(name, users_dir)
        except UserDataError as err:
            broken.append(f"  {name}: {err}")
    if broken:
        raise UserDataError(
            f"{len(broken)} of {len(names)} users cannot be trained; fix them or leave them out with --users:\n"
            + "\n".join(broken)
        )
    plan = []
    for name in names:
        user_id = users[name].user_id
        latest = latest_run(runs_dir, user_id)
        if latest is None:
            pointer = Path(runs_dir) / user_id / "LATEST"
            reason = "train (LATEST points at no adapter)" if pointer.is_file() else "train (no adapter yet)"
        elif force:
            reason = f"train (--force; has {latest.adapter_dir})"
        else:
            reason = f"skip (trained: {latest.adapter_dir}; --force retrains)"
        plan.append((name, user_id, reason))
    return plan


def training_argv(name: str, users_dir: str | Path, runs_dir: str | Path, extra: list[str]) -> list[str]:
    """One user's `pig train` arguments: the shared ones, then the user and the folders."""
    return [*extra, "--user", name, "--users_dir", str(users_dir), "--runs_dir", str(runs_dir)]


def _free_memory() -> None:
    """The previous user's models go before the next user's load (matters on a GPU)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
