"""Training: a 2-step GRPO run on tiny real models (LoRA moves, the base does not), the real command line in a
subprocess (slow lane), the configs, and the fail-fast path for hub models."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO


def _tiny_argv(tiny_models, tmp_path, *extra) -> list[str]:
    return [
        "--user",
        "demo",
        "--users_dir",
        str(REPO / "users"),
        "--runs_dir",
        str(tmp_path / "runs"),
        "--model_name_or_path",
        tiny_models["policy"],
        "--judge_model",
        tiny_models["vlm"],
        "--renderer_model",
        tiny_models["sd"],
        "--fidelity_model",
        tiny_models["minilm"],
        "--render_steps",
        "4",
        "--judge_max_new_tokens",
        "16",
        "--max_completion_length",
        "12",
        "--log_images_every",
        "1",
        *extra,
    ]


def test_grpo_two_steps_moves_lora_not_base(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    from rl.train_policy import build_trainer, parse_args

    args, training_args, model_args = parse_args(
        _tiny_argv(tiny_models, tmp_path, "--max_steps", "2", "--learning_rate", "1e-2", "--report_to", "none")
    )
    trainer, user = build_trainer(args, training_args, model_args)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    lora = [n for n in before if "lora_" in n]
    assert lora, "the policy should carry LoRA parameters"
    assert all(not trainer.model.get_parameter(n).requires_grad for n in before if "lora_" not in n)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = [n for n in lora if not torch.equal(before[n], after[n])]
    assert changed, "no LoRA parameter changed in 2 GRPO steps"
    assert all(torch.equal(before[n], after[n]) for n in before if "lora_" not in n), "a base weight changed"
    history = trainer.state.log_history
    assert any("rewards/fidelity/mean" in h for h in history)
    # The preference reward, though the random tiny judge rarely decides: an undecided comparison is a 0.5 tie (never
    # None, which TRL would score like a loss). Exact for any mix of verdicts: a group's comparisons among its own
    # rewrites add p and 1 - p, so a group's mean preference is fixed by its comparisons with the original alone.
    env = trainer.reward_funcs[0].__self__
    last, n = env._last, env.num_generations
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in last.preference)
    for g in range(0, len(last.rewrites), n):
        win_original = [
            sum(0.5 if c.preference is None else c.preference for c in last.comparisons[i]) / len(last.comparisons[i])
            for i in range(g, g + n)
        ]
        mean_original = sum(win_original) / n
        expected = {"original": mean_original, "group": 0.5, "both": (mean_original + 0.5) / 2}[env.compare_to]
        assert sum(last.preference[g : g + n]) / n == pytest.approx(expected)
    logged = [h for h in history if "rewards/preference/mean" in h]
    assert logged and all(math.isfinite(h["rewards/preference/mean"]) for h in logged)
    assert all(0.0 <= h["reward/undecided_fraction"] <= 1.0 for h in history if "reward/undecided_fraction" in h)
    assert any("judge/verdicts" in h for h in history)
    # the step profile: every logged step is split into phases that add up to it; the first step generated, rendered
    # and judged (num_iterations 2: the second reuses its rollouts), and judged 8 rewrites
    steps = [h for h in history if "time/step_s" in h]
    assert len(steps) == 2
    for h in steps:
        parts = sum(h[f"time/{p}_s"] for p in ("generate", "render", "judge", "reward", "log", "update"))
        assert parts == pytest.approx(h["time/step_s"], rel=1e-6)
    first = steps[0]
    assert first["time/generate_s"] > 0 and first["time/render_s"] > 0 and first["time/judge_s"] > 0
    assert steps[1]["time/render_s"] == 0.0
    assert first["time/rollouts_per_s"] == pytest.approx(8 / (first["time/step_s"] + first["time/idle_s"]))
    # the sample grids were written next to the run
    assert list((tmp_path / "runs" / "demo").glob("*/samples/step_*.png"))


def test_rloo_step_moves_lora_and_records_the_algorithm(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from trl import RLOOConfig, RLOOTrainer

    from policies.rewriter import AdapterInfo
    from rl.train_policy import build_trainer, parse_args, save_adapter

    argv = _tiny_argv(tiny_models, tmp_path, "--algorithm", "rloo", "--max_steps", "1", "--learning_rate", "1e-2")
    args, training_args, model_args = parse_args([*argv, "--report_to", "none"])
    assert isinstance(training_args, RLOOConfig) and training_args.run_name.startswith("rloo-")
    trainer, user = build_trainer(args, training_args, model_args)
    assert isinstance(trainer, RLOOTrainer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)
    adapter = save_adapter(trainer, user, args, training_args, model_args)
    assert AdapterInfo.load(adapter).trainer == "rloo"


@pytest.mark.slow  # a second real training route (judged pairs, then DPO): tens of seconds
def test_dpo_route_judges_pairs_then_moves_lora(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from trl import DPOConfig, DPOTrainer

    from policies.rewriter import AdapterInfo
    from rl.dpo_pairs import read_pairs
    from rl.train_policy import build_trainer, parse_args, save_adapter

    # Score mode: the random tiny judge's CoT text rarely parses, its P(Image 1) always gives a decided preference.
    extra = ["--algorithm", "dpo", "--dpo_rounds", "2", "--dpo_min_gap", "0", "--dpo_max_new_tokens", "8"]
    extra += ["--judge_mode", "score"]
    argv = _tiny_argv(tiny_models, tmp_path, *extra, "--max_steps", "1", "--learning_rate", "1e-2")
    i = argv.index("--max_completion_length")  # a GRPO/RLOO key: DPOConfig rejects it like any unknown flag
    argv = argv[:i] + argv[i + 2 :]
    args, training_args, model_args = parse_args([*argv, "--report_to", "none"])
    assert isinstance(training_args, DPOConfig) and training_args.beta == 0.1  # configs/dpo.yaml, not GRPO's 0.02
    trainer, user = build_trainer(args, training_args, model_args)
    assert isinstance(trainer, DPOTrainer)
    pairs = read_pairs(f"{training_args.output_dir}/pairs.jsonl")
    assert pairs and len(pairs) <= 2 * len(user.training_prompts)
    for row in pairs:
        assert row["chosen_score"] >= row["rejected_score"] and row["original"] in user.training_prompts
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)
    assert AdapterInfo.load(save_adapter(trainer, user, args, training_args, model_args)).trainer == "dpo"


def test_algorithm_comes_from_the_flag_or_the_yaml_and_is_checked(tmp_path):
    from trl import GRPOConfig, RLOOConfig

    from rl.train_policy import parse_args

    config = tmp_path / "rloo.yaml"
    config.write_text("algorithm: rloo\nmax_steps: 3\n")
    common = ["--user", "demo", "--output_dir", str(tmp_path / "out")]
    assert isinstance(parse_args([*common, "--config", str(config)], check_models=False)[1], RLOOConfig)
    flag_wins = parse_args([*common, "--config", str(config), "--algorithm", "grpo"], check_models=False)
    assert isinstance(flag_wins[1], GRPOConfig) and flag_wins[1].max_steps == 3
    with pytest.raises(SystemExit, match="--algorithm must be one of grpo, rloo, dpo, got 'ppo'"):
        parse_args([*common, "--algorithm", "ppo"], check_models=False)


@pytest.mark.slow  # a real training in a subprocess
def test_cli_smoke_accelerate_launch(tiny_models, tmp_path):
    """`accelerate launch rl/train_policy.py --user demo` with tiny models: adapter loads, W&B run holds metrics."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DATA_DIR=str(tmp_path / "wandb-data"), HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "rl/train_policy.py",
        *_tiny_argv(tiny_models, tmp_path, "--max_steps", "2"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[done] adapter:" in proc.stdout
    # accelerate set OMP_NUM_THREADS=1 for the child; the run still uses the cores it has.
    from rl.train_policy import cpu_threads

    assert f"1 process(es) on cpu, torch threads each: {cpu_threads(0, 1)})" in proc.stdout
    # a quiet console: no loading bars, no library deprecation notices, no per-step metric dicts; the step profile
    # is summarized at the end, and every logged row is in metrics.jsonl
    console = proc.stdout + proc.stderr
    for noise in ("Loading weights", "FutureWarning", "{'loss'", "Loading pipeline components"):
        assert noise not in console, noise
    assert "[done] time: mean s/step" in proc.stdout

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from policies.rewriter import AdapterInfo, PromptRewriter, latest_adapter
    from reports.wandb_offline import media_files, read_history

    adapter = latest_adapter("demo", tmp_path / "runs")
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_models["policy"])
    model = PeftModel.from_pretrained(base, str(adapter))
    assert any("lora_A" in n for n, _ in model.named_parameters())
    assert AdapterInfo.load(adapter).user_id == "demo"
    assert len(PromptRewriter(adapter).rewrite(["a sun", "a tree"])) == 2

    logged = [json.loads(line) for line in (adapter.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2]
    assert all("time/step_s" in r for r in logged if "loss" in r)

    run_dir = adapter.parent / "wandb"
    rows = read_history(run_dir)
    assert sum("train/time/step_s" in r for r in rows) == 2  # the profile reached W&B too
    rewards = [r["train/reward"] for r in rows if "train/reward" in r]
    # One reward row per judged batch: each batch serves num_iterations (2) optimizer steps, so 2 steps log one.
    from rl.config import default_recipe

    assert len(rewards) == 2 // default_recipe()["num_iterations"] and all(isinstance(x, float) for x in rewards)
    assert any("train/rewards/fidelity/mean" in r for r in rows)
    assert any("train/judge/verdicts" in r for r in rows)
    assert any(r.get("samples/grid/_type") == "image-file" for r in rows)
    assert any(r.get("samples/dimensions/_type") == "table-file" for r in rows)
    pngs = [p for p in media_files(run_dir) if p.suffix == ".png"]
    assert pngs, "no logged images in the offline run"


def test_cpu_threads_share_the_physical_cores(monkeypatch):
    import psutil

    from rl.train_policy import cpu_threads

    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 8 if logical else 4)
    assert cpu_threads(0, 1) == 4 and cpu_threads(0, 2) == 2 and cpu_threads(0, 8) == 1
    assert cpu_threads(3, 2) == 3  # asked for: used as given
    from rl.config import PigArguments

    with pytest.raises(ValueError, match="torch_threads"):
        PigArguments(user="demo", torch_threads=-1)


