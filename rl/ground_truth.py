"""Ground truth for sandbox users: what a synthetic user really prefers, measured on pixels.

A sandbox user (`user.json` with a `sandbox` taste, see `reward/users.py`) has a hidden taste
(`localmodels.oracle.SyntheticUser`: a preferred pole on some of palette, light and layout, with weights). Its utility
of an image is computed from the image's pixels (`world.image_attributes`), so every rendered image can be scored by
the truth, not only by the judge. Training logs it beside the judge's reward every step (a reward-hacking monitor);
`pig evaluate` reports it beside the judge's verdicts. Nothing here feeds the reward: the policy never sees it.

Real users have no `sandbox` entry; for them `taste_of` returns `None` and only the judge's view exists.
"""

from __future__ import annotations

from collections.abc import Sequence

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
)

TIE_TOLERANCE = 0.02
"""Utility differences at most this large count as a tie (0.5): one pixel-level step is no preference."""


def taste_of(user) -> object | None:
    """The sandbox user's hidden taste as an `oracle.SyntheticUser`, or `None` for a real user.

    Raises:
        ValueError: the `sandbox` entry names an unknown axis or pole, or a weight that is not a positive number.
    """
    if user.sandbox is None:
        return None
    return parse_taste(user.sandbox, where=f"{user.root}/user.json: sandbox")


def parse_taste(spec: dict, where: str = "sandbox"):
    """`{"prefs": {axis: pole}, "weights": {axis: w}}` -> `oracle.SyntheticUser`, validated."""
    from localmodels import oracle, world

    if not isinstance(spec, dict) or set(spec) != {"prefs", "weights"}:
        raise ValueError(f"{where}: expected exactly the keys 'prefs' and 'weights', got {spec!r}.")
    prefs, weights = spec["prefs"], spec["weights"]
    if not isinstance(prefs, dict) or not prefs or not isinstance(weights, dict) or set(prefs) != set(weights):
        raise ValueError(f"{where}: 'prefs' and 'weights' must be non-empty objects over the same axes.")
    for axis, pole in prefs.items():
        if axis not in world.AXES or pole not in world.AXES[axis]:
            raise ValueError(f"{where}: {axis}={pole!r} is not an axis and pole of {world.AXES}.")
        w = weights[axis]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0:
            raise ValueError(f"{where}: weight of {axis} must be a positive number, got {w!r}.")
    return oracle.SyntheticUser(dict(prefs), {a: float(w) for a, w in weights.items()})


def utility(taste, image) -> float:
    """The user's true utility of one image (weighted sum over their axes of how much the image has their pole)."""
    from localmodels import world

    return taste.utility(world.image_attributes(image))


def preference(utility_a: float, utility_b: float, tol: float = TIE_TOLERANCE) -> float:
    """1 when A is truly better, 0 when B is, 0.5 when the utilities are within `tol` of each other."""
    if abs(utility_a - utility_b) <= tol:
        return 0.5
    return 1.0 if utility_a > utility_b else 0.0


def preferences(taste, images_a: Sequence, images_b: Sequence, tol: float = TIE_TOLERANCE) -> list[float]:
    """`preference` for each pair `(images_a[i], images_b[i])`."""
    if len(images_a) != len(images_b):
        raise ValueError(f"Need as many A images as B images, got {len(images_a)} and {len(images_b)}.")
    cache: dict[int, float] = {}

    def u(image) -> float:  # the original's image is compared with every rewrite of its group: measure it once
        key = id(image)
        if key not in cache:
            cache[key] = utility(taste, image)
        return cache[key]

    return [preference(u(a), u(b), tol) for a, b in zip(images_a, images_b)]


def agreement(judge: Sequence[float | None], truth: Sequence[float]) -> float | None:
    """Share of pairs on which the judge's preference and the truth name the same winner.

    Only pairs that both decide count (judge not `None` and not 0.5, truth not a tie); `None` when there are none.
    """
    hits = [(j > 0.5) == (t > 0.5) for j, t in zip(judge, truth) if j is not None and j != 0.5 and t != 0.5]
    return sum(hits) / len(hits) if hits else None
