"""A procedural toy world of simple scenes, their captions, and attributes measured from pixels.

A scene is a subject (drawn as a flat shape) plus one pole on each of three attribute axes:

- palette: `warm` (red / orange / yellow hues) or `cool` (teal / blue / purple hues),
- light: `bright` (light pastel background, strong objects) or `dark` (night-like background, dim objects),
- layout: `sparse` (one large subject) or `busy` (4-8 small copies of the subject plus clutter).

Everything here is pure numpy / PIL and deterministic given a seed. The tiny renderer in `localmodels.renderer` is
trained on `(caption(scene), draw_scene(scene))` pairs, and `image_attributes` measures the three axes from pixels
alone, so it can score renderer outputs as well as drawn scenes.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SUBJECTS: dict[str, str] = {
    "sun": "disc",
    "ball": "disc",
    "moon": "disc",
    "apple": "disc",
    "house": "square",
    "box": "square",
    "window": "square",
    "tree": "triangle",
    "mountain": "triangle",
    "tent": "triangle",
    "kite": "diamond",
    "gem": "diamond",
}
"""Subject words used in prompts, mapped to the shape kind that draws them."""

SHAPE_KINDS: tuple[str, ...] = ("disc", "square", "triangle", "diamond")

SUBJECT_GROUPS: dict[str, tuple[str, ...]] = {"round": ("disc",), "angular": ("square", "triangle", "diamond")}
"""Kinds of subject a taste can depend on, by the shape that draws them: round things (sun, ball, moon, apple) and
angular ones (the rest). A subject-dependent user prefers one pole on an axis for one group and the other pole for
the other group (`oracle.SyntheticUser.by_subject`), as a real person may like warm light on landscapes and cool on
products."""


def subject_group(subject: str) -> str:
    """The group of `SUBJECT_GROUPS` a subject word belongs to (`"sun"` -> `"round"`)."""
    if subject not in SUBJECTS:
        raise ValueError(f"Unknown subject {subject!r}; choose one of {sorted(SUBJECTS)}.")
    kind = SUBJECTS[subject]
    return next(group for group, kinds in SUBJECT_GROUPS.items() if kind in kinds)


AXES: dict[str, tuple[str, str]] = {
    "palette": ("warm", "cool"),
    "light": ("bright", "dark"),
    "layout": ("sparse", "busy"),
}
"""The attribute axes and their two poles (see `AXIS_ATTRIBUTES` for which pole a high score means)."""

STYLE_WORDS: dict[tuple[str, str], list[str]] = {
    ("palette", "warm"): ["warm", "golden", "sunset", "orange", "red", "amber"],
    ("palette", "cool"): ["cool", "icy", "blue", "teal", "wintry", "purple"],
    ("light", "bright"): ["bright", "sunny", "luminous", "pale", "radiant"],
    ("light", "dark"): ["dark", "night", "gloomy", "shadowy", "dim"],
    ("layout", "sparse"): ["minimal", "sparse", "single", "lone", "simple"],
    ("layout", "busy"): ["busy", "crowded", "many", "cluttered", "packed"],
}
"""Prompt words that select a pole, keyed by `(axis, pole)`. No word appears under two keys."""

AXIS_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "palette": ("warmth", "warm"),
    "light": ("brightness", "bright"),
    "layout": ("clutter", "busy"),
}
"""For each axis, the `image_attributes` key that measures it and the pole that a score of 1 means."""

# Hue ranges (fractions of the colour wheel) of each palette family. Warm: red through yellow (-7 to 54 degrees);
# cool: teal through purple (170 to 280 degrees). The gap between them keeps the families apart in pixels.
_HUE_RANGES: dict[str, tuple[float, float]] = {"warm": (-0.02, 0.15), "cool": (0.47, 0.78)}
_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down, so edges are anti-aliased like a real image


@dataclass(frozen=True)
class Scene:
    """One scene of the toy world.

    Args:
        subject (`str`): A key of `SUBJECTS`.
        palette (`str`): `"warm"` or `"cool"`.
        light (`str`): `"bright"` or `"dark"`.
        layout (`str`): `"sparse"` or `"busy"`.
        seed (`int`): Seed of the per-scene variation (hue jitter, sizes, positions, clutter).
    """

    subject: str
    palette: str
    light: str
    layout: str
    seed: int

    def __post_init__(self) -> None:
        if self.subject not in SUBJECTS:
            raise ValueError(f"Unknown subject {self.subject!r}; choose one of {sorted(SUBJECTS)}.")
        for axis, poles in AXES.items():
            if getattr(self, axis) not in poles:
                raise ValueError(f"Scene.{axis} must be one of {poles}, got {getattr(self, axis)!r}.")


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draws a scene uniformly: subject, each axis's pole, and a seed for the per-scene variation.

    Args:
        rng (`numpy.random.Generator`): Source of randomness; the same generator state gives the same scene.

    Returns:
        `Scene`: The sampled scene.
    """
    subjects = list(SUBJECTS)
    subject = subjects[int(rng.integers(len(subjects)))]
    poles = {axis: AXES[axis][int(rng.integers(2))] for axis in AXES}
    return Scene(subject=subject, seed=int(rng.integers(2**31 - 1)), **poles)


