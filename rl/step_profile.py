"""Where a training step's seconds go: the `time/` metrics of every run (issue 9).

Per optimizer step, logged with the step's other metrics (console, `log_history.json`, W&B):

- `time/generate_s`: the policy writing the rewrites (`model.generate`);
- `time/render_s`, `time/judge_s`: the renderer and PIGReward inside the reward (`PersonalizedEnvironment`);
- `time/reward_s`: the rest of the reward (fidelity embeddings, ground truth, win-rate reduction);
- `time/log_s`: sample grids and tables written from inside the reward;
- `time/update_s`: the rest of the step: the policy's log-probability forwards, backward and optimizer step;
- `time/idle_s`: wall time between the previous step's end and this step's start (logging, checkpoints);
- `time/step_s` and `time/rollouts_per_s` (judged rewrites per second of training so far, idle included).

GRPO with `num_iterations: 2` generates and judges every other step; on the steps between, the rollout phases read
0 and the step is the update alone. TRL times some of this itself (`profiling_context`), but writes it to W&B
only, outside the trainer's log history, and not for our reward's parts.
"""

from __future__ import annotations

import time
from collections import defaultdict

from transformers import TrainerCallback

PHASES = ("generate", "render", "judge", "reward", "log")


class StepProfile(TrainerCallback):
    """A `TrainerCallback` that adds the `time/` metrics to each logged step.

    The reward side reports its phases through `record` (the environment calls it); generation is timed by wrapping
    the policy's `generate` at the start of training (TRL has no generation hook). Register it with
    `trainer.callback_handler.callbacks.insert(0, profile)` so that its `on_log` runs before the W&B callback's.
    """

    def __init__(self):
        self.pending: dict[str, float] = defaultdict(float)
        self.rollouts_pending = 0
        self.last: dict[str, float] = {}
        self.rollouts = 0
        self.seconds = 0.0
        self._step_began: float | None = None
        self._step_ended: float | None = None
        self._idle = 0.0

    def record(self, phase: str, seconds: float, rollouts: int = 0) -> None:
        """Adds `seconds` to `phase` of the current step (and `rollouts` judged rewrites)."""
        if phase not in PHASES:
            raise ValueError(f"Unknown phase {phase!r}; choose one of {PHASES}.")
        self.pending[phase] += seconds
        self.rollouts_pending += rollouts

    def wrap_generate(self, model) -> None:
        """Times every `model.generate` call as the `generate` phase (an instance attribute shadows the method)."""
        if getattr(model.generate, "_pig_timed", False):
            return
        generate = model.generate

        def timed_generate(*args, **kwargs):
            began = time.perf_counter()
            try:
                return generate(*args, **kwargs)
            finally:
                self.record("generate", time.perf_counter() - began)

        timed_generate._pig_timed = True
        model.generate = timed_generate

    # TrainerCallback hooks
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.wrap_generate(model)

    def on_step_begin(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self._idle = now - self._step_ended if self._step_ended is not None else 0.0
        self._step_began = now

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._step_began is None:
            return
        step = now - self._step_began
        phases = {name: self.pending.get(name, 0.0) for name in PHASES}
        self.rollouts += self.rollouts_pending
        self.seconds += step + self._idle
        self.last = {
            "time/step_s": step,
            **{f"time/{name}_s": value for name, value in phases.items()},
            "time/update_s": max(0.0, step - sum(phases.values())),
            "time/idle_s": self._idle,
            "time/rollouts_per_s": self.rollouts / self.seconds if self.seconds else 0.0,
        }
        self.pending.clear()
        self.rollouts_pending = 0
        self._step_ended = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The trainer appended `{**logs, "step": ...}` to the history just before this hook: complete both.
        if not self.last or logs is None or "loss" not in logs and "reward" not in logs:
            return
        logs.update(self.last)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(self.last)
        self.last = {}


def summary(history: list[dict]) -> str | None:
    """One line: mean seconds per step in each phase over the logged steps, and the final rollouts per second."""
    rows = [h for h in history if "time/step_s" in h]
    if not rows:
        return None
    names = [*PHASES, "update", "idle"]
    mean = {n: sum(h.get(f"time/{n}_s", 0.0) for h in rows) / len(rows) for n in names}
    step = sum(h["time/step_s"] for h in rows) / len(rows)
    parts = ", ".join(f"{n} {mean[n]:.2f}" for n in names)
    return (
        f"mean s/step {step:.2f} over {len(rows)} steps ({parts}); "
        f"{rows[-1].get('time/rollouts_per_s', 0.0):.2f} judged rewrites/s"
    )
