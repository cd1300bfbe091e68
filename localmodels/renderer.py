"""A tiny Stable-Diffusion-family text-to-image pipeline, built from configs and trained here on the toy world.

No diffusion weights can be downloaded on our machines (see docs/STACK.md), so the renderer used on CPU is a real
`diffusers.StableDiffusionPipeline` (AutoencoderKL + UNet2DConditionModel + CLIPTextModel + CLIP tokenizer + DDIM)
whose components are small, built from configs, and trained from scratch on `(caption(scene), draw_scene(scene))`
pairs from `localmodels.world`, so that style words in a prompt visibly change the image. It is saved with
`save_pretrained` and loads with `StableDiffusionPipeline.from_pretrained(path)` exactly like a real checkpoint.

Training is two phases, as for latent diffusion (https://arxiv.org/abs/2112.10752):

1. the autoencoder learns to map 32 x 32 RGB images to 8 x 8 x 4 latents and back;
2. the UNet and the text encoder learn the standard diffusion loss on those latents (v-prediction by default, see
   `build_tiny_pipeline`), with the caption dropped (replaced by `""`) 10% of the time so classifier-free guidance
   works (https://arxiv.org/abs/2207.12598).

Command line: `python -m localmodels.renderer --out DIR [--minutes M]` trains, evaluates, prints the figures and
writes an image grid (prompts x seeds) into DIR.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.util
import json
import math
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from localmodels.world import (
    AXES,
    AXIS_ATTRIBUTES,
    FILLER_PHRASES,
    STYLE_WORDS,
    SUBJECTS,
    Scene,
    caption,
    draw_scene,
    image_attributes,
    rich_caption,
    sample_scene,
    separation_auc,
    style_phrase,
)

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from PIL import Image
    from transformers import CLIPTokenizer

IMAGE_SIZE = 32
"""Side of the images the tiny pipeline renders and is trained on, in pixels."""

CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_BPE_ENV = "CLIP_BPE_PATH"
CLIP_BPE_CACHE = Path.home() / ".cache" / "localmodels"
_FETCH_HINT = (
    "The exact CLIP tokenizer is rebuilt from CLIP's BPE merges, which ship inside the open-clip-torch wheel. "
    f"Fetch the wheel without installing it:\n    pip download open-clip-torch==3.3.0 --no-deps -d {CLIP_BPE_CACHE}\n"
    f"or point {CLIP_BPE_ENV} (or the `bpe_path` argument) at a {CLIP_BPE_FILE} or an open_clip_torch wheel."
)


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------------


def find_clip_bpe(bpe_path: str | os.PathLike | None = None) -> Path:
    """Finds CLIP's BPE merges file (`bpe_simple_vocab_16e6.txt.gz`), or an open_clip_torch wheel holding it.

    Looked up in order: `bpe_path`; the `CLIP_BPE_PATH` environment variable; an installed `open_clip` package;
    `~/.cache/localmodels/` (a `.txt.gz` or an `open_clip_torch-*.whl` there).

    Args:
        bpe_path (`str` or `os.PathLike`, *optional*): A `.txt.gz` merges file or an open_clip_torch `.whl`.

    Returns:
        `Path`: The file to read the merges from.
    """
    for candidate, origin in ((bpe_path, "bpe_path"), (os.environ.get(CLIP_BPE_ENV), CLIP_BPE_ENV)):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"{origin}={str(candidate)!r} is not a file.\n{_FETCH_HINT}")
            return path
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / CLIP_BPE_FILE
        if path.is_file():
            return path
    if (CLIP_BPE_CACHE / CLIP_BPE_FILE).is_file():
        return CLIP_BPE_CACHE / CLIP_BPE_FILE
    wheels = sorted(CLIP_BPE_CACHE.glob("open_clip_torch-*.whl"))
    if wheels:
        return wheels[-1]
    raise FileNotFoundError(f"CLIP's BPE merges file was not found.\n{_FETCH_HINT}")


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's (and GPT-2's) reversible map from bytes to printable unicode characters, as in openai/CLIP.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def build_byte_level_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP tokenizer over CLIP's 512 byte-level symbols only (no merges, so one token per character).

    Always available (it needs no BPE file); its ids are not CLIP's. For tests, where CLIP's BPE file may be absent.

    Args:
        model_max_length (`int`, *optional*, defaults to 77): Length prompts are padded and truncated to (counted
            in characters plus 2 here).

    Returns:
        `transformers.CLIPTokenizer`: A fast tokenizer with the same special tokens as CLIP's.
    """
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=model_max_length)


