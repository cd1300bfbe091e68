"""A tiny `CLIPModel` built from a config, saved so that it loads by path like `openai/clip-vit-*`.

No CLIP weights can be downloaded on our machines (docs/SETUP.md), so the image-similarity baseline of the evaluation
harness (`reward.eval.baselines`) runs on CPU against a model built here: random weights for tests
(`build_tiny_clip`), or trained contrastively on toy-world scenes and their captions (`train_tiny_clip`, what
`make setup` builds as `.models/tiny-clip`). The saved folder carries a `LOCALMODEL.json` note
(`common.hub.local_model_note`) that `reward.eval.bench` copies into its results, so a report always says which it
used. Where real weights exist, pass e.g. `--clip_model openai/clip-vit-base-patch32`; the code path is the same.

    python -m localmodels.clip --out .models/tiny-clip --train_steps 600
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from common.hub import LOCAL_MODEL_NOTE


def build_tiny_clip(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    width: int = 32,
    layers: int = 1,
    projection_dim: int = 32,
    model_max_length: int = 32,
    tokenizer: str = "auto",
    bpe_path: str | os.PathLike | None = None,
) -> Path:
    """Build a randomly initialised tiny `CLIPModel` and save it with its processor and tokenizer.

    The folder loads with `CLIPModel.from_pretrained(out_dir)` and `AutoProcessor.from_pretrained(out_dir)` (a
    `CLIPProcessor` whose image processor is the PIL `CLIPImageProcessorPil`: no torchvision needed).

    Args:
        out_dir (`str` or `os.PathLike`): Folder to write (created; existing files are overwritten).
        seed (`int`, *optional*, defaults to 0): Seed of the weight initialisation (the global RNG is left alone).
        image_size (`int`, *optional*, defaults to 32): Side of the square input images, in pixels.
        patch_size (`int`, *optional*, defaults to 8): Side of a vision patch, in pixels.
        width (`int`, *optional*, defaults to 32): Hidden size of both towers (a multiple of 16: 16-dim heads).
        layers (`int`, *optional*, defaults to 1): Transformer layers of each tower.
        projection_dim (`int`, *optional*, defaults to 32): Size of the shared embedding space.
        model_max_length (`int`, *optional*, defaults to 32): Tokens per text.
        tokenizer (`str`, *optional*, defaults to `"auto"`): `"clip"` (the exact CLIP vocabulary, rebuilt offline
            by `localmodels.renderer.build_clip_tokenizer`; needs CLIP's BPE file), `"bytes"` (CLIP's 512 byte-level
            symbols, no merges; always available) or `"auto"` (`"clip"` when the BPE file is found, else `"bytes"`).
        bpe_path (`str` or `os.PathLike`, *optional*): CLIP's BPE merges; see `localmodels.renderer.find_clip_bpe`.

    Returns:
        `Path`: `out_dir`.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from localmodels.renderer import make_clip_tokenizer

    if width % 16:
        raise ValueError(f"width must be a multiple of 16 (attention heads of 16 dimensions), got {width}.")
    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size}).")
    tok, tokenizer = make_clip_tokenizer(tokenizer, bpe_path, model_max_length)
    tower = dict(
        hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=width // 16
    )
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            max_position_embeddings=model_max_length,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            **tower,
        ),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **tower),
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    note = {
        "weights": "random",
        "built_by": "localmodels.clip.build_tiny_clip",
        "seed": seed,
        "tokenizer": tokenizer,
        "note": "Randomly initialised tiny CLIP for CPU tests: image similarities carry no semantic signal.",
    }
    (out / LOCAL_MODEL_NOTE).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    return out


def train_tiny_clip(
    out_dir: str | os.PathLike,
    *,
    steps: int = 600,
    batch_size: int = 128,
    num_scenes: int = 8192,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Build a tiny CLIP and train it contrastively (CLIP's own loss) on toy-world images and styled captions.

    Captions always name palette, light and layout (`world.caption(..., p_style=1.0)`), so the shared space learns
    exactly the attributes users of the toy world have tastes about: then "similar to what the user chose" is a real,
    strong baseline rather than noise. Deterministic in `seed`; the global RNG is left alone.

    Returns:
        `dict`: figures (steps, seconds, final loss, in-batch image->text top-1 accuracy on fresh scenes).
    """
    import time

    import numpy as np
    import torch
    from tqdm.auto import tqdm
    from transformers import CLIPModel, CLIPProcessor

    from localmodels import world

    out = build_tiny_clip(out_dir, seed=seed, width=64, layers=2, projection_dim=64, tokenizer="auto")
    model = CLIPModel.from_pretrained(out)
    processor = CLIPProcessor.from_pretrained(out)

    def data(n: int, data_seed: int) -> tuple[torch.Tensor, dict]:
        rng = np.random.default_rng(data_seed)
        scenes = [world.sample_scene(rng) for _ in range(n)]
        pixels = processor(images=[world.draw_scene(sc, 32) for sc in scenes], return_tensors="pt")["pixel_values"]
        text = processor.tokenizer(
            [world.caption(sc, rng, p_style=1.0) for sc in scenes],
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        return pixels, dict(text)

    started = time.perf_counter()
    pixels, text = data(num_scenes, seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(0.0)
    bar = tqdm(range(steps), desc="tiny CLIP", disable=not progress)
    for _ in bar:
        idx = torch.randint(0, num_scenes, (batch_size,), generator=generator)
        loss = model(
            input_ids=text["input_ids"][idx],
            attention_mask=text["attention_mask"][idx],
            pixel_values=pixels[idx],
            return_loss=True,
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    eval_pixels, eval_text = data(256, seed + 2)
    with torch.inference_mode():
        logits = model(**eval_text, pixel_values=eval_pixels).logits_per_image
    # Captions of different scenes can be identical ("a sun, warm colours, bright light, ..."): a retrieved caption
    # counts when it is the same text as the right one.
    same = (eval_text["input_ids"][:, None, :] == eval_text["input_ids"][None, :, :]).all(-1)
    top1 = same[torch.arange(256), logits.argmax(-1)].float().mean().item()
    model.save_pretrained(out)
    figures = {
        "steps": steps,
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(loss.item(), 4),
        "image_to_caption_top1_of_256": round(top1, 3),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    note = json.loads((out / LOCAL_MODEL_NOTE).read_text(encoding="utf-8"))
    note.update(
        weights="trained",
        built_by="localmodels.clip.train_tiny_clip",
        note="Tiny CLIP trained contrastively on toy-world scenes and styled captions (palette, light, layout).",
        figures=figures,
    )
    (out / LOCAL_MODEL_NOTE).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="Folder to write the model, processor and tokenizer to.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", default="auto", choices=["auto", "clip", "bytes"])
    parser.add_argument("--train_steps", type=int, default=0, help="Train on the toy world (0: random weights).")
    args = parser.parse_args(argv)
    if args.train_steps:
        print(train_tiny_clip(args.out, steps=args.train_steps, seed=args.seed))
    else:
        print(build_tiny_clip(args.out, seed=args.seed, tokenizer=args.tokenizer))


if __name__ == "__main__":
    main()
