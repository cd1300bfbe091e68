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

# The toy world's held-out wordings and the taste parser live with the toy world; rl/ reads them from there.
from localmodels.demo_user import HELDOUT_PROMPTS  # noqa: F401 (part of this module's interface)
from localmodels.oracle import parse_taste

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


def subject_of(prompt: str | None) -> str | None:
    """The toy world's subject a prompt asks for (`"a kite in the park"` -> `"kite"`), or `None`."""
    from localmodels import world

    return None if prompt is None else world.parse_caption(prompt)["subject"]


def subject_kind(prompt: str | None) -> str | None:
    """The group of `world.SUBJECT_GROUPS` a prompt's subject belongs to (`"a full moon"` -> `"round"`), or `None`."""
    from localmodels import world

    subject = subject_of(prompt)
    return None if subject is None else world.subject_group(subject)


def utility(taste, image, prompt: str | None = None) -> float:
    """The user's true utility of one image (weighted sum over their axes of how much the image has their pole).

    A taste that depends on the subject (`taste.by_subject`) needs the prompt the image was asked for: the original
    prompt's subject decides which pole counts (a rewrite that drops the subject is still judged for what was asked).

    Raises:
        ValueError: the taste depends on the subject and `prompt` names no subject of the toy world.
    """
    from localmodels import world

    subject = subject_of(prompt) if taste.by_subject else None
    if taste.by_subject and subject is None:
        raise ValueError(f"This sandbox taste depends on the subject, and the prompt {prompt!r} names none.")
    return taste.utility(world.image_attributes(image), subject)


def preference(utility_a: float, utility_b: float, tol: float = TIE_TOLERANCE) -> float:
    """1 when A is truly better, 0 when B is, 0.5 when the utilities are within `tol` of each other."""
    if abs(utility_a - utility_b) <= tol:
        return 0.5
    return 1.0 if utility_a > utility_b else 0.0


def preferences(
    taste, images_a: Sequence, images_b: Sequence, tol: float = TIE_TOLERANCE, prompts: Sequence[str] | None = None
) -> list[float]:
    """`preference` for each pair `(images_a[i], images_b[i])`, asked for by `prompts[i]` (needed by a taste that
    depends on the subject)."""
    if len(images_a) != len(images_b) or (prompts is not None and len(prompts) != len(images_a)):
        raise ValueError(
            f"Need as many A images as B images (and prompts), got {len(images_a)}, {len(images_b)}"
            + ("" if prompts is None else f" and {len(prompts)}")
            + "."
        )
    prompts = list(prompts) if prompts is not None else [None] * len(images_a)
    cache: dict[tuple[int, str | None], float] = {}

    def u(image, prompt) -> float:  # the original's image is compared with every rewrite of its group: measure once
        key = (id(image), subject_of(prompt) if taste.by_subject else None)
        if key not in cache:
            cache[key] = utility(taste, image, prompt)
        return cache[key]

    return [preference(u(a, p), u(b, p), tol) for a, b, p in zip(images_a, images_b, prompts)]


def pole_shares(rewrites: Sequence[str], prompts: Sequence[str]) -> dict[str, dict[str, float]]:
    """Language figures per subject group: `{group: {pole: share of that group's rewrites naming the pole}}` (a
    rewrite names a pole when its words name only that pole of the axis, `world.parse_caption`)."""
    from localmodels import world

    out: dict[str, dict[str, float]] = {}
    for group in world.SUBJECT_GROUPS:
        rows = [world.parse_caption(r) for r, p in zip(rewrites, prompts) if subject_kind(p) == group]
        if rows:
            out[group] = {
                pole: sum(row[axis] == pole for row in rows) / len(rows)
                for axis in world.AXES
                for pole in world.AXES[axis]
            }
    return out


def agreement(judge: Sequence[float | None], truth: Sequence[float]) -> float | None:
    """Share of pairs on which the judge's preference and the truth name the same winner.

    Only pairs that both decide count (judge not `None` and not 0.5, truth not a tie); `None` when there are none.
    """
    hits = [(j > 0.5) == (t > 0.5) for j, t in zip(judge, truth) if j is not None and j != 0.5 and t != 0.5]
    return sum(hits) / len(hits) if hits else None
