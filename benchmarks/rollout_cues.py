"""What a run's policy wrote while it trained: cues named per rewrite, and how often it named the user's pole on
every axis of their taste, with the judge's reward and the ground truth, by stretch of steps.

    python benchmarks/rollout_cues.py runs/held000/default-s0 --users_dir runs/users/population
    python benchmarks/rollout_cues.py runs/held000/default-s0 runs/held000/other-s0 --users_dir ... --stretches 4

Reads `rollouts/rank0.jsonl` (every judged rewrite with its reward terms) and, for measurement only, the user's hidden
sandbox taste (`user.json`'s `sandbox`): a cue is a pole the toy world's renderer draws (`localmodels.world.
parse_caption`); "all right" means a rewrite names the user's pole on every axis of their taste (for its subject,
for a taste that depends on it), whatever it names on the axes the taste gives no weight.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def read_rollouts(run: Path) -> list[dict]:
    path = run / "rollouts" / "rank0.jsonl"
    if not path.is_file():
        raise SystemExit(f"No rollout log at {path}: pass a run folder (runs/<user>/<run>) of a finished run.")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{path} is empty: the run judged no rewrite.")
    return rows


def cue_figures(rows: list[dict], taste) -> dict:
    """Cues per rewrite, share naming the user's pole on every axis of their taste, preference, ground truth."""
    from localmodels import world
    from rl.ground_truth import subject_of

    named, right, pref, truth = [], [], [], []
    for row in rows:
        parsed = world.parse_caption(row["rewrite"])
        cues = {axis: parsed[axis] for axis in world.AXES if parsed[axis] is not None}
        subject = subject_of(row["prompt"])
        wanted = taste.poles(subject) if (subject or not taste.by_subject) else {}
        named.append(len(cues))
        right.append(bool(wanted) and all(cues.get(a) == p for a, p in wanted.items()))  # other axes: no weight
        pref.append(row["preference"])
        if row.get("ground_truth") is not None:
            truth.append(row["ground_truth"])
    n = len(rows)
    return {
        "rewrites": n,
        "cues": sum(named) / n,
        "all_right": sum(right) / n,
        "preference": sum(pref) / n,
        "truth": sum(truth) / len(truth) if truth else None,
    }


def stretches(rows: list[dict], k: int) -> list[tuple[str, list[dict]]]:
    steps = sorted({r["step"] for r in rows})
    size = max(1, -(-len(steps) // k))
    out = []
    for i in range(0, len(steps), size):
        part = set(steps[i : i + size])
        out.append((f"steps {min(part)}-{max(part)}", [r for r in rows if r["step"] in part]))
    return out


def _line(label: str, f: dict) -> str:
    truth = "-" if f["truth"] is None else f"{f['truth']:.2f}"
    return (
        f"  {label:<28} n={f['rewrites']:<5} cues/rewrite {f['cues']:.2f}  all right {f['all_right']:.2f}  "
        f"preference {f['preference']:.2f}  truth {truth}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="Run folders (runs/<user>/<run>).")
    parser.add_argument("--users_dir", default="users", help="Where the runs' users live.")
    parser.add_argument("--stretches", type=int, default=4, help="Stretches of steps to report (default 4).")
    args = parser.parse_args(argv)
    if args.stretches < 1:
        raise SystemExit("--stretches must be >= 1.")
    from reward.users import UserDataError, load_user
    from rl.ground_truth import taste_of

    for run in args.runs:
        rows = read_rollouts(run)
        user_id = run.parent.name
        try:
            user = load_user(user_id, args.users_dir)
        except UserDataError as err:
            raise SystemExit(f"{err} (the run's user, read from its folder's parent: pass --users_dir)") from None
        taste = taste_of(user)
        if taste is None:
            raise SystemExit(f"User {user_id!r} has no sandbox taste: these figures need one.")
        print(f"{run} ({user_id}: {taste.describe()})")
        for label, part in stretches(rows, args.stretches):
            print(_line(label, cue_figures(part, taste)))
        print(_line("all steps", cue_figures(rows, taste)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
