"""Configuration of `rl/train_policy.py`: our arguments + TRL's trainer config (`GRPOConfig`, or `RLOOConfig` with
`algorithm: rloo`) + TRL's `ModelConfig` (the policy).

Precedence: embedded defaults (`CPU_DEFAULTS`, the offline CPU demo) < `--config file.yaml` < command-line flags.
Unknown YAML keys are an error (TRL's parser). Hyper-parameter names are TRL's where TRL has one (`num_generations`,
`beta`, `learning_rate`, `lora_r`, ...), so a YAML key maps one-to-one to the TRL documentation.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError

COMPARE_TO = ("original", "group", "both")
"""What each rewrite's image is judged against (see `rl.environment`)."""


@dataclass
class PigArguments:
    """Everything that is not the trainer or the policy: the user, the renderer, the judge, the reward."""

    user: str | None = field(
        default=None, metadata={"help": "User id (a folder under --users_dir) or a path to a user folder. Required."}
    )
    algorithm: str = field(
        default="grpo",
        metadata={
            "help": "grpo (TRL GRPOTrainer: group-normalised advantages), rloo (TRL RLOOTrainer: leave-one-out "
            "baseline), or dpo (the paper's route: judged (chosen, rejected) rewrite pairs, then TRL DPOTrainer; "
            "see the dpo_* keys). Each reads its own TRL config."
        },
    )
    users_dir: str = field(default="users", metadata={"help": "Folder holding one sub-folder per user."})
    runs_dir: str = field(default="runs", metadata={"help": "Outputs: contexts, adapters, W&B runs, sample grids."})
    torch_threads: int = field(
        default=0,
        metadata={
            "help": "CPU runs: torch threads per process (0 = the machine's physical cores divided among the local "
            "processes). `accelerate launch` sets 1 on CPU unless told otherwise, which left a core idle here."
        },
    )
    # -- renderer
    renderer_model: str = field(
        default=".models/tiny-sd",
        metadata={
            "help": "diffusers text-to-image pipeline: hub id (e.g. stabilityai/stable-diffusion-2-1-base) or folder."
        },
    )
    render_device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N."})
    render_dtype: str = field(
        default="auto", metadata={"help": "auto (common/devices.py) | float32 | float16 | bfloat16."}
    )
    render_steps: int = field(default=15, metadata={"help": "Denoising steps per image."})
    guidance_scale: float = field(default=4.0, metadata={"help": "Classifier-free guidance scale."})
    image_size: int | None = field(
        default=None, metadata={"help": "Square output size in pixels (None = pipeline default)."}
    )
    render_batch_size: int = field(default=16, metadata={"help": "Images per pipeline call."})
    render_cache_dir: str | None = field(
        default="{runs_dir}/cache/images",
        metadata={
            "help": "On-disk cache of rendered images, keyed by renderer weights, render settings, prompt and seed "
            "(rl/image_cache.py): evaluation reruns and resumed runs do not render again; shared safely by "
            "processes. {runs_dir} is filled in. Empty or null = off (e.g. for 512-pixel images: ~0.4 MB each)."
        },
    )
    images_per_prompt: int = field(
        default=2,
        metadata={
            "help": "Image slots per prompt. Images rendered per step = prompts per step * (num_generations + 1) * "
            "images_per_prompt; judge calls = 2 * completions * images_per_prompt with judge_both_orders."
        },
    )
    seed_per_step: bool = field(
        default=True,
        metadata={"help": "New common-random-number seeds every step (False: same seeds, originals cached)."},
    )
    # -- PIGReward
    judge_model: str = field(
        default=".models/tiny-pigreward", metadata={"help": "Judge: hub id (jeongeunnn/pigreward) or folder."}
    )
    reasoner_model: str | None = field(
        default=None,
        metadata={"help": "Reasoner: hub id (jeongeunnn/pigreward-bootstrap) or folder; None = judge_model."},
    )
    judge_backend: str = field(
        default="transformers", metadata={"help": "Backend name, see reward.backends.BACKENDS."}
    )
    judge_base_url: str | None = field(
        default=None,
        metadata={
            "help": "openai backend: server URL, e.g. http://localhost:8000/v1 for `vllm serve` (env OPENAI_BASE_URL)."
        },
    )
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "openai backend: name of the env var holding the API key."}
    )
    judge_concurrency: int = field(default=8, metadata={"help": "openai backend: requests in flight."})
    judge_mode: str = field(
        default="cot", metadata={"help": "cot (chain of thought, parsed) | score (logits, no CoT)."}
    )
    judge_both_orders: bool = field(
        default=True, metadata={"help": "Judge (A, B) and (B, A) and average (position bias)."}
    )
    judge_strict: bool = field(default=False, metadata={"help": "Count only verdicts whose status is ok."})
    judge_max_new_tokens: int = field(default=320, metadata={"help": "Token cap of a judge answer."})
    judge_repetition_penalty: float = field(default=1.0, metadata={"help": "Judge repetition penalty (1.0 = off)."})
    judge_batch_size: int = field(default=16, metadata={"help": "Judge conversations per forward/generate call."})
    judge_device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N."})
    judge_dtype: str = field(
        default="auto", metadata={"help": "auto (common/devices.py) | float32 | bfloat16 | float16."}
    )
    judge_max_pixels: int | None = field(
        default=None,
        metadata={"help": "Cap on pixels per image for the judge's image processor (None = checkpoint's)."},
    )
    rebuild_context: bool = field(default=False, metadata={"help": "Rebuild the user context even if cached."})
    max_undecided_fraction: float = field(
        default=0.5,
        metadata={
            "help": "Alarm (warning line, logged flag judge/undecided_alarm, W&B alert when online) when more than "
            "this share of a step's comparisons is undecided (unparsed verdicts, failed judge calls); 1 = never."
        },
    )
    judge_max_failed_batches: int = field(
        default=3,
        metadata={
            "help": "Reward batches in a row whose judge call failed (after the backend's own retries) before the "
            "run saves a checkpoint and stops; earlier failed batches count as undecided (judge/failures/<kind>)."
        },
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "Continue a killed or stopped run from its last checkpoint: the run named by --run_name, else the "
            "user's most recently active unfinished run (same run folder, user context and W&B run)."
        },
    )
    # -- reward
    fidelity_model: str = field(
        default=".models/all-MiniLM-L6-v2",
        metadata={"help": "Sentence encoder for prompt fidelity (sentence-transformers/all-MiniLM-L6-v2 or folder)."},
    )
    compare_to: str = field(
        default="both",
        metadata={
            "help": "What each rewrite's image is judged against: original (the plain prompt's image, same seed), "
            "group (every other rewrite of its group: round-robin win rate), or both (mean of the two win rates). "
            "Judge calls per step: original = completions * images_per_prompt * 2 orders; group adds "
            "(num_generations - 1) / 2 times as many."
        },
    )
    fidelity_weight: float = field(
        default=2.0,
        metadata={
            "help": "reward = preference + fidelity_weight * min(0, cos(rewrite, original) - fidelity_floor): a gate "
            "that only penalises rewrites that drift from the prompt. Sets TRL's reward_weights."
        },
    )
    repetition_weight: float = field(
        default=1.0,
        metadata={
            "help": "reward += repetition_weight * -(repeats / phrases): a gate on degenerate rewrites that repeat a "
            'phrase, stack one cue word in several phrases ("busy scene, busy framing") or stutter a word '
            '("framing framing"); zero for a rewrite without repeats. Logged as rewards/repetition whatever its '
            "weight."
        },
    )
    fidelity_floor: float = field(
        default=0.4,
        metadata={
            "help": "MiniLM cosine similarity to the original prompt below which the fidelity gate bites (faithful "
            "rewrites of the warm-start corpus: 5th percentile 0.42, median 0.64; dropping the subject: 0.15-0.33)."
        },
    )
    # -- policy chat + adapters
    init_adapter: str | None = field(
        default=None, metadata={"help": "Continue training from this LoRA adapter folder instead of a fresh LoRA."}
    )
    # -- the DPO route (algorithm: dpo)
    dpo_rounds: int = field(default=3, metadata={"help": "dpo: sampling rounds over the training prompts."})
    dpo_candidates: int = field(default=4, metadata={"help": "dpo: rewrites sampled and judged per prompt and round."})
    dpo_min_gap: float = field(
        default=0.25,
        metadata={"help": "dpo: smallest reward difference between a pair's chosen and rejected rewrite."},
    )
    dpo_max_new_tokens: int = field(default=24, metadata={"help": "dpo: token cap of a sampled rewrite."})
    dpo_temperature: float = field(default=1.0, metadata={"help": "dpo: sampling temperature of the rewrites."})
    # -- logging
    log_images_every: int = field(default=5, metadata={"help": "Log sample images/tables every N steps (0 = never)."})
    log_groups: int = field(default=2, metadata={"help": "Groups (prompt + its rewrites) per logged step."})

    def __post_init__(self):
        if self.algorithm not in ("grpo", "rloo", "dpo"):
            raise ConfigError(f"algorithm must be 'grpo', 'rloo' or 'dpo', got {self.algorithm!r}.")
        if self.dpo_candidates < 2 or self.dpo_rounds < 1:
            raise ConfigError("dpo_candidates must be >= 2 and dpo_rounds >= 1.")
        if self.judge_mode not in ("cot", "score"):
            raise ConfigError(f"judge_mode must be 'cot' or 'score', got {self.judge_mode!r}.")
        for name in (
            "render_steps",
            "render_batch_size",
            "images_per_prompt",
            "judge_batch_size",
            "judge_max_new_tokens",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.fidelity_weight < 0:
            raise ConfigError(f"fidelity_weight must be >= 0, got {self.fidelity_weight}.")
        if self.repetition_weight < 0:
            raise ConfigError(f"repetition_weight must be >= 0, got {self.repetition_weight}.")
        if self.torch_threads < 0:
            raise ConfigError(f"torch_threads must be 0 (automatic) or positive, got {self.torch_threads}.")
        if self.compare_to not in COMPARE_TO:
            raise ConfigError(f"compare_to must be one of {COMPARE_TO}, got {self.compare_to!r}.")
        if not 0.0 <= self.max_undecided_fraction <= 1.0:
            raise ConfigError(f"max_undecided_fraction is a share in [0, 1], got {self.max_undecided_fraction}.")
        if self.judge_max_failed_batches < 1:
            raise ConfigError(f"judge_max_failed_batches must be >= 1, got {self.judge_max_failed_batches}.")
        if not -1.0 <= self.fidelity_floor <= 1.0:
            raise ConfigError(f"fidelity_floor is a cosine similarity in [-1, 1], got {self.fidelity_floor}.")


# The offline CPU demo: SmolLM2-135M-Instruct warm-started as a generic rewriter (localmodels/rewriter_sft.py), tiny
# locally trained renderer and judge (`make setup`).
# Measured on 2 CPU cores: see README "What the default run does".
CPU_DEFAULTS = dict(
    # policy (TRL ModelConfig)
    model_name_or_path=".models/smollm2-rewriter",
    dtype="float32",
    use_peft=True,
    lora_r=16,
    lora_alpha=32,
    lora_dropout=0.0,
    lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    # trainer (TRL GRPOConfig); CPU-correct: no bf16, no gradient checkpointing, use_cpu
    output_dir="{runs_dir}/{user}/{run}",  # placeholders filled in by train_policy.parse_args
    bf16=False,
    use_cpu=True,
    gradient_checkpointing=False,
    # LoRA wants 10-100x TRL's full-fine-tuning default (1e-6); at 1e-4 the policy had not moved after 24 steps even
    # with a perfect judge, at 5e-4 it learned its user in 40 (docs/TRAINING.md, "Why these defaults").
    learning_rate=5e-4,
    num_generations=4,
    per_device_train_batch_size=8,
    gradient_accumulation_steps=1,
    # 24 tokens (~16 words): the warm start writes ~13; at 40 the policy learned to stuff style words until the cap,
    # which cost a third more time per generation and fell past the renderer's 32-token window (docs/RESULTS.md).
    max_completion_length=24,
    # The 135M warm start writes clean prompts at 0.7 and drifts into word salad at 1.0 (docs/RESULTS.md); the
    # adapter records it, and `pig evaluate` samples at the adapter's training temperature.
    temperature=0.7,
    beta=0.02,  # KL to the warm start: without it (0.0) 3 of 4 runs stacked repeated cues; 0.04 held nightowl back
    # Group-wise std scaling turns the tiny reward differences of a group that ties into full-size advantages
    # ("illusory advantage", docs/TRAINING.md); batch-wise scaling keeps a tied group's advantages small.
    scale_rewards="batch",
    # Each judged batch is used for two optimizer steps (PPO-style ratio clipping then matters, as in Promptist's 4
    # epochs per batch): 80 steps = 40 judged batches, about the judge cost of 40 single-pass steps.
    num_iterations=2,
    max_steps=80,
    logging_steps=1,
    # A checkpoint (LoRA adapter + optimizer state + tokenizer, ~26 MB for SmolLM2's r=16 LoRA) every 10 steps, 2 kept:
    # a killed run loses at most 10 steps (--resume, rl/checkpoint.py). Even, so that it falls between the judged
    # batches that num_iterations: 2 shares between two steps.
    save_strategy="steps",
    save_steps=10,
    save_total_limit=2,
    report_to=["wandb"],
    seed=0,
    dataloader_num_workers=0,
)

# `algorithm: dpo` reads TRL's DPOConfig: the keys above that DPOConfig lacks (num_generations, temperature, ...) are
# not used, and these replace GRPO's values (beta 0 would make the DPO loss constant).
DPO_DEFAULTS = dict(beta=0.1, per_device_train_batch_size=4, max_length=512, max_steps=16)


# ------------------------------------------------------------------------------------------- config file checks
def parse_checked(parser, argv: list[str]) -> tuple:
    """`parser.parse_args_and_config(argv)` after `check_config_file`, with the config classes' own consistency checks
    (the `ValueError`s of their `__post_init__`, ours and TRL's) reported as `ConfigError`: a bad configuration is
    the user's to fix, not a bug."""
    check_config_file(argv, tuple(parser.dataclass_types))
    try:
        return parser.parse_args_and_config(args=argv)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"Invalid configuration: {err}") from err


