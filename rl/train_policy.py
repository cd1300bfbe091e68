"""Train one user's prompt-rewriting policy (a LoRA adapter) against that user's PIGReward verdicts with TRL GRPO
(or RLOO, or the paper's DPO route on judged pairs).

    accelerate launch rl/train_policy.py --user demo                          # offline CPU demo (configs/cpu.yaml)
    accelerate launch rl/train_policy.py --config configs/gpu.yaml --user U   # real checkpoints on GPUs
    accelerate launch rl/train_policy.py --user demo --max_steps 2 --learning_rate 5e-5   # CLI overrides
    accelerate launch rl/train_policy.py --user demo --algorithm rloo        # TRL's RLOOTrainer instead
    accelerate launch rl/train_policy.py --user demo --algorithm dpo         # judged pairs, then TRL's DPOTrainer
                                                                             # (configs/dpo.yaml)
    accelerate launch rl/train_policy.py --population runs/users/population  # one rewriter for many users, reading
                                                                             # each user's context (issue 21)

Reads top to bottom: parse -> load user -> build reward -> build dataset -> build trainer -> train -> save adapter.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

# Offline unless the user configured W&B otherwise; set before wandb/transformers are imported.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_PROJECT", "pig-rl")
os.environ.setdefault("WANDB_SILENT", "true")
# OpenMP threads that spin while they wait steal the core the other thread needs on a small shared CPU (see
# localmodels/renderer.py); only effective before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rl.config import PigArguments, default_recipe  # noqa: E402
from rl.reward_stack import build_reward_stack, check_configured_models  # noqa: E402

ALGORITHMS = {
    "grpo": ("GRPOConfig", "GRPOTrainer"),
    "rloo": ("RLOOConfig", "RLOOTrainer"),
    "dpo": ("DPOConfig", "DPOTrainer"),
}


def algorithm_of(argv: list[str]) -> str:
    """The trainer the command asks for (`--algorithm`, else the `algorithm:` key of `--config`, else grpo).

    Read before the full parse because it decides which TRL config class parses the rest.
    """
    import argparse

    import yaml

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algorithm")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    algorithm = known.algorithm
    if algorithm is None and known.config:
        try:
            with open(known.config, encoding="utf-8") as f:
                algorithm = (yaml.safe_load(f) or {}).get("algorithm")
        except (OSError, yaml.YAMLError, AttributeError):
            algorithm = None  # the full parse reports a missing or malformed config file with its own message
    algorithm = algorithm or "grpo"
    if algorithm not in ALGORITHMS:
        raise SystemExit(f"error: --algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}.")
    return algorithm


def parse_args(argv: list[str] | None = None, check_models: bool = True):
    """Embedded CPU defaults < --config YAML < CLI flags. Returns (PigArguments, trainer config, ModelConfig).

    With `check_models`, every configured model is checked (local folder, cache or reachable Hub) before the trainer
    config is built, so a missing model is the first error, not a bf16 complaint on a machine without a GPU.
    """
    import trl
    from trl import ModelConfig, TrlParser

    from common.errors import ConfigError
    from policies.rewriter import POPULATION
    from reward.users import user_id_of
    from rl import checkpoint
    from rl.config import DEFAULT_RECIPES, inherited_keys, parse_checked, read_recipe

    argv = list(sys.argv[1:] if argv is None else argv)
    algorithm = algorithm_of(argv)
    config_class = getattr(trl, ALGORITHMS[algorithm][0])
    # The default recipe of the algorithm (configs/cpu.yaml, configs/dpo.yaml) under --config (a complete recipe
    # leaves it nothing) under the flags: the one source of every value (rl/config.py).
    defaults = {k: v for k, v in default_recipe(algorithm).items() if k != "env"}
    if check_models and not {"-h", "--help"} & set(argv):
        # Check the models before the trainer config is built: on a machine without the Hub or a GPU, "model X is
        # not reachable" is the first thing to fix, and building the trainer config would first complain about bf16.
        # The first pass validates every key and type but skips the config's environment checks.
        class _Unchecked(config_class):
            def __post_init__(self):
                pass

        early = TrlParser((PigArguments, _Unchecked, ModelConfig))
        early.set_defaults_with_config(**defaults)
        pig_args, _, early_model_args = parse_checked(early, argv)
        check_configured_models(pig_args, early_model_args)
    parser = TrlParser((PigArguments, config_class, ModelConfig))
    parser.set_defaults_with_config(**defaults)
    args, training_args, model_args = parse_checked(parser, argv)  # unknown YAML keys, wrong types: ConfigError
    args.algorithm = algorithm
    if "--config" in argv:  # say what a partial recipe takes from the default one, instead of taking it silently
        config = argv[argv.index("--config") + 1]
        accepted = {f.name for cls in parser.dataclass_types for f in dataclasses.fields(cls)}
        inherited = inherited_keys(read_recipe(config), algorithm, accepted)
        if inherited:
            print(
                f"[config] {config} leaves {len(inherited)} keys to the default recipe "
                f"configs/{DEFAULT_RECIPES[algorithm]}: {', '.join(inherited)}"
            )
    if bool(args.user) == bool(args.population):
        parser.error(
            "give --user (a user id under --users_dir, e.g. demo, or a path to a user folder) or --population (a "
            "folder of users or a comma list of them), one of them."
        )
    if args.population and algorithm == "dpo":
        parser.error(
            "--population trains with grpo or rloo: the DPO route collects one user's judged pairs. Drop "
            "--algorithm dpo."
        )
    if not model_args.use_peft:
        parser.error("This trainer produces one LoRA adapter per user: keep use_peft true.")
    if algorithm != "dpo":
        slice_size = training_args.per_device_train_batch_size * training_args.steps_per_generation
        if slice_size % training_args.num_generations:
            parser.error(
                f"per_device_train_batch_size * steps_per_generation = {slice_size} is not a multiple of "
                f"num_generations = {training_args.num_generations}: a group of rewrites would be split across "
                "reward calls. Adjust one."
            )
        if training_args.reward_weights is not None:
            parser.error(
                "Set fidelity_weight and repetition_weight instead of reward_weights (rewards are [preference, "
                "fidelity, repetition])."
            )
        training_args.reward_weights = [1.0, args.fidelity_weight, args.repetition_weight]
    # `users/demo/user.json` files its run under runs/demo/; a population's under runs/population/
    user_key = POPULATION if args.population else user_id_of(args.user, args.users_dir)
    if not args.population and user_key == POPULATION:
        raise ConfigError(
            f"The user id {POPULATION!r} is reserved: runs/{POPULATION}/ holds the population model. Rename the user."
        )
    if training_args.resume_from_checkpoint:
        raise ConfigError(
            "Use --resume (and --run_name to pick the run) instead of resume_from_checkpoint: it also restores the "
            "run's user context, W&B run and metrics file."
        )
    if args.resume:  # the named run, else the user's latest unfinished one (rl/checkpoint.py)
        run = checkpoint.run_to_resume(training_args.output_dir, args.runs_dir, user_key, training_args.run_name)
    else:
        run = training_args.run_name or time.strftime(f"{args.algorithm}-%Y%m%d-%H%M%S")
    training_args.output_dir = training_args.output_dir.format(runs_dir=args.runs_dir, user=user_key, run=run)
    training_args.run_name = run
    if not args.resume:
        checkpoint.check_fresh_start(training_args.output_dir)  # an unfinished run there: --resume or another name
    return args, training_args, model_args


def main(argv: list[str] | None = None) -> Path:
    from rl.console import quiet_libraries

    quiet_libraries()  # loading bars, deprecation notices, info chatter: only with PIG_VERBOSE=1
    args, training_args, model_args = parse_args(argv)
    trainer, user = build_trainer(args, training_args, model_args)
    from accelerate import PartialState

    from rl import checkpoint

    resume_from = None
    if args.resume:  # the last complete checkpoint; metrics.jsonl and rollouts cut back to it
        resume_from = checkpoint.prepare_resume(training_args.output_dir, PartialState().is_main_process)
    checkpoint.train(trainer, resume_from)  # a judge gone for good: checkpoint, then one clear error
    adapter_dir = save_adapter(trainer, user, args, training_args, model_args)
    from reports.report import report_after_training

    report_after_training(adapter_dir.parent)  # <run>/report.html
    return adapter_dir


def build_trainer(args: PigArguments, training_args, model_args):
    """Steps 1-4: load the user, build the reward, the dataset and the trainer. Returns (trainer, user); with
    `--population`, (trainer, the list of users trained on)."""
    import torch
    import trl
    from accelerate import PartialState
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config

    from common.errors import ConfigError
    from common.hub import load_kwargs
    from policies.rewriter import build_chat, check_adapter_files, check_adapter_fits
    from reward.users import load_population, load_user
    from rl import console, ground_truth
    from rl.checkpoint import pin_context, pin_contexts
    from rl.environment import PersonalizedEnvironment
    from rl.reward_stack import build_population_stack
    from rl.step_profile import StepProfile
    from rl.tracking import SampleLogger

    state = PartialState()
    out_dir = Path(training_args.output_dir)
    device = str(state.device) if not training_args.use_cpu else "cpu"
    if device == "cpu":
        torch.set_num_threads(cpu_threads(args.torch_threads, state.num_processes))

    # 1. The user (or, with --population, every user of the population): references (for the context) and the
    # prompts to train on. Bad data fails here, before any model.
    if args.population:
        users, heldout = load_population(args.population, args.users_dir)
    else:
        users, heldout = [load_user(args.user, args.users_dir)], []
    user, prompts = users[0], users[0].training_prompts
    reads_context = policy_reads_context(args)  # a population model, or a run started from a context-conditioned one
    if args.policy_context_nearest is not None and not reads_context:
        raise ConfigError(
            "--policy_context_nearest sets what a policy that reads the user's context is given, and this run's "
            "policy reads none: add --policy_reads_context true (or train --population), or drop the flag."
        )
    if reads_context and args.algorithm == "dpo":
        raise ConfigError(
            f"--init_adapter {args.init_adapter} reads the user's context, and the DPO route collects its pairs "
            "with the plain chat. Start a DPO run from a per-user adapter or a fresh LoRA, or use grpo/rloo."
        )
    check_init_context(args)
    check_configured_models(args, model_args)
    _print_plan(state, args, training_args, model_args, users, heldout, reads_context)

    # 2. The reward: PIGReward (contexts built once, cached), the renderer, the fidelity embedder. The contexts are
    # recorded in the run folder: a resumed run judges with the very contexts it started with.
    if args.population:
        pig, contexts, renderer, embedder = build_population_stack(args, users, device, state)
        context = contexts = pin_contexts(out_dir, contexts, args.resume, state.is_main_process)
    else:
        pig, context, renderer, embedder = build_reward_stack(args, user, device, state)
        context = pin_context(out_dir, context, args.resume, state.is_main_process)
        contexts = {user.user_id: context}
    # sandbox users only: the truth is logged beside the reward, never used by it (nor shown to the policy)
    tastes = {u.user_id: ground_truth.taste_of(u) for u in users}
    if args.population and any(t is None for t in tastes.values()):
        if state.is_main_process and any(t is not None for t in tastes.values()):
            print("[plan] some users of the population are not sandbox users: no ground truth is logged")
        truth = None
    elif args.population:
        truth = {u: functools.partial(ground_truth.preferences, t) for u, t in tastes.items()}
    else:
        truth = functools.partial(ground_truth.preferences, tastes[user.user_id]) if tastes[user.user_id] else None
    dpo = args.algorithm == "dpo"
    profile = StepProfile()  # the `time/` metrics; DPO's reward is computed before training, outside its steps
    env = PersonalizedEnvironment(
        pig,
        context,
        renderer,
        embedder,
        num_generations=args.dpo_candidates if dpo else training_args.num_generations,
        images_per_prompt=args.images_per_prompt,
        seed=training_args.seed,
        seed_per_step=args.seed_per_step,
        compare_to=args.compare_to,
        fidelity_floor=args.fidelity_floor,
        ground_truth=truth,
        sample_logger=None
        if dpo
        else SampleLogger(
            out_dir, args.log_images_every, args.log_groups, args.fidelity_weight, args.repetition_weight
        ),
        profile=None if dpo else profile,
        rollout_log=out_dir / "rollouts" / f"rank{state.process_index}.jsonl",
        max_undecided_fraction=args.max_undecided_fraction,
        max_failed_batches=args.judge_max_failed_batches,
    )

    # 3. The dataset: one conversational prompt per (user, training prompt); `original_prompt` and `user_id` reach
    # the reward as kwargs (the environment judges each group under its user's context). A context-conditioned
    # policy reads the user's context (the reasoner's rationales, as text) in its chat; nothing else of the user.
    # With --context_nearest K (and no --policy_context_nearest), each prompt's chat holds the K rationales the judge
    # reads for that prompt; --policy_context_nearest sets the policy's own number (0: the whole context).
    read = {
        u.user_id: pig.rationales_for(u.training_prompts, contexts[u.user_id], args.policy_nearest)
        for u in users
        if reads_context
    }
    dataset = Dataset.from_list(
        [
            {
                "prompt": build_chat(p, context=read[u.user_id][i] if reads_context else None),
                "original_prompt": p,
                "user_id": u.user_id,
            }
            for u in users
            for i, p in enumerate(u.training_prompts)
        ]
    )

    # 4. The trainer: the policy with a fresh LoRA (or the adapter to continue from), TRL's trainer as it is.
    # no checkpoint code unless PIG_TRUST_REMOTE_CODE=1, safetensors weights only (common.hub.load_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, **load_kwargs(weights=False))
    dtype = getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else torch.float32
    policy = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, dtype=dtype, **load_kwargs())
    peft_config = top_layers_only(get_peft_config(model_args), policy, args.lora_top_layers)
    if args.init_adapter:
        check_adapter_files(args.init_adapter)  # safetensors only, and shapes that fit this policy
        check_adapter_fits(args.init_adapter, policy, model_args.model_name_or_path)
        policy = PeftModel.from_pretrained(policy, args.init_adapter, is_trainable=True)
        peft_config = None
    _init_wandb(state, training_args, args, model_args, out_dir)
    if dpo:  # the paper's route: judged pairs from the starting policy, then DPO on them
        dataset, rewards = _judged_pairs(state, args, training_args, policy, tokenizer, env, prompts, out_dir), {}
    else:  # on-policy: TRL calls the environment's reward functions on every batch of rewrites
        rewards = {"reward_funcs": [env.preference, env.fidelity, env.repetition]}
    trainer = getattr(trl, ALGORITHMS[args.algorithm][1])(
        model=policy,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        **rewards,
    )
    trainer.callback_handler.callbacks.insert(0, profile)  # first, so that W&B's `on_log` sees the `time/` metrics
    console.install(trainer, out_dir / "metrics.jsonl")  # one progress bar; every logged row to metrics.jsonl
    return trainer, users if args.population else user


def top_layers_only(peft_config, policy, n: int):
    """`peft_config` restricted to the policy's top `n` decoder layers (`n` 0: unchanged). Autograd builds the graph
    only from the first tensor that needs a gradient, so the layers below the lowest LoRA are run forward only."""
    from common.errors import ConfigError

    if not n or peft_config is None:
        return peft_config
    total = policy.config.num_hidden_layers
    if not 0 < n <= total:
        raise ConfigError(f"--lora_top_layers must be in [0, {total}] for {policy.config.model_type}, got {n}.")
    peft_config.layers_to_transform = list(range(total - n, total))
    peft_config.layers_pattern = "layers"
    return peft_config


def policy_reads_context(args: PigArguments) -> bool:
    """Whether the policy trained by this run reads the user's context in its chat: a population model always; a
    per-user run when it starts from a context-conditioned adapter (`--init_adapter` of a population model), so that
    the adapter keeps the input it was trained on (its saved adapter then reads the context too: serve it with one,
    `pig rewrite --user U` does)."""
    from policies.rewriter import ADAPTER_META, AdapterInfo

    if args.population or args.policy_reads_context:
        return True
    if args.init_adapter and (Path(args.init_adapter) / ADAPTER_META).is_file():
        return AdapterInfo.load(args.init_adapter).needs_context
    return False


def check_init_context(args: PigArguments) -> None:
    """A run started from a context-conditioned adapter keeps the chat it was trained with: the same number of nearest
    rationales (`--policy_context_nearest`, else `--context_nearest`), so the adapter is not handed a context of
    another shape. The judge's `--context_nearest` is free when `--policy_context_nearest` is given.

    Raises:
        ConfigError: the adapter read the K nearest rationales and this run gives it another number.
    """
    from common.errors import ConfigError
    from policies.rewriter import ADAPTER_META, AdapterInfo

    if not args.init_adapter or not (Path(args.init_adapter) / ADAPTER_META).is_file():
        return
    info = AdapterInfo.load(args.init_adapter)
    if info.needs_context and info.context_nearest != args.policy_nearest:
        flag = "--context_nearest" if args.policy_context_nearest is None else "--policy_context_nearest"
        raise ConfigError(
            f"--init_adapter {args.init_adapter} was trained reading {_rationales_read(info.context_nearest)}, and "
            f"this run gives it {flag} {args.policy_nearest}. Pass --policy_context_nearest "
            f"{info.context_nearest} (the judge keeps its --context_nearest), or start from a fresh LoRA."
        )


def cpu_threads(requested: int, num_processes: int) -> int:
    """Torch threads for one of `num_processes` CPU processes: `requested`, or (0) the physical cores shared out.

    On the 2-core machine one thread per process is what `accelerate launch` sets; two threads made the policy's
    forward + backward 1.5-1.7x faster and its generation 1.4-1.5x (8 x 62 tokens, SmolLM2-135M + LoRA, measured here).
    """
    if requested:
        return requested
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, cores // max(1, num_processes))


def _judged_pairs(state, args, training_args, policy, tokenizer, env, prompts, out_dir: Path):
    """The DPO dataset: collected by the main process and written to `pairs.jsonl`; the other processes read it."""
    from datasets import Dataset

    from rl.dpo_pairs import DPO_COLUMNS, PairSettings, collect_pairs, read_pairs, write_pairs

    path = out_dir / "pairs.jsonl"
    with state.main_process_first():
        if state.is_main_process:
            settings = PairSettings(
                rounds=args.dpo_rounds,
                candidates=args.dpo_candidates,
                min_gap=args.dpo_min_gap,
                max_new_tokens=args.dpo_max_new_tokens,
                temperature=args.dpo_temperature,
                seed=training_args.seed,
            )
            weights = (args.fidelity_weight, args.repetition_weight)
            rows, stats = collect_pairs(policy, tokenizer, env, prompts, weights, settings)
            write_pairs(rows, path)
            print(
                f"[dpo] {stats['pairs']} pairs from {stats['groups']} judged groups (mean reward gap "
                f"{stats['mean_gap']:.3f}; {stats['close_groups']} too close, {stats['undecided_groups']} undecided) "
                f"-> {path}"
            )
            _log_summary({f"dpo/{k}": v for k, v in stats.items()})
        rows = read_pairs(path)
    if not rows:
        raise SystemExit(
            f"error: no judged pair had a reward gap >= dpo_min_gap={args.dpo_min_gap} ({path} is empty). Lower "
            "--dpo_min_gap, raise --dpo_rounds or --dpo_candidates, or check the judge's statuses."
        )
    return Dataset.from_list([{k: row[k] for k in DPO_COLUMNS} for row in rows])


def _log_summary(values: dict) -> None:
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.run.summary.update(values)


def save_adapter(trainer, user, args: PigArguments, training_args, model_args) -> Path:
    """Step 6: the adapter in PEFT format, with what is needed to serve it; runs/<user>/LATEST points at it (a
    population model's: runs/population/LATEST; `user` is then the list of users it was trained on)."""
    from accelerate import PartialState

    from policies.rewriter import POPULATION, SYSTEM_PROMPT, AdapterInfo, write_latest

    state = PartialState()
    out_dir = Path(training_args.output_dir)
    adapter_dir = out_dir / "adapter"
    owner = POPULATION if args.population else user.user_id
    trainer.save_model(str(adapter_dir))
    if state.is_main_process:
        AdapterInfo(
            user_id=owner,
            base_model=model_args.model_name_or_path,
            system_prompt=SYSTEM_PROMPT,
            max_new_tokens=getattr(training_args, "max_completion_length", None) or args.dpo_max_new_tokens,
            trained_steps=trainer.state.global_step,
            trainer=args.algorithm,
            temperature=getattr(training_args, "temperature", None) or args.dpo_temperature,
            **_seen_fields(user, args),
            **_context_fields(args, out_dir),
        ).save(adapter_dir)
        (out_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        if args.population:  # who the population model was trained on (the held-out users: never)
            (out_dir / "population.json").write_text(
                json.dumps({"population": args.population, "users": [u.user_id for u in user]}, indent=1) + "\n"
            )
        from rl.tracking import learning_curve

        curve = learning_curve(trainer.state.log_history, out_dir / "learning_curve.png", title=owner)
        if curve is not None:
            print(f"[done] learning curve: {curve}")
        write_latest(args.runs_dir, owner, adapter_dir)
        _print_summary(trainer.state.log_history, adapter_dir, owner)
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:
        pass
    return adapter_dir


def _context_fields(args: PigArguments, out_dir: Path) -> dict:
    """`AdapterInfo`'s context fields: for a policy that reads the user's context, its layout and how the contexts
    were built (read from run_state.json, where the run pinned them), so that serving builds contexts the same way."""
    from policies.rewriter import CONTEXT_FORMAT
    from rl.checkpoint import read_state

    if not policy_reads_context(args):
        return {}
    state = read_state(out_dir)
    context = next(iter(state["contexts"].values())) if "contexts" in state else state["context"]
    source = {
        "reasoner_model_id": context["model_id"],
        "reasoner_template": context["template_id"],
        "reasoner_generation": context["generation"],
    }
    if args.policy_nearest:  # the rationales nearest each prompt, picked by this embedder
        source["prompt_embedder"] = args.fidelity_model
    return {"context_format": CONTEXT_FORMAT, "context_source": source, "context_nearest": args.policy_nearest}


def _seen_fields(user, args: PigArguments) -> dict:
    """`AdapterInfo`'s record of what the adapter was trained on and from (issue 22): the user's references (all
    users' for a population), how many of them were choices made on the choice page (`reward.choices`), and the
    adapter it continued (`--init_adapter`), so that `pig users` can show it."""
    from reward.choices import count_choices

    users = user if isinstance(user, list) else [user]
    return {
        "references": sum(len(u.references) for u in users),
        "choices": sum(count_choices(u.root).choices for u in users),
        "init_adapter": str(Path(args.init_adapter).resolve()) if args.init_adapter else None,
    }


def _rationales_read(k: int) -> str:
    """What a policy or judge reading `k` nearest rationales (0: all) is given, in words."""
    return f"the {k} rationales nearest each prompt" if k else "the whole context"


def _reading(args) -> str:
    """How many rationales the policy and the judge read, for the plan."""
    return f": {_rationales_read(args.policy_nearest)}; the judge reads {_rationales_read(args.context_nearest)}"


def _print_plan(state, args, training_args, model_args, users, heldout, reads_context) -> None:
    import torch

    if not state.is_main_process:
        return
    prompts = users[0].training_prompts
    if args.population:
        rows = sum(len(u.training_prompts) for u in users)
        who = (
            f"population={args.population}: {len(users)} users, {rows} (user, prompt) rows"
            + (f"; {len(heldout)} held out by its manifest, never trained on" if heldout else "")
            + f"; algorithm={args.algorithm}\n"
            "[plan] the policy reads each user's context (the reasoner's rationales) in its chat" + _reading(args)
        )
    else:
        who = (
            f"user={users[0].user_id} references={len(users[0].references)} training prompts={len(prompts)} "
            f"algorithm={args.algorithm}"
        )
        if reads_context:
            who += (
                f"\n[plan] the policy reads the user's context in its chat (--init_adapter {args.init_adapter} does)"
                + _reading(args)
            )
    orders = 2 if args.judge_both_orders else 1
    if args.algorithm == "dpo":
        groups, group_size, when = args.dpo_rounds * len(prompts), args.dpo_candidates, "before training"
    else:
        group_size = training_args.num_generations
        groups = training_args.per_device_train_batch_size * state.num_processes // group_size
        when = "per step"
    images = groups * (group_size + 1) * args.images_per_prompt
    pairs_per_group = {"original": group_size, "group": group_size * (group_size - 1) // 2}
    pairs_per_group["both"] = pairs_per_group["original"] + pairs_per_group["group"]
    judge_calls = groups * pairs_per_group[args.compare_to] * args.images_per_prompt * orders
    print(
        f"[plan] {who}\n"
        f"[plan] policy={model_args.model_name_or_path} lora_r={model_args.lora_r} "
        f"renderer={args.renderer_model} judge={args.judge_model} ({args.judge_backend}, {args.judge_mode})\n"
        f"[plan] {when}: {groups} prompts x {group_size} rewrites, {images} images rendered, {judge_calls} judge "
        f"calls; max_steps={training_args.max_steps}; beta={getattr(training_args, 'beta', None)}; reward = "
        f"preference (vs {args.compare_to}) + "
        f"{args.fidelity_weight} * min(0, similarity - {args.fidelity_floor})"
        + (f" - {args.repetition_weight} * repeats/phrases" if args.repetition_weight else "")
        + "\n"
        f"[plan] output_dir={training_args.output_dir} (W&B mode: {os.environ.get('WANDB_MODE')}; "
        f"{state.num_processes} process(es) on {state.device}, torch threads each: {torch.get_num_threads()})"
    )


def _init_wandb(state, training_args, args, model_args, out_dir: Path) -> None:
    """Start the W&B run ourselves so it records our arguments too; TRL's callback then logs into it."""
    if "wandb" not in (training_args.report_to or []) or not state.is_main_process:
        return
    import dataclasses

    import wandb

    from policies.rewriter import POPULATION
    from reward.users import user_id_of
    from rl.checkpoint import wandb_run_id

    out_dir.mkdir(parents=True, exist_ok=True)
    wandb.init(
        project=os.environ.get("WANDB_PROJECT", "pig-rl"),
        name=training_args.run_name,
        id=wandb_run_id(out_dir),  # recorded in the run folder: `--resume` continues this W&B run, not a new one
        resume="allow",
        dir=str(out_dir),
        config={"pig": dataclasses.asdict(args), "policy": dataclasses.asdict(model_args)},
        tags=[f"user:{POPULATION if args.population else user_id_of(args.user, args.users_dir)}"],
    )


def _print_summary(history: list[dict], adapter_dir: Path, user_id: str) -> None:
    from policies.rewriter import POPULATION
    from reports.runs import quarter_means
    from rl.step_profile import summary

    for key, label in (
        ("reward", "reward"),
        ("rewards/preference/mean", "preference"),
        ("rewards/fidelity/mean", "fidelity"),
        ("reward/ground_truth", "ground truth (sandbox user's true preference over the original)"),
        ("rewards/margins", "DPO reward margin"),
        ("rewards/accuracies", "DPO chosen-over-rejected rate"),
    ):
        values = [h[key] for h in history if h.get(key) is not None]
        if values:
            first, last, k = quarter_means(values)
            print(f"[done] {label}: mean of first {k} logged steps {first:.3f} -> last {k} steps {last:.3f}")
    profile = summary(history)
    if profile:
        print(f"[done] time: {profile}")
    print(f"[done] adapter: {adapter_dir}")
    if user_id == POPULATION:  # served with the user's context to every user without an adapter of their own
        print(
            '[done] try it: pig rewrite --user U "a lighthouse on a cliff" (U: any user with references and no '
            "adapter of their own; --users_dir where U lives)"
        )
    else:
        print(f'[done] try it: pig rewrite --user {user_id} "a lighthouse on a cliff"')


if __name__ == "__main__":
    from common.errors import run_command

    sys.exit(run_command(main))