def test_a_folder_without_adapter_metadata_is_named_with_the_fix(tmp_path):
    from policies.rewriter import ADAPTER_META, AdapterInfo

    with pytest.raises(FileNotFoundError, match=f"no {ADAPTER_META}.*written by rl/train_policy.py"):
        AdapterInfo.load(tmp_path)


def test_rewrite_command_on_trained_adapter(trained_run, pig_cli):
    """`pig rewrite` serves an adapter (the shared run's); --compare also shows the base policy."""
    out = pig_cli("rewrite", "--adapter", trained_run["adapter"], "--compare", "--json", "a sun")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)["rewrites"]
    assert rows[0]["prompt"] == "a sun" and "rewrite" in rows[0] and "base_rewrite" in rows[0]


def test_the_default_run_is_configs_cpu_yaml(tmp_path):
    """Without --config a run is configs/cpu.yaml's, value for value (the recipes' completeness: test_recipes.py)."""
    from rl.train_policy import parse_args

    common = ["--user", "demo", "--run_name", "x"]
    plain = parse_args(common, check_models=False)
    from_yaml = parse_args(["--config", str(REPO / "configs" / "cpu.yaml"), *common], check_models=False)
    for a, b in zip(plain, from_yaml):
        assert dataclasses.asdict(a) == dataclasses.asdict(b)


