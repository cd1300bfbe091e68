"""Render prompts to images with a diffusers text-to-image pipeline, batched, one seed per image.

One seed per image is what makes rewards comparable: the original prompt's image and every rewrite's image of a group
are drawn from the same initial noise (common random numbers, as Flow-GRPO's `same_latent`), so the judge compares
the effect of the words, not the luck of the noise.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image


@dataclass
class RenderSettings:
    """Attributes:
    model: diffusers pipeline by hub id (e.g. `stabilityai/stable-diffusion-2-1-base`) or local folder.
    device: `"auto"`, `"cpu"`, `"cuda:1"`... (`"auto"`: see `common.devices`).
    dtype: `"auto"`, `"float32"`, `"float16"`, `"bfloat16"` (`"auto"`: see `common.devices`).
    num_inference_steps: denoising steps per image.
    guidance_scale: classifier-free guidance scale.
    height, width: output size in pixels (`None` = the pipeline's default).
    batch_size: images per pipeline call.
    cache_size: rendered (prompt, seed) images kept in memory (original prompts recur across steps).
    disk_cache: folder of the on-disk image cache shared by runs and processes (`rl.image_cache`); `None` = off.
    """

    model: str
    device: str = "auto"
    dtype: str = "auto"
    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    height: int | None = None
    width: int | None = None
    batch_size: int = 8
    cache_size: int = 256
    disk_cache: str | None = None


class Renderer:
    """Text-to-image rendering through `AutoPipelineForText2Image` (any Stable Diffusion family checkpoint)."""

    def __init__(self, settings: RenderSettings):
        import torch
        from diffusers import AutoPipelineForText2Image

        from common.devices import resolve_device, resolve_dtype
        from common.hub import load_kwargs

        if settings.batch_size < 1:
            raise ValueError(f"render batch_size must be >= 1, got {settings.batch_size}.")
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        self.settings, self.device, self._torch = settings, device, torch

        self.pipe = AutoPipelineForText2Image.from_pretrained(settings.model, dtype=dtype, **load_kwargs()).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self._cache: OrderedDict[tuple[str, int], Image.Image] = OrderedDict()
        self.disk = None
        if settings.disk_cache:
            import diffusers

            from rl.image_cache import ImageCache, model_fingerprint

            identity = {
                "model": settings.model,
                "weights": model_fingerprint(settings.model),
                "steps": settings.num_inference_steps,
                "guidance_scale": settings.guidance_scale,
                "size": [settings.height, settings.width],
                "dtype": str(dtype),
                "device": torch.device(device).type,  # CPU and GPU kernels do not give the same pixels
                "versions": [torch.__version__, diffusers.__version__],
            }
            self.disk = ImageCache(settings.disk_cache, identity)
        self.images_rendered = 0
        self.truncated = 0
        self.seconds = 0.0
        self._warned_truncation = False

    @classmethod
    def from_args(cls, args, device: str) -> Renderer:
        """The renderer a training config describes (`rl.config.PigArguments`'s render keys; `device` for "auto")."""
        return cls(
            RenderSettings(
                model=args.renderer_model,
                device=args.render_device if args.render_device != "auto" else device,
                dtype=args.render_dtype,
                num_inference_steps=args.render_steps,
                guidance_scale=args.guidance_scale,
                height=args.image_size,
                width=args.image_size,
                batch_size=args.render_batch_size,
                disk_cache=args.render_cache_dir.format(runs_dir=args.runs_dir) if args.render_cache_dir else None,
            )
        )

    def _count_truncated(self, prompts: list[str]) -> int:
        """How many prompts exceed the text encoder's window (the pipeline keeps only its first tokens)."""
        tokenizer = getattr(self.pipe, "tokenizer", None)
        limit = getattr(tokenizer, "model_max_length", None)
        if tokenizer is None or not limit or limit > 100_000:
            return 0
        n = sum(len(ids) > limit for ids in tokenizer(prompts)["input_ids"])
        if n and not self._warned_truncation:
            self._warned_truncation = True
            logging.getLogger(__name__).warning(
                "Some prompts are longer than the renderer's %d-token text window and are truncated by the pipeline "
                "(counted in render/truncated_fraction; a rewrite's words past the window cannot change its image).",
                limit,
            )
        return n

    def render(self, prompts: list[str], seeds: list[int], progress: str | None = None) -> list[Image.Image]:
        """One image per (prompt, seed); cached pairs are reused, the rest rendered `batch_size` at a time.

        `progress`: the label of a progress bar over the images to render (shown when there is more than one batch).
        """
        if len(prompts) != len(seeds):
            raise ValueError(f"render got {len(prompts)} prompts but {len(seeds)} seeds.")
        todo = list(dict.fromkeys(k for k in zip(prompts, seeds) if k not in self._cache))
        if self.disk is not None:  # images rendered before, by this or another run or process
            missing = []
            for key in todo:
                image = self.disk.get(*key)
                if image is None:
                    missing.append(key)
                else:
                    self._cache[key] = image
            todo = missing
        s = self.settings
        bar = None
        if progress and len(todo) > s.batch_size:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=progress, unit="image")
        for start in range(0, len(todo), s.batch_size):
            chunk = todo[start : start + s.batch_size]
            generators = [self._torch.Generator(device="cpu").manual_seed(seed) for _, seed in chunk]
            self.truncated += self._count_truncated([p for p, _ in chunk])
            began = time.perf_counter()
            pipeline_logger = logging.getLogger(type(self.pipe).__module__)
            level = pipeline_logger.level
            pipeline_logger.setLevel(logging.ERROR)  # its per-call truncation warning: counted above instead
            try:
                images = self.pipe(
                    prompt=[p for p, _ in chunk],
                    generator=generators,
                    num_inference_steps=s.num_inference_steps,
                    guidance_scale=s.guidance_scale,
                    height=s.height,
                    width=s.width,
                ).images
            finally:
                pipeline_logger.setLevel(level)
            self.seconds += time.perf_counter() - began
            self.images_rendered += len(chunk)
            for key, image in zip(chunk, images):
                self._cache[key] = image
                if self.disk is not None:
                    self.disk.put(*key, image)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        result = [self._cache[k] for k in zip(prompts, seeds)]
        for key in zip(prompts, seeds):
            self._cache.move_to_end(key)
        while len(self._cache) > max(s.cache_size, len(prompts)):
            self._cache.popitem(last=False)
        return result

    def pop_metrics(self) -> dict[str, float]:
        out = {"render/images": float(self.images_rendered)}
        if self.images_rendered:
            out["render/truncated_fraction"] = self.truncated / self.images_rendered
        if self.seconds:
            out["render/images_per_s"] = self.images_rendered / self.seconds
        self.images_rendered, self.truncated, self.seconds = 0, 0, 0.0
        if self.disk is not None:
            out.update(self.disk.pop_metrics())
        return out
