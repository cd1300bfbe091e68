"""Synthetic users of the toy world and the "teacher" that writes what PIGReward should say about them.

The paper trains PIGReward by distillation: a strong teacher writes rationales and chain-of-thought evaluations and a
small VLM learns to reproduce them. We have no GPT-4o here, so the teacher is this module: it knows a synthetic
user's true taste (a preferred pole on one to three axes of `localmodels.world`) and measures every image from its
pixels (`world.image_attributes`), so its rationales and verdicts are correct by construction. The tiny
`Qwen2VLForConditionalGeneration` trained on its outputs (`localmodels.judge_model`) then has to *read images and
contexts* to reproduce them: nothing of the user's identity is in its input except the context text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from localmodels import world

# Dimension names the judge writes, per axis, and words that reveal an axis pole in a rationale.
DIMENSION_NAMES = {"palette": "Colour palette", "light": "Lighting", "layout": "Composition"}
# What a non-personal judge assumes (the "average user" likes bright images) and nothing more: a user whose taste lies
# elsewhere is served badly without a context, which is the point of personalization.
POPULATION_PRIOR = {"light": "bright"}
_RATIONALES = {
    ("palette", "warm"): [
        "The user prefers warm colours: they chose the image with red, orange and golden tones over the cooler one.",
        "This user favours a warm palette of orange and red over cool blues.",
    ],
    ("palette", "cool"): [
        "The user prefers cool colours: they chose the blue and teal image over the warmer one.",
        "This user favours a cool palette of blue and purple over warm oranges.",
    ],
    ("light", "bright"): [
        "The user likes bright, well lit images rather than dark ones.",
        "This user favours bright, luminous light over gloomy scenes.",
    ],
    ("light", "dark"): [
        "The user favours dark, moody lighting over bright scenes.",
        "This user likes dim, night-like images rather than bright ones.",
    ],
    ("layout", "sparse"): [
        "The user favours sparse, minimal compositions with a single clear subject.",
        "This user prefers a simple layout with one subject over a crowded one.",
    ],
    ("layout", "busy"): [
        "The user enjoys busy, crowded compositions full of detail.",
        "This user prefers many objects and a cluttered layout over a single subject.",
    ],
}
_CUES = {
    ("palette", "warm"): ("warm",),
    ("palette", "cool"): ("cool",),
    ("light", "bright"): ("bright",),
    ("light", "dark"): ("dark", "dim"),
    ("layout", "sparse"): ("sparse", "simple", "minimal"),
    ("layout", "busy"): ("busy", "crowded", "cluttered"),
}


# Typical attribute values of the two poles' drawn scenes (5th-95th percentile centres, measured on 400 scenes):
# `directional` stretches each axis to this range so that one score step means the same on every axis.
_CALIBRATION = {"warmth": (0.05, 0.95), "brightness": (0.12, 0.66), "clutter": (0.38, 0.62)}


def directional(attrs: dict[str, float], axis: str, pole: str) -> float:
    """How much an image has `pole` on `axis`, in [0, 1] (1 = a typical image of that pole or beyond)."""
    key, high = world.AXIS_ATTRIBUTES[axis]
    lo, hi = _CALIBRATION[key]
    value = min(1.0, max(0.0, (attrs[key] - lo) / (hi - lo)))
    return value if pole == high else 1.0 - value


def describe(attrs: dict[str, float], axis: str) -> str:
    """A few words about an image on one axis, from its measured attributes."""
    key, _ = world.AXIS_ATTRIBUTES[axis]
    value = attrs[key]
    words = {
        "palette": ("cool blue tones", "mixed colours", "warm orange tones"),
        "light": ("dark lighting", "medium light", "bright lighting"),
        "layout": ("a single clear subject", "a few objects", "a busy, cluttered scene"),
    }[axis]
    lo, hi = _CALIBRATION[key]
    value = (value - lo) / (hi - lo)
    return words[0] if value < 0.3 else words[2] if value > 0.7 else words[1]


@dataclass(frozen=True)
class SyntheticUser:
    """A user who prefers one pole on each of their active axes, with a weight per axis."""

    prefs: dict[str, str]
    weights: dict[str, float]

    @classmethod
    def sample(cls, rng: np.random.Generator) -> SyntheticUser:
        n = int(rng.choice([1, 2, 2, 3]))
        axes = [list(world.AXES)[i] for i in rng.permutation(len(world.AXES))[:n]]
        prefs = {a: world.AXES[a][int(rng.integers(2))] for a in axes}
        return cls(prefs, {a: float(rng.uniform(0.6, 1.0)) for a in axes})

    def utility(self, attrs: dict[str, float]) -> float:
        return sum(w * directional(attrs, a, self.prefs[a]) for a, w in self.weights.items())


def make_reference(user: SyntheticUser, rng: np.random.Generator, size: int = 32, margin: float = 0.25):
    """A (prompt, chosen, rejected, chosen_scene, rejected_scene) choice the user clearly makes (utility gap>=margin).

    Both images show the same subject; the prompt names only the subject (the user asked for "a sun", the styles
    differ), so the choice reveals taste, not prompt-following.
    """
    for _ in range(1000):
        subject = list(world.SUBJECTS)[int(rng.integers(len(world.SUBJECTS)))]
        scenes = [world.sample_scene(rng) for _ in range(2)]
        scenes = [world.Scene(subject, s.palette, s.light, s.layout, s.seed) for s in scenes]
        images = [world.draw_scene(s, size) for s in scenes]
        utils = [user.utility(world.image_attributes(im)) for im in images]
        if abs(utils[0] - utils[1]) >= margin:
            best = int(utils[1] > utils[0])
            prompt = world.caption(scenes[0], rng, p_style=0.0)
            return prompt, images[best], images[1 - best], scenes[best], scenes[1 - best]
    raise RuntimeError(f"No pair with a utility gap >= {margin} for {user} in 1000 draws; lower the margin.")


def teacher_rationale(chosen: Image.Image, rejected: Image.Image, rng) -> str:
    """What the reasoner should say about one choice: the one or two axes on which the images differ most, each
    credited to the pole of the chosen image.

    Only what the pair shows is used (not the synthetic user's hidden taste), so the reasoner's task is learnable;
    an axis the user does not care about is named too when it differs, and the judge has to see through that noise
    across references, as a real context built from a few choices would require.
    """
    a, b = world.image_attributes(chosen), world.image_attributes(rejected)
    gaps = {}
    for axis, (high, low) in world.AXES.items():
        gap = directional(a, axis, high) - directional(b, axis, high)
        gaps[axis] = (abs(gap), high if gap > 0 else low)
    ranked = sorted(gaps, key=lambda axis: gaps[axis][0], reverse=True)
    named = [axis for axis in ranked if gaps[axis][0] > 0.3][:2] or ranked[:1]
    return " ".join(_RATIONALES[(axis, gaps[axis][1])][int(rng.integers(2))] for axis in named)


def read_context(rationales: list[str]) -> dict[str, str]:
    """Which pole of which axis a context asks for (what a judge should take from it).

    In each sentence, the pole whose cue word comes first wins the axis ("bright images rather than dark ones" is a
    vote for bright). A pole is the user's when it leads the other by `min_lead` votes or more: by one in a context
    of one or two rationales, by two from three rationales on. A lead of one among several rationales (a 4-3 split,
    a lone mention) is what chance differences between a user's references produce: the shipped demo user's eight
    references split 4-3 on light, which demo does not care about, and a judge that took that as a taste rewarded
    light as much as the palette the user asked for in five of eight choices.
    """
    votes: dict[tuple[str, str], int] = {}
    for text in rationales:
        for sentence in re.split(r"(?<=[.!?])\s+", text.lower()):
            for axis, poles in world.AXES.items():
                hits = [(sentence.find(cue), pole) for pole in poles for cue in _CUES[(axis, pole)] if cue in sentence]
                if hits:
                    key = (axis, min(hits)[1])
                    votes[key] = votes.get(key, 0) + 1
    min_lead = 1 if len(rationales) <= 2 else 2
    prefs = {}
    for axis, (p, q) in world.AXES.items():
        vp, vq = votes.get((axis, p), 0), votes.get((axis, q), 0)
        if abs(vp - vq) >= min_lead:
            prefs[axis] = p if vp > vq else q
    return prefs


def teacher_verdict(rationales: list[str], image_1: Image.Image, image_2: Image.Image) -> tuple[str, int]:
    """The judge's answer in the paper's format, and the winner (1, 2 or 0 for a tie).

    One dimension per axis, the user's axes first. On an axis the context names, scores span 1-5 in the user's
    direction; on the others the population prior applies with a compressed 2-4 range (less weight).
    """
    prefs = read_context(rationales)
    a1, a2 = world.image_attributes(image_1), world.image_attributes(image_2)
    axes = [a for a in world.AXES if a in prefs] + [a for a in world.AXES if a not in prefs]
    lines, totals = [], [0, 0]
    for axis in axes:
        personal = axis in prefs
        pole = prefs.get(axis, POPULATION_PRIOR.get(axis))
        scores = []
        for attrs in (a1, a2):
            if pole is None:  # nothing known, no prior: this axis does not decide
                scores.append(3)
                continue
            d = directional(attrs, axis, pole)
            scores.append(1 + int(round(4 * d)) if personal else 2 + int(round(2 * d)))
        totals[0] += scores[0]
        totals[1] += scores[1]
        if pole is None:
            reason = f"no known preference; Image 1 has {describe(a1, axis)}, Image 2 has {describe(a2, axis)}"
            lines.append(f"{DIMENSION_NAMES[axis]}: {reason} (Score 1: {scores[0]}, Score 2: {scores[1]})")
            continue
        who = "the user likes" if personal else "most people like"
        pole_word = {
            "warm": "warm colours",
            "cool": "cool colours",
            "bright": "bright light",
            "dark": "dark light",
            "sparse": "sparse layouts",
            "busy": "busy layouts",
        }[pole]
        reason = f"{who} {pole_word}; Image 1 has {describe(a1, axis)}, Image 2 has {describe(a2, axis)}"
        lines.append(f"{DIMENSION_NAMES[axis]}: {reason} (Score 1: {scores[0]}, Score 2: {scores[1]})")
    winner = 0 if totals[0] == totals[1] else (1 if totals[0] > totals[1] else 2)
    lines += [f"Score 1: {totals[0]}", f"Score 2: {totals[1]}", "Tie" if winner == 0 else f"Image {winner} is better"]
    return "\n".join(lines), winner


def parse_taste(spec: dict, where: str = "sandbox") -> SyntheticUser:
    """`{"prefs": {axis: pole}, "weights": {axis: w}}` -> `SyntheticUser`, validated."""
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
    return SyntheticUser(dict(prefs), {a: float(w) for a, w in weights.items()})