def make_clip_tokenizer(
    kind: str, bpe_path: str | os.PathLike | None = None, model_max_length: int = 32
) -> tuple[CLIPTokenizer, str]:
    """`kind` `"clip"` (exact CLIP vocabulary; needs the BPE file), `"bytes"` (always available) or `"auto"` (`"clip"`
    when the BPE file is found). Returns the tokenizer and the kind actually built."""
    if kind not in ("auto", "clip", "bytes"):
        raise ValueError(f"tokenizer must be 'auto', 'clip' or 'bytes', got {kind!r}.")
    if kind == "auto":
        try:
            find_clip_bpe(bpe_path)
            kind = "clip"
        except FileNotFoundError:
            kind = "bytes"
    if kind == "clip":
        return build_clip_tokenizer(bpe_path, model_max_length=model_max_length), kind
    return build_byte_level_clip_tokenizer(model_max_length=model_max_length), kind


def build_clip_tokenizer(bpe_path: str | os.PathLike | None = None, model_max_length: int = 32) -> CLIPTokenizer:
    """Rebuilds the exact CLIP tokenizer (49,408 tokens, the ids of `openai/clip-vit-*`) offline.

    The vocabulary is derived from the merges as openai/CLIP's `SimpleTokenizer` does: the 256 byte characters,
    the same with the end-of-word marker `</w>`, one token per merge, then `<|startoftext|>` and `<|endoftext|>`.

    Args:
        bpe_path (`str` or `os.PathLike`, *optional*): See `find_clip_bpe`.
        model_max_length (`int`, *optional*, defaults to 32): Length prompts are padded and truncated to
            (Stable Diffusion uses 77; our prompts are short and a shorter context is cheaper on CPU).

    Returns:
        `transformers.CLIPTokenizer`: A fast tokenizer; `tokenizer("a photo of a cat").input_ids` is
        `[49406, 320, 1125, 539, 320, 2368, 49407]`, as with the original.
    """
    from transformers import CLIPTokenizer

    path = find_clip_bpe(bpe_path)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            member = f"open_clip/{CLIP_BPE_FILE}"
            if member not in wheel.namelist():
                raise FileNotFoundError(f"{path} holds no {member}; is it an open_clip_torch wheel?\n{_FETCH_HINT}")
            raw = wheel.read(member)
    else:
        raw = path.read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]  # the slice openai/CLIP uses
    byte_chars = list(_bytes_to_unicode().values())
    tokens = [*byte_chars, *(c + "</w>" for c in byte_chars), *("".join(m) for m in merges)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=model_max_length)


# ----------------------------------------------------------------------------------------------------------------
# The tiny pipeline
# ----------------------------------------------------------------------------------------------------------------


