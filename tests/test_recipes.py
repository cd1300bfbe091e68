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


# ------------------------------------------------------------------------------- one source of training defaults
RECIPES = sorted((REPO / "configs").glob("*.yaml"))


def _accepted(algorithm: str) -> set[str]:
    """The keys the trainer of `algorithm` takes from a recipe: ours, its TRL config's, the policy's."""
    import dataclasses

    import trl

    from rl.config import PigArguments
    from rl.train_policy import ALGORITHMS

    classes = (PigArguments, getattr(trl, ALGORITHMS[algorithm][0]), trl.ModelConfig)
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def _left_to_us(recipe: dict) -> list[str]:
    """What a run with this recipe would take from the reference recipe (configs/cpu.yaml) instead of its own file."""
    from rl.config import inherited_keys

    return inherited_keys(recipe, "grpo", _accepted(recipe.get("algorithm", "grpo")))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_is_complete(path):
    """A GPU run used to inherit the CPU demo's num_iterations and scale_rewards unseen: each recipe now states every
    value the trainer would otherwise take from us (the keys of the reference recipe its trainer accepts)."""
    from rl.config import read_recipe

    recipe = read_recipe(path)
    assert not _left_to_us(recipe), f"{path.name} leaves these to configs/cpu.yaml: {_left_to_us(recipe)}"


def test_the_completeness_check_names_an_omitted_key():
    from rl.config import read_recipe

    gpu = read_recipe(REPO / "configs" / "gpu.yaml")
    assert _left_to_us({k: v for k, v in gpu.items() if k not in ("num_iterations", "scale_rewards")}) == [
        "num_iterations",
        "scale_rewards",
    ]
    dpo = read_recipe(REPO / "configs" / "dpo.yaml")
    assert _left_to_us({k: v for k, v in dpo.items() if k != "beta"}) == ["beta"]  # DPOConfig takes beta too
    assert "num_generations" not in _left_to_us({"algorithm": "dpo"})  # DPOConfig has no such field
    assert {"num_generations", "renderer_model"} <= set(_left_to_us({}))


def test_our_defaults_are_read_from_cpu_yaml():
    """PigArguments' defaults of the keys configs/cpu.yaml sets are that file's values, read from it (`_cpu(key)` in
    rl/config.py), never written a second time as a literal."""
    import ast
    import dataclasses

    import yaml

    from rl.config import PigArguments

    fields = {f.name: f.default for f in dataclasses.fields(PigArguments)}
    cpu = yaml.safe_load((REPO / "configs" / "cpu.yaml").read_text())
    ours = {k: v for k, v in cpu.items() if k in fields}
    assert len(ours) >= 15 and all(fields[k] == v for k, v in ours.items())
    tree = ast.parse((REPO / "rl" / "config.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PigArguments")
    written = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Call):
            default = next((k.value for k in node.value.keywords if k.arg == "default"), None)
            written[node.target.id] = ast.unparse(default) if default is not None else None
    assert {k: written[k] for k in ours} == {k: f"_cpu({k!r})" for k in ours}
    assert [k for k, v in written.items() if v and v.startswith("_cpu(") and k not in cpu] == []


def test_every_command_that_builds_a_policy_reads_the_same_recipe():
    """train, evaluate/matrix (parse_dataclasses), diagnose (recipe_of): one recipe, the same values."""
    from policy_eval.diagnose import DiagnoseArguments
    from policy_eval.evaluate_policy import EvalArguments, parse_dataclasses
    from rl.config import read_recipe, recipe_of
    from rl.train_policy import parse_args

    argv = _gpu_argv()
    gpu = read_recipe(REPO / "configs" / "gpu.yaml")
    train, training_args, model_args = parse_args(argv, check_models=False)
    assert (training_args.num_iterations, training_args.scale_rewards) == (gpu["num_iterations"], gpu["scale_rewards"])
    assert model_args.model_name_or_path == gpu["model_name_or_path"]
    own = [a for a in argv if a not in ("--bf16", "false")]
    for command in ((EvalArguments,), (DiagnoseArguments,)):
        pig_args, _ = parse_dataclasses((type(train), *command), own)
        assert dataclasses_equal(pig_args, train)
    recipe = recipe_of(own)
    assert (recipe["model_name_or_path"], recipe["temperature"]) == (gpu["model_name_or_path"], gpu["temperature"])
    assert recipe_of(["--user", "demo"])["model_name_or_path"] == ".models/smollm2-rewriter"  # no --config: cpu.yaml
    assert recipe_of(["--user", "demo"], "dpo")["beta"] == 0.1  # --algorithm dpo: configs/dpo.yaml


def dataclasses_equal(a, b) -> bool:
    import dataclasses

    return dataclasses.asdict(a) == dataclasses.asdict(b)
