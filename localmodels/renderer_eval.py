"""Measuring the tiny renderer of `localmodels.renderer`: does a style word change what it draws?

`render` (a bare pipeline call, one generator per image), the pole prompts of each style axis, `evaluate_renderer`
(per axis, how well the measured attribute separates images rendered for its two poles), the same figure on drawn
scenes for reference (`drawn_scene_reference`), and a prompts x seeds image grid (`save_image_grid`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from localmodels.renderer import IMAGE_SIZE
from localmodels.world import (
    AXES,
    AXIS_ATTRIBUTES,
    FILLER_PHRASES,
    STYLE_WORDS,
    SUBJECTS,
    draw_scene,
    image_attributes,
    sample_scene,
    separation_auc,
    style_phrase,
)

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline
    from PIL import Image


def render(
    pipe: StableDiffusionPipeline,
    prompts: list[str],
    seeds: list[int],
    *,
    num_inference_steps: int = 15,
    guidance_scale: float = 4.0,
    batch_size: int = 16,
) -> list[Image.Image]:
    """Renders one image per prompt, each from its own seeded `torch.Generator`, in batches.

    Args:
        pipe (`StableDiffusionPipeline`): The pipeline.
        prompts (`list[str]`): Prompts, one image each.
        seeds (`list[int]`): One seed per prompt; the same (prompt, seed) gives the same image in any batch (up
            to a pixel level or two of floating-point rounding when the batch size changes).
        num_inference_steps (`int`, *optional*, defaults to 15): DDIM steps.
        guidance_scale (`float`, *optional*, defaults to 4.0): Classifier-free guidance scale.
        batch_size (`int`, *optional*, defaults to 16): Prompts per pipeline call.

    Returns:
        `list[PIL.Image.Image]`: The images, in prompt order.
    """
    import torch

    if len(prompts) != len(seeds):
        raise ValueError(f"Need one seed per prompt, got {len(prompts)} prompts and {len(seeds)} seeds.")
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        generators = [torch.Generator().manual_seed(s) for s in seeds[start : start + batch_size]]
        out = pipe(
            prompt=chunk,
            generator=generators,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
        )
        images.extend(out.images)
    return images


def pole_prompts(axis: str, pole: str, n: int) -> list[str]:
    """`n` prompts that name only `pole` of `axis`, cycling through its style words and the subjects.

    Args:
        axis (`str`): A key of `AXES`.
        pole (`str`): One of `AXES[axis]`.
        n (`int`): Number of prompts.

    Returns:
        `list[str]`: Prompts such as `"a golden house"`; for the word `"many"`, `"many houses"`.
    """
    words, subjects = STYLE_WORDS[(axis, pole)], list(SUBJECTS)
    prompts = []
    for i in range(n):
        word, subject = words[i % len(words)], subjects[(i * 5) % len(subjects)]
        if word == "many":
            prompts.append(f"many {subject}es" if subject.endswith("x") else f"many {subject}s")
        else:
            prompts.append(f"{'an' if word[0] in 'aeiou' else 'a'} {word} {subject}")
    return prompts


def prose_pole_prompts(axis: str, pole: str, n: int, seed: int = 0, late: bool = False) -> list[str]:
    """`n` prompts of real length that name only `pole` of `axis`, inside boilerplate and random-looking words.

    With `late`, the cue comes after at least 20 words of boilerplate (past the window of a renderer trained on
    short captions); otherwise it stands anywhere. The subject always comes first.
    """
    rng = np.random.default_rng(seed)
    words = ["glimmering", "harbour", "ceramic", "orchestra", "whisper", "velvet", "granite", "meadow", "lantern"]
    prompts = []
    subjects = list(SUBJECTS)
    for i in range(n):
        subject = subjects[(i * 5) % len(subjects)]
        cue = style_phrase(axis, pole, subject, rng)
        fill = [FILLER_PHRASES[int(j)] for j in rng.choice(len(FILLER_PHRASES), size=10, replace=False)]
        fill += [words[int(j)] for j in rng.choice(len(words), size=3, replace=False)]
        fill = [fill[j] for j in rng.permutation(len(fill))]
        if late:
            head, count = [], 0
            while count < 20 and fill:
                head.append(fill.pop())
                count += len(head[-1].split())
            parts = [*head, cue, *fill[:2]]
        else:
            parts = fill[:6]
            parts.insert(int(rng.integers(len(parts) + 1)), cue)
        prompts.append(", ".join([f"{'an' if subject[0] in 'aeiou' else 'a'} {subject}", *parts]))
    return prompts


def _timed_render(pipe: StableDiffusionPipeline, batch: int, repeats: int = 3, **kwargs: Any) -> float:
    # Median seconds of one pipeline call of `batch` images (after one warm-up call).
    prompts, seeds = ["a warm sun"] * batch, list(range(batch))
    render(pipe, prompts, seeds, batch_size=batch, **kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        render(pipe, prompts, seeds, batch_size=batch, **kwargs)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def evaluate_renderer(
    pipe: StableDiffusionPipeline,
    n_prompts: int = 32,
    seed: int = 0,
    *,
    num_inference_steps: int = 15,
    guidance_scale: float = 4.0,
    measure_speed: bool = True,
) -> dict[str, Any]:
    """Measures how well prompts control the image attributes, and how fast the pipeline renders.

    For every axis and pole, `n_prompts` prompts naming only that pole (see `pole_prompts`) are rendered with seeds
    `seed ... seed + n_prompts - 1` (the same seeds for both poles, so the comparison is paired), and measured with
    `world.image_attributes`. Prompts naming no style word are rendered too, as the baseline.

    Args:
        pipe (`StableDiffusionPipeline`): The pipeline to evaluate.
        n_prompts (`int`, *optional*, defaults to 32): Prompts (images) per pole.
        seed (`int`, *optional*, defaults to 0): First generator seed.
        num_inference_steps (`int`, *optional*, defaults to 15): DDIM steps.
        guidance_scale (`float`, *optional*, defaults to 4.0): Classifier-free guidance scale.
        measure_speed (`bool`, *optional*, defaults to `True`): Also time batches of 1 and 8 images (median of 3
            calls after a warm-up call).

    The same is measured with the cue inside prompts of real length (`prose_pole_prompts`): anywhere among
    boilerplate (`"prose_{axis}/auc"`) and after at least 20 words (`"late_{axis}/auc"`).

    Returns:
        `dict[str, Any]`: For each axis, `"{axis}/{attribute}/{pole}"` means, `"{axis}/separation"` (mean of the
        pole a high score means minus the other) and `"{axis}/auc"`, and the `prose_` and `late_` variants;
        `"baseline/{attribute}"` means for prompts
        without style words; `"render/seconds_batch1"`, `"render/seconds_batch8"`, `"render/images_per_second_batch8"`.
    """
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale}
    seeds = list(range(seed, seed + n_prompts))
    result: dict[str, Any] = {"n_prompts": n_prompts, **kwargs}
    prompt_sets = {
        "": lambda axis, pole: pole_prompts(axis, pole, n_prompts),
        "prose_": lambda axis, pole: prose_pole_prompts(axis, pole, n_prompts, seed),
        "late_": lambda axis, pole: prose_pole_prompts(axis, pole, n_prompts, seed, late=True),
    }
    for prefix, make in prompt_sets.items():
        for axis, (attribute, high_pole) in AXIS_ATTRIBUTES.items():
            scores = {}
            for pole in AXES[axis]:
                images = render(pipe, make(axis, pole), seeds, **kwargs)
                scores[pole] = [image_attributes(im)[attribute] for im in images]
                if not prefix:
                    result[f"{axis}/{attribute}/{pole}"] = round(float(np.mean(scores[pole])), 4)
            low_pole = next(p for p in AXES[axis] if p != high_pole)
            separation = float(np.mean(scores[high_pole]) - np.mean(scores[low_pole]))
            result[f"{prefix}{axis}/separation"] = round(separation, 4)
            result[f"{prefix}{axis}/auc"] = round(separation_auc(scores[high_pole], scores[low_pole]), 4)
    subjects = list(SUBJECTS)
    plain = [f"a {subjects[i % len(subjects)]}" for i in range(n_prompts)]
    plain_attributes = [image_attributes(im) for im in render(pipe, plain, seeds, **kwargs)]
    for attribute, _ in AXIS_ATTRIBUTES.values():
        result[f"baseline/{attribute}"] = round(float(np.mean([a[attribute] for a in plain_attributes])), 4)
    if measure_speed:
        result["render/seconds_batch1"] = round(_timed_render(pipe, 1, **kwargs), 4)
        result["render/seconds_batch8"] = round(_timed_render(pipe, 8, **kwargs), 4)
        result["render/images_per_second_batch8"] = round(8 / result["render/seconds_batch8"], 2)
    return result


def drawn_scene_reference(n: int = 1000, seed: int = 0) -> dict[str, float]:
    """The same per-pole attribute means as `evaluate_renderer`, measured on `n` drawn scenes (the target)."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    attributes = [image_attributes(draw_scene(s, IMAGE_SIZE)) for s in scenes]
    result = {}
    for axis, (attribute, high_pole) in AXIS_ATTRIBUTES.items():
        for pole in AXES[axis]:
            values = [a[attribute] for a, s in zip(attributes, scenes) if getattr(s, axis) == pole]
            result[f"{axis}/{attribute}/{pole}"] = round(float(np.mean(values)), 4)
        low_pole = next(p for p in AXES[axis] if p != high_pole)
        result[f"{axis}/separation"] = round(
            result[f"{axis}/{attribute}/{high_pole}"] - result[f"{axis}/{attribute}/{low_pole}"], 4
        )
    return result


