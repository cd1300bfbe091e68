"""Checkpoints of a training run and `--resume` after a crash or a `kill -9` (issue 11).

While it trains, a run folder `runs/<user>/<run>/` holds:

    checkpoint-<step>/   the trainer's checkpoint every `save_steps` steps (the last `save_total_limit` kept): the
                         LoRA adapter, optimizer and LR-scheduler state, RNG states, trainer_state.json (which holds
                         the global step and log_history). trainer_state.json is written last, so a folder without a
                         readable one is a checkpoint cut off by the crash and is never resumed from.
    run_state.json       what a resume needs beyond the checkpoint: the W&B run id and the user context the run uses.
    metrics.jsonl        every logged row, appended as it is logged (rl/console.py).
    rollouts/rank<i>.jsonl  every judged rewrite (rl/environment.py), by the step at which it was generated.

and, once finished, `adapter/` (the final adapter with `pig_adapter.json`): a run without it is unfinished.

`--resume` continues the run named by `--run_name`, or else the user's most recently active unfinished run, from its
last complete checkpoint (from step 0 if it died before the first one): same run folder, same user context (the
snapshot in run_state.json, not a rebuilt one), same W&B run (`wandb.init(id=..., resume="allow")`), and
metrics.jsonl and the rollout files cut back to the checkpoint's step so that the steps trained again are not logged
twice.

What `Trainer.train(resume_from_checkpoint=...)` restores (transformers' Trainer, which TRL's trainers are): the LoRA
weights, optimizer and scheduler state, the global step, log_history, the python/numpy/torch RNG states of each
process, and the position in the data (the batches of the current epoch already consumed are skipped). It does not
restore TRL GRPO's buffer of generated rollouts: a checkpoint taken between the `num_iterations` steps that share one
judged batch means the resumed run generates and judges a fresh batch for the next step (an even `save_steps` with
`num_iterations: 2` avoids it). The renderer's and judge's seeds come from (seed, prompt, step), not from a global RNG,
so they repeat. A resumed run is therefore a valid continuation of the same run, not a bit-identical replay of it.
"""

from __future__ import annotations

import glob
import json
import re
import secrets
import shutil
import sys
import time
from pathlib import Path

from common.errors import ConfigError
from common.files import atomic_write_json, atomic_write_text

STATE_FILE = "run_state.json"
METRICS_FILE = "metrics.jsonl"
FINISHED_MARK = Path("adapter") / "pig_adapter.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers' PREFIX_CHECKPOINT_DIR + step


