"""Where the judge's own answer disagrees with itself: verdict statuses per user, and by the gap between the totals.

    python benchmarks/judge_verdict_health.py                                      # the shipped users, drawn pairs
    python benchmarks/judge_verdict_health.py --users demo frost --users_dirs users runs/users
    python benchmarks/judge_verdict_health.py --model jeongeunnn/pigreward --device cuda --dtype bfloat16

A chain-of-thought answer can slip in two places after its dimension lines (see `reward.parsing`): stated totals
that are not the sum of the scores (`inconsistent_totals`), and a verdict line that names another winner than the
totals (`verdict_contradicts_totals`). The reward never reads either (the winner comes from the totals recomputed
from the dimension lines), but how often and where they happen says what the judge has and has not learned. Each
user's context (its own, from `pig context`, cached under runs/<user>/context) judges `--pairs` pairs of random
scenes of one subject in both orders. The second table splits every verdict by the gap between its stated totals:
slips only at gaps of 0-1 are near-tie misjudgements of the last line; slips at wide gaps are arithmetic the judge
did not learn.
"""

from __future__ import annotations

import argparse
import collections
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=".models/tiny-pigreward")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--users", nargs="+", default=["demo", "nightowl", "crowd"])
    parser.add_argument("--users_dirs", nargs="+", default=["users"], help="One for all users, or one per user.")
    parser.add_argument("--pairs", type=int, default=32, help="Pairs per user (each judged in both orders).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs_dir", default="runs", help="Where user contexts are cached.")
    args = parser.parse_args(argv)
    if len(args.users_dirs) not in (1, len(args.users)):
        parser.error(f"--users_dirs takes one folder or one per user ({len(args.users)}), got {len(args.users_dirs)}.")
    dirs = args.users_dirs * len(args.users) if len(args.users_dirs) == 1 else args.users_dirs

    import numpy as np

    from localmodels import world
    from reward.backends import GenerationSettings, TransformersVLM
    from reward.parsing import Verdict
    from reward.pigreward import JudgeSettings, PIGReward
    from reward.users import load_user

    vlm = TransformersVLM(args.model, device=args.device, dtype=args.dtype, batch_size=16)
    settings = JudgeSettings(generation=GenerationSettings(max_new_tokens=160, stop_after_verdict=True))
    pig = PIGReward(vlm, vlm, settings=settings, cache_dir=args.runs_dir)
    rng = np.random.default_rng(args.seed)
    per_user: dict[str, collections.Counter] = {}
    by_gap: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, users_dir in zip(args.users, dirs):
        context = pig.build_context(load_user(name, users_dir))
        prompts, images_a, images_b = [], [], []
        for i in range(args.pairs):
            subject = list(world.SUBJECTS)[i % len(world.SUBJECTS)]
            a, b = (world.sample_scene(rng) for _ in range(2))
            images_a.append(world.draw_scene(world.Scene(subject, a.palette, a.light, a.layout, a.seed), 32))
            images_b.append(world.draw_scene(world.Scene(subject, b.palette, b.light, b.layout, b.seed), 32))
            prompts.append(f"a {subject}")
        counts = per_user[name] = collections.Counter()
        for comparison in pig.compare(prompts, images_a, images_b, context):
            for verdict in (comparison.forward, comparison.backward):
                counts[verdict.status] += 1
                if isinstance(verdict, Verdict) and None not in (verdict.stated_total_1, verdict.stated_total_2):
                    gap = abs(verdict.stated_total_1 - verdict.stated_total_2)
                    by_gap["0" if gap == 0 else "1" if gap == 1 else "2-3" if gap <= 3 else "4+"][verdict.status] += 1

    statuses = sorted({s for c in [*per_user.values(), *by_gap.values()] for s in c})
    print(f"model {args.model}; {args.pairs} pairs per user, both orders; share of verdicts per status")
    print(f"{'user':12}{'verdicts':>9}" + "".join(f"{s:>28}" for s in statuses))
    for name, counts in [*per_user.items(), ("all", sum(per_user.values(), collections.Counter()))]:
        n = sum(counts.values())
        print(f"{name:12}{n:>9}" + "".join(f"{counts[s] / n:>28.2f}" for s in statuses))
    print("\nby the gap between the stated totals")
    print(f"{'gap':12}{'verdicts':>9}" + "".join(f"{s:>28}" for s in statuses))
    for gap in ("0", "1", "2-3", "4+"):
        n = sum(by_gap[gap].values())
        if n:
            print(f"{gap:12}{n:>9}" + "".join(f"{by_gap[gap][s] / n:>28.2f}" for s in statuses))


if __name__ == "__main__":
    main()
