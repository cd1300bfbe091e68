"""How often are a prompt's nearest choices about its kind of subject? For users drawn like the sandbox's
subject-dependent ones (choices alternating between round and angular subjects, `oracle.balanced_subjects`), the
share of the K choices whose prompts are nearest a prompt (`reward.context.NearestRationales`, the selection
`--context_nearest K` makes, with the MiniLM embedder) that are about a subject of the prompt's group.

    python benchmarks/nearest_same_kind.py                                   # 8 and 24 choices, K = 1-4
    python benchmarks/nearest_same_kind.py --references 8,12,16,24 --users 10 --nearest 3

The judge reads a subject-dependent taste from these K rationales; a share well below 1 mixes the two tastes.
Prompts: the training prompts and the held-out wordings (`localmodels.demo_user`); the subject of each is read from
its words (`rl.ground_truth.subject_of`, measurement only).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{flag} {text!r}: expected comma-separated whole numbers, e.g. 8,24.") from None
    if not values or min(values) < 1:
        raise SystemExit(f"{flag} {text!r}: expected numbers >= 1.")
    return values


def same_kind_shares(embedder, n_references: int, nearest: list[int], prompts: list[str], users: int) -> dict:
    """K -> share of same-group choices among each prompt's K nearest, over `users` users drawn with seeds 0.."""
    from localmodels import oracle, world
    from localmodels.demo_user import parse_taste_spec
    from reward.context import NearestRationales, Rationale
    from rl.ground_truth import subject_of

    selection = NearestRationales(embedder)
    taste = parse_taste_spec("palette=warm/cool:1.0")
    groups = [world.subject_group(subject_of(p)) for p in prompts]
    shares: dict[int, list[bool]] = {k: [] for k in nearest}
    for seed in range(users):
        rng = np.random.default_rng(seed)
        references = [
            oracle.make_reference(taste, rng, 16, subject=s) for s in oracle.balanced_subjects(n_references, rng)
        ]
        rationales = [Rationale(i, ref[0], "") for i, ref in enumerate(references)]
        for k in nearest:
            for group, rows in zip(groups, selection.indices(prompts, rationales, min(k, n_references))):
                shares[k] += [world.subject_group(references[i][3].subject) == group for i in rows]
    return {k: float(np.mean(v)) for k, v in shares.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--references", default="8,24", help="Choices per user, comma-separated.")
    parser.add_argument("--nearest", default="1,2,3,4", help="K nearest choices, comma-separated.")
    parser.add_argument("--users", type=int, default=10, help="Users drawn per row (seeds 0..N-1).")
    parser.add_argument("--embedder", default=".models/all-MiniLM-L6-v2")
    args = parser.parse_args(argv)
    references, nearest = _ints(args.references, "--references"), _ints(args.nearest, "--nearest")
    if args.users < 1:
        parser.error(f"--users {args.users}: needs at least one user.")
    from localmodels.demo_user import HELDOUT_PROMPTS, TRAINING_PROMPTS
    from reward.similarity import TextEmbedder

    embedder = TextEmbedder(args.embedder, device="cpu")
    print(f"share of the K nearest choices about the prompt's kind of subject ({args.users} users a row)")
    print("| choices | prompts | " + " | ".join(f"K={k}" for k in nearest) + " |")
    print("|---|---|" + "---|" * len(nearest))
    for n in references:
        for name, prompts in (("training", list(TRAINING_PROMPTS)), ("held-out", list(HELDOUT_PROMPTS))):
            shares = same_kind_shares(embedder, n, nearest, prompts, args.users)
            print(f"| {n} | {name} | " + " | ".join(f"{shares[k]:.3f}" for k in nearest) + " |", flush=True)


if __name__ == "__main__":
    main()
