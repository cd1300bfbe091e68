"""What a training run does when the judge fails (issue 11).

- A judge call that fails (the OpenAI-compatible backend raises `BackendError` once its own retries are spent) makes
  the comparisons of that reward batch *undecided*: each counts as a tie (0.5, see `rl.environment`), and each of its
  verdicts is counted under `judge/failures/<kind>` (`http_503`, `unreachable`, `malformed_answer`, ...), beside the
  verdicts the parser could not decide (`judge/failures/no_verdict`, ...). Never a silent default reward.
- The judge is gone *for good* when `max_failed_batches` reward batches in a row failed, or at once when the server
  refuses the request (HTTP 4xx other than 429: a wrong model name or key does not heal by waiting). The environment
  then raises `JudgeUnavailable`; `rl.checkpoint.train` saves a checkpoint of the last completed step and the run
  stops with one line that says so, and how to continue (`--resume`).
- When the undecided share of a batch's comparisons passes `max_undecided_fraction`, an alarm fires: a warning line
  on the console, the flag `judge/undecided_alarm` = 1 in the logged metrics, and a W&B alert when W&B is online.
"""

from __future__ import annotations

import sys

from common.errors import PigError


class JudgeUnavailable(PigError, RuntimeError):
    """The judge failed for good during training; the message names the cause and what to do."""


def failure_kind(err: BaseException) -> str:
    """A short name for why a judge call failed, for `judge/failures/<kind>`."""
    status = getattr(err, "status", None)
    if status is None:
        return "unreachable"  # refused, reset, timed out: no answer came back
    if status == 200:
        return "malformed_answer"  # the server answered, but not with a usable completion
    return f"http_{status}"


def is_permanent(err: BaseException) -> bool:
    """A refusal that waiting cannot fix: HTTP 4xx except 429 (rate limited)."""
    status = getattr(err, "status", None)
    return status is not None and 400 <= status < 500 and status != 429


class UndecidedAlarm:
    """Fires when the undecided share of a reward batch passes `threshold` (once per crossing, not every step).

    Args:
        threshold: the largest acceptable undecided fraction in [0, 1]; 1 never fires.
    """

    def __init__(self, threshold: float):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"max_undecided_fraction must be in [0, 1], got {threshold}.")
        self.threshold = threshold
        self.active = False
        self.fired = 0

    def check(self, fraction: float, step: int, detail: str = "") -> bool:
        """Whether `fraction` is above the threshold; warns (and alerts W&B) when it crosses it."""
        above = fraction > self.threshold
        if above and not self.active:
            self.fired += 1
            text = (
                f"{fraction:.0%} of the judge's comparisons at step {step} were undecided (max_undecided_fraction="
                f"{self.threshold}): they count as ties, so the policy learns little from them.{detail} Check the "
                "judge (judge/failures/* and judge/status/* in the logged metrics, or the judge server)."
            )
            print(f"[warning] judge: {text}", file=sys.stderr, flush=True)
            _wandb_alert(text)
        self.active = above
        return above


def _wandb_alert(text: str) -> None:
    try:
        import wandb
    except ImportError:
        return
    run = wandb.run
    if run is None or run.settings.mode != "online":  # offline runs keep the logged flag and the console line
        return
    run.alert(title="PIGReward judge: undecided comparisons", text=text, level=wandb.AlertLevel.WARN)
