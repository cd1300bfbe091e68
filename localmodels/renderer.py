"""A tiny Stable-Diffusion-family text-to-image pipeline, built from configs and trained here on the toy world.

No diffusion weights can be downloaded on our machines (see docs/SETUP.md), so the renderer used on CPU is a real
`diffusers.StableDiffusionPipeline` (AutoencoderKL + UNet2DConditionModel + CLIPTextModel + CLIP tokenizer + DDIM)
whose components are small, built from configs, and trained from scratch on `(caption(scene), draw_scene(scene))`
pairs from `localmodels.world`, so that style words in a prompt visibly change the image. It is saved with
`save_pretrained` and loads with `StableDiffusionPipeline.from_pretrained(path)` exactly like a real checkpoint.

Training is two phases, as for latent diffusion (https://arxiv.org/abs/2112.10752):

1. the autoencoder learns to map 32 x 32 RGB images to 8 x 8 x 4 latents and back;
2. the UNet and the text encoder learn the standard diffusion loss on those latents (v-prediction by default, see
   `build_tiny_pipeline`), with the caption dropped (replaced by `""`) 10% of the time so classifier-free guidance
   works (https://arxiv.org/abs/2207.12598).

This module builds the pipeline (tokenizer, components, `build_tiny_pipeline`); `localmodels.renderer_train` trains
it (`train_renderer`, the recipe `make setup` runs) and `localmodels.renderer_eval` measures it (`evaluate_renderer`).
Both import this module and it imports neither: the command line that trains then evaluates is
`python -m localmodels.renderer_train --out DIR [--minutes M]`.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline
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
            # Legacy name: the number of attention *heads* per level (docs/SETUP.md); heads of 32 channels.
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
