"""How the judge reads a user context: its preference on pairs that differ on one axis only, under contexts whose
votes for that axis's poles are set by hand, and under a user's own context with parts of it changed.

    python benchmarks/judge_context_reading.py                                   # palette, synthetic contexts
    python benchmarks/judge_context_reading.py --axis light --counts 3-1,2-1
    python benchmarks/judge_context_reading.py --user frost --users_dir runs/users   # also frost's own context
    python benchmarks/judge_context_reading.py --user tidepool --splits 2-2,3-3      # per subject group
    python benchmarks/judge_context_reading.py --user tidepool --nearest 3 --counts ""   # nearest rationales only

Each row is the judge's mean preference (both orders) for the image of the first pole over the same scene drawn with
the second (`--pairs` subjects and seeds). The teacher the judge was distilled from (`oracle.read_context`) takes a
pole as the user's when it leads by two votes among three or more rationales; its reading is printed beside the
judge's, so a row where they part is a misreading. A user's own context comes from `pig context` (built once, cached
under runs/<user>/context).

Subject-dependent tastes: with `--splits` (or a `--user` whose context the teacher reads as one, e.g. tidepool), every
row is reported per subject group (`world.SUBJECT_GROUPS`: pairs of round subjects, pairs of angular ones), and
`--splits 2-2,3-3` adds contexts of n rationales about round subjects for the first pole and n about angular ones for
the second (each naming its group, as the reasoner writes them), and the reverse: a judge that follows such a context
prefers the first pole on round subjects and the second on angular ones. `--nearest K` adds rows for the user's own
context with each pair judged under the K rationales whose choices' prompts are nearest to its prompt
(`JudgeSettings.context_nearest`, by the MiniLM embedder of `--embedder`).
"""

from __future__ import annotations