GRID_PROMPTS = [
    "a sun",
    "a warm sun",
    "a cool sun",
    "a bright house",
    "a dark house",
    "a minimal tree",
    "a busy tree",
    "many kites",
    "a golden dark crowded gem",
    "an icy bright minimal mountain",
]


def save_image_grid(
    pipe: StableDiffusionPipeline,
    path: str | os.PathLike,
    prompts: list[str] | None = None,
    seeds: list[int] | None = None,
    *,
    scale: int = 3,
    **render_kwargs: Any,
) -> Path:
    """Renders prompts x seeds and saves them as one labelled PNG grid (a row per prompt) for a human to look at.

    Args:
        pipe (`StableDiffusionPipeline`): The pipeline.
        path (`str` or `os.PathLike`): Where to write the PNG.
        prompts (`list[str]`, *optional*): Row prompts; defaults to `GRID_PROMPTS`.
        seeds (`list[int]`, *optional*): Column seeds; defaults to `0 ... 7`.
        scale (`int`, *optional*, defaults to 3): Nearest-neighbour upscaling of each image.
        **render_kwargs: Passed to `render` (`num_inference_steps`, `guidance_scale`).

    Returns:
        `Path`: The written file.
    """
    from PIL import Image, ImageDraw

    prompts = GRID_PROMPTS if prompts is None else prompts
    seeds = list(range(8)) if seeds is None else seeds
    pipe.set_progress_bar_config(disable=True)
    images = render(pipe, [p for p in prompts for _ in seeds], [s for _ in prompts for s in seeds], **render_kwargs)
    cell, label_width = IMAGE_SIZE * scale, 230
    grid = Image.new("RGB", (label_width + cell * len(seeds), cell * len(prompts)), "white")
    draw = ImageDraw.Draw(grid)
    for row, prompt in enumerate(prompts):
        draw.text((4, row * cell + cell // 2 - 6), prompt, fill="black")
        for col in range(len(seeds)):
            image = images[row * len(seeds) + col].resize((cell, cell), Image.Resampling.NEAREST)
            grid.paste(image, (label_width + col * cell, row * cell))
    path = Path(path)
    grid.save(path)
    return path
