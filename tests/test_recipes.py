"""The GPU and cluster recipes of README parse here: accelerate configs, the GPU config with vLLM generation, and the
judge behind an OpenAI-compatible server (`vllm serve`). Nothing here needs a GPU; the models are not loaded."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

ACCELERATE = REPO / "configs" / "accelerate"


@pytest.mark.parametrize(
    "name, kind, processes",
    [
        ("cpu_2proc.yaml", "MULTI_GPU", 2),  # torchrun launcher; gloo on a machine without GPUs
        ("gpu_1.yaml", "NO", 1),
        ("gpu_ddp.yaml", "MULTI_GPU", 8),
        ("gpu_zero2.yaml", "DEEPSPEED", 8),
    ],
)
def test_accelerate_configs_load(name, kind, processes):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE / name))
    assert str(config.distributed_type).split(".")[-1] == kind
    assert config.num_processes == processes
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 2


def _gpu_argv(*extra: str) -> list[str]:
    # bf16 off only because TrainingArguments refuses bf16 on a machine without a GPU; everything else as shipped
    config = str(REPO / "configs" / "gpu.yaml")
    return ["--config", config, "--user", "demo", "--users_dir", str(REPO / "users"), "--bf16", "false", *extra]


@pytest.mark.parametrize("mode", ["colocate", "server"])
def test_gpu_config_with_vllm_generation_parses(mode):
    from rl.train_policy import parse_args

    args, training_args, model_args = parse_args(
        _gpu_argv("--use_vllm", "true", "--vllm_mode", mode), check_models=False
    )
    assert training_args.use_vllm is True and training_args.vllm_mode == mode
    assert model_args.model_name_or_path == "Qwen/Qwen2.5-1.5B-Instruct" and args.judge_model == "jeongeunnn/pigreward"


def test_gpu_config_with_the_judge_behind_vllm_serve_parses():
    from rl.train_policy import parse_args

    args, _, _ = parse_args(
        _gpu_argv("--judge_backend", "openai", "--judge_base_url", "http://judge-host:8000/v1"), check_models=False
    )
    assert args.judge_backend == "openai" and args.judge_base_url == "http://judge-host:8000/v1"