# ------------------------------------------------------------------------------------------------ which checkpoint
def checkpoint_step(folder: str | Path) -> int | None:
    """The global step of a complete checkpoint folder, `None` for one cut off while it was written."""
    try:
        state = json.loads((Path(folder) / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if isinstance(step, int) else None


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint of the highest step in `run_dir`, or `None`."""
    complete = [(checkpoint_step(p), p) for p in _checkpoint_dirs(run_dir)]
    complete = [(s, p) for s, p in complete if s is not None]
    return max(complete, key=lambda sp: sp[0])[1] if complete else None


def _checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return [p for p in run_dir.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]


def is_run(folder: Path) -> bool:
    """Whether `folder` is a training run this code started (it holds run_state.json or a checkpoint)."""
    return (folder / STATE_FILE).is_file() or bool(_checkpoint_dirs(folder))


def is_finished(folder: Path) -> bool:
    return (folder / FINISHED_MARK).is_file()


def run_to_resume(output_dir_template: str, runs_dir: str, user: str, run_name: str | None) -> str:
    """The run name `--resume` continues: `run_name` if given (its folder must hold an unfinished run), else the
    user's unfinished run that logged or checkpointed last.

    Args:
        output_dir_template: the trainer's `output_dir` with `{runs_dir}`, `{user}` and `{run}` placeholders.

    Raises:
        ConfigError: no such run, the run already finished, or no unfinished run of the user exists.
    """
    if run_name:
        folder = Path(output_dir_template.format(runs_dir=runs_dir, user=user, run=run_name))
        if not is_run(folder):
            raise ConfigError(
                f"--resume: {folder} holds no training run to resume. Check --run_name (and --runs_dir), or leave "
                "--run_name out to resume the latest unfinished run of the user."
            )
        if is_finished(folder):
            raise ConfigError(
                f"--resume: run {run_name!r} already finished ({folder / 'adapter'}). To train on from its adapter, "
                f"start a new run with --init_adapter {folder / 'adapter'}."
            )
        return run_name
    pattern = output_dir_template.format(runs_dir=glob.escape(runs_dir), user=glob.escape(user), run="*")
    unfinished = [Path(p) for p in glob.glob(pattern) if is_run(Path(p)) and not is_finished(Path(p))]
    if not unfinished:
        raise ConfigError(
            f"--resume: user {user!r} has no unfinished run under {Path(pattern).parent}. Start a new run without "
            "--resume, or name the run with --run_name."
        )
    latest = max(unfinished, key=_last_activity)
    return latest.name


def _last_activity(folder: Path) -> float:
    files = [folder / STATE_FILE, folder / METRICS_FILE, *(p / "trainer_state.json" for p in _checkpoint_dirs(folder))]
    return max((f.stat().st_mtime for f in files if f.exists()), default=0.0)


def check_fresh_start(run_dir: str | Path) -> None:
    """A run started without `--resume` must not land in the folder of an unfinished run: its checkpoints would be
    overwritten and its metrics.jsonl would get a second copy of every step.

    Raises:
        ConfigError: naming both ways out.
    """
    run_dir = Path(run_dir)
    if is_run(run_dir) and not is_finished(run_dir):
        last = last_checkpoint(run_dir)
        where = f"last checkpoint: step {checkpoint_step(last)}" if last else "no complete checkpoint yet"
        raise ConfigError(
            f"{run_dir} holds an unfinished run ({where}). Add --resume to continue it, or pick another --run_name "
            "to start a new one."
        )


# ------------------------------------------------------------------------------------------------- before resuming
def prepare_resume(run_dir: str | Path, is_main_process: bool = True) -> Path | None:
    """Get `run_dir` ready to continue; returns the checkpoint to resume from (`None`: start again from step 0).

    The main process removes checkpoint folders the crash cut off (they would otherwise count towards
    `save_total_limit` and push out a complete one) and cuts metrics.jsonl back to the rows of steps up to the
    checkpoint's: the trainer logs the later steps again, and log_history comes back from the checkpoint itself.
    The rollout files keep the rows generated *before* the checkpoint's step: a reward batch carries the step the
    trainer had completed when it generated it, so the batch of step `step + 1` carries `step` and is redone.
    """
    run_dir = Path(run_dir)
    checkpoint = last_checkpoint(run_dir)
    step = checkpoint_step(checkpoint) if checkpoint is not None else 0
    if is_main_process:
        for folder in _checkpoint_dirs(run_dir):
            if checkpoint_step(folder) is None:
                print(f"[resume] removing {folder}: cut off before its trainer_state.json was written")
                shutil.rmtree(folder)
        kept, dropped = truncate_jsonl(run_dir / METRICS_FILE, step)
        for rollouts in sorted((run_dir / "rollouts").glob("*.jsonl")):
            truncate_jsonl(rollouts, step - 1)
        where = f"checkpoint {checkpoint.name}" if checkpoint else "step 0 (no complete checkpoint)"
        print(f"[resume] {run_dir}: from {where}; metrics.jsonl keeps {kept} rows, drops {dropped} of later steps")
    return checkpoint


def truncate_jsonl(path: str | Path, step: int) -> tuple[int, int]:
    """Keep the rows of `path` (JSON lines with a `step`) whose step is <= `step`; returns (kept, dropped).

    A last line cut off by the crash (not JSON) is dropped too. The file is replaced atomically.
    """
    path = Path(path)
    if not path.is_file():
        return 0, 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line)
        else:
            dropped += 1
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(kept), dropped


# ------------------------------------------------------------------------------------------------------ run state
def read_state(run_dir: str | Path) -> dict:
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ConfigError(
            f"{path} is not valid JSON ({err}); the run cannot be resumed. Start a new run (another --run_name)."
        ) from err
    if not isinstance(state, dict):
        raise ConfigError(f"{path} must hold a JSON object; the run cannot be resumed. Start a new run.")
    return state


def update_state(run_dir: str | Path, **values) -> dict:
    """Merge `values` into run_state.json (written atomically) and return the whole state."""
    state = {**read_state(run_dir), **values}
    atomic_write_json(Path(run_dir) / STATE_FILE, state)
    return state


def wandb_run_id(run_dir: str | Path) -> str:
    """The W&B run id of this run folder: the recorded one, else a new one, recorded before W&B starts."""
    recorded = read_state(run_dir).get("wandb_run_id")
    if isinstance(recorded, str) and recorded:
        return recorded
    run_id = secrets.token_hex(8)  # W&B ids: letters, digits, - and _
    update_state(run_dir, wandb_run_id=run_id)
    return run_id


def pin_context(run_dir: str | Path, context, resume: bool, is_main_process: bool = True):
    """The user context this run judges with, the same on every resume.

    A fresh run records `context` in run_state.json. A resumed run uses the recorded one, after checking that it was
    built from what the current command would build it from (same reasoner, template, references, settings).

    Raises:
        ConfigError: on resume, the recorded context has another cache key (the judge, the reasoner or the user's
            references changed since the run started).
    """
    from reward.context import UserContext

    recorded = read_state(run_dir).get("context") if resume else None
    if recorded is None:
        if is_main_process:
            update_state(run_dir, context=context.to_dict(), context_key=context.key, started=time.time())
        return context
    pinned = UserContext.from_dict(recorded)
    if pinned.key != context.key:
        raise ConfigError(
            f"--resume: {Path(run_dir) / STATE_FILE} was trained with user context {pinned.key} "
            f"(reasoner {pinned.model_id}, references {pinned.references_hash}), but this command builds "
            f"{context.key} (reasoner {context.model_id}, references {context.references_hash}). Resume with the "
            "judge, reasoner and user data the run started with, or start a new run."
        )
    return pinned


def pin_contexts(run_dir: str | Path, contexts: dict, resume: bool, is_main_process: bool = True) -> dict:
    """`pin_context` for a population run: `{user_id: context}` recorded in run_state.json (`contexts`), and on
    resume the recorded ones, after checking that the same users' contexts would be built the same way.

    Raises:
        ConfigError: on resume, the users differ from the recorded ones, or a user's context has another cache key.
    """
    from reward.context import UserContext

    recorded = read_state(run_dir).get("contexts") if resume else None
    if recorded is None:
        if is_main_process:
            update_state(
                run_dir,
                contexts={user: c.to_dict() for user, c in contexts.items()},
                context_keys={user: c.key for user, c in contexts.items()},
                started=time.time(),
            )
        return contexts
    pinned = {user: UserContext.from_dict(data) for user, data in recorded.items()}
    changed = sorted(u for u in set(pinned) | set(contexts) if u not in pinned or u not in contexts)
    changed += sorted(u for u in set(pinned) & set(contexts) if pinned[u].key != contexts[u].key)
    if changed:
        raise ConfigError(
            f"--resume: {Path(run_dir) / STATE_FILE} was trained on other users or other contexts than this command "
            f"builds (users {changed}: added, removed, or with another reasoner, template or references). Resume with "
            "the population, judge, reasoner and user data the run started with, or start a new run."
        )
    return pinned


# ------------------------------------------------------------------------------------------- train, or checkpoint
def train(trainer, resume_from: str | Path | None = None) -> None:
    """`trainer.train(resume_from_checkpoint=...)`; if the judge is gone for good (`JudgeUnavailable`), a checkpoint of
    the last completed step is saved first, and the error names it and the `--resume` that continues."""
    from rl.judge_faults import JudgeUnavailable

    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    except JudgeUnavailable as err:
        saved = save_checkpoint_now(trainer)
        print(file=sys.stderr)  # end the progress bar's line: the error that follows gets a line of its own
        raise JudgeUnavailable(
            f"{err} Saved {saved} (step {trainer.state.global_step}); once the judge works again, run the same "
            "command with --resume to continue from there."
        ) from err


def save_checkpoint_now(trainer) -> Path:
    """Save a checkpoint of the trainer's last completed step, as its `save_steps` schedule would.

    The judge is called while a step's rollouts are scored, before its loss and optimizer update, so a failure there
    leaves the weights and optimizer exactly as the last completed step left them. Uses `Trainer._save_checkpoint`
    (private, but the one function that writes everything `resume_from_checkpoint` reads; stable since transformers
    4.x): re-implementing it would copy optimizer, scheduler and RNG handling that changes with the library.
    """
    trainer._save_checkpoint(trainer.model, trial=None)
    return Path(trainer.args.output_dir) / f"checkpoint-{trainer.state.global_step}"
