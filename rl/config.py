"""Configuration of `rl/train_policy.py`: our arguments + TRL's trainer config (`GRPOConfig`, or `RLOOConfig` with
`algorithm: rloo`) + TRL's `ModelConfig` (the policy).

A recipe is a YAML file of `configs/` that states every value a run takes from us: `cpu.yaml` (the offline CPU demo,
the default), `dpo.yaml` (the DPO route on CPU, the default of `--algorithm dpo`), `gpu.yaml` (real checkpoints).
Precedence: the default recipe < `--config file.yaml` < command-line flags; with a complete recipe as `--config`
nothing comes from the default one (`inherited_keys` names what does, and training prints it). The values are
written once: `PigArguments`' defaults of the keys `cpu.yaml` sets are read from it, the trainer's and the policy's
from the recipe a command runs with (`recipe_of`); training, `pig train-all`, `pig evaluate`, `pig matrix` and
`pig diagnose` all read them that way.

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

RECIPES = Path(__file__).resolve().parents[1] / "configs"
"""The recipes, `configs/*.yaml`. A plain `pip install` ships them too, as the data-only namespace package `configs`
(pyproject's package-data) beside `rl/`, so this path holds in a checkout, an editable install and a wheel alike."""
DEFAULT_RECIPES = {"grpo": "cpu.yaml", "rloo": "cpu.yaml", "dpo": "dpo.yaml"}
"""The recipe a command runs with when no `--config` is given, by algorithm."""


def read_recipe(path: str | Path) -> dict:
    """The mapping of a recipe YAML file (its `env` entry included).

    Raises:
        ConfigError: the file is missing (a wheel built without its package-data) or is not a YAML mapping.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"Recipe {path} does not exist. Pass one with --config (see configs/).") from err
    if not isinstance(data, dict):
        raise ConfigError(f"Recipe {path} must hold a YAML mapping of key: value, got {type(data).__name__}.")
    return data


def default_recipe(algorithm: str = "grpo") -> dict:
    """The recipe of `algorithm` that runs without `--config` (`DEFAULT_RECIPES`)."""
    return read_recipe(RECIPES / DEFAULT_RECIPES[algorithm])


def recipe_of(argv: list[str], algorithm: str = "grpo") -> dict:
    """The values a command builds its policy with before its flags: the `--config` file's over the default recipe's.
    (`pig diagnose` reads its policy's model and temperature here, as training does.)"""
    recipe = {k: v for k, v in default_recipe(algorithm).items() if k != "env"}
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        recipe.update({k: v for k, v in read_recipe(argv[argv.index("--config") + 1]).items() if k != "env"})
    return recipe


def inherited_keys(recipe: dict, algorithm: str, accepted: set[str]) -> list[str]:
    """The keys of `algorithm`'s default recipe that `recipe` leaves out, among `accepted` (the fields of the classes
    that parse it): what a run with `--config <recipe>` takes from the default recipe rather than from its own file.
    Empty for a complete recipe (every recipe in configs/ is one: tests/test_recipes.py)."""
    return sorted(k for k in default_recipe(algorithm) if k != "env" and k in accepted and k not in recipe)


_CPU = read_recipe(RECIPES / "cpu.yaml")


def _cpu(key: str):
    """`PigArguments`' default of a key the reference recipe sets: its value in configs/cpu.yaml, only there."""
    if key not in _CPU:
        raise ConfigError(f"configs/cpu.yaml lacks {key!r}: the reference recipe states every value it defaults.")
    return _CPU[key]


@dataclass
class PigArguments:
    """Everything that is not the trainer or the policy: the user, the renderer, the judge, the reward."""

    user: str | None = field(
        default=None,
        metadata={
            "help": "User id (a folder under --users_dir) or a path to a user folder. Required, unless --population."
        },
    )
    population: str | None = field(
        default=None,
        metadata={
            "help": "Train one context-conditioned rewriter for many users instead of one user's adapter (issue 21): "
            "a folder of user folders (its population.json's `train` users, else every user there) or a comma list "
            "of user ids/paths. The dataset has one row per (user, training prompt); the policy reads each user's "
            "context in its chat, and each group is judged under its own user's context. Output: "
            "{runs_dir}/population/<run>/adapter, pointed at by {runs_dir}/population/LATEST."
        },
    )
    algorithm: str = field(
        default=_cpu("algorithm"),
        metadata={
            "help": "grpo (TRL GRPOTrainer: group-normalised advantages), rloo (TRL RLOOTrainer: leave-one-out "
            "baseline), or dpo (the paper's route: judged (chosen, rejected) rewrite pairs, then TRL DPOTrainer; "
            "see the dpo_* keys). Each reads its own TRL config."
        },
    )
    users_dir: str = field(default="users", metadata={"help": "Folder holding one sub-folder per user."})
    runs_dir: str = field(default="runs", metadata={"help": "Outputs: contexts, adapters, W&B runs, sample grids."})
    torch_threads: int = field(
        default=_cpu("torch_threads"),
        metadata={
            "help": "CPU runs: torch threads per process (0 = the machine's physical cores divided among the local "
            "processes). `accelerate launch` sets 1 on CPU unless told otherwise, which left a core idle here."
        },
    )
    # -- renderer
    renderer_model: str = field(
        default=_cpu("renderer_model"),
        metadata={
            "help": "diffusers text-to-image pipeline: hub id (e.g. stabilityai/stable-diffusion-2-1-base) or folder."
        },
    )
    render_device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N."})
    render_dtype: str = field(
        default="auto", metadata={"help": "auto (common/devices.py) | float32 | float16 | bfloat16."}
    )
    render_steps: int = field(default=_cpu("render_steps"), metadata={"help": "Denoising steps per image."})
    guidance_scale: float = field(default=_cpu("guidance_scale"), metadata={"help": "Classifier-free guidance scale."})
    image_size: int | None = field(
        default=None, metadata={"help": "Square output size in pixels (None = pipeline default)."}
    )
    render_batch_size: int = field(default=_cpu("render_batch_size"), metadata={"help": "Images per pipeline call."})
    render_cache_dir: str | None = field(
        default=_cpu("render_cache_dir"),
        metadata={
            "help": "On-disk cache of rendered images, keyed by renderer weights, render settings, prompt and seed "
            "(rl/image_cache.py): evaluation reruns and resumed runs do not render again; shared safely by "
            "processes. {runs_dir} is filled in. Empty or null = off (e.g. for 512-pixel images: ~0.4 MB each)."
        },
    )
    images_per_prompt: int = field(
        default=_cpu("images_per_prompt"),
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
        default=_cpu("judge_model"), metadata={"help": "Judge: hub id (jeongeunnn/pigreward) or folder."}
    )
    reasoner_model: str | None = field(
        default=None,
        metadata={"help": "Reasoner: hub id (jeongeunnn/pigreward-bootstrap) or folder; None = judge_model."},
    )
    judge_backend: str = field(
        default=_cpu("judge_backend"), metadata={"help": "Backend name, see reward.backends.BACKENDS."}
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
        default=_cpu("judge_mode"), metadata={"help": "cot (chain of thought, parsed) | score (logits, no CoT)."}
    )
    judge_both_orders: bool = field(
        default=_cpu("judge_both_orders"), metadata={"help": "Judge (A, B) and (B, A) and average (position bias)."}
    )
    judge_strict: bool = field(default=False, metadata={"help": "Count only verdicts whose status is ok."})
    judge_max_new_tokens: int = field(
        default=_cpu("judge_max_new_tokens"), metadata={"help": "Token cap of a judge answer."}
    )
    judge_repetition_penalty: float = field(default=1.0, metadata={"help": "Judge repetition penalty (1.0 = off)."})
    context_references: int = field(
        default=_cpu("context_references"),
        metadata={
            "help": "Build a user's context from their most recent N references (0: all). Choices from the page "
            "are appended, so a window follows a taste that moves."
        },
    )
    context_nearest: int = field(
        default=0,
        metadata={
            "help": "Judge each prompt under the N rationales whose choices' prompts are nearest to it (by the "
            "fidelity embedder; 0: the whole context): a taste that depends on what is drawn reaches the judge as "
            "one taste."
        },
    )
    judge_batch_size: int = field(
        default=_cpu("judge_batch_size"), metadata={"help": "Judge conversations per forward/generate call."}
    )
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
        default=_cpu("fidelity_model"),
        metadata={"help": "Sentence encoder for prompt fidelity (sentence-transformers/all-MiniLM-L6-v2 or folder)."},
    )
    compare_to: str = field(
        default=_cpu("compare_to"),
        metadata={
            "help": "What each rewrite's image is judged against: original (the plain prompt's image, same seed), "
            "group (every other rewrite of its group: round-robin win rate), or both (mean of the two win rates). "
            "Judge calls per step: original = completions * images_per_prompt * 2 orders; group adds "
            "(num_generations - 1) / 2 times as many."
        },
    )
    fidelity_weight: float = field(
        default=_cpu("fidelity_weight"),
        metadata={
            "help": "reward = preference + fidelity_weight * min(0, cos(rewrite, original) - fidelity_floor): a gate "
            "that only penalises rewrites that drift from the prompt. Sets TRL's reward_weights."
        },
    )
    repetition_weight: float = field(
        default=_cpu("repetition_weight"),
        metadata={
            "help": "reward += repetition_weight * -(repeats / phrases): a gate on degenerate rewrites that repeat a "
            'phrase, stack one cue word in several phrases ("busy scene, busy framing") or stutter a word '
            '("framing framing"); zero for a rewrite without repeats. Logged as rewards/repetition whatever its '
            "weight."
        },
    )
    fidelity_floor: float = field(
        default=_cpu("fidelity_floor"),
        metadata={
            "help": "MiniLM cosine similarity to the original prompt below which the fidelity gate bites (faithful "
            "rewrites of the warm-start corpus: 5th percentile 0.42, median 0.64; dropping the subject: 0.15-0.33)."
        },
    )
    # -- policy chat + adapters
    init_adapter: str | None = field(
        default=None, metadata={"help": "Continue training from this LoRA adapter folder instead of a fresh LoRA."}
    )
    policy_context_nearest: int | None = field(
        default=None,
        metadata={
            "help": "For a policy that reads the user's context (--population, --policy_reads_context): the N "
            "rationales nearest each prompt go into its chat (0: the whole context). Unset: what the judge reads "
            "(--context_nearest). The judge's verdicts are cleanest on a few nearest rationales, which name less of "
            "a taste than the whole context (docs/RESULTS.md)."
        },
    )
    policy_reads_context: bool = field(
        default=False,
        metadata={
            "help": "A per-user run whose policy also reads the user's context in its chat, as the population model "
            "does; with --context_nearest N, for each prompt the N rationales the judge reads (a taste that depends "
            "on what is drawn is then in the policy's input). The adapter is served with the user's context."
        },
    )
    lora_top_layers: int = field(
        default=_cpu("lora_top_layers"),
        metadata={
            "help": "A fresh LoRA on the policy's top N decoder layers only (0: every layer). The backward pass "
            "stops at the lowest layer with a LoRA, so the update costs less (docs/TRAINING.md)."
        },
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
        if self.policy_context_nearest is not None and self.policy_context_nearest < 0:
            raise ConfigError(
                f"policy_context_nearest must be 0 (the whole context), positive, or unset (the judge's "
                f"--context_nearest), got {self.policy_context_nearest}."
            )
        for name in ("context_references", "context_nearest", "lora_top_layers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 (all) or positive, got {getattr(self, name)}.")
        if self.compare_to not in COMPARE_TO:
            raise ConfigError(f"compare_to must be one of {COMPARE_TO}, got {self.compare_to!r}.")
        if not 0.0 <= self.max_undecided_fraction <= 1.0:
            raise ConfigError(f"max_undecided_fraction is a share in [0, 1], got {self.max_undecided_fraction}.")
        if self.judge_max_failed_batches < 1:
            raise ConfigError(f"judge_max_failed_batches must be >= 1, got {self.judge_max_failed_batches}.")
        if not -1.0 <= self.fidelity_floor <= 1.0:
            raise ConfigError(f"fidelity_floor is a cosine similarity in [-1, 1], got {self.fidelity_floor}.")

    @property
    def policy_nearest(self) -> int:
        """How many rationales nearest each prompt a context-reading policy reads (0: the whole context):
        `policy_context_nearest`, or the judge's `context_nearest` when it is unset."""
        return self.context_nearest if self.policy_context_nearest is None else self.policy_context_nearest


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
