"""What `rl/train_policy.py` hands TRL (issue 23): the reward weights paired with the right reward functions, and a
run started with `--init_adapter` starting from that adapter's weights. On the tiny real models; no training step."""

from __future__ import annotations

import pytest
import torch

from tests.test_training import _tiny_argv

WEIGHTS = ["--fidelity_weight", "2", "--repetition_weight", "3"]  # distinct: a swapped pair shows


def test_reward_weights_are_listed_in_the_order_of_the_reward_functions(tmp_path):
    from rl.train_policy import parse_args

    argv = ["--user", "demo", "--runs_dir", str(tmp_path), *WEIGHTS]
    _, training_args, _ = parse_args(argv, check_models=False)
    # [preference, fidelity, repetition]: the order of `reward_funcs` in `build_trainer`
    assert training_args.reward_weights == [1.0, 2.0, 3.0]


@pytest.fixture(scope="module")
def started(tiny_models, tmp_path_factory):
    """A trainer built with `--init_adapter` (a LoRA with random, non-zero weights) and distinct reward weights;
    returns (trainer, the adapter's saved tensors)."""
    import os

    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from rl.train_policy import build_trainer, parse_args

    tmp = tmp_path_factory.mktemp("init_adapter")
    adapter = tmp / "adapter"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models["policy"]), lora).save_pretrained(adapter)
    saved = load_file(adapter / "adapter_model.safetensors")
    old = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "disabled"
    try:
        argv = _tiny_argv(tiny_models, tmp, "--max_steps", "1", "--report_to", "none", *WEIGHTS)
        args, training_args, model_args = parse_args([*argv, "--init_adapter", str(adapter)])
        trainer, _ = build_trainer(args, training_args, model_args)
    finally:
        if old is None:
            os.environ.pop("WANDB_MODE")
        else:
            os.environ["WANDB_MODE"] = old
    return trainer, saved


def test_each_reward_function_gets_its_own_weight(started):
    trainer, _ = started
    weights = dict(zip(trainer.reward_func_names, trainer.reward_weights.tolist(), strict=True))
    assert weights == {"preference": 1.0, "fidelity": 2.0, "repetition": 3.0}


def test_init_adapter_starts_from_the_adapters_weights(started):
    trainer, saved = started
    params = dict(trainer.model.named_parameters())
    # PEFT saves `...q_proj.lora_A.weight`; the loaded model names it `...q_proj.lora_A.default.weight`
    loaded = {key: params[key.replace(".weight", ".default.weight")] for key in saved}
    assert len(saved) == 2 * 2 * 2  # 2 layers x (q_proj, v_proj) x (A, B)
    assert all(float(t.abs().max()) > 0 for t in saved.values()), "the adapter should not be a fresh (zero B) LoRA"
    for key, tensor in saved.items():
        assert torch.equal(loaded[key].detach().cpu(), tensor), f"{key}: not the adapter's weight"
        assert loaded[key].requires_grad, f"{key} was loaded frozen: the run would not train it"