def test_gpu_config_parses_then_fails_fast_offline(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), WANDB_MODE="disabled")
    proc = subprocess.run(
        [sys.executable, "rl/train_policy.py", "--config", "configs/gpu.yaml", "--user", "demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Hub cannot be reached" in proc.stderr
    for model in (
        "jeongeunnn/pigreward",
        "jeongeunnn/pigreward-bootstrap",
        "stabilityai/stable-diffusion-2-1-base",
        "Qwen/Qwen2.5-1.5B-Instruct",
    ):
        assert model in proc.stderr
    # fast: the check runs before any model is loaded, and ends in one message, not a loading error's traceback
    assert "Traceback" not in proc.stderr


def test_bad_config_key_is_an_error(tmp_path, capsys):
    from common.errors import run_command
    from rl.train_policy import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("judge_modle: x\n")
    assert run_command(main, ["--config", str(bad), "--user", "demo"]) == 2  # what the script's __main__ returns
    assert "judge_modle" in capsys.readouterr().err


def test_group_split_is_refused():
    """A batch that cannot hold whole groups is refused at start-up (TRL's check on one process, ours per slice)."""
    from rl.train_policy import parse_args

    with pytest.raises((SystemExit, ValueError), match="num_generations"):
        parse_args(
            ["--user", "demo", "--per_device_train_batch_size", "6", "--num_generations", "4"], check_models=False
        )


def test_unknown_user_fails_with_clear_message(tiny_models, tmp_path, capsys, monkeypatch):
    from common.errors import run_command
    from rl.train_policy import main

    monkeypatch.setenv("WANDB_MODE", "disabled")
    argv = _tiny_argv(tiny_models, tmp_path)
    argv[argv.index("--user") + 1] = "nobody"
    assert run_command(main, argv) == 2  # what the script's __main__ returns
    assert "Unknown user 'nobody'" in capsys.readouterr().err