def build_tiny_pipeline(
    seed: int = 0,
    *,
    text_width: int = 64,
    text_layers: int = 2,
    unet_channels: tuple[int, ...] = (32, 64, 64),
    vae_channels: tuple[int, ...] = (16, 32, 64),
    model_max_length: int = 32,
    text_time_embedding: bool = True,
    prediction_type: str = "v_prediction",
    tokenizer: str = "clip",
    bpe_path: str | os.PathLike | None = None,
) -> StableDiffusionPipeline:
    """Builds a randomly initialised tiny `StableDiffusionPipeline` that renders 32 x 32 images on CPU.

    Components: an `AutoencoderKL` mapping 32 x 32 x 3 images to 8 x 8 x 4 latents (`len(vae_channels)` must be
    3: two downsamplings); a `UNet2DConditionModel` on those latents with cross-attention on the two coarser levels
    and the middle block (none at 8 x 8: it doubles the step time for little gain here); a `CLIPTextModel` over the
    exact CLIP vocabulary (see `build_clip_tokenizer`); a `DDIMScheduler` (DDPM's linear noise schedule, trailing
    timesteps).

    Args:
        seed (`int`, *optional*, defaults to 0): Seed of the weight initialisation (the global torch RNG is left
            untouched).
        text_width (`int`, *optional*, defaults to 64): Hidden size of the text encoder, and the UNet's
            cross-attention width.
        text_layers (`int`, *optional*, defaults to 2): Transformer layers of the text encoder.
        unet_channels (`tuple[int, ...]`, *optional*, defaults to `(32, 64, 64)`): Channels of the UNet's levels
            (8 x 8, 4 x 4, 2 x 2 latents); each must be a multiple of 16 (group norm).
        vae_channels (`tuple[int, ...]`, *optional*, defaults to `(16, 32, 64)`): Channels of the autoencoder's
            levels (32, 16, 8 pixels); each a multiple of 8.
        model_max_length (`int`, *optional*, defaults to 32): Tokens per prompt (padded / truncated). Real Stable
            Diffusion reads 77; with 77 this tiny model learned palette and light but not layout (AUC 0.59 short /
            0.63 in prose after 4000 steps, measured here: the pooled text embedding averages over a window that is
            mostly padding), with 32 it learned all three (0.95 / 0.74). The policy's rewrites are about 13 tokens;
            longer prompts are truncated and counted (`render/truncated_fraction`).
        text_time_embedding (`bool`, *optional*, defaults to `True`): Also condition the UNet on a pooled text
            embedding added to its timestep embedding (`addition_embed_type="text"`).
        prediction_type (`str`, *optional*, defaults to `"v_prediction"`): What the UNet predicts, written into the
            scheduler config: `"v_prediction"` (as Stable Diffusion 2) or `"epsilon"` (as Stable Diffusion 1).
            v-prediction learned the prompt's global attributes far sooner here: with epsilon, what the prompt
            decides at high noise is a tiny part of the target, so it barely moves the loss
            (https://arxiv.org/abs/2202.00512).
        tokenizer (`str`, *optional*, defaults to `"clip"`): `"clip"` (the exact CLIP tokenizer, see
            `build_clip_tokenizer`; needs CLIP's BPE file), `"bytes"` (`build_byte_level_clip_tokenizer`: always
            available, for tests) or `"auto"` (`"clip"` when the BPE file is found, else `"bytes"`).
        bpe_path (`str` or `os.PathLike`, *optional*): CLIP's BPE merges; see `find_clip_bpe`.

    Returns:
        `diffusers.StableDiffusionPipeline`: On CPU, in float32, with no safety checker.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if len(vae_channels) != 3:
        raise ValueError(f"vae_channels needs 3 levels (32 -> 8 pixel latents), got {vae_channels}.")
    if len(unet_channels) != 3 or any(c % 16 for c in unet_channels):
        raise ValueError(f"unet_channels needs 3 levels, each a multiple of 16, got {unet_channels}.")
    if text_width % 32:
        raise ValueError(f"text_width must be a multiple of 32 (heads of 32 dimensions), got {text_width}.")
    if prediction_type not in ("v_prediction", "epsilon"):
        raise ValueError(f"prediction_type must be 'v_prediction' or 'epsilon', got {prediction_type!r}.")
    text_tokenizer, tokenizer = make_clip_tokenizer(tokenizer, bpe_path, model_max_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=vae_channels,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=IMAGE_SIZE,
            mid_block_add_attention=False,  # attention at 8 x 8 buys nothing for flat shapes and costs time
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(text_tokenizer),
                hidden_size=text_width,
                intermediate_size=2 * text_width,
                num_hidden_layers=text_layers,
                num_attention_heads=text_width // 32,
                max_position_embeddings=model_max_length,
                bos_token_id=text_tokenizer.bos_token_id,
                eos_token_id=text_tokenizer.eos_token_id,
                pad_token_id=text_tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=IMAGE_SIZE // 4,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=unet_channels,
            layers_per_block=1,
            cross_attention_dim=text_width,
            # Legacy name: the number of attention *heads* per level (docs/STACK.md); heads of 32 channels.
            attention_head_dim=tuple(max(1, c // 32) for c in unet_channels),
            norm_num_groups=16,
            # A pooled text embedding added to the timestep embedding conditions every ResNet block, not only the
            # cross-attention layers: global attributes (palette, light) are learned much sooner (diffusers' "text"
            # addition embedding, as in DeepFloyd IF; computed inside the UNet, so the standard pipeline runs it).
            addition_embed_type="text" if text_time_embedding else None,
            addition_embed_type_num_heads=max(1, text_width // 32),
        )
    # DDPM's linear schedule (https://arxiv.org/abs/2006.11239, made for 32 x 32 images) rather than Stable
    # Diffusion's "scaled_linear", and "trailing" timesteps so sampling starts at t = 999. Both keep the signal left
    # at the first sampling step small (sqrt(alpha_bar) 0.006 instead of 0.1): otherwise the mean of the initial
    # noise over our 8 x 8 latents survives as the image's global colour and light, and the seed, not the prompt,
    # decides them (https://arxiv.org/abs/2305.08891). `steps_offset=1` silences diffusers' warning.
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="trailing",
        prediction_type=prediction_type,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=text_tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def count_parameters(pipe: StableDiffusionPipeline) -> dict[str, int]:
    """Parameters per trainable component of a pipeline: `{"vae": ..., "unet": ..., "text_encoder": ...}`."""
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("vae", "unet", "text_encoder")}


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def _images_to_tensor(images: list[Image.Image]) -> torch.Tensor:
    import torch

    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _run_phase(
    name: str,
    step_fn: Callable[[], float],
    optimizers: list[torch.optim.Optimizer],
    *,
    steps: int,
    budget_s: float,
    peak_lr: float,
    warmup: int,
    progress: bool,
) -> dict[str, Any]:
    """Runs `step_fn` (one optimisation step, returns its loss) `steps` times under a wall-clock budget.

    The learning rate warms up linearly for `warmup` steps, then follows a cosine from the peak to 10% of it over
    the phase, by step count, so a run is deterministic. If the machine is slower than planned (more than 5% of
    the budget behind), the phase switches for good to `max(step / steps, elapsed / budget_s)` as its progress:
    the schedule still anneals and the phase ends on time with fewer steps, reported as `{name}_time_limited`
    (such a run is no longer bit-exact). The margin keeps the slow first steps of a normal run from triggering it;
    the budget is a hard stop either way.
    """
    from tqdm.auto import tqdm

    if steps < 1:
        raise ValueError(f"{name}_steps must be positive, got {steps}.")
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=name, disable=not progress, dynamic_ncols=True)
    step, smoothed, time_limited = 0, float("nan"), False
    while True:
        done, time_done = step / steps, (time.perf_counter() - start) / budget_s
        time_limited = time_limited or time_done > done + 0.05 or (time_done >= 1.0 and done < 1.0)
        if time_limited:
            done = max(done, time_done)
        if done >= 1.0:
            break
        lr = peak_lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1.0 + math.cos(math.pi * done)))
        for group in (g for optimizer in optimizers for g in optimizer.param_groups):
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss = step_fn()
        smoothed = loss if step == 0 else 0.98 * smoothed + 0.02 * loss
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{smoothed:.4f}", lr=f"{lr:.1e}", refresh=False)
    bar.close()
    return {
        f"{name}_steps": step,
        f"{name}_seconds": round(time.perf_counter() - start, 1),
        f"{name}_time_limited": time_limited,
        f"{name}_final_loss": round(smoothed, 5),
    }


def train_autoencoder(
    vae: AutoencoderKL,
    images: torch.Tensor,
    *,
    steps: int,
    budget_s: float,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    edge_weight: float = 1.0,
    generator: torch.Generator,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the pipeline's autoencoder to reconstruct `images`, then sets its `scaling_factor`.

    Trained as a near-deterministic autoencoder: the decoder sees the posterior mean, and a tiny KL term only keeps
    the latents bounded; their scale is normalised afterwards through `scaling_factor` (1 / std of the latents), as
    Stable Diffusion does. Loss: MSE + L1 in [-1, 1] pixel space (L1 keeps the small shapes of busy scenes sharper)
    + `edge_weight` x L1 between the images' neighbouring-pixel differences. Without that edge term the
    reconstructions of flat sparse scenes carried faint ripples that raised their measured clutter from 0.37 to 0.49
    (busy: 0.61 to 0.62), blurring the layout axis for every model downstream; with it, 0.43 (2500 steps, 200
    drawn scenes, measured here).

    Args:
        vae (`AutoencoderKL`): Trained in place.
        images (`torch.Tensor`): `(N, 3, H, W)` in [-1, 1].
        steps (`int`): Optimisation steps.
        budget_s (`float`): Wall-clock budget in seconds (see `_run_phase`).
        batch_size (`int`, *optional*, defaults to 16): Images per step (small batches and more steps learned
            faster here than large ones in the same time).
        learning_rate (`float`, *optional*, defaults to 3e-3): Peak AdamW learning rate.
        edge_weight (`float`, *optional*, defaults to 1.0): Weight of the edge term (0 leaves it out).
        generator (`torch.Generator`): Draws the batches.
        progress (`bool`, *optional*, defaults to `True`): Show a progress bar.

    Returns:
        `dict[str, Any]`: `vae_steps`, `vae_seconds`, `vae_time_limited`, `vae_final_loss`, `latent_scaling_factor`.
    """
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate, weight_decay=0.0, fused=True)

    def step_fn() -> float:
        x = images[torch.randint(0, len(images), (batch_size,), generator=generator)]
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.mode()).sample
        recon_loss = F.mse_loss(reconstruction, x) + F.l1_loss(reconstruction, x)
        if edge_weight:
            for dim in (-2, -1):
                recon_loss = recon_loss + edge_weight * F.l1_loss(reconstruction.diff(dim=dim), x.diff(dim=dim))
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        optimizer.zero_grad(set_to_none=True)
        (recon_loss + 1e-6 * kl).backward()
        optimizer.step()
        return recon_loss.item()

    vae.train()
    report = _run_phase(
        "vae",
        step_fn,
        [optimizer],
        steps=steps,
        budget_s=budget_s,
        peak_lr=learning_rate,
        warmup=50,
        progress=progress,
    )
    vae.eval().requires_grad_(False)
    latents = encode_images(vae, images, scaled=False)
    scaling_factor = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    report["latent_scaling_factor"] = round(scaling_factor, 5)
    return report