def test_lora_top_layers_puts_the_lora_on_the_top_layers_only(tiny_models):
    """`lora_top_layers: N`: a fresh LoRA on the policy's top N decoder layers, so no gradient flows below them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from common.errors import ConfigError
    from rl.train_policy import top_layers_only

    policy = AutoModelForCausalLM.from_pretrained(tiny_models["policy"])
    total = policy.config.num_hidden_layers
    config = top_layers_only(LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"), policy, 1)
    model = get_peft_model(policy, config)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(f".layers.{total - 1}." in n for n in names)
    ids = torch.tensor([[1, 2, 3, 4]])
    hidden = {}
    layers = model.base_model.model.model.layers
    layers[0].register_forward_hook(lambda m, i, o: hidden.setdefault("bottom", o[0] if isinstance(o, tuple) else o))
    model(input_ids=ids).logits.sum().backward()
    assert not hidden["bottom"].requires_grad  # the layers below the LoRA build no graph
    assert top_layers_only(None, policy, 1) is None
    with pytest.raises(ConfigError, match="lora_top_layers"):
        top_layers_only(LoraConfig(r=4, target_modules=["q_proj"]), policy, total + 1)


@pytest.mark.parametrize(
    "name", ["context_references", "context_nearest", "policy_context_nearest", "lora_top_layers"]
)
def test_negative_windows_are_config_errors(name):
    """A negative `context_references` or `lora_top_layers` is refused where the config is read, naming the key."""
    from common.errors import ConfigError
    from rl.config import PigArguments

    with pytest.raises(ConfigError, match=name):
        PigArguments(user="demo", **{name: -1})


@pytest.mark.parametrize("policy_nearest", [None, "0"])
def test_a_policy_that_reads_the_nearest_rationales_sees_those_of_its_prompts_nearest_choices(
    tiny_models, tmp_path, policy_nearest
):
    """`--policy_reads_context --context_nearest 2`: each training prompt's chat holds the rationales of the user's two
    choices whose prompts are nearest to it (MiniLM cosine, computed here on its own), and the adapter will record
    that it reads them (`context_nearest`, the embedder), so that serving picks the same ones. With
    `--policy_context_nearest 0` the judge still reads two, and the policy's chat holds the whole context."""
    import os

    from policies.rewriter import format_policy_context
    from reward.similarity import TextEmbedder
    from rl.checkpoint import read_state
    from rl.train_policy import _context_fields, build_trainer, parse_args

    os.environ.setdefault("WANDB_MODE", "disabled")
    argv = _tiny_argv(tiny_models, tmp_path, "--max_steps", "1", "--report_to", "none")
    argv = [*argv, "--policy_reads_context", "true", "--context_nearest", "2"]
    if policy_nearest is not None:
        argv += ["--policy_context_nearest", policy_nearest]
    args, training_args, model_args = parse_args(argv)
    trainer, user = build_trainer(args, training_args, model_args)
    assert trainer.reward_funcs[0].__self__.pig.settings.context_nearest == 2  # the judge reads two either way
    state = read_state(training_args.output_dir)["context"]
    rationales = [(r["prompt"], r["text"]) for r in state["rationales"]]
    embedder = TextEmbedder(tiny_models["minilm"])
    choices = embedder.embed([p for p, _ in rationales])
    rows = list(trainer.train_dataset)
    assert [row["original_prompt"] for row in rows] == user.training_prompts
    fields = _context_fields(args, training_args.output_dir)
    if policy_nearest == "0":
        whole = format_policy_context([text for _, text in rationales])
        assert len(rationales) > 2 and all(row["prompt"][0]["content"].endswith(whole) for row in rows)
        assert fields["context_nearest"] == 0 and "prompt_embedder" not in fields["context_source"]
        return
    for row in rows:
        system = row["prompt"][0]["content"]
        nearest = (embedder.embed([row["original_prompt"]]) @ choices.T)[0].topk(2).indices.tolist()
        assert system.endswith(format_policy_context([rationales[i][1] for i in sorted(nearest)]))
    assert fields["context_nearest"] == 2 and fields["context_source"]["prompt_embedder"] == tiny_models["minilm"]


def test_a_run_from_a_context_reading_adapter_keeps_its_nearest_setting(tmp_path):
    """An adapter trained on the 2 nearest rationales, continued with another --context_nearest, is refused with the
    fix; the same setting is accepted."""
    from common.errors import ConfigError
    from policies.rewriter import CONTEXT_FORMAT, AdapterInfo
    from rl.train_policy import check_init_context, parse_args

    AdapterInfo("u", "base", "Rewrite.", 8, context_format=CONTEXT_FORMAT, context_nearest=2).save(tmp_path)
    argv = ["--user", "demo", "--runs_dir", str(tmp_path / "runs"), "--init_adapter", str(tmp_path)]
    args, _, _ = parse_args(argv, check_models=False)
    with pytest.raises(ConfigError, match="Pass --policy_context_nearest 2"):
        check_init_context(args)
    args, _, _ = parse_args([*argv, "--context_nearest", "2"], check_models=False)
    check_init_context(args)
    # the judge may read another number when the policy's own is given
    args, _, _ = parse_args([*argv, "--context_nearest", "3", "--policy_context_nearest", "2"], check_models=False)
    check_init_context(args)
    args, _, _ = parse_args([*argv, "--context_nearest", "2", "--policy_context_nearest", "0"], check_models=False)
    with pytest.raises(ConfigError, match="Pass --policy_context_nearest 2"):
        check_init_context(args)


def test_policy_context_nearest_without_a_policy_that_reads_the_context_is_refused(tiny_models, tmp_path):
    """`--policy_context_nearest` on a per-user run whose policy reads no context would change nothing: refused
    with the fix, before any model is loaded."""
    from common.errors import ConfigError
    from rl.train_policy import build_trainer, parse_args

    argv = _tiny_argv(tiny_models, tmp_path, "--max_steps", "1", "--report_to", "none")
    args, training_args, model_args = parse_args([*argv, "--policy_context_nearest", "0"])
    with pytest.raises(ConfigError, match="add --policy_reads_context true"):
        build_trainer(args, training_args, model_args)
