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
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from localmodels import world

# Dimension names the judge writes, per axis, and words that reveal an axis pole in a rationale.
DIMENSION_NAMES = {"palette": "Colour palette", "light": "Lighting", "layout": "Composition"}
# What a non-personal judge assumes (the "average user" likes bright images) and nothing more: a user whose taste lies
# elsewhere is served badly without a context, which is the point of personalization. It applies only when there is no
# context at all (recipe v8): a user's context is what is known of them, and an axis it does not name does not decide.
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
    """A user who prefers one pole on each of their active axes, with a weight per axis.

    Attributes:
        prefs: axis -> the pole preferred whatever the subject.
        weights: axis -> weight, over every axis of `prefs` and `by_subject`.
        by_subject: axis -> {group of `world.SUBJECT_GROUPS`: pole}, for a taste that depends on what is drawn (warm
            for round things, cool for angular ones); the two groups always ask for opposite poles.
    """

    prefs: dict[str, str]
    weights: dict[str, float]
    by_subject: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def sample(cls, rng: np.random.Generator, p_split: float = 0.0) -> SyntheticUser:
        """A random taste on one to three axes; with probability `p_split` its first axis depends on the subject.

        `p_split=0` draws exactly what it drew before subject-dependent users existed (no extra random number), so
        seeded datasets of uniform users are unchanged.
        """
        n = int(rng.choice([1, 2, 2, 3]))
        axes = [list(world.AXES)[i] for i in rng.permutation(len(world.AXES))[:n]]
        prefs = {a: world.AXES[a][int(rng.integers(2))] for a in axes}
        weights = {a: float(rng.uniform(0.6, 1.0)) for a in axes}
        by_subject = {}
        if p_split > 0 and rng.random() < p_split:
            axis = axes[0]
            pole = prefs.pop(axis)
            by_subject[axis] = {"round": pole, "angular": _opposite(axis, pole)}
        return cls(prefs, weights, by_subject)

    def poles(self, subject: str | None = None) -> dict[str, str]:
        """axis -> the pole this user prefers for `subject` (a subject word of `world.SUBJECTS`)."""
        if not self.by_subject:
            return dict(self.prefs)
        if subject is None:
            raise ValueError(
                f"This taste depends on the subject ({self.describe()}): pass the subject the image shows."
            )
        group = world.subject_group(subject)
        return {**self.prefs, **{axis: poles[group] for axis, poles in self.by_subject.items()}}

    def utility(self, attrs: dict[str, float], subject: str | None = None) -> float:
        poles = self.poles(subject)
        return sum(w * directional(attrs, a, poles[a]) for a, w in self.weights.items())

    def to_json(self) -> dict:
        """The `sandbox` entry of a `user.json` (read back by `parse_taste`)."""
        data = {"prefs": dict(self.prefs), "weights": dict(self.weights)}
        if self.by_subject:
            data["by_subject"] = {axis: dict(poles) for axis, poles in self.by_subject.items()}
        return data

    def describe(self) -> str:
        """`"warm palette (weight 1.00), sparse layout for round subjects and busy for angular ones (weight 0.80)"`."""
        parts = []
        for axis, w in self.weights.items():
            if axis in self.prefs:
                parts.append(f"{self.prefs[axis]} {axis} (weight {w:.2f})")
            else:
                groups = self.by_subject[axis]
                parts.append(
                    f"{groups['round']} {axis} for round subjects and {groups['angular']} for angular ones "
                    f"(weight {w:.2f})"
                )
        return ", ".join(parts)


def _opposite(axis: str, pole: str) -> str:
    first, second = world.AXES[axis]
    return second if pole == first else first


def make_reference(
    user: SyntheticUser,
    rng: np.random.Generator,
    size: int = 32,
    margin: float = 0.25,
    subject: str | None = None,
    focused: bool = False,
):
    """A (prompt, chosen, rejected, chosen_scene, rejected_scene) choice the user clearly makes (utility gap>=margin).

    Both images show the same subject (`subject`, or drawn at random); the prompt names only the subject (the user
    asked for "a sun", the styles differ), so the choice reveals taste, not prompt-following. `focused`: the two
    scenes take the same pole on every axis the user has no taste on (only the per-scene variation differs there), so
    the choice shows nothing the user did not choose on: no chance cue for the reasoner to write down.
    """
    for _ in range(1000):
        if subject is None:
            drawn = list(world.SUBJECTS)[int(rng.integers(len(world.SUBJECTS)))]
        else:
            drawn = subject
        scenes = [world.sample_scene(rng) for _ in range(2)]
        if focused:
            same = {a: getattr(scenes[0], a) for a in world.AXES if a not in user.weights}
            scenes[1] = world.Scene(**{**scenes[1].__dict__, **same})
        scenes = [world.Scene(drawn, s.palette, s.light, s.layout, s.seed) for s in scenes]
        images = [world.draw_scene(s, size) for s in scenes]
        utils = [user.utility(world.image_attributes(im), drawn) for im in images]
        if abs(utils[0] - utils[1]) >= margin:
            best = int(utils[1] > utils[0])
            prompt = world.caption(scenes[0], rng, p_style=0.0)
            return prompt, images[best], images[1 - best], scenes[best], scenes[1 - best]
    raise RuntimeError(f"No pair with a utility gap >= {margin} for {user} in 1000 draws; lower the margin.")