def encode_images(vae: AutoencoderKL, images: torch.Tensor, *, scaled: bool = True) -> torch.Tensor:
    """Posterior means of `images` (`(N, 3, H, W)` in [-1, 1]), times `scaling_factor` when `scaled`."""
    import torch

    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in images.split(512)])
    return latents * vae.config.scaling_factor if scaled else latents


def train_denoiser(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    scenes: list[Scene],
    *,
    steps: int,
    budget_s: float,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    p_style: float = 0.7,
    cfg_dropout: float = 0.1,
    p_rich: float = 0.65,
    short_fraction: float = 0.5,
    train_text_encoder: bool = True,
    text_encoder_lr_scale: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    phase: str = "unet",
) -> dict[str, Any]:
    """Trains the pipeline's UNet (and optionally its text encoder) with the diffusion loss on scaled latents.

    The target is what the pipeline's scheduler says the UNet predicts (`prediction_type`): the noise (`epsilon`)
    or the velocity (`v_prediction`, https://arxiv.org/abs/2202.00512); the loss is the plain MSE to it.

    Every time a scene is drawn into a batch it gets a fresh caption (`world.caption`, each axis named with
    probability `p_style`), or, with probability `cfg_dropout`, the empty prompt that classifier-free guidance uses
    as its unconditional branch. Captions are tokenized exactly as the pipeline does at inference.

    Args:
        pipe (`StableDiffusionPipeline`): Its `unet` and `text_encoder` are trained in place.
        latents (`torch.Tensor`): `(N, 4, 8, 8)` scaled latents of the scenes.
        scenes (`list[Scene]`): The `N` scenes, for captions.
        steps (`int`): Optimisation steps.
        budget_s (`float`): Wall-clock budget in seconds (see `_run_phase`).
        batch_size (`int`, *optional*, defaults to 32): Latents per step (32 learned faster than 64 for the same
            compute here: the step is compute-bound, so half the batch gives twice the steps).
        learning_rate (`float`, *optional*, defaults to 1e-3): Peak AdamW learning rate.
        p_style (`float`, *optional*, defaults to 0.7): Probability that a caption names each axis's pole (higher
            than `caption`'s default: more captions carry a signal, and 30% still leave each axis to chance).
        cfg_dropout (`float`, *optional*, defaults to 0.1): Probability of the empty prompt.
        p_rich (`float`, *optional*, defaults to 0.65): Probability that a caption is a prompt of real length
            (`world.rich_caption`: style cues anywhere among boilerplate phrases and random vocabulary words) rather
            than a short toy caption. Trained on short captions alone, the renderer read a style word only in the
            first few positions and drew policy prose as the same unstyled blob (issue 8). The first
            `short_fraction` of the steps use short captions only, then `p_rich` ramps up over the next tenth: with
            rich captions from the start, palette and light were learned but layout was not at all (AUC 0.47 after
            4000 steps, measured here); learned first on short captions, the layout words keep their meaning.
        short_fraction (`float`, *optional*, defaults to 0.5): Share of the steps trained on short captions only.
        train_text_encoder (`bool`, *optional*, defaults to `True`): Also train the text encoder.
        text_encoder_lr_scale (`float`, *optional*, defaults to 0.1): Its learning rate, relative to the UNet's.
            At the full rate the text encoder spent its output (fixed in norm by its final LayerNorm) on the words
            learned first (palette, light) and squeezed the layout words to near-identical outputs, so the UNet
            never learned layout; frozen, it kept every word distinct but palette was learned slowly. A tenth of
            the rate learned all three axes in the same number of steps (measured here).
        seed (`int`, *optional*, defaults to 0): Seed of batches, noise, timesteps and captions.
        progress (`bool`, *optional*, defaults to `True`): Show a progress bar.
        phase (`str`, *optional*, defaults to `"unet"`): Name of the phase in the progress bar and the report keys.

    Returns:
        `dict[str, Any]`: `{phase}_steps`, `{phase}_seconds`, `{phase}_time_limited`, `{phase}_final_loss`.
    """
    import torch
    import torch.nn.functional as F

    if len(latents) != len(scenes):
        raise ValueError(f"Need one scene per latent, got {len(latents)} latents and {len(scenes)} scenes.")
    unet, text_encoder, tokenizer, scheduler = pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler
    prediction_type = scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"Unsupported prediction_type {prediction_type!r}; use 'epsilon' or 'v_prediction'.")
    generator = torch.Generator().manual_seed(seed)
    caption_rng = np.random.default_rng(seed)
    distractors = distractor_words(tokenizer)
    params = list(unet.parameters())
    # fused=True: one kernel for the whole update, 2.5 ms instead of 12 ms a step on CPU (measured here).
    optimizers = [torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0, fused=True)]
    embedding = text_encoder.get_input_embeddings()
    if train_text_encoder:
        # The 49,408 x width token embedding is most of the text encoder and a batch uses a few dozen of its rows:
        # sparse gradients and SparseAdam update only those rows (a dense AdamW update of it cost ~10% of a step).
        embedding.sparse = True
        dense = [p for p in text_encoder.parameters() if p is not embedding.weight]
        params += dense
        optimizers[0].add_param_group({"params": dense, "lr_scale": text_encoder_lr_scale})
        optimizers.append(torch.optim.SparseAdam([embedding.weight], lr=learning_rate))
        optimizers[-1].param_groups[0]["lr_scale"] = text_encoder_lr_scale
    text_encoder.train(train_text_encoder).requires_grad_(train_text_encoder)

    step_count = [0]

    def step_fn() -> float:
        index = torch.randint(0, len(latents), (batch_size,), generator=generator)
        progress_done = step_count[0] / steps
        rich = p_rich * min(1.0, max(0.0, (progress_done - short_fraction) / 0.1))
        step_count[0] += 1
        texts = [
            _training_caption(scenes[i], caption_rng, p_style, cfg_dropout, rich, distractors) for i in index.tolist()
        ]
        input_ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        with torch.set_grad_enabled(train_text_encoder):
            hidden = text_encoder(input_ids)[0]
        z0 = latents[index]
        noise = torch.randn(z0.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        prediction = unet(scheduler.add_noise(z0, noise, timesteps), timesteps, hidden).sample
        target = noise if prediction_type == "epsilon" else scheduler.get_velocity(z0, noise, timesteps)
        loss = F.mse_loss(prediction, target)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for optimizer in optimizers:
            optimizer.step()
        return loss.item()

    unet.train()
    report = _run_phase(
        phase,
        step_fn,
        optimizers,
        steps=steps,
        budget_s=budget_s,
        peak_lr=learning_rate,
        warmup=100,
        progress=progress,
    )
    embedding.sparse = False
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return report


def distractor_words(tokenizer) -> list[str]:
    """Whole words of the tokenizer's vocabulary that name no style pole and no subject: noise to learn to ignore.

    A real text-to-image model has seen every word and learned which ones matter; ours sees these random words mixed
    into its captions so that a word it has no use for changes nothing. Empty for a byte-level tokenizer.
    """
    banned = {w for words in STYLE_WORDS.values() for w in words} | set(SUBJECTS)
    banned |= {s + "s" for s in SUBJECTS} | {s + "es" for s in SUBJECTS}
    words = []
    for token in tokenizer.get_vocab():
        word = token[:-4] if token.endswith("</w>") else None
        if word and word.isascii() and word.isalpha() and 3 <= len(word) <= 10 and word not in banned:
            words.append(word)
    return sorted(words)


def _training_caption(scene, rng, p_style: float, cfg_dropout: float, p_rich: float, distractors: list[str]) -> str:
    if rng.random() < cfg_dropout:
        return ""
    if rng.random() < p_rich:
        return rich_caption(scene, rng, p_style, distractors=distractors)
    return caption(scene, rng, p_style)


def train_renderer(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    max_minutes: float | None = None,
    progress: bool = True,
    num_scenes: int = 12_000,
    vae_steps: int = 2500,
    unet_steps: int = 4000,
    unet_learning_rate: float = 1e-3,
    vae_fraction: float = 0.25,
    num_threads: int | None = 1,
    overwrite: bool = False,
    bpe_path: str | os.PathLike | None = None,
    model_max_length: int = 32,
    short_fraction: float = 0.5,
    refine_steps: int = 1500,
) -> dict[str, Any]:
    """Trains the tiny pipeline on the toy world and saves it with `save_pretrained(out_dir)`.

    Phases: draw `num_scenes` scenes; train the autoencoder (`train_autoencoder`); encode the scenes; train the UNet
    and text encoder (`train_denoiser`), first on short captions then on a mix with prompts of real length; refine
    them on prompts of real length (a second `train_denoiser` phase at a lower rate); save. The model is saved into
    a temporary folder beside `out_dir` and renamed into place at the end, so an interrupted run leaves no
    half-written model at `out_dir`.

    Determinism and time: by default (`max_minutes=None`) the run is defined by its steps and seeds alone, so every
    machine builds the same model (one thread keeps the floating-point results identical too). With a
    `max_minutes` budget, a phase that falls behind switches to wall-time progress and stops on time with fewer
    steps (reported as `*_time_limited`); such a model depends on the machine's speed.

    Args:
        out_dir (`str` or `os.PathLike`): Folder for the pipeline (`model_index.json`, `unet/`, `vae/`, ...).
        seed (`int`, *optional*, defaults to 0): Seed of everything random.
        max_minutes (`float`, *optional*): Wall-clock budget of the whole training, in minutes (`None`: no cap).
        progress (`bool`, *optional*, defaults to `True`): Show tqdm progress bars.
        num_scenes (`int`, *optional*, defaults to 12000): Distinct scenes drawn for training (each gets a fresh
            caption every time it is used).
        vae_steps (`int`, *optional*, defaults to 2500): Autoencoder steps (batch 16). The autoencoder bounds how
            far apart the renderer can draw the two layouts: after 700 steps its reconstructions of sparse scenes
            carried so much high-frequency noise that their measured clutter rose from 0.37 to 0.52 (busy: 0.61),
            so a sparse and a busy render differed by 0.08 in clutter where drawn scenes differ by 0.24.
        unet_steps (`int`, *optional*, defaults to 4000): UNet + text-encoder steps (batch 32).
        unet_learning_rate (`float`, *optional*, defaults to 1e-3): Peak learning rate of the UNet (the text
            encoder's is a tenth of it, see `train_denoiser`).
        vae_fraction (`float`, *optional*, defaults to 0.25): Share of the training time budget the autoencoder may
            use; the UNet gets the rest.
        num_threads (`int`, *optional*, defaults to 1): torch intra-op threads while training (restored after);
            `None` leaves torch's setting. One thread: on our 2 shared cores it was the fastest (0.2 s per UNet
            step, against 0.3 s for two threads with `OMP_WAIT_POLICY=PASSIVE` and 10 s with spinning OpenMP
            waits), and the same thread count on every machine keeps the floating-point results identical.
        overwrite (`bool`, *optional*, defaults to `False`): Replace an existing `out_dir`.
        bpe_path (`str` or `os.PathLike`, *optional*): CLIP's BPE merges; see `find_clip_bpe`.
        model_max_length (`int`, *optional*, defaults to 32): The text window, in tokens (see `build_tiny_pipeline`).
        short_fraction (`float`, *optional*, defaults to 0.5): Share of UNet steps on short captions only (see
            `train_denoiser`).
        refine_steps (`int`, *optional*, defaults to 1500): Steps of the refining phase (90% prompts of real length,
            a third of the UNet's peak rate; 0 skips it). On the 700-step autoencoder it raised the layout AUC in
            prose from 0.74 to 0.84 (short captions: 0.95 to 0.99) with palette and light kept at 1.0; the whole
            recipe reaches 0.97 in prose (measured here, 32 prompts per pole).

    Returns:
        `dict[str, Any]`: Measured figures (steps, seconds, final losses and whether time limited each phase,
        parameter counts, latent scaling factor, total seconds); also written to `out_dir/training_report.json`.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass overwrite=True (--overwrite) to replace it.")
    if not 0.0 < vae_fraction < 1.0:
        raise ValueError(f"vae_fraction must be in (0, 1), got {vae_fraction}.")
    if max_minutes is not None and max_minutes <= 0:
        raise ValueError(f"max_minutes must be positive, got {max_minutes}.")
    if refine_steps < 0:
        raise ValueError(f"refine_steps must be 0 (no refining) or positive, got {refine_steps}.")
    with _torch_threads(num_threads):
        return _train_and_save(
            out_dir,
            seed=seed,
            max_minutes=max_minutes,
            progress=progress,
            num_scenes=num_scenes,
            vae_steps=vae_steps,
            unet_steps=unet_steps,
            unet_learning_rate=unet_learning_rate,
            vae_fraction=vae_fraction,
            bpe_path=bpe_path,
            t0=t0,
            model_max_length=model_max_length,
            short_fraction=short_fraction,
            refine_steps=refine_steps,
        )


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_and_save(
    out_dir: Path,
    *,
    seed: int,
    max_minutes: float | None,
    progress: bool,
    num_scenes: int,
    vae_steps: int,
    unet_steps: int,
    unet_learning_rate: float,
    vae_fraction: float,
    bpe_path: str | os.PathLike | None,
    t0: float,
    model_max_length: int,
    short_fraction: float,
    refine_steps: int,
) -> dict[str, Any]:
    # The body of `train_renderer`, after its argument checks.
    import torch

    torch.manual_seed(seed)
    pipe = build_tiny_pipeline(seed, bpe_path=bpe_path, model_max_length=model_max_length)
    report: dict[str, Any] = {"seed": seed, "max_minutes": max_minutes, "num_scenes": num_scenes}
    report["parameters"] = count_parameters(pipe)

    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(num_scenes)]
    images = _images_to_tensor([draw_scene(s, IMAGE_SIZE) for s in scenes])
    report["data_seconds"] = round(time.perf_counter() - t0, 1)

    save_reserve_s = 10.0  # encoding the scenes and saving
    budget_s = math.inf if max_minutes is None else 60.0 * max_minutes
    remaining = budget_s - (time.perf_counter() - t0) - save_reserve_s
    generator = torch.Generator().manual_seed(seed)
    report.update(
        train_autoencoder(
            pipe.vae,
            images,
            steps=vae_steps,
            budget_s=vae_fraction * remaining,
            generator=generator,
            progress=progress,
        )
    )
    latents = encode_images(pipe.vae, images)
    del images
    remaining = budget_s - (time.perf_counter() - t0) - save_reserve_s
    report.update(
        train_denoiser(
            pipe,
            latents,
            scenes,
            steps=unet_steps,
            budget_s=remaining * unet_steps / (unet_steps + refine_steps),
            learning_rate=unet_learning_rate,
            short_fraction=short_fraction,
            seed=seed,
            progress=progress,
        )
    )
    if refine_steps > 0:
        remaining = budget_s - (time.perf_counter() - t0) - save_reserve_s
        report.update(
            train_denoiser(
                pipe,
                latents,
                scenes,
                steps=refine_steps,
                budget_s=remaining,
                learning_rate=unet_learning_rate * 0.3,
                p_rich=0.9,
                short_fraction=0.0,
                seed=seed + 1,
                progress=progress,
                phase="refine",
            )
        )

    # Save beside out_dir, then rename: an interrupted run leaves at most a hidden temporary folder.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{time.time_ns()}")
    tmp_dir.mkdir()  # (not tempfile.mkdtemp: its 0700 mode would end up on the model folder)
    try:
        pipe.save_pretrained(tmp_dir)
        report["train_seconds"] = round(time.perf_counter() - t0, 1)
        (tmp_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{time.time_ns()}")
            out_dir.rename(old)
            tmp_dir.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp_dir.rename(out_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return report


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: train, evaluate, print the figures as JSON, and save an image grid into `--out`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="Folder for the trained pipeline (save_pretrained layout).")
    parser.add_argument("--minutes", type=float, default=None, help="Optional wall-clock cap, in minutes.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of initialisation, data and noise.")
    # Training defaults are `train_renderer`'s (one source): a flag left out is not passed on.
    parser.add_argument("--vae-steps", type=int, help="Autoencoder steps (batch 16; default 2500).")
    parser.add_argument("--unet-steps", type=int, help="UNet + text-encoder steps (batch 32; default 4000).")
    parser.add_argument("--refine-steps", type=int, help="Steps refining on prompts of real length (default 1500).")
    parser.add_argument("--unet-lr", type=float, help="Peak learning rate of the UNet (default 1e-3).")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for training and evaluation (1: fastest on 2 shared cores).",
    )
    parser.add_argument("--max-length", type=int, help="Text window in tokens (default 32).")
    parser.add_argument("--short-fraction", type=float, help="Share of UNet steps on short captions (default 0.5).")
    parser.add_argument("--eval-prompts", type=int, default=32, help="Evaluation prompts (images) per pole.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --out folder.")
    args = parser.parse_args(argv)

    # OpenMP threads that spin while waiting are ruinous on a shared machine: with 2 threads on 2 cores that another
    # process also uses, a UNet step took 7 s instead of 0.5 s (measured here). Only effective before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from diffusers import StableDiffusionPipeline

    optional = {
        "vae_steps": args.vae_steps,
        "unet_steps": args.unet_steps,
        "refine_steps": args.refine_steps,
        "unet_learning_rate": args.unet_lr,
        "model_max_length": args.max_length,
        "short_fraction": args.short_fraction,
    }
    training = train_renderer(
        args.out,
        seed=args.seed,
        max_minutes=args.minutes,
        num_threads=args.threads,
        overwrite=args.overwrite,
        **{k: v for k, v in optional.items() if v is not None},
    )
    pipe = StableDiffusionPipeline.from_pretrained(args.out)  # evaluate what was saved, not what is in memory
    with _torch_threads(args.threads):
        evaluation = evaluate_renderer(pipe, n_prompts=args.eval_prompts, seed=args.seed)
        grid = save_image_grid(pipe, Path(args.out) / "grid.png")
    figures = {
        "training": training,
        "evaluation": evaluation,
        "drawn_scenes": drawn_scene_reference(),
        "grid": str(grid),
    }
    (Path(args.out) / "evaluation.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