def _clip01(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)  # np.clip's value, without its cost on one number (drawing calls it ~20x)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h % 1.0, _clip01(s), _clip01(v))


def _rgb255(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in rgb)  # type: ignore[return-value]


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, size: float, fill: tuple) -> None:
    r = size / 2
    if kind == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "square":
        draw.rectangle([cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r], fill=fill)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=fill)
    elif kind == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)], fill=fill)
    else:
        raise ValueError(f"Unknown shape kind {kind!r}; expected one of {SHAPE_KINDS}.")


def draw_scene(scene: Scene, size: int = 32) -> Image.Image:
    """Draws a scene as an RGB image.

    The palette selects the hue family of background and objects, the light pole their luminance, and the layout
    one large subject (`sparse`) or 4-8 small copies plus clutter (`busy`). Hues, saturations, sizes and positions
    are jittered from `scene.seed`, so two scenes that differ only in seed look different.

    Args:
        scene (`Scene`): The scene to draw.
        size (`int`, *optional*, defaults to 32): Width and height of the output in pixels (at least 8).

    Returns:
        `PIL.Image.Image`: An RGB image of `size` x `size` pixels; the same scene always gives the same pixels.
    """
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}.")
    rng = np.random.default_rng(scene.seed)
    big = size * _SUPERSAMPLE
    lo, hi = _HUE_RANGES[scene.palette]
    base_hue = rng.uniform(lo, hi)

    def family_hue(spread: float) -> float:
        return min(max(float(base_hue + rng.uniform(-spread, spread)), lo), hi)

    if scene.light == "bright":
        bg_s, bg_v = rng.uniform(0.25, 0.5), rng.uniform(0.85, 1.0)
        obj_s, obj_v = (0.75, 1.0), (0.6, 0.9)
    else:
        bg_s, bg_v = rng.uniform(0.5, 0.9), rng.uniform(0.1, 0.22)
        obj_s, obj_v = (0.6, 1.0), (0.4, 0.62)

    # Background: a soft vertical gradient between two close colours of the family (no edges, so no clutter).
    top = np.array(_hsv(family_hue(0.03), bg_s, bg_v))
    bottom = np.array(_hsv(family_hue(0.03), bg_s + rng.uniform(-0.1, 0.1), bg_v * rng.uniform(0.85, 1.0)))
    t = np.linspace(0.0, 1.0, big)[:, None, None]
    column = np.uint8(np.round(255 * ((1 - t) * top + t * bottom)))  # one pixel per row: every row is one colour
    image = Image.fromarray(column, mode="RGB").resize((big, big), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)

    kind = SUBJECTS[scene.subject]
    subject_hue = family_hue(0.06)
    subject_fill = _rgb255(_hsv(subject_hue, rng.uniform(*obj_s), rng.uniform(*obj_v)))
    if scene.layout == "sparse":
        s = rng.uniform(0.45, 0.65) * big
        cx, cy = big / 2 + rng.uniform(-0.12, 0.12) * big, big / 2 + rng.uniform(-0.12, 0.12) * big
        _draw_shape(draw, kind, cx, cy, s, subject_fill)
    else:
        # Clutter first (small dots and strokes in other colours of the family), then the subject copies on top.
        for _ in range(int(rng.integers(6, 13))):
            fill = _rgb255(_hsv(family_hue(0.08), rng.uniform(*obj_s), rng.uniform(*obj_v) * rng.uniform(0.7, 1.2)))
            x, y = rng.uniform(0, big, size=2)
            if rng.random() < 0.5:
                r = rng.uniform(0.03, 0.06) * big
                draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
            else:
                dx, dy = rng.uniform(-0.15, 0.15, size=2) * big
                draw.line([x, y, x + dx, y + dy], fill=fill, width=max(1, int(0.03 * big)))
        for _ in range(int(rng.integers(4, 9))):
            s = rng.uniform(0.14, 0.22) * big
            cx, cy = rng.uniform(0.1, 0.9, size=2) * big
            _draw_shape(draw, kind, cx, cy, s, subject_fill)
    return image.resize((size, size), Image.Resampling.BOX)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(noun: str) -> str:
    return noun + "es" if noun.endswith(("x", "s", "sh", "ch")) else noun + "s"


