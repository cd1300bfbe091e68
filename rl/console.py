"""The console of a training run: the plan, one progress bar with the rates that matter, the summary (issue 12).

By default the libraries' loading bars, deprecation notices and info messages are silenced, and TRL's full metric
dict is not printed each step: every logged row goes, as it is logged, to `<run>/metrics.jsonl` (and to
`log_history.json` and W&B as before). `PIG_VERBOSE=1` keeps everything.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

from transformers import TrainerCallback

# What the bar shows, in order: (logged key, label, format).
BAR_FIELDS = (
    ("reward", "reward", "{:.3f}"),
    ("reward/ground_truth", "truth", "{:.2f}"),
    ("judge/status/ok", "judge ok", "{:.2f}"),
    ("time/rollouts_per_s", "rollouts/s", "{:.2f}"),
)


def verbose() -> bool:
    """Whether the user asked for the libraries' own output (`PIG_VERBOSE=1`)."""
    return os.environ.get("PIG_VERBOSE", "").lower() in ("1", "true", "yes")


def quiet_libraries() -> None:
    """Silences transformers', diffusers' and datasets' progress bars and info/warning chatter, and the libraries'
    deprecation warnings, unless `PIG_VERBOSE=1`. Errors still print; our own warnings (e.g. a prompt truncated by
    the renderer) still print."""
    if verbose():
        return
    import diffusers
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    try:
        import datasets

        datasets.utils.logging.set_verbosity_error()
        datasets.utils.logging.disable_progress_bar()
    except ImportError:
        pass
    for module in ("transformers", "trl", "diffusers", "accelerate", "peft", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


class ConsoleProgress(TrainerCallback):
    """One progress bar per run (main process) whose postfix carries the last logged reward, ground truth, judge
    health and rollouts per second; every logged row is appended to `metrics_path` (JSON lines) as it comes.

    Replaces transformers' `ProgressCallback`/`PrinterCallback`, which print the whole metric dict every step.
    """

    def __init__(self, metrics_path: str | Path | None, bar: bool = True):
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self.show_bar = bar
        self.bar = None
        self.shown: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.show_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if self.metrics_path is not None:
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            row = {"step": state.global_step, **{k: _plain(v) for k, v in logs.items()}}
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        if self.bar is not None:
            # the last value of each field stays shown: with num_iterations 2 every other step logs no reward
            for key, label, fmt in BAR_FIELDS:
                if _number(logs.get(key)):
                    self.shown[label] = fmt.format(logs[key])
            if self.shown:
                self.bar.set_postfix({label: self.shown[label] for _, label, _ in BAR_FIELDS if label in self.shown})

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value):
    """JSON-safe: numbers and strings as they are, tensors and numpy scalars as numbers, the rest as text."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def install(trainer, metrics_path: str | Path | None) -> ConsoleProgress:
    """Puts a `ConsoleProgress` in place of the trainer's printing callbacks (with `PIG_VERBOSE=1` they stay, and
    ours only writes `metrics_path`)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    loud = verbose()
    if not loud:
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
    progress = ConsoleProgress(metrics_path, bar=not loud)
    trainer.add_callback(progress)
    return progress
