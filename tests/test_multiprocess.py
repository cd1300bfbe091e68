"""Two training processes on this CPU (the README's launch command, tiny models): both run, each rewards whole
groups only, and every reward equals what one process computes for the same prompts, rewrites and step.

The tiny random judge decides no comparison (every preference is the 0.5 of an undecided pair), so the images carry
the check: the ground truth and the fidelity of each rewrite, which vary, must match exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.conftest import REPO
from tests.test_training import _tiny_argv


@pytest.mark.slow  # two training processes launched by accelerate
def test_two_processes_reward_whole_groups_as_one_process_would(tiny_models, tmp_path):
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs" / "accelerate" / "cpu_2proc.yaml"),
        "rl/train_policy.py",
        *_tiny_argv(tiny_models, tmp_path, "--max_steps", "1", "--run_name", "mp", "--report_to", "none"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es) on cpu" in proc.stdout  # the world size, not one process twice

    run = tmp_path / "runs" / "demo" / "mp"
    rows = {
        rank: [json.loads(x) for x in (run / "rollouts" / f"rank{rank}.jsonl").read_text().splitlines()]
        for rank in (0, 1)
    }
    from rl.config import default_recipe

    group = default_recipe()["num_generations"]
    per_process = default_recipe()["per_device_train_batch_size"]
    assert [len(rows[0]), len(rows[1])] == [per_process, per_process]
    # groups are never split: every prompt's rewrites were rewarded by one process, num_generations of them
    where = defaultdict(set)
    for rank, rs in rows.items():
        for r in rs:
            where[r["prompt"]].add(rank)
    assert all(len(ranks) == 1 for ranks in where.values())
    assert all(sum(r["prompt"] == p for rs in rows.values() for r in rs) == group for p in where)

    # one process, all 16 rewrites in one batch: the same rewards (seeds depend on prompt and step, not on the rank)
    import functools

    from reward.users import load_user
    from rl import ground_truth
    from rl.environment import PersonalizedEnvironment
    from rl.reward_stack import build_reward_stack
    from rl.train_policy import parse_args

    # rendered again, not read back from the runs' image cache: the images themselves are what is compared
    args, training_args, _ = parse_args(
        _tiny_argv(tiny_models, tmp_path, "--report_to", "none", "--render_cache_dir", "")
    )
    from accelerate import PartialState

    user = load_user(args.user, args.users_dir)
    pig, context, renderer, embedder = build_reward_stack(args, user, "cpu", PartialState())
    one = PersonalizedEnvironment(
        pig,
        context,
        renderer,
        embedder,
        num_generations=group,
        images_per_prompt=args.images_per_prompt,
        seed=training_args.seed,
        compare_to=args.compare_to,
        fidelity_floor=args.fidelity_floor,
        ground_truth=functools.partial(ground_truth.preferences, ground_truth.taste_of(user)),
    )
    both = rows[0] + rows[1]
    assert len({r["ground_truth"] for r in both}) > 1 and len({r["fidelity"] for r in both}) > 1  # not constants
    assert len({r["step"] for r in both}) == 1
    result = one.compute([r["prompt"] for r in both], [r["rewrite"] for r in both], both[0]["step"])
    for key, values in (
        ("preference", result.preference),
        ("fidelity", result.fidelity),
        ("ground_truth", result.ground_truth),
    ):
        assert [r[key] for r in both] == pytest.approx(values, abs=1e-6), key
