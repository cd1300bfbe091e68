"""What a context of K rationales says about a user's taste, prompt by prompt: the evidence a context-conditioned
policy (and the judge) can read, against the hidden taste.

    python benchmarks/context_evidence.py --users_dir runs/users/population \\
        --users demo nightowl crowd tidepool gallery held000 --nearest 0,3

For each user, the reasoner's context (the configured reasoner, cached under --runs_dir as training builds it), and
each held-out prompt (`localmodels.demo_user.HELDOUT_PROMPTS`): the K rationales nearest the prompt (0: the whole
context; `reward.context.NearestRationales`, the selection `--context_nearest K` makes) are read by the toy world's
teacher (`localmodels.oracle.read_context`, the reading the judge was distilled on and the population warm start
learns from). Per user and K it prints the share of prompts whose reading names each pole the user truly wants for
that prompt's subject (`recall`), the share that names a pole the user does not want (`false cue`: the opposite
pole, or an axis the user does not weigh), and the share that names nothing. A policy that follows its context
cannot do better than the context's recall; the hidden taste is used only to measure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def evidence(readings: list[dict[str, str]], wanted: list[dict[str, str]]) -> dict[str, float]:
    """Shares over prompts: each wanted (axis, pole) read (`recall`, averaged over the wanted poles), a pole read
    that is not wanted (`false_cue`), nothing read (`nothing`)."""
    n = len(readings)
    hits = sum(sum(read.get(a) == p for a, p in want.items()) / len(want) for read, want in zip(readings, wanted))
    false = sum(any(want.get(a) != p for a, p in read.items()) for read, want in zip(readings, wanted))
    return {"recall": hits / n, "false_cue": false / n, "nothing": sum(not r for r in readings) / n}


def main(argv: list[str] | None = None) -> int:
    from localmodels import oracle
    from localmodels.population_sft import recipe_pigreward
    from reward.users import load_user
    from rl import ground_truth
    from rl.config import default_recipe

    recipe = default_recipe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", nargs="+", required=True, help="sandbox user ids under --users_dir, or folders")
    parser.add_argument("--users_dir", default="users")
    parser.add_argument("--nearest", default="0,3", help="comma list of K (0: the whole context)")
    parser.add_argument("--runs_dir", default="runs", help="where contexts are cached")
    parser.add_argument("--judge_model", default=recipe["judge_model"], help="the reasoner (PIGReward's model)")
    parser.add_argument("--fidelity_model", default=recipe["fidelity_model"], help="the prompt embedder")
    parser.add_argument("--context_references", type=int, default=recipe["context_references"])
    args = parser.parse_args(argv)
    try:
        nearest = [int(k) for k in args.nearest.split(",")]
    except ValueError:
        parser.error(f"--nearest {args.nearest!r}: expected comma-separated whole numbers, e.g. 0,3")
    if not nearest or min(nearest) < 0:
        parser.error(f"--nearest {args.nearest!r}: expected numbers >= 0")

    recipe.update(
        judge_model=args.judge_model, fidelity_model=args.fidelity_model, context_references=args.context_references
    )
    pig = recipe_pigreward(recipe, 0, args.runs_dir)
    prompts = list(ground_truth.HELDOUT_PROMPTS)
    subjects = [ground_truth.subject_of(p) for p in prompts]
    print(f"{len(prompts)} held-out prompts; reading: localmodels.oracle.read_context of the K nearest rationales")
    print(f"{'user':<10} {'taste':<60} {'K':>2} {'recall':>7} {'false cue':>10} {'nothing':>8}")
    for name in args.users:
        user = load_user(name, args.users_dir)
        taste = ground_truth.taste_of(user)
        if taste is None:
            raise SystemExit(f"{user.user_id} has no sandbox taste (a real user): nothing to measure against.")
        context = pig.build_context(user)
        wanted = [taste.poles(s) for s in subjects]
        for k in nearest:
            read = pig.rationales_for(prompts, context, k)
            readings = [oracle.read_context(r, s) for r, s in zip(read, subjects)]
            e = evidence(readings, wanted)
            print(
                f"{user.user_id:<10} {taste.describe()[:60]:<60} {k:>2} {e['recall']:>7.2f} {e['false_cue']:>10.2f}"
                f" {e['nothing']:>8.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
