"""Crash and resume (issue 11): a training run killed with SIGKILL continues with `--resume` from its last complete
checkpoint, in the same run folder and W&B run, with every step logged exactly once and a normal final adapter.
The pure parts (which checkpoint, which run, cutting the metrics file back) are tested on literal folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rl import checkpoint
from tests.conftest import REPO
from tests.test_training import _tiny_argv


def _checkpoint(run: Path, step: int, complete: bool = True) -> Path:
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return folder


def test_last_checkpoint_skips_one_cut_off_by_the_crash(tmp_path):
    run = tmp_path / "run"
    assert checkpoint.last_checkpoint(run) is None
    _checkpoint(run, 2)
    _checkpoint(run, 10)
    _checkpoint(run, 12, complete=False)  # killed while it was written: no trainer_state.json
    torn = _checkpoint(run, 14, complete=False)
    (torn / "trainer_state.json").write_text('{"global_step": 1')  # killed while trainer_state.json was written
    (run / "checkpoint-x").mkdir()
    assert checkpoint.last_checkpoint(run) == run / "checkpoint-10"
    assert checkpoint.prepare_resume(run) == run / "checkpoint-10"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-10", "checkpoint-2", "checkpoint-x"]


def test_truncate_keeps_rows_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 0.1 * s} for s in (1, 2, 3, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo')
    assert checkpoint.truncate_jsonl(path, 2) == (2, 3)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    assert checkpoint.truncate_jsonl(tmp_path / "absent.jsonl", 2) == (0, 0)


def test_prepare_resume_cuts_metrics_and_rollouts_back(tmp_path):
    run = tmp_path / "run"
    _checkpoint(run, 2)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)))
    (run / "rollouts").mkdir()
    # rollouts carry the step completed when they were generated: step 0 fed steps 1-2, step 2 fed step 3
    (run / "rollouts" / "rank0.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (0, 0, 2, 2)))
    assert checkpoint.prepare_resume(run) == run / "checkpoint-2"
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert [json.loads(x)["step"] for x in (run / "rollouts" / "rank0.jsonl").read_text().splitlines()] == [0, 0]


def test_which_run_resume_continues(tmp_path):
    template, runs = "{runs_dir}/{user}/{run}", str(tmp_path)
    with pytest.raises(checkpoint.ConfigError, match="no unfinished run"):
        checkpoint.run_to_resume(template, runs, "demo", None)
    old, new, done = (tmp_path / "demo" / name for name in ("old", "new", "done"))
    for folder in (old, new, done):
        checkpoint.update_state(folder, wandb_run_id=folder.name)
        time.sleep(0.02)  # the last one written is the most recently active
    (tmp_path / "demo" / "context").mkdir()  # the context cache is no run
    (done / "adapter").mkdir()
    (done / "adapter" / "pig_adapter.json").write_text("{}")
    assert checkpoint.run_to_resume(template, runs, "demo", None) == "new"
    os.utime(old / checkpoint.STATE_FILE)  # touched last: now the latest activity
    assert checkpoint.run_to_resume(template, runs, "demo", None) == "old"
    assert checkpoint.run_to_resume(template, runs, "demo", "new") == "new"
    with pytest.raises(checkpoint.ConfigError, match="already finished.*--init_adapter"):
        checkpoint.run_to_resume(template, runs, "demo", "done")
    with pytest.raises(checkpoint.ConfigError, match="holds no training run"):
        checkpoint.run_to_resume(template, runs, "demo", "nope")
    with pytest.raises(checkpoint.ConfigError, match="unfinished run.*--resume"):
        checkpoint.check_fresh_start(new)
    checkpoint.check_fresh_start(done)  # a finished run's folder: as before, a new run may reuse the name
    checkpoint.check_fresh_start(tmp_path / "demo" / "fresh")


def test_resume_refuses_a_context_built_from_other_inputs(tmp_path):
    from reward.context import Rationale, UserContext

    context = UserContext("demo", [Rationale(0, "a sun", "likes warm colours")], "judge-a", "reasoner-v1", "h1")
    assert checkpoint.pin_context(tmp_path, context, resume=False) is context
    same = UserContext("demo", [Rationale(0, "a sun", "rebuilt text")], "judge-a", "reasoner-v1", "h1")
    assert checkpoint.pin_context(tmp_path, same, resume=True).texts == ["likes warm colours"]  # the pinned one
    other = UserContext("demo", [], "judge-a", "reasoner-v1", "h2")  # the user's references changed
    with pytest.raises(checkpoint.ConfigError, match="was trained with user context"):
        checkpoint.pin_context(tmp_path, other, resume=True)


def _steps(rows: list[dict]) -> list[int]:
    return [r["step"] for r in rows if "loss" in r]


def _logged_past_checkpoint(run_dir: Path) -> bool:
    """A complete checkpoint exists, and metrics.jsonl holds a whole row of a later step."""
    last = checkpoint.last_checkpoint(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if last is None or not metrics.is_file():
        return False
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip().endswith("}")]
    return any(step > checkpoint.checkpoint_step(last) for step in _steps(rows))


def _frozen_and_still(proc: subprocess.Popen, condition, *args) -> bool:
    """Stop `proc` and check `condition(*args)` while it cannot write; it stays stopped if the condition holds (for
    the caller to kill it), else it continues."""
    proc.send_signal(signal.SIGSTOP)
    _, status = os.waitpid(proc.pid, os.WUNTRACED)  # returns once it is stopped (or gone)
    if not os.WIFSTOPPED(status):
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
        return False
    if condition(*args):
        return True
    proc.send_signal(signal.SIGCONT)
    return False


@pytest.mark.slow  # a real training killed in a subprocess, then resumed in another
def test_sigkill_then_resume_continues_the_same_run(tiny_models, tmp_path):
    """A real `kill -9` after the first checkpoint and one more logged step, then `--resume` without a run name."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DATA_DIR=str(tmp_path / "wandb-data"), HF_HUB_OFFLINE="1")
    env.pop("PIG_VERBOSE", None)
    # An earlier test of this pytest process may have started a W&B service and exported its address: children would
    # share it, and the killed run's stream would stay registered there ("run ID ... is in use" on resume). A killed
    # run's own service exits with it, as it does outside the test suite.
    env.pop("WANDB_SERVICE", None)
    argv = _tiny_argv(tiny_models, tmp_path, "--max_steps", "5", "--save_steps", "2", "--log_images_every", "0")
    command = [sys.executable, "rl/train_policy.py", *argv]
    run_dir = tmp_path / "runs" / "demo" / "first"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([*command, "--run_name", "first"], cwd=REPO, env=env, stdout=log, stderr=log)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 400
    try:
        # Kill once a step is logged past the last complete checkpoint. The run is frozen (SIGSTOP) while that is
        # checked, so no checkpoint can land between the check and the kill: checking a running process raced with
        # checkpoint-4, written right after step 4 is logged, and left no logged step past the checkpoint.
        while not _logged_past_checkpoint(run_dir) or not _frozen_and_still(proc, _logged_past_checkpoint, run_dir):
            assert proc.poll() is None, "the run ended before it was killed: " + (tmp_path / "first.log").read_text()
            assert time.time() < deadline, "no step logged past a checkpoint in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "adapter").exists()
    killed_at = checkpoint.checkpoint_step(checkpoint.last_checkpoint(run_dir))
    assert killed_at in (2, 4)
    before = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip().endswith("}")]
    assert max(_steps(before)) > killed_at, "the kill should leave rows logged after the checkpoint"
    wandb_id = checkpoint.read_state(run_dir)["wandb_run_id"]

    # A new run under the same name would mix two runs: refused, with the way out.
    from rl.train_policy import parse_args

    with pytest.raises(checkpoint.ConfigError, match="holds an unfinished run.*Add --resume"):
        parse_args([*argv, "--run_name", "first"], check_models=False)

    # The same command with --resume and no run name: the user's latest unfinished run.
    resumed = subprocess.run([*command, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"[resume] {run_dir}: from checkpoint checkpoint-{killed_at}" in resumed.stdout

    # Every step logged exactly once, in metrics.jsonl and in the log history that came back from the checkpoint.
    after = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert _steps(after) == [1, 2, 3, 4, 5]
    assert _steps(json.loads((run_dir / "log_history.json").read_text())) == [1, 2, 3, 4, 5]
    rollouts = run_dir / "rollouts" / "rank0.jsonl"
    # one row per judged rewrite: the batches generated at steps 0, 2 and 4, none twice
    assert [json.loads(x)["step"] for x in rollouts.read_text().splitlines()] == [0] * 8 + [2] * 8 + [4] * 8

    # The final adapter is the one an uninterrupted run writes: PEFT files + metadata, the checkpoint's tensors, moved.
    from safetensors.torch import load_file

    from policies.rewriter import AdapterInfo

    adapter = run_dir / "adapter"
    assert AdapterInfo.load(adapter).trained_steps == 5
    final = load_file(adapter / "adapter_model.safetensors")
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]  # limit 2
    last, earlier = (load_file(run_dir / c / "adapter_model.safetensors") for c in ("checkpoint-5", "checkpoint-4"))
    assert final and final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    assert any(not torch.equal(final[k], earlier[k]) for k in final), "the LoRA did not move after the resume"
    assert (tmp_path / "runs" / "demo" / "LATEST").read_text().strip() == "first/adapter"

    # One W&B run, resumed: both offline folders carry the recorded id, and the second continues after the kill.
    from reports.wandb_offline import find_run_files, read_history

    files = find_run_files(run_dir / "wandb")
    assert len(files) == 2 and all(f.name == f"run-{wandb_id}.wandb" for f in files)
    logged = [r["train/global_step"] for r in read_history(files[-1]) if "train/loss" in r]
    assert logged == list(range(killed_at + 1, 6))
