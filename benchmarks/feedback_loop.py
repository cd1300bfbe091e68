"""Adapters that keep learning, measured: a simulated person clicks on the choice page's pairs, and their adapter is
updated after every round of clicks (issue 22).

    python benchmarks/feedback_loop.py                       # steady taste (demo's), 4 rounds; then the drift run
    python benchmarks/feedback_loop.py --runs steady --rounds 4 --update_steps 16
    python benchmarks/feedback_loop.py --runs drift --drift_after 2 --rounds 6

The simulated person is a sandbox user: its hidden taste (default: demo's, `users/demo/user.json`) decides each click
and nothing else. It starts with `--start_refs` references drawn like any sandbox user's, then makes `--rounds`
rounds of `--choices` choices on the page's own code path (`feedback.session.ChoiceSession.propose` and `.record`:
the pairs the page would show, rendered by the configured renderer, written to the user's folder by
`reward.choices`), not in a browser. After each round `pig update` (`feedback.update.main`) continues the adapter for
`--update_steps` steps on the user's current context (the first round starts a fresh LoRA), and the adapter is
evaluated on the held-out prompts (`pig evaluate`'s code: sampled rewrites vs the original prompt, ground truth and,
with `--judge`, the judge).

Drift (`--runs drift`): after round `--drift_after` the person's strongest axis flips to its opposite pole (their
`sandbox` taste in user.json, which only the measurement reads, is rewritten); they keep clicking with the new taste,
and the evaluation after each later round scores the new taste.

Baseline: the one-shot per-user adapter (default command, 8 references) evaluated the same way: `--oneshot` names its
adapter (default `runs/demo/LATEST`, what `make demo` trains, when the taste is demo's).

Writes `results.json` and `curve.png` under `--out` (default `runs/bench/feedback`), and prints one line per round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TIE = 0.02
"""Utility gap under which the simulated person skips a pair (the two pictures are the same to them)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="steady,drift", help="steady, drift, or both (comma-separated).")
    parser.add_argument("--taste_of", default="users/demo", help="The user folder whose sandbox taste is simulated.")
    parser.add_argument("--start_refs", type=int, default=2, help="References the person starts with.")
    parser.add_argument("--rounds", type=int, default=4, help="Rounds of the steady run (the drift run: 6).")
    parser.add_argument("--drift_rounds", type=int, default=6, help="Rounds of the drift run.")
    parser.add_argument("--choices", type=int, default=4, help="Choices per round.")
    parser.add_argument("--update_steps", type=int, default=16, help="Training steps of each update.")
    parser.add_argument("--drift_after", type=int, default=2, help="The round after which the taste flips.")
    parser.add_argument("--eval_samples", type=int, default=1)
    parser.add_argument("--eval_images", type=int, default=2)
    parser.add_argument("--heldout_prompts", type=int, default=0, help="The first N held-out prompts (0: all).")
    parser.add_argument("--judge", action="store_true", help="Also judge every evaluated pair (slower).")
    parser.add_argument("--oneshot", default="auto", help="The one-shot adapter to compare with (auto, none, a path).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench/feedback")
    parser.add_argument("--overwrite", action="store_true", help="Replace the simulated users and runs of --out.")
    parser.add_argument("--config", default=None, help="Training config (default: configs/cpu.yaml's values).")
    args = parser.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if not args.runs or set(args.runs) - {"steady", "drift"}:
        parser.error(f"--runs takes steady and/or drift, got {args.runs}.")
    for name in ("start_refs", "rounds", "drift_rounds", "choices", "update_steps", "eval_samples", "eval_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if "drift" in args.runs and not 1 <= args.drift_after < args.drift_rounds:
        parser.error(f"--drift_after must be in [1, --drift_rounds), got {args.drift_after}.")
    return args


def flipped(taste):
    """The taste with its strongest axis's pole (for every subject group) turned to the opposite one."""
    from localmodels import oracle, world

    axis = max(taste.weights, key=lambda a: taste.weights[a])
    other = {p: q for p, q in [world.AXES[axis], world.AXES[axis][::-1]]}
    prefs = {**taste.prefs, axis: other[taste.prefs[axis]]} if axis in taste.prefs else dict(taste.prefs)
    by_subject = {
        a: ({g: other[p] for g, p in groups.items()} if a == axis else dict(groups))
        for a, groups in taste.by_subject.items()
    }
    return oracle.SyntheticUser(prefs, dict(taste.weights), by_subject), axis


def click(taste, proposal) -> str:
    """What the simulated person picks: the image their hidden taste values more (skip when they are equal)."""
    from localmodels import world
    from rl.ground_truth import subject_of

    subject = subject_of(proposal.prompt)
    left, right = (
        taste.utility(world.image_attributes(im), subject) for im in (proposal.left_image, proposal.right_image)
    )
    if abs(left - right) < TIE:
        return "skip"
    return "left" if left > right else "right"


def pig_args_for(user_dir: Path, users_dir: Path, runs_dir: Path, config: str | None):
    from policy_eval.evaluate_policy import parse_dataclasses
    from rl.config import PigArguments

    argv = ["--user", str(user_dir), "--users_dir", str(users_dir), "--runs_dir", str(runs_dir)]
    return parse_dataclasses((PigArguments,), argv + (["--config", config] if config else []))[0]


def evaluate_adapter(args, user_dir: Path, users_dir: Path, runs_dir: Path, adapter: Path, out: Path) -> dict:
    """Held-out prompts, sampled rewrites: the adapter vs the original prompt (and the generic rewriter vs it)."""
    from policy_eval.evaluate_policy import EvalArguments, evaluate
    from rl.ground_truth import HELDOUT_PROMPTS

    pig_args = pig_args_for(user_dir, users_dir, runs_dir, args.config)
    eval_args = EvalArguments(
        adapter=str(adapter),
        prompt_set="heldout",
        eval_prompts=list(HELDOUT_PROMPTS[: args.heldout_prompts]) if args.heldout_prompts else None,
        decoding="sampled",
        eval_samples=args.eval_samples,
        eval_images=args.eval_images,
        judge=args.judge,
        suffix="none",
        eval_out=str(out),
    )
    summary = evaluate(pig_args, eval_args)["blocks"][0]["summary"]
    row = {}
    for comparison in ("adapter_vs_original", "base_vs_original"):
        s = summary[comparison]
        row[comparison] = {
            "ground_truth": s["ground_truth"]["preference"],
            "ground_truth_ci": s["ground_truth"]["ci95"],
            **({"judge": s["judge"]["preference"], "agreement": s.get("agreement")} if "judge" in s else {}),
        }
    return row


def simulate(args, kind: str, taste, out: Path) -> dict:
    """One simulated person's rounds: click, record, update, evaluate. Returns the rounds' figures."""
    import numpy as np

    from common.files import atomic_write_json
    from feedback.session import ChoiceSession, ChooseArguments, latest_adapter_of
    from feedback.update import main as update
    from localmodels.demo_user import TRAINING_PROMPTS, write_user
    from rl.config import recipe_of

    users_dir, runs_dir = out / kind / "users", out / kind / "runs"
    for folder in (users_dir, runs_dir):
        if folder.exists():
            if not args.overwrite:
                raise SystemExit(f"{folder} exists (an earlier run of this benchmark): pass --overwrite or --out.")
            shutil.rmtree(folder)
    user_id = f"sim-{kind}"
    user_dir = users_dir / user_id
    write_user(
        user_dir,
        user_id,
        taste,
        np.random.default_rng(args.seed + 101),
        n_references=args.start_refs,
        n_heldout=0,
        description=f"simulated person ({kind}): {taste.describe()}",
        prompts=list(TRAINING_PROMPTS),
    )
    rounds = args.rounds if kind == "steady" else args.drift_rounds
    session = ChoiceSession.from_args(
        pig_args_for(user_dir, users_dir, runs_dir, args.config),
        ChooseArguments(adapter="auto", opponent="base", page_seed=args.seed),
        recipe=recipe_of(["--config", args.config] if args.config else []),
    )
    current, figures, switched = taste, [], None
    for r in range(1, rounds + 1):
        started = time.time()
        clicks = []
        for _ in range(args.choices):
            proposal = session.propose()
            choice = click(current, proposal)
            session.record(proposal.pair_id, choice)
            clicks.append(choice)
        page_seconds = time.time() - started
        started = time.time()
        update(
            [
                "--user",
                str(user_dir),
                "--users_dir",
                str(users_dir),
                "--runs_dir",
                str(runs_dir),
                "--steps",
                str(args.update_steps),
                *(["--", "--config", args.config] if args.config else []),
            ]
        )
        update_seconds = time.time() - started
        adapter = latest_adapter_of(user_id, runs_dir)
        started = time.time()
        row = evaluate_adapter(args, user_dir, users_dir, runs_dir, adapter, out / kind / "eval" / f"round{r}")
        references = len(json.loads((user_dir / "user.json").read_text())["references"])
        figures.append(
            {
                "round": r,
                "references": references,
                "clicks": clicks,
                "taste": current.describe(),
                "page_seconds": round(page_seconds, 1),
                "update_seconds": round(update_seconds, 1),
                "eval_seconds": round(time.time() - started, 1),
                "adapter": str(adapter),
                **row,
            }
        )
        print(line(kind, figures[-1]), flush=True)
        if kind == "drift" and r == args.drift_after:
            current, axis = flipped(current)
            switched = {"after_round": r, "axis": axis, "new_taste": current.describe()}
            data = json.loads((user_dir / "user.json").read_text())
            atomic_write_json(user_dir / "user.json", {**data, "sandbox": current.to_json()})
            print(f"[{kind}] the taste flips on {axis}: now {current.describe()}", flush=True)
    return {"rounds": figures, "drift": switched}


def line(kind: str, row: dict) -> str:
    a = row["adapter_vs_original"]
    ci = a["ground_truth_ci"]
    judge = f", judge {a['judge']:.2f} (agreement {a['agreement']:.2f})" if "judge" in a else ""
    return (
        f"[{kind}] round {row['round']}: {row['references']} references, clicks {','.join(row['clicks'])}; "
        f"update {row['update_seconds']:.0f} s; held-out ground truth vs original {a['ground_truth']:.2f} "
        f"[{ci[0]:.2f}, {ci[1]:.2f}]{judge}"
    )


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for kind, run in results["runs"].items():
        rounds = [row["round"] for row in run["rounds"]]
        means = [row["adapter_vs_original"]["ground_truth"] for row in run["rounds"]]
        lows = [m - row["adapter_vs_original"]["ground_truth_ci"][0] for m, row in zip(means, run["rounds"])]
        highs = [row["adapter_vs_original"]["ground_truth_ci"][1] - m for m, row in zip(means, run["rounds"])]
        ax.errorbar(rounds, means, yerr=[lows, highs], marker="o", capsize=3, label=f"{kind} (ground truth)")
        if run.get("drift"):
            ax.axvline(run["drift"]["after_round"] + 0.5, color="grey", ls=":", label="taste flips")
    oneshot = results.get("oneshot")
    if oneshot:
        ax.axhline(oneshot["adapter_vs_original"]["ground_truth"], color="black", ls="--", label="one-shot adapter")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_xlabel("round (choices made, then an update)")
    ax.set_ylabel("held-out win vs the original prompt")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from reward.users import load_user
    from rl.ground_truth import taste_of

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = load_user(args.taste_of)
    taste = taste_of(source)
    if taste is None:
        raise SystemExit(f"{args.taste_of} has no sandbox taste to simulate: name a sandbox user's folder.")
    results = {"settings": vars(args), "taste": taste.describe(), "runs": {}}
    oneshot = Path(args.oneshot) if args.oneshot not in ("auto", "none") else None
    if args.oneshot == "auto":
        from feedback.session import latest_adapter_of

        oneshot = latest_adapter_of(source.user_id, "runs")
    if oneshot is not None:
        results["oneshot_adapter"] = str(oneshot)
        results["oneshot"] = evaluate_adapter(
            args, Path(args.taste_of), Path(args.taste_of).parent, Path("runs"), oneshot, out / "oneshot"
        )
        row = {"round": 0, "references": len(source.references), "clicks": [], "update_seconds": 0}
        print(f"[oneshot] {oneshot}: " + line("oneshot", {**row, **results["oneshot"]}), flush=True)
    for kind in args.runs:
        results["runs"][kind] = simulate(args, kind, taste, out)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "curve.png")
    print(f"[feedback] {out / 'results.json'}, {out / 'curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
