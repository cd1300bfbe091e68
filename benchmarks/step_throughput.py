"""GRPO step throughput: our reward loop against a naive one, on the same models, prompts and seeds, in one process.

    python benchmarks/step_throughput.py                      # the local models (make setup), group sizes 4 and 8
    python benchmarks/step_throughput.py --steps 6 --group_sizes 4 --user nightowl

Both loops run real GRPO steps of `rl/train_policy.py` (the same trainer, policy, LoRA and config) and differ only
in how the reward is computed:

- **naive**, what public TRL prompt-rewriting examples do: each image rendered alone (batch of one, no reuse of an
  image rendered earlier), each pair judged alone and in one order;
- **ours**: every image of the batch rendered in batches (`render_batch_size`) with the original prompt's images
  shared by its group, every pair judged in one batch and in both orders (twice the verdicts: position bias
  cancelled).

For each group size it prints seconds per step split as in the run's `time/` metrics (`rl/step_profile.py`), images
and verdicts per second of the reward, peak resident memory, and the ratio naive / ours of seconds per step and of
reward seconds per rollout. The first step of each run is a warm-up and is left out. Rewards differ between the two
loops (one order vs both), so this measures cost, not learning.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class OneByOneRenderer:
    """The naive renderer: one image per pipeline call, nothing reused (wraps a `rl.render.Renderer`)."""

    def __init__(self, renderer):
        self.inner = renderer
        self.inner.settings.batch_size = 1
        self.inner.settings.cache_size = 0

    def render(self, prompts, seeds):
        images = []
        for prompt, seed in zip(prompts, seeds):
            self.inner._cache.clear()  # no image rendered before is reused
            images += self.inner.render([prompt], [seed])
        return images

    def pop_metrics(self):
        return self.inner.pop_metrics()


class OneByOneJudge:
    """The naive judge: each pair alone, one order (wraps a `reward.pigreward.PIGReward`)."""

    def __init__(self, pig):
        import dataclasses

        self.inner = pig
        pig.settings = dataclasses.replace(pig.settings, both_orders=False)

    def compare(self, prompts, images_a, images_b, context):
        out = []
        for prompt, a, b in zip(prompts, images_a, images_b):
            out += self.inner.compare([prompt], [a], [b], context)
        return out

    def pop_metrics(self):
        return self.inner.pop_metrics()


class PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 50 ms)."""

    def __enter__(self):
        import psutil

        self.process, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self.baseline = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(mode: str, group_size: int, args, workdir: Path) -> dict:
    """Trains `args.steps` GRPO steps with the `mode` reward loop; returns the mean step profile after warm-up."""
    import torch

    from rl.train_policy import build_trainer, parse_args

    argv = [
        "--user",
        args.user,
        "--runs_dir",
        str(workdir),
        "--run_name",
        f"{mode}-g{group_size}",
        "--num_generations",
        str(group_size),
        "--per_device_train_batch_size",
        str(args.batch_size),
        "--max_steps",
        str(args.steps),
        "--num_iterations",
        "1",  # every step generates and judges (the default 2 reuses each batch for a second step)
        "--report_to",
        "none",
        "--log_images_every",
        "0",
        "--seed",
        str(args.seed),
        "--torch_threads",
        str(args.torch_threads),
        "--render_cache_dir",
        "",  # no images from an earlier run: both loops render what they show
    ]
    pig_args, training_args, model_args = parse_args(argv)
    trainer, _ = build_trainer(pig_args, training_args, model_args)
    env = trainer.reward_funcs[0].__self__  # the PersonalizedEnvironment behind the bound reward functions
    counts = {"images": 0, "verdicts": 0}
    if mode == "naive":
        env.renderer, env.pig = OneByOneRenderer(env.renderer), OneByOneJudge(env.pig)
    render, compare = env.renderer.render, env.pig.compare

    def counted_render(prompts, seeds):
        counts["images"] += len(prompts)
        return render(prompts, seeds)

    def counted_compare(prompts, a, b, context):
        orders = 1 if mode == "naive" else 2 if env.pig.settings.both_orders else 1
        counts["verdicts"] += len(prompts) * orders
        return compare(prompts, a, b, context)

    env.renderer.render, env.pig.compare = counted_render, counted_compare
    with PeakMemory() as memory:
        trainer.train()
    rows = [h for h in trainer.state.log_history if "time/step_s" in h][1:]  # the first step warms up
    if not rows:
        raise SystemExit("error: --steps must be >= 2 (the first step is a warm-up).")
    keys = ["step", "generate", "render", "judge", "reward", "log", "update"]
    mean = {k: sum(r[f"time/{k}_s"] for r in rows) / len(rows) for k in keys}
    per_step = len(rows) + 1
    mean["images_per_s"] = counts["images"] / per_step / mean["render"] if mean["render"] else 0.0
    mean["verdicts_per_s"] = counts["verdicts"] / per_step / mean["judge"] if mean["judge"] else 0.0
    mean["reward_s_per_rollout"] = (mean["render"] + mean["judge"] + mean["reward"]) / args.batch_size
    mean["peak_rss_gib"] = memory.peak / 2**30
    del trainer
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--user", default="demo")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps per run (the first is a warm-up).")
    parser.add_argument("--group_sizes", default="4,8", help="Comma-separated num_generations values.")
    parser.add_argument("--batch_size", type=int, default=8, help="Rewrites per step (a multiple of each group size).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch_threads", type=int, default=0, help="0 = physical cores (as training).")
    args = parser.parse_args()
    from rl.console import quiet_libraries

    quiet_libraries()  # as training: no loading bars or deprecation notices between the figures
    sizes = [int(x) for x in args.group_sizes.split(",")]
    if args.steps < 2:
        parser.error("--steps must be >= 2: the first step is a warm-up.")
    if any(args.batch_size % g for g in sizes):
        parser.error(f"--batch_size {args.batch_size} must be a multiple of every group size {sizes}.")
    results = {}
    with tempfile.TemporaryDirectory(prefix="pig-bench-") as tmp:
        for g in sizes:
            for mode in ("naive", "ours"):
                print(f"[bench] {mode}, group size {g}: {args.steps} steps ...", flush=True)
                results[mode, g] = run(mode, g, args, Path(tmp))
    cols = ["step", "generate", "render", "judge", "reward", "update"]
    print(f"\nseconds per GRPO step ({args.batch_size} rewrites; mean of steps 2..{args.steps}; user {args.user})")
    print(f"{'loop':<7}{'G':>3}" + "".join(f"{c:>10}" for c in cols) + f"{'img/s':>8}{'verd/s':>8}{'peak GiB':>10}")
    for (mode, g), m in results.items():
        print(
            f"{mode:<7}{g:>3}"
            + "".join(f"{m[c]:>10.2f}" for c in cols)
            + f"{m['images_per_s']:>8.1f}{m['verdicts_per_s']:>8.1f}{m['peak_rss_gib']:>10.2f}"
        )
    for g in sizes:
        naive, ours = results["naive", g], results["ours", g]
        print(
            f"G={g}: naive/ours seconds per step {naive['step'] / ours['step']:.2f}x; reward seconds per rollout "
            f"{naive['reward_s_per_rollout'] / ours['reward_s_per_rollout']:.2f}x (ours judges both orders: "
            f"{ours['verdicts_per_s'] / max(naive['verdicts_per_s'], 1e-9):.2f}x the verdicts per second)"
        )


if __name__ == "__main__":
    main()