def caption(scene: Scene, rng: np.random.Generator, p_style: float = 0.5) -> str:
    """Writes a short natural prompt for a scene, e.g. `"a golden minimal sun"` or `"many dark teal trees"`.

    Each axis's style word (drawn from `STYLE_WORDS`) is included independently with probability `p_style`. An
    omitted axis is left to chance in the image, so a renderer trained on these captions learns that an attribute
    nobody asked for is random.

    Args:
        scene (`Scene`): The scene the caption describes.
        rng (`numpy.random.Generator`): Source of randomness for word choice, word order and template.
        p_style (`float`, *optional*, defaults to 0.5): Probability of naming each axis's pole.

    Returns:
        `str`: The caption; it always names the subject.
    """
    if not 0.0 <= p_style <= 1.0:
        raise ValueError(f"p_style must be a probability in [0, 1], got {p_style}.")
    words = []
    for axis in AXES:
        if rng.random() < p_style:
            options = STYLE_WORDS[(axis, getattr(scene, axis))]
            words.append(options[int(rng.integers(len(options)))])
    many = "many" in words
    adjectives = [w for w in words if w != "many"]
    adjectives = [adjectives[i] for i in rng.permutation(len(adjectives))]
    template = int(rng.integers(4))
    if many:
        # "many" quantifies a plural noun: "many golden suns", "a picture of many golden suns".
        phrase = " ".join(["many", *adjectives, _plural(scene.subject)])
        return f"a picture of {phrase}" if template == 2 else phrase
    if template == 3 and adjectives:
        return f"{_article(scene.subject)} {scene.subject}, {', '.join(adjectives)}"
    phrase = " ".join([*adjectives, scene.subject])
    if template == 1:
        return phrase
    noun_phrase = f"{_article(phrase)} {phrase}"
    return f"a picture of {noun_phrase}" if template == 2 else noun_phrase


_WORD_POLE: dict[str, tuple[str, str]] = {w: key for key, ws in STYLE_WORDS.items() for w in ws}
_SUBJECT_FORMS: dict[str, str] = {**{s: s for s in SUBJECTS}, **{_plural(s): s for s in SUBJECTS}}


def parse_caption(text: str) -> dict[str, str | None]:
    """Reads which subject and which pole of each axis a text asks for, ignoring words it does not know.

    Args:
        text (`str`): Any prompt, e.g. `"A photo of many teal boxes at dusk!"`.

    Returns:
        `dict[str, str | None]`: Keys `"subject"` and each axis of `AXES`. The subject is the first subject word
        (singular or plural) in the text; an axis is a pole when the text names only that pole, and `None` when it
        names neither pole or both.
    """
    tokens = re.findall(r"[a-z]+", text.lower())
    subject = next((_SUBJECT_FORMS[t] for t in tokens if t in _SUBJECT_FORMS), None)
    named: dict[str, set[str]] = {axis: set() for axis in AXES}
    for t in tokens:
        if t in _WORD_POLE:
            axis, pole = _WORD_POLE[t]
            named[axis].add(pole)
    result: dict[str, str | None] = {"subject": subject}
    for axis, poles in named.items():
        result[axis] = next(iter(poles)) if len(poles) == 1 else None
    return result


# Edge density (see `image_attributes`) at which clutter is 0.5: the geometric mean of the typical drawn sparse
# (~0.15) and busy (~0.4) scene, so the two layouts fall on either side of 0.5.
_CLUTTER_MIDPOINT = 0.25


