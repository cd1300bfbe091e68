"""How often the judge names the truly better image of the pairs training gives it, by how many of the user's
rationales it reads (`--context_nearest K`), beside its teacher's ceiling. Sandbox users only (the truth is theirs).

    python benchmarks/judge_truth_by_nearest.py --user tidepool --run runs/tidepool/ctxnear2-s1
    python benchmarks/judge_truth_by_nearest.py --user gallery --run runs/gallery/ctxnear2-s1 --nearest 2,4 \
        --models .models/tiny-pigreward,/tmp/w/judge-v7

The pairs are a run's own rollouts (`<run>/rollouts/rank0.jsonl`): `--pairs` (original prompt, rewrite) pairs drawn
at random, each rendered once with the run's renderer at one seed, so they are the kind of pairs the reward judges.
For each K of `--nearest` (0 = the whole context) the table gives, on the pairs the truth decides:

- `agreement`: share of the pairs both decide on which the judge names the truly better image;
- `decided`: share of pairs on which the judge names a winner (not a tie);
- `pref` / `truth`: mean preference for the original prompt's image, the judge's and the truth's.

Rows `teacher` read the first model's context with the rule the judge was distilled from (`oracle.teacher_verdict`
on the rationales' text, pixels measured exactly): what a judge that learned its recipe perfectly would score.
`teacher, prior always` applies the population prior (bright light) whatever the context, as recipes up to v7 did.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--user", required=True, help="A sandbox user (user.json has a `sandbox` taste).")
    parser.add_argument("--users_dir", default="users")
    parser.add_argument("--run", required=True, help="A training run whose rollouts give the pairs.")
    parser.add_argument("--models", default=".models/tiny-pigreward", help="Judges to compare, comma-separated.")
    parser.add_argument("--nearest", default="1,2,4,0", help="Numbers of nearest rationales (0: whole context).")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--renderer_model", default=None, help="Default: the training config's.")
    parser.add_argument("--embedder", default=None, help="Picks the nearest rationales (default: the fidelity model).")
    parser.add_argument("--runs_dir", default="runs", help="Where user contexts are cached.")
    args = parser.parse_args(argv)
    rollouts = Path(args.run) / "rollouts" / "rank0.jsonl"
    if not rollouts.is_file():
        parser.error(f"{rollouts} not found: --run takes a training run's folder (runs/<user>/<run>).")
    try:
        ks = [int(k) for k in args.nearest.split(",")]
    except ValueError:
        parser.error(f"--nearest takes comma-separated whole numbers, got {args.nearest!r}.")

    import dataclasses

    import numpy as np

    from localmodels import oracle
    from reward.context import NearestRationales
    from reward.similarity import TextEmbedder
    from reward.users import load_user
    from rl import ground_truth
    from rl.config import PigArguments
    from rl.render import Renderer
    from rl.reward_stack import build_pigreward

    user = load_user(args.user, args.users_dir)
    taste = ground_truth.taste_of(user)
    if taste is None:
        parser.error(f"{args.user} has no `sandbox` taste in user.json: the truth is only known for sandbox users.")
    base = PigArguments(runs_dir=args.runs_dir)
    if args.renderer_model:
        base = dataclasses.replace(base, renderer_model=args.renderer_model)
    if args.embedder:
        base = dataclasses.replace(base, fidelity_model=args.embedder)
    rows = [json.loads(line) for line in rollouts.read_text().splitlines() if line.strip()]
    rows = random.Random(args.seed).sample(rows, min(args.pairs, len(rows)))
    prompts = [r["prompt"] for r in rows]
    renderer = Renderer.from_args(base, "cpu")
    images_o = renderer.render(prompts, [args.seed] * len(rows), progress="rendering originals")
    images_r = renderer.render([r["rewrite"] for r in rows], [args.seed] * len(rows), progress="rendering rewrites")
    truth = ground_truth.preferences(taste, images_o, images_r, prompts=prompts)
    embedder = TextEmbedder(base.fidelity_model, device="cpu")
    selector = NearestRationales(embedder)
    print(f"{args.user}: {len(rows)} (original, rewrite) pairs from {rollouts}")
    print(f"{'judge':44} {'K':>5} {'agreement':>10} {'decided':>8} {'pref':>6} {'truth':>6}")

    def row(name: str, k: int, prefs: list) -> None:
        vals = [0.5 if p is None else p for p in prefs]
        agreement = ground_truth.agreement(prefs, truth)
        decided = sum(v != 0.5 for v in vals) / len(vals)
        shown = "-" if agreement is None else f"{agreement:.3f}"
        whole = "whole" if k == 0 else str(k)
        print(f"{name:44} {whole:>5} {shown:>10} {decided:>8.2f} {np.mean(vals):>6.3f} {np.mean(truth):>6.3f}")

    def teacher(context, k: int, prior_always: bool) -> list[float]:
        readings = selector.select(prompts, context, k)
        verdicts = [
            oracle.teacher_verdict(texts, a, b, ground_truth.subject_of(p), prior_always)[1]
            for texts, p, a, b in zip(readings, prompts, images_o, images_r)
        ]
        return [{0: 0.5, 1: 1.0, 2: 0.0}[w] for w in verdicts]

    for i, model in enumerate(m for m in args.models.split(",") if m):
        pig = build_pigreward(dataclasses.replace(base, judge_model=model, reasoner_model=model), "cpu", embedder)
        context = pig.build_context(user)
        for k in ks:
            pig.settings = dataclasses.replace(pig.settings, context_nearest=k)
            row(model, k, [c.preference for c in pig.compare(prompts, images_o, images_r, context)])
        if i == 0:
            for prior_always in (False, True):
                for k in ks:
                    row("teacher" + (", prior always" if prior_always else ""), k, teacher(context, k, prior_always))


if __name__ == "__main__":
    main()