def balanced_subjects(n: int, rng: np.random.Generator) -> list[str]:
    """`n` subjects alternating between the groups of `world.SUBJECT_GROUPS` (each drawn at random in its group).

    A subject-dependent user's references are drawn this way so that each group has choices to read a taste from
    (round subjects are a third of the world's; drawn at random, eight references hold two or three of them).
    """
    groups = list(world.SUBJECT_GROUPS)
    members = {g: [s for s in world.SUBJECTS if world.subject_group(s) == g] for g in groups}
    start = int(rng.integers(len(groups)))
    picks = []
    for i in range(n):
        group = members[groups[(start + i) % len(groups)]]
        picks.append(group[int(rng.integers(len(group)))])
    return picks


def teacher_rationale(chosen: Image.Image, rejected: Image.Image, rng, subject: str | None = None) -> str:
    """What the reasoner should say about one choice: the one or two axes on which the images differ most, each
    credited to the pole of the chosen image, after a sentence naming the group of the subject the choice was about
    ("This choice was about a round subject.") when `subject` is given.

    Only what the pair shows is used (not the synthetic user's hidden taste), so the reasoner's task is learnable;
    an axis the user does not care about is named too when it differs, and the judge has to see through that noise
    across references, as a real context built from a few choices would require. Naming the subject's group lets a
    reader see a taste that depends on it (warm for round subjects, cool for angular ones) across choices.
    """
    a, b = world.image_attributes(chosen), world.image_attributes(rejected)
    gaps = {}
    for axis, (high, low) in world.AXES.items():
        gap = directional(a, axis, high) - directional(b, axis, high)
        gaps[axis] = (abs(gap), high if gap > 0 else low)
    ranked = sorted(gaps, key=lambda axis: gaps[axis][0], reverse=True)
    named = [axis for axis in ranked if gaps[axis][0] > 0.3][:2] or ranked[:1]
    text = " ".join(_RATIONALES[(axis, gaps[axis][1])][int(rng.integers(2))] for axis in named)
    if subject is None:
        return text
    group = world.subject_group(subject)
    return f"This choice was about {'an' if group[0] in 'aeiou' else 'a'} {group} subject. {text}"


def rationale_group(text: str) -> str | None:
    """The group of `world.SUBJECT_GROUPS` a rationale says its choice was about, or `None` when it names none."""
    lowered = text.lower()
    named = [g for g in world.SUBJECT_GROUPS if f"{g} subject" in lowered]
    return named[0] if len(named) == 1 else None


def _votes(rationales: list[str]) -> dict[tuple[str, str], int]:
    votes: dict[tuple[str, str], int] = {}
    for text in rationales:
        for sentence in re.split(r"(?<=[.!?])\s+", text.lower()):
            for axis, poles in world.AXES.items():
                hits = [(sentence.find(cue), pole) for pole in poles for cue in _CUES[(axis, pole)] if cue in sentence]
                if hits:
                    key = (axis, min(hits)[1])
                    votes[key] = votes.get(key, 0) + 1
    return votes


def _leading_poles(votes: dict[tuple[str, str], int], min_lead: int) -> dict[str, str]:
    prefs = {}
    for axis, (p, q) in world.AXES.items():
        vp, vq = votes.get((axis, p), 0), votes.get((axis, q), 0)
        if abs(vp - vq) >= min_lead:
            prefs[axis] = p if vp > vq else q
    return prefs