def image_attributes(image: Image.Image) -> dict[str, float]:
    """Measures the three attribute axes from pixels alone.

    The image is first resized to 32 x 32 (box filter), so images of any size are measured on the same scale.

    - `"warmth"`: mean of (R - B) divided by the mean chroma (max - min over RGB), squashed to [0, 1]. Dividing by
      chroma keeps dark and pale images, whose colours are weak, as separable as vivid ones; mapped linearly from
      [-1, 1] to [0, 1]. 1 = warm (red to yellow), 0 = blue; grey images score 0.5.
    - `"brightness"`: mean luminance (ITU-R 601 weights). 1 = bright.
    - `"clutter"`: mean absolute difference between neighbouring pixels divided by the image's standard deviation,
      i.e. edge density independent of contrast (a dim busy image has weak but many edges), squashed to [0, 1].
      1 = busy.

    Args:
        image (`PIL.Image.Image`): Any image; converted to RGB.

    Returns:
        `dict[str, float]`: `{"warmth": ..., "brightness": ..., "clutter": ...}`, each in [0, 1].
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (32, 32):
        image = image.resize((32, 32), Image.Resampling.BOX)
    x = np.asarray(image, dtype=np.float64) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    chroma = x.max(axis=-1) - x.min(axis=-1)
    ratio = (r - b).mean() / (chroma.mean() + 0.02)  # in (-1, 1): -1 = pure blue, +1 = red to yellow
    warmth = np.clip(0.5 + 0.5 * ratio, 0.0, 1.0)
    brightness = float((0.299 * r + 0.587 * g + 0.114 * b).mean())
    gradient = np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean()
    edge_density = gradient / (x.std(axis=(0, 1)).mean() + 0.02)
    clutter = edge_density / (edge_density + _CLUTTER_MIDPOINT)
    return {"warmth": float(warmth), "brightness": float(np.clip(brightness, 0, 1)), "clutter": float(clutter)}


def separation_auc(scores_first_pole: list[float], scores_second_pole: list[float]) -> float:
    """Probability that a random first-pole score exceeds a random second-pole score (ties count half).

    Args:
        scores_first_pole (`list[float]`): Attribute scores of items of the axis's first pole (e.g. warm).
        scores_second_pole (`list[float]`): Scores of items of the second pole (e.g. cool).

    Returns:
        `float`: The AUC in [0, 1]; 1 means perfectly separated in the expected direction.
    """
    a = np.asarray(scores_first_pole, dtype=np.float64)[:, None]
    b = np.asarray(scores_second_pole, dtype=np.float64)[None, :]
    if a.size == 0 or b.size == 0:
        raise ValueError("separation_auc needs at least one score for each pole.")
    return float((a > b).mean() + 0.5 * (a == b).mean())


# ----------------------------------------------------------------------------------------------------------------
# Prompts of real length: the language the renderer is trained to read and the warm-start rewriter writes
# ----------------------------------------------------------------------------------------------------------------

STYLE_PHRASES: dict[str, list[str]] = {
    "palette": ["{w}", "{w} colours", "in {w} tones", "{w} palette", "{w} hues", "painted in {w} colours"],
    "light": ["{w}", "{w} lighting", "in {w} light", "{w} atmosphere", "{w} sky", "{w} mood"],
    "layout": ["{w}", "{w} composition", "{w} layout", "{w} scene", "{w} framing"],
}
"""Natural phrasings of a style cue per axis; `{w}` is a word of `STYLE_WORDS` (the only word that carries the cue).
"many" reads "many {plural}" instead (see `style_phrase`)."""

FILLER_PHRASES: tuple[str, ...] = (
    "highly detailed",
    "digital art",
    "oil painting",
    "soft focus",
    "photograph",
    "cinematic",
    "wide angle",
    "close-up",
    "4k",
    "trending on artstation",
    "by the sea",
    "on a hill",
    "in a quiet village",
    "in a field",
    "at the edge of a forest",
    "with soft shadows",
    "seen from afar",
    "made of paper",
    "watercolor",
    "sharp lines",
    "a beautiful scene",
    "award winning",
    "masterpiece",
    "flat illustration",
    "in the center of the frame",
    "children's book illustration",
    "studio photo",
    "smooth gradients",
    "fine texture",
    "dreamlike",
    "peaceful",
    "elegant",
    "clean design",
    "high resolution",
    "concept art",
    "vector art",
    "on a table",
    "in the hills",
    "near a river",
    "from above",
    "in the distance",
    "realistic",
    "stylized",
    "intricate",
    "calm",
    "vivid",
    "matte finish",
    "low poly",
    "isometric view",
    "a postcard",
    "depth of field",
    "symmetrical",
    "by a lake",
    "in a garden",
    "over the rooftops",
    "in spring",
    "in autumn",
    "old",
    "new",
    "tiny",
    "huge",
    "wooden",
    "glass",
    "shiny",
    "soft",
    "round",
    "tall",
    "small",
    "little",
    "lovely",
    "quiet",
    "ancient",
    "modern",
)
"""Words and phrases that carry no style cue: image-prompt boilerplate the renderer must learn to ignore. None
contains a word of `STYLE_WORDS` or `SUBJECTS` (checked by a test)."""


def style_phrase(axis: str, pole: str, subject: str, rng: np.random.Generator) -> str:
    """One natural phrase naming `pole` of `axis`, e.g. `"in golden tones"`, `"dim lighting"`, `"many kites"`."""
    word = STYLE_WORDS[(axis, pole)][int(rng.integers(len(STYLE_WORDS[(axis, pole)])))]
    if word == "many":
        return f"many {_plural(subject)}"
    templates = STYLE_PHRASES[axis]
    return templates[int(rng.integers(len(templates)))].format(w=word)


def subject_phrase(subject: str, rng: np.random.Generator) -> str:
    """The subject as a prompt starts it: `"a sun"`, `"the sun"`, `"a picture of a sun"`, `"sun"`."""
    form = int(rng.integers(4))
    if form == 0:
        return f"{_article(subject)} {subject}"
    if form == 1:
        return f"the {subject}"
    if form == 2:
        return f"a picture of {_article(subject)} {subject}"
    return subject


def rich_caption(
    scene: Scene,
    rng: np.random.Generator,
    p_style: float = 0.7,
    max_fillers: int = 6,
    distractors: list[str] | None = None,
    p_distractor: float = 0.3,
) -> str:
    """A prompt of real length for a scene: the subject, style phrases and boilerplate in random order, commas between.

    `"the kite, highly detailed, by the sea, in golden tones, cinematic, dim lighting"`: each axis is named with
    probability `p_style` (by `style_phrase`), up to `max_fillers` phrases of `FILLER_PHRASES` and, each with
    probability `p_distractor`, words from `distractors` (e.g. random vocabulary words, which must name no style word
    or subject) are mixed in, and everything after the subject is shuffled, so a cue can stand anywhere. The subject
    comes first 70% of the time and later otherwise.

    Args:
        scene (`Scene`): The scene the prompt describes.
        rng (`numpy.random.Generator`): Source of randomness.
        p_style (`float`, *optional*, defaults to 0.7): Probability of naming each axis's pole.
        max_fillers (`int`, *optional*, defaults to 6): Most boilerplate phrases.
        distractors (`list[str]`, *optional*): Extra cue-free words to mix in.
        p_distractor (`float`, *optional*, defaults to 0.3): Probability of each of up to four distractor words.

    Returns:
        `str`: The prompt; it always names the subject.
    """
    if not 0.0 <= p_style <= 1.0:
        raise ValueError(f"p_style must be a probability in [0, 1], got {p_style}.")
    parts = [style_phrase(a, getattr(scene, a), scene.subject, rng) for a in AXES if rng.random() < p_style]
    n_fill = int(rng.integers(max_fillers + 1))
    parts += [FILLER_PHRASES[int(i)] for i in rng.choice(len(FILLER_PHRASES), size=n_fill, replace=False)]
    if distractors:
        parts += [distractors[int(rng.integers(len(distractors)))] for _ in range(4) if rng.random() < p_distractor]
    parts = [parts[i] for i in rng.permutation(len(parts))]
    head = subject_phrase(scene.subject, rng)
    position = 0 if rng.random() < 0.7 else int(rng.integers(len(parts) + 1))
    parts.insert(position, head)
    return ", ".join(parts)
