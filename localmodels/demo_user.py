"""Synthetic users of the toy world: the demo user shipped in `users/demo/`, and toy PIGBench datasets of many users.

Every image is drawn by `localmodels.world` (nothing downloaded) and every file is deterministic in its seed. Each user
has a hidden taste (`oracle.SyntheticUser`: a preferred pole on one to three of palette, light and layout); references
and held-out pairs are choices that taste clearly makes.

    python -m localmodels.demo_user --out users/demo                      # the demo user (warm, sparse)
    python -m localmodels.demo_user --shipped                             # every user shipped in users/
    python -m localmodels.demo_user --out users/U --taste palette=cool:1.0,light=dark:0.8 --seed 3   # a new one
    python -m localmodels.demo_user --out users/V --taste palette=warm/cool:1.0 --seed 5   # warm round, cool angular
    python -m localmodels.demo_user --out runs/users/W --taste palette=warm/cool:1.0 --references 24   # 24 choices
                                          # (then train and evaluate with --context_references 0 to read all)
    python -m localmodels.demo_user --toy_users 24 --out runs/data/toy    # a dataset for `pig bench`
    python -m localmodels.demo_user --population 48 --heldout 12 --out runs/users/population   # issue 21's users

A sandbox user's `user.json` records its hidden taste under `sandbox` (see `reward/users.py`): only the ground-truth
evaluation reads it; PIGReward learns the user from the references alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from localmodels import oracle

DEMO_TASTE = oracle.SyntheticUser({"palette": "warm", "layout": "sparse"}, {"palette": 1.0, "layout": 0.8})
# The users shipped in users/: different hidden tastes, one opposite to the warm lean of small chat models' prompts
# (nightowl), one on the axes the demo user ignores (crowd). id -> (taste, seed of its references, description).
SHIPPED_USERS: dict[str, tuple[oracle.SyntheticUser, int, str]] = {
    "demo": (DEMO_TASTE, 7, "prefers warm colours and sparse compositions"),
    "nightowl": (
        oracle.SyntheticUser({"palette": "cool", "light": "dark"}, {"palette": 1.0, "light": 0.8}),
        11,
        "prefers cool colours and dark, night-like light",
    ),
    "crowd": (
        oracle.SyntheticUser({"layout": "busy", "light": "bright"}, {"layout": 1.0, "light": 0.8}),
        13,
        "prefers busy, crowded compositions in bright light",
    ),
    # Subject-dependent users: the taste on one axis depends on the kind of thing drawn (round or angular).
    "tidepool": (
        oracle.SyntheticUser({}, {"palette": 1.0}, {"palette": {"round": "warm", "angular": "cool"}}),
        18,
        "prefers warm colours for round subjects (sun, ball, moon, apple) and cool colours for angular ones",
    ),
    "gallery": (
        oracle.SyntheticUser(
            {"light": "bright"}, {"layout": 1.0, "light": 0.6}, {"layout": {"round": "busy", "angular": "sparse"}}
        ),
        22,
        "prefers busy compositions for round subjects and sparse ones for angular subjects, in bright light",
    ),
}
TRAINING_PROMPTS = [
    "a sun",
    "a house",
    "a tree",
    "a mountain",
    "a kite",
    "a moon",
    "a box",
    "a tent",
    "an apple",
    "a window",
    "a ball",
    "a gem",
]

# Prompts never trained on: the toy world's subjects in wordings no user's `prompts`, no reference and no warm-start
# example uses (checked by a test), and no style word (the rewrite, not the prompt, has to bring the style).
HELDOUT_PROMPTS: tuple[str, ...] = (
    "the sun above the hills",
    "a sun rising over the sea",
    "an old house at the end of the road",
    "a house with a garden",
    "a tree in the middle of a park",
    "an oak tree",
    "a snowy mountain peak",
    "a mountain behind a lake",
    "a kite flying over the beach",
    "a paper kite",
    "the moon over a quiet town",
    "a full moon",
    "a cardboard box on the floor",
    "a wooden box",
    "a camping tent in the woods",
    "a tent at the campsite",
    "an apple on a plate",
    "a green apple",
    "a window of an old building",
    "a round window",
    "a beach ball",
    "a ball on the grass",
    "a precious gem",
    "a gem on a velvet cloth",
    # six more wordings per subject (issue 8: 96 prompts, so that a greedy view's interval can reach +-0.05)
    "the sun over the fields",
    "a sun behind the clouds",
    "the morning sun",
    "a sun setting behind the dunes",
    "the sun over a desert road",
    "a sun shining on the water",
    "a soccer ball",
    "a ball rolling down the street",
    "a tennis ball on the court",
    "a child's ball in the yard",
    "a rubber ball",
    "a ball in the playground",
    "the moon above the forest",
    "a crescent moon",
    "the moon over the ocean",
    "a moon rising behind the city",
    "the moon in the evening sky",
    "a moon over the desert",
    "an apple on the table",
    "a ripe apple",
    "an apple hanging from a branch",
    "a bitten apple",
    "an apple in a basket",
    "a fresh apple in the kitchen",
    "a house by the river",
    "a farm house in the countryside",
    "a house on the corner of the street",
    "a stone house",
    "a little house near the forest",
    "a house with a tall chimney",
    "a box of old letters",
    "a gift box",
    "a box on a shelf",
    "a metal box",
    "an open box in the attic",
    "a box by the door",
    "a window with curtains",
    "an open window",
    "a kitchen window",
    "a window in a stone wall",
    "a window looking onto the street",
    "an arched window",
    "a tree by the river",
    "a tall pine tree",
    "a tree on the edge of a cliff",
    "a tree in the backyard",
    "a willow tree",
    "a tree beside the road",
    "a mountain at dawn",
    "a rocky mountain",
    "a mountain above the clouds",
    "a volcanic mountain",
    "a mountain with a winding trail",
    "a mountain in the distance",
    "a tent in the desert",
    "a tent by the river",
    "a circus tent",
    "a tent on the snow",
    "a hiking tent",
    "a tent pitched on the shore",
    "a kite in the wind",
    "a kite above the rooftops",
    "a kite caught in a branch",
    "a child's kite",
    "a kite over the meadow",
    "a dragon kite",
    "a gem in a treasure chest",
    "a shiny gem",
    "a cut gem",
    "a gem on a ring",
    "a gem in the rock",
    "a gem in a glass case",
    # four more per subject (144 prompts: a greedy view's interval measured +-0.055 with 96, between-prompt spread)
    "the sun at noon",
    "a sun over the harbour",
    "the afternoon sun",
    "the sun above a quiet village",
    "a ball on the beach",
    "a leather ball",
    "a ball under the bench",
    "a striped ball",
    "the moon over the lake",
    "a half moon",
    "the moon behind the hills",
    "a moon above the harbour",
    "an apple cut in half",
    "an apple in the orchard",
    "a small apple",
    "an apple on a kitchen counter",
    "a house on a cliff",
    "a wooden house",
    "a house at the seaside",
    "a house with a porch",
    "a box of toys",
    "a box under the bed",
    "a tiny box",
    "a box tied with string",
    "a window in the attic",
    "a large window",
    "a window above the door",
    "a window of a train",
    "an old tree",
    "a tree on a hillside",
    "a lemon tree",
    "a tree in the snow",
    "a mountain over the valley",
    "a mountain in the fog",
    "a steep mountain",
    "a mountain beside a river",
    "a tent in the garden",
    "a large tent",
    "a tent under the stars",
    "a tent in the meadow",
    "a kite on the hill",
    "a striped kite",
    "a kite in the park",
    "a kite on a string",
    "a gem on a necklace",
    "a tiny gem",
    "a gem in the sand",
    "a gem on a crown",
)


def write_user(
    out: str | Path,
    user_id: str,
    taste: oracle.SyntheticUser,
    rng: np.random.Generator,
    n_references: int = 8,
    n_heldout: int = 8,
    size: int = 64,
    description: str = "",
    prompts: list[str] | None = None,
    focused: bool = False,
) -> dict:
    """Write `out/user.json` and `out/images/` for a synthetic user; returns the user.json content.

    Held-out pairs put the chosen image first or second at random (label 1 or 2), so "always Image 1" scores ~50%.
    `focused`: every pair differs only on the user's own axes (`oracle.make_reference`).
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    references, heldout = [], []
    # A subject-dependent user's choices alternate between the subject groups, so each group's taste shows.
    subjects = oracle.balanced_subjects(n_references + n_heldout, rng) if taste.by_subject else None
    for i in range(n_references):
        subject = subjects[i] if subjects else None
        prompt, chosen, rejected, *_ = oracle.make_reference(taste, rng, size, subject=subject, focused=focused)
        chosen.save(out / "images" / f"ref{i:02d}_chosen.png")
        rejected.save(out / "images" / f"ref{i:02d}_rejected.png")
        references.append(
            {
                "prompt": prompt,
                "chosen": f"images/ref{i:02d}_chosen.png",
                "rejected": f"images/ref{i:02d}_rejected.png",
            }
        )
    for i in range(n_heldout):
        subject = subjects[n_references + i] if subjects else None
        prompt, chosen, rejected, *_ = oracle.make_reference(taste, rng, size, subject=subject, focused=focused)
        first_is_chosen = bool(rng.integers(2))
        a, b = (chosen, rejected) if first_is_chosen else (rejected, chosen)
        a.save(out / "images" / f"test{i:02d}_1.png")
        b.save(out / "images" / f"test{i:02d}_2.png")
        heldout.append(
            {
                "prompt": prompt,
                "image_1": f"images/test{i:02d}_1.png",
                "image_2": f"images/test{i:02d}_2.png",
                "label": 1 if first_is_chosen else 2,
            }
        )
    data = {"user_id": user_id, "description": description, "references": references, "heldout": heldout}
    if prompts:
        data["prompts"] = prompts
    data["sandbox"] = taste.to_json()
    (out / "user.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return data


def write_sandbox_user(
    out: str | Path,
    user_id: str,
    taste: oracle.SyntheticUser,
    seed: int,
    description: str = "",
    n_references: int = 8,
    n_heldout: int = 8,
    size: int = 64,
    focused: bool = False,
) -> Path:
    """A sandbox user who trains on `TRAINING_PROMPTS`, with references drawn for `taste` (deterministic in `seed`)."""
    text = f"Synthetic sandbox user (localmodels/demo_user.py): {description or taste_description(taste)}."
    rng = np.random.default_rng(seed)
    write_user(out, user_id, taste, rng, n_references, n_heldout, size, text, TRAINING_PROMPTS, focused)
    return Path(out)


def write_demo_user(out: str | Path, n_references: int = 8, n_heldout: int = 8, size: int = 64, seed: int = 7) -> Path:
    return write_sandbox_user(out, "demo", DEMO_TASTE, seed, SHIPPED_USERS["demo"][2], n_references, n_heldout, size)


def parse_taste_spec(spec: str) -> oracle.SyntheticUser:
    """`"palette=cool:1.0,light=dark:0.8"` -> a taste (weight defaults to 1.0); errors name the fix.

    A pole written `round/angular`, e.g. `palette=warm/cool`, depends on the subject: warm for round subjects, cool
    for angular ones.
    """
    prefs, weights, by_subject = {}, {}, {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        axis, _, rest = item.partition("=")
        pole, _, weight = rest.partition(":")
        axis, pole = axis.strip(), pole.strip()
        try:
            weights[axis] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--taste {spec!r}: weight {weight!r} of {axis} is not a number.") from None
        if "/" in pole:
            round_pole, _, angular_pole = pole.partition("/")
            by_subject[axis] = {"round": round_pole.strip(), "angular": angular_pole.strip()}
        else:
            prefs[axis] = pole
    return oracle.parse_taste(
        {"prefs": prefs, "weights": weights, "by_subject": by_subject}, where=f"--taste {spec!r}"
    )


def taste_description(taste: oracle.SyntheticUser) -> str:
    return taste.describe()


def write_toy_dataset(
    out: str | Path, n_users: int = 24, n_references: int = 8, n_heldout: int = 8, size: int = 64, seed: int = 1000
) -> Path:
    """A per-user preference dataset (`reward/eval/dataset.py` layout, with `manifest.json`) of `n_users` toy users.

    Tastes are sampled like the judge's training users but with other seeds, so no reference or test image was seen in
    training. The hidden taste is recorded in each user's `description` (the methods never read it).
    """
    from common.files import atomic_write_json
    from reward.eval.dataset import MANIFEST, ImportLog

    out = Path(out)
    rng = np.random.default_rng(seed)
    options = {"n_users": n_users, "n_references": n_references, "n_heldout": n_heldout, "size": size}
    log = ImportLog("toy", "localmodels.demo_user", seed, options)
    for u in range(n_users):
        taste = oracle.SyntheticUser.sample(rng)
        user_id = f"toy{u:03d}"
        data = write_user(
            out / user_id,
            user_id,
            taste,
            rng,
            n_references,
            n_heldout,
            size,
            description=f"Synthetic toy-world user; hidden taste: {taste_description(taste)}.",
        )
        log.add_user(data)
    atomic_write_json(out / MANIFEST, log.manifest(complete=True))
    return out


# ------------------------------------------------------------------------------- a population of users (issue 21)
KINDS = ("1-axis", "2-axis", "3-axis", "subject")
"""Kinds of generated tastes: on one, two or all three axes whatever the subject, or with one axis whose pole depends
on whether the subject is round or angular (`subject`, on one to three axes). Training users cycle through all four;
generated held-out users through `HELDOUT_KINDS` (the shipped users already hold out four two-axis tastes)."""
HELDOUT_KINDS = ("3-axis", "1-axis", "3-axis", "subject")
FROST = ("frost", "palette=cool:0.9,layout=sparse:1.0", 1000)
"""The user written apart from the project to check the floor beyond the users we tuned on (docs/RESULTS.md:
`python -m localmodels.demo_user --out runs/users/frost --taste palette=cool:0.9,layout=sparse:1.0`, seed 1000)."""


def taste_kind(taste: oracle.SyntheticUser) -> str:
    """`"subject"` for a taste that depends on the subject, else `"<n>-axis"`."""
    return "subject" if taste.by_subject else f"{len(taste.weights)}-axis"


def sample_taste(rng: np.random.Generator, kind: str) -> oracle.SyntheticUser:
    """A random taste of `kind` (`KINDS`): `oracle.SyntheticUser.sample` (random axes, poles, weights in [0.6, 1])
    drawn until it is of that kind."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    for _ in range(1000):
        taste = oracle.SyntheticUser.sample(rng, p_split=1.0 if kind == "subject" else 0.0)
        if taste_kind(taste) == kind:
            return taste
    raise RuntimeError(f"No taste of kind {kind!r} in 1000 draws.")  # each kind has probability >= 1/4


def write_population(
    out: str | Path, n_train: int = 48, n_heldout: int = 12, seed: int = 1000, shipped_dir: str | Path | None = None
) -> dict:
    """Write a population of sandbox users for the population rewriter (issue 21) and its manifest.

    `n_train` generated users to train on (`pop000`...), and `n_heldout` held out, never trained on: every shipped
    user (copied from `shipped_dir`, default the repository's `users/`, else written from `SHIPPED_USERS`), frost
    (`FROST`), and `held000`... generated to make up the number. Generated tastes are drawn at random (axes, poles,
    weights) in turn of kind (`KINDS`, `HELDOUT_KINDS`); each user's references are drawn for their taste with a
    seed of their own, and they train on `TRAINING_PROMPTS`. Deterministic in `seed`.

    The manifest `population.json` (`reward.users.POPULATION_MANIFEST`) lists the `train` and `heldout` ids (what
    `--population <out>` reads) and, for measurement only, each user's `kinds`; no training code reads a taste.

    Returns:
        the manifest.
    """
    import shutil

    from common.files import atomic_write_json
    from reward.users import POPULATION_MANIFEST

    out = Path(out)
    named = [*SHIPPED_USERS, FROST[0]]
    if n_train < 2 or n_heldout < len(named):
        raise ValueError(
            f"--population needs at least 2 training users and --heldout at least {len(named)} (the held-out users "
            f"include {', '.join(named)}), got {n_train} and {n_heldout}."
        )
    if out.exists() and any(out.iterdir()) and not (out / POPULATION_MANIFEST).is_file():
        raise ValueError(f"{out} is not empty and holds no {POPULATION_MANIFEST}: write the population elsewhere.")
    shipped_dir = Path(shipped_dir) if shipped_dir is not None else Path(__file__).resolve().parents[1] / "users"
    rng = np.random.default_rng(seed)
    kinds: dict[str, str] = {}

    def generated(user_id: str, kind: str) -> None:
        taste = sample_taste(rng, kind)
        write_sandbox_user(out / user_id, user_id, taste, int(rng.integers(2**31)))
        kinds[user_id] = kind

    train = [f"pop{i:03d}" for i in range(n_train)]
    for i, user_id in enumerate(train):
        generated(user_id, KINDS[i % len(KINDS)])
    for user_id, (taste, user_seed, description) in SHIPPED_USERS.items():
        if out.joinpath(user_id).exists():
            shutil.rmtree(out / user_id)
        if (shipped_dir / user_id / "user.json").is_file():
            shutil.copytree(shipped_dir / user_id, out / user_id)
        else:
            write_sandbox_user(out / user_id, user_id, taste, user_seed, description)
        kinds[user_id] = taste_kind(taste)
    frost, spec, frost_seed = FROST
    write_sandbox_user(out / frost, frost, parse_taste_spec(spec), frost_seed)
    kinds[frost] = taste_kind(parse_taste_spec(spec))
    extra = [f"held{i:03d}" for i in range(n_heldout - len(named))]
    for i, user_id in enumerate(extra):
        generated(user_id, HELDOUT_KINDS[i % len(HELDOUT_KINDS)])
    manifest = {
        "train": train,
        "heldout": named + extra,
        "kinds": kinds,
        "seed": seed,
        "command": f"python -m localmodels.demo_user --population {n_train} --heldout {n_heldout} --out {out} "
        f"--seed {seed}",
    }
    atomic_write_json(out / POPULATION_MANIFEST, manifest)
    return manifest


def kind_counts(manifest: dict, split: str) -> dict[str, int]:
    """How many users of each kind a population manifest's `split` (`train` or `heldout`) holds."""
    counts = dict.fromkeys(KINDS, 0)
    for user_id in manifest[split]:
        counts[manifest["kinds"][user_id]] += 1
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="users/demo")
    parser.add_argument("--shipped", action="store_true", help="Rewrite every user shipped in users/.")
    parser.add_argument("--taste", help="A new sandbox user's taste, e.g. palette=cool:1.0,light=dark:0.8.")
    parser.add_argument("--user_id", help="Id of the new sandbox user (default: the --out folder's name).")
    parser.add_argument(
        "--focused", action="store_true", help="With --taste: each choice's images differ only on the user's axes."
    )
    parser.add_argument(
        "--references",
        type=int,
        default=8,
        help="With --taste: how many past choices the user has (default 8). More choices give a subject-dependent "
        "user's nearest rationales (--context_nearest) more choices about the same kind of subject. Training reads "
        "the 8 most recent on CPU (configs/cpu.yaml); pass --context_references 0 to read them all.",
    )
    parser.add_argument("--toy_users", type=int, default=0, help="Write a dataset of N toy users instead of the demo.")
    parser.add_argument("--seed", type=int, default=1000, help="Seed of the toy dataset.")
    parser.add_argument("--population", type=int, default=0, help="Write N training users + --heldout (issue 21).")
    parser.add_argument("--heldout", type=int, default=12, help="With --population: held-out users (shipped + frost).")
    args = parser.parse_args()
    if args.population:
        try:
            written = write_population(args.out, args.population, args.heldout, args.seed)
        except ValueError as err:
            parser.error(str(err))
        for split in ("train", "heldout"):
            counts = ", ".join(f"{n} {kind}" for kind, n in kind_counts(written, split).items())
            print(f"{split}: {len(written[split])} users ({counts})")
        print(f"{args.out}/population.json")
    elif args.toy_users:
        print(write_toy_dataset(args.out, n_users=args.toy_users, seed=args.seed))
    elif args.shipped:
        for user_id, (taste, seed, description) in SHIPPED_USERS.items():
            print(write_sandbox_user(Path("users") / user_id, user_id, taste, seed, description))
    elif args.taste:
        try:
            taste = parse_taste_spec(args.taste)
        except ValueError as err:
            parser.error(str(err))
        user_id = args.user_id or Path(args.out).name
        if args.references < 1:
            parser.error(f"--references {args.references}: a user needs at least one past choice.")
        print(
            write_sandbox_user(args.out, user_id, taste, args.seed, n_references=args.references, focused=args.focused)
        )
    else:
        print(write_demo_user(args.out))