def context_reading(rationales: list[str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """What a context asks for: `(prefs whatever the subject, by_subject)`, the shape of `SyntheticUser`'s.

    In each sentence, the pole whose cue word comes first wins the axis ("bright images rather than dark ones" is a
    vote for bright). A pole is the user's when it leads the other by `min_lead` votes or more: by one in a context
    of one or two rationales, by two from three rationales on. A lead of one among several rationales (a 4-3 split,
    a lone mention) is what chance differences between a user's references produce: the shipped demo user's eight
    references split 4-3 on light, which demo does not care about, and a judge that took that as a taste rewarded
    light as much as the palette the user asked for in five of eight choices.

    An axis depends on the subject when the rationales about round subjects lead by two votes for one pole and those
    about angular subjects lead by two for the other (each rationale's group is the one it names, `rationale_group`);
    it is then left out of the first dict. Two votes in each group, not one, so that the chance splits of a uniform
    user's few references per group are not read as a subject-dependent taste.
    """
    min_lead = 1 if len(rationales) <= 2 else 2
    prefs = _leading_poles(_votes(rationales), min_lead)
    per_group = {
        group: _leading_poles(_votes([t for t in rationales if rationale_group(t) == group]), 2)
        for group in world.SUBJECT_GROUPS
    }
    by_subject = {}
    for axis in world.AXES:
        poles = {group: per_group[group].get(axis) for group in world.SUBJECT_GROUPS}
        if None not in poles.values() and len(set(poles.values())) == len(poles):
            by_subject[axis] = poles
            prefs.pop(axis, None)
    return prefs, by_subject


def read_context(rationales: list[str], subject: str | None = None) -> dict[str, str]:
    """axis -> pole a context asks for when judging an image of `subject` (see `context_reading`).

    Without `subject`, the axes that depend on the subject are left out.
    """
    prefs, by_subject = context_reading(rationales)
    if subject is None or not by_subject:
        return prefs
    group = world.subject_group(subject)
    return {**prefs, **{axis: poles[group] for axis, poles in by_subject.items()}}


def teacher_verdict(
    rationales: list[str],
    image_1: Image.Image,
    image_2: Image.Image,
    subject: str | None = None,
    prior_always: bool = False,
) -> tuple[str, int]:
    """The judge's answer in the paper's format, and the winner (1, 2 or 0 for a tie).

    One dimension per axis, the user's axes first. On an axis the context names, scores span 1-5 in the user's
    direction. Without any context the population prior applies, with a compressed 2-4 range; with a context, an axis
    it does not name scores 3 for both images (recipe v8: before, the prior paid for bright light whatever the
    context said, and policies of users indifferent to light learned to ask for it). An axis whose
    pole the context ties to the subject's group is judged by the pole of `subject`'s group, and its line says so
    ("for round subjects the user likes warm colours"). `prior_always`: recipes up to v7, the prior also scores the
    axes a context does not name (kept to measure what that rule cost, `benchmarks/judge_truth_by_nearest.py`).

    Raises:
        ValueError: the context's taste depends on the subject and `subject` is not given.
    """
    prefs, by_subject = context_reading(rationales)
    if by_subject and subject is None:
        raise ValueError("This context's taste depends on the subject: pass the subject of the prompt judged.")
    group = world.subject_group(subject) if by_subject else None
    poles = {**prefs, **{axis: groups[group] for axis, groups in by_subject.items()}}
    a1, a2 = world.image_attributes(image_1), world.image_attributes(image_2)
    axes = [a for a in world.AXES if a in poles] + [a for a in world.AXES if a not in poles]
    lines, totals = [], [0, 0]
    for axis in axes:
        personal = axis in poles
        pole = poles.get(axis, None if rationales and not prior_always else POPULATION_PRIOR.get(axis))
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
        if axis in by_subject:
            who = f"for {group} subjects the user likes"
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
    """`{"prefs": {axis: pole}, "weights": {axis: w}[, "by_subject": {axis: {group: pole}}]}` -> `SyntheticUser`.

    Raises:
        ValueError: naming the key, axis, pole or weight that is wrong, and what is expected.
    """
    if not isinstance(spec, dict) or not {"prefs", "weights"} <= set(spec) <= {"prefs", "weights", "by_subject"}:
        raise ValueError(
            f"{where}: expected the keys 'prefs' and 'weights' (and optionally 'by_subject'), got {spec!r}."
        )
    prefs, weights, by_subject = spec["prefs"], spec["weights"], spec.get("by_subject", {})
    if not isinstance(prefs, dict) or not isinstance(weights, dict) or not isinstance(by_subject, dict):
        raise ValueError(f"{where}: 'prefs', 'weights' and 'by_subject' must be objects.")
    if set(prefs) & set(by_subject):
        raise ValueError(f"{where}: {sorted(set(prefs) & set(by_subject))} is in both 'prefs' and 'by_subject'.")
    if not weights or set(weights) != set(prefs) | set(by_subject):
        raise ValueError(f"{where}: 'weights' must name exactly the axes of 'prefs' and 'by_subject' (at least one).")
    for axis, pole in prefs.items():
        if axis not in world.AXES or pole not in world.AXES[axis]:
            raise ValueError(f"{where}: {axis}={pole!r} is not an axis and pole of {world.AXES}.")
    groups = set(world.SUBJECT_GROUPS)
    for axis, poles in by_subject.items():
        if axis not in world.AXES or not isinstance(poles, dict) or set(poles) != groups:
            raise ValueError(
                f"{where}: by_subject.{axis} must be an axis of {sorted(world.AXES)} mapped to a pole for each of "
                f"{sorted(groups)}, got {poles!r}."
            )
        if any(pole not in world.AXES[axis] for pole in poles.values()) or len(set(poles.values())) != len(poles):
            raise ValueError(
                f"{where}: by_subject.{axis} must give the groups opposite poles of {world.AXES[axis]}, got {poles!r}."
            )
    for axis, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0:
            raise ValueError(f"{where}: weight of {axis} must be a positive number, got {w!r}.")
    return SyntheticUser(
        dict(prefs), {a: float(w) for a, w in weights.items()}, {a: dict(p) for a, p in by_subject.items()}
    )