def check_config_file(argv: list[str], types_: tuple, ignored: tuple = ()) -> dict:
    """Check the `--config` YAML named in `argv` before `TrlParser` reads it; return its mapping (`{}` without one).

    `TrlParser` turns YAML values into argparse *defaults*: a string is converted like a flag (`"5e-4"` -> 5e-4), but
    any other value reaches the dataclass as it is, so `render_steps: [4]` or `use_peft: 3` would fail far from the
    config, or not at all. Every key must be a field of one of `types_` (or of `ignored`: keys another command reads,
    accepted so that one file serves both, e.g. the training config given to `pig evaluate`), or `env` (environment
    variables, as TrlParser sets them); every value must fit its field's type.

    Raises:
        ConfigError: the file is missing or not a YAML mapping, or names unknown keys (with the nearest known ones),
            or gives a value of the wrong type (key, expected type, value).
    """
    if "--config" not in argv:
        return {}
    index = argv.index("--config")
    if index + 1 >= len(argv) or argv[index + 1].startswith("--"):
        raise ConfigError("--config needs a YAML file, e.g. --config configs/cpu.yaml.")
    path = Path(argv[index + 1])
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"Config file {path} does not exist. Pass an existing YAML file (see configs/).") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"Config file {path} cannot be read ({err}).") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {path} is not valid YAML: {' '.join(str(err).split())}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a YAML mapping of key: value, got {type(data).__name__}.")
    fields = {}
    for cls in (*ignored, *types_):  # a command's own fields win over an ignored one of the same name
        hints = typing.get_type_hints(cls)
        fields.update({f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init})
    unknown = [key for key in data if key != "env" and key not in fields]
    if unknown:
        near = {key: difflib.get_close_matches(str(key), list(fields), n=1) for key in unknown}
        listed = ", ".join(f"{k!r}" + (f" (did you mean {n[0]!r}?)" if n else "") for k, n in near.items())
        raise ConfigError(f"Config file {path}: unknown keys {listed}. Remove them or fix their spelling.")
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, (str, int, float, bool)) for v in env.values()):
        raise ConfigError(f"Config file {path}: 'env' must map variable names to plain values, got {env!r}.")
    for key, value in data.items():
        if key != "env" and not _fits(value, fields[key]):
            raise ConfigError(
                f"Config file {path}: {key} must be {_type_name(fields[key])}, got {value!r} "
                f"({type(value).__name__}). Fix the value (quote it if it is meant as text)."
            )
    return data


def _fits(value: object, hint) -> bool:
    """Whether a YAML value fits a dataclass field's type the way `TrlParser` will use it (a string for a number or
    a bool is converted like a flag, so it fits if it converts)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or hint is object:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if hint in (list, tuple) or origin in (list, tuple):
        items = [a for a in args if a is not Ellipsis]
        return isinstance(value, list) and all(any(_fits(v, a) for a in items) for v in value) if items else True
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool) or (isinstance(value, str) and value.lower() in _BOOL_STRINGS)
    if hint in (int, float):
        numbers = (int,) if hint is int else (int, float)
        if isinstance(value, str):
            return _parses(hint, value)
        return isinstance(value, numbers) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {m.value for m in hint}
    return True  # a type argparse does not parse from YAML either (e.g. accelerate's ParallelismConfig): its own check


_BOOL_STRINGS = {"true", "false", "yes", "no", "t", "f", "y", "n", "1", "0"}  # transformers' string_to_bool


def _parses(kind, text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _type_name(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {' or '.join(_type_name(a) for a in args if a is not Ellipsis) or 'values'}"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