import argparse
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=".models/tiny-pigreward")
    parser.add_argument("--axis", default="palette", choices=["palette", "light", "layout"])
    parser.add_argument("--counts", default="4-0,3-0,2-0,3-1,4-2,5-3,2-1", help="Votes first pole - second pole.")
    parser.add_argument("--filler", type=int, default=4, help="Rationales about another axis added to each context.")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--user", default=None, help="Also probe this user's own context (a sandbox or real user).")
    parser.add_argument("--users_dir", default="users")
    parser.add_argument(
        "--splits",
        default="",
        help="Subject-dependent contexts: 'n-m' = n round rationales for the first pole, m "
        "angular ones for the second (and the reverse); rows are then reported per subject group.",
    )
    parser.add_argument(
        "--nearest", default="", help="With --user: also judge under each prompt's K nearest rationales (e.g. '2,3')."
    )
    parser.add_argument("--embedder", default=".models/all-MiniLM-L6-v2", help="Sentence encoder for --nearest.")
    args = parser.parse_args(argv)

    import numpy as np

    from localmodels import oracle, world
    from reward.backends import GenerationSettings, TransformersVLM
    from reward.pigreward import JudgeSettings, PIGReward

    vlm = TransformersVLM(args.model, device="cpu", dtype="float32", batch_size=16)
    settings = JudgeSettings(generation=GenerationSettings(max_new_tokens=160, stop_after_verdict=True))
    pig = PIGReward(vlm, vlm, settings=settings)
    first, second = world.AXES[args.axis]
    free = [a for a in world.AXES if a != args.axis]  # the axes a pair's two images share
    other = free[0]  # the axis the filler rationales are about

    def preference(context, group: str | None = None, judge=pig) -> float:
        rng = np.random.default_rng(0)
        subjects = [s for s in world.SUBJECTS if group is None or world.subject_group(s) == group]
        prompts, images_a, images_b = [], [], []
        for i in range(args.pairs):
            subject = subjects[i % len(subjects)]
            rest = {a: world.AXES[a][int(rng.integers(2))] for a in free}
            seed = int(rng.integers(1000))
            scenes = [world.Scene(subject, seed=seed, **{**rest, args.axis: pole}) for pole in (first, second)]
            a, b = (world.draw_scene(s, 32) for s in scenes)
            prompts.append(f"a {subject}")
            images_a.append(a)
            images_b.append(b)
        verdicts = judge.compare(prompts, images_a, images_b, context)
        values = [0.5 if v.preference is None else v.preference for v in verdicts]
        return sum(values) / len(values)

    by_group = bool(args.splits)

    def row(label: str, context: list[str]) -> None:
        if not (by_group or args.axis in oracle.context_reading(context)[1]):
            teacher = oracle.read_context(context).get(args.axis, "-")
            print(f"{label:58} teacher reads {teacher:7} judge prefers {first} {preference(context):.2f}", flush=True)
            return
        for group in world.SUBJECT_GROUPS:
            example = next(s for s in world.SUBJECTS if world.subject_group(s) == group)
            teacher = oracle.read_context(context, example).get(args.axis, "-")
            print(
                f"{label + ', ' + group + ' subjects':58} teacher reads {teacher:7} judge prefers {first} "
                f"{preference(context, group):.2f}",
                flush=True,
            )

    rng = np.random.default_rng(1)
    pick = lambda pole_axis, pole: oracle._RATIONALES[(pole_axis, pole)][int(rng.integers(2))]  # noqa: E731
    print(f"{args.pairs} pairs that differ only in {args.axis} ({first} vs {second}); model {args.model}")
    for count in filter(None, args.counts.split(",")):
        n_first, n_second = (int(x) for x in count.split("-"))
        context = [pick(args.axis, first) for _ in range(n_first)] + [pick(args.axis, second) for _ in range(n_second)]
        context += [pick(other, world.AXES[other][0]) for _ in range(args.filler)]
        rng.shuffle(context)
        row(f"{n_first} {first} / {n_second} {second} (+{args.filler} {other})", context)

    for count in filter(None, args.splits.split(",")):
        n_round, n_angular = (int(x) for x in count.split("-"))
        for lead, trail in ((first, second), (second, first)):
            context = [f"This choice was about a round subject. {pick(args.axis, lead)}" for _ in range(n_round)]
            context += [
                f"This choice was about an angular subject. {pick(args.axis, trail)}" for _ in range(n_angular)
            ]
            context += [f"This choice was about a round subject. {pick(other, world.AXES[other][0])}"] * (
                args.filler // 2
            )
            rng.shuffle(context)
            row(f"{n_round} round {lead} / {n_angular} angular {trail}", context)

    if args.user:
        from reward.users import load_user

        user = load_user(args.user, args.users_dir)
        rationales = [r.text for r in pig.build_context(user).rationales]  # cached under runs/<user>/context
        sentences = [re.split(r"(?<=[.!?])\s+", r) for r in rationales]
        row(f"{user.user_id}'s own context", rationales)
        row("  first sentence of each rationale only", [s[0] for s in sentences])
        row("  first half of the rationales", rationales[: len(rationales) // 2])
        row("  second half of the rationales", rationales[len(rationales) // 2 :])
        if args.nearest:
            nearest_rows(
                pig, user, [int(k) for k in args.nearest.split(",")], args.embedder, preference, first, args.axis
            )


def nearest_rows(pig, user, ks: list[int], embedder: str, preference, first: str, axis: str) -> None:
    """The user's own context, each pair judged under its prompt's K nearest rationales, per subject group; the
    teacher's reading is of the rationales chosen for that group's first subject."""
    import dataclasses

    from localmodels import oracle, world
    from reward.pigreward import PIGReward
    from reward.similarity import TextEmbedder

    context = pig.build_context(user)
    encoder = TextEmbedder(embedder)
    for k in ks:
        settings = dataclasses.replace(pig.settings, context_nearest=k)
        nearest = PIGReward(pig.judge, pig.reasoner, settings=settings, prompt_embedder=encoder)
        for group in world.SUBJECT_GROUPS:
            subject = next(s for s in world.SUBJECTS if world.subject_group(s) == group)
            rows = nearest.nearest_rationales([f"a {subject}"], context.rationales, k)[0]
            teacher = oracle.read_context([context.rationales[i].text for i in rows], subject).get(axis, "-")
            label = f"{user.user_id}'s {k} nearest rationales, {group} subjects"
            print(
                f"{label:58} teacher reads {teacher:7} judge prefers {first} "
                f"{preference(context, group, judge=nearest):.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
