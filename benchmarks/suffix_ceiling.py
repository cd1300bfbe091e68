"""How far can any rewriter beat the best fixed suffix, for a sandbox user whose taste depends on the subject?

The upper bound of issue 20's "adapter vs the best fixed suffix": an *ideal split* rewrite appends, for each prompt,
the poles the user's hidden taste prefers for that prompt's kind of subject (warm for round things, cool for angular
ones); the fixed suffixes append one choice of poles to every prompt. Rendered with the configured renderer on the
held-out prompts, scored by the ground truth (the hidden taste is used only to measure, as `pig evaluate` does):

    python benchmarks/suffix_ceiling.py --user tidepool
    python benchmarks/suffix_ceiling.py --user gallery --eval_images 8 --phrasings 3

A fixed suffix that names the poles of the larger kind of subject ties the ideal rewrite there, so the ideal's win
rate against it is about `share_minor * w + share_major * 0.5`, where `w` is how often the right pole beats the wrong
one on the smaller kind. The script prints that win rate overall and per kind of subject, with 95% intervals over
(prompt, phrasing) cells, against every fixed suffix and against the plain prompt.
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Canonical phrasings of a pole, each one of `localmodels.world.STYLE_PHRASES`, with the pole's own name as the word.
PHRASINGS: dict[str, tuple[str, ...]] = {
    "palette": ("in {w} tones", "{w} colours", "{w} palette"),
    "light": ("{w} lighting", "in {w} light", "{w} atmosphere"),
    "layout": ("{w} composition", "{w} layout", "{w} framing"),
}


@dataclass
class CeilingArguments:
    phrasings: int = field(default=2, metadata={"help": "Phrasings of each pole tried (1-3); each is one cell."})
    eval_images: int = field(default=4, metadata={"help": "Image seeds per (prompt, phrasing) cell."})
    eval_seed: int = field(default=1234, metadata={"help": "Base seed of the images (as `pig evaluate`)."})

    def __post_init__(self):
        if not 1 <= self.phrasings <= 3:
            raise SystemExit(f"--phrasings {self.phrasings}: choose 1, 2 or 3.")
        if self.eval_images < 1:
            raise SystemExit(f"--eval_images {self.eval_images}: at least one image per cell.")


def phrase(axis: str, pole: str, k: int) -> str:
    """The `k`-th canonical phrasing of `pole` on `axis`, e.g. `"in warm tones"` (every pole's name is one of its
    `world.STYLE_WORDS`)."""
    from localmodels import world

    if pole not in world.STYLE_WORDS[(axis, pole)]:
        raise ValueError(f"{pole!r} is not a style word of {axis}.")
    return PHRASINGS[axis][k].format(w=pole)


def tail(poles: dict[str, str], k: int) -> str:
    return ", ".join(phrase(axis, pole, k) for axis, pole in poles.items())


def fixed_choices(taste) -> list[dict[str, str]]:
    """Every assignment of one pole to each axis the taste weighs: the fixed suffixes a search could find."""
    from localmodels import world

    axes = list(taste.weights)
    return [dict(zip(axes, poles)) for poles in itertools.product(*(world.AXES[a] for a in axes))]


def main(argv: list[str] | None = None) -> int:
    from common.devices import resolve_device
    from policy_eval.evaluate_policy import image_seeds, parse_dataclasses, render_once, summarize
    from reward.users import load_user
    from rl import ground_truth
    from rl.config import PigArguments
    from rl.render import Renderer

    pig_args, args = parse_dataclasses((PigArguments, CeilingArguments), argv)
    if not pig_args.user:
        raise SystemExit("--user is required: a sandbox user id under --users_dir, or a user folder.")
    user = load_user(pig_args.user, pig_args.users_dir)
    taste = ground_truth.taste_of(user)
    if taste is None:
        raise SystemExit(f"{user.user_id} has no sandbox taste (a real user): the ceiling needs the hidden taste.")
    prompts = list(ground_truth.HELDOUT_PROMPTS)
    subjects = [ground_truth.subject_of(p) for p in prompts]
    kinds = [ground_truth.subject_kind(p) for p in prompts]
    fixed = fixed_choices(taste)

    def ordered(poles: dict[str, str]) -> dict[str, str]:
        """The poles in the fixed suffixes' order of axes: the renderer reads an earlier cue more strongly."""
        return {axis: poles[axis] for axis in taste.weights}

    suffixes = {tail(c, 0): c for c in fixed}  # named by their first phrasing

    # texts[name][i][k]: the text of prompt i under policy `name`, phrasing k (the original repeats the prompt).
    texts = {"original": [[p] * args.phrasings for p in prompts]}
    texts["ideal"] = [
        [f"{p}, {tail(ordered(taste.poles(s)), k)}" for k in range(args.phrasings)] for p, s in zip(prompts, subjects)
    ]
    for name, choice in suffixes.items():
        texts[name] = [[f"{p}, {tail(choice, k)}" for k in range(args.phrasings)] for p in prompts]
    seeds = image_seeds(args.eval_seed, prompts, args.eval_images)
    renderer = Renderer.from_args(pig_args, resolve_device("auto"))
    keys = [(t, s) for rows in texts.values() for row, ss in zip(rows, seeds) for t in row for s in ss]
    images = render_once(renderer, keys)
    utilities = {}  # ((text, seed), prompt index) -> utility: a subject-dependent taste scores the prompt's subject
    for rows in texts.values():
        for i, row in enumerate(rows):
            for t in row:
                for s in seeds[i]:
                    utilities[(t, s), i] = ground_truth.utility(taste, images[t, s], prompts[i])

    def cells(a: str, b: str, kind: str | None = None) -> list[float]:
        """Mean truth preference of A over B per (prompt, phrasing) cell, over its image seeds."""
        out = []
        for i in range(len(prompts)):
            if kind is not None and kinds[i] != kind:
                continue
            for k in range(args.phrasings):
                ta, tb = texts[a][i][k], texts[b][i][k]
                prefs = [ground_truth.preference(utilities[(ta, s), i], utilities[(tb, s), i]) for s in seeds[i]]
                out.append(sum(prefs) / len(prefs))
        return out

    def fmt(summary: dict) -> str:
        lo, hi = summary["ci95"] or (float("nan"), float("nan"))
        return f"{summary['preference']:.2f} [{lo:.2f}, {hi:.2f}]"

    groups = sorted(set(kinds))
    share = {g: kinds.count(g) / len(kinds) for g in groups}
    print(f"user {user.user_id}: {taste.describe()}")
    print(
        f"held-out prompts: {len(prompts)} ({', '.join(f'{kinds.count(g)} {g}' for g in groups)}); "
        f"{args.phrasings} phrasing(s) x {args.eval_images} images per prompt"
    )
    header = f"{'A vs B':58s} {'all':>18s} " + " ".join(
        f"{g + ' (' + format(share[g], '.2f') + ')':>18s}" for g in groups
    )
    print(header)
    rows = [("ideal", "original"), *(("ideal", n) for n in suffixes), *((n, "original") for n in suffixes)]
    best, best_vs_original = None, -1.0
    for a, b in rows:
        overall = summarize(cells(a, b))
        per = [summarize(cells(a, b, g)) for g in groups]
        label = f"{'ideal split' if a == 'ideal' else repr(a)} vs {'plain prompt' if b == 'original' else repr(b)}"
        print(f"{label:58s} {fmt(overall):>18s} " + " ".join(f"{fmt(p):>18s}" for p in per))
        if b == "original" and a != "ideal" and overall["preference"] > best_vs_original:
            best, best_vs_original = a, overall["preference"]
    ceiling = summarize(cells("ideal", best))
    print(f"best fixed suffix by the truth: {best!r} ({best_vs_original:.2f} vs the plain prompt)")
    print(f"ceiling of any rewriter vs the best fixed suffix: {fmt(ceiling)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
