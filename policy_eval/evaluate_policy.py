"""Did the adapter learn this user? Its rewrites against the generic rewriter's, rendered with shared seeds, scored
by the user's judge and, for a sandbox user, by the user's true taste.

    pig evaluate --user demo                          # runs/demo/LATEST; held-out and training prompts x 2 decodings
    pig evaluate --user demo --prompt_set heldout --decoding sampled --judge false    # ground truth only, no judge
    pig evaluate --user demo --adapter runs/demo/grpo-.../adapter --eval_samples 8 --eval_images 8
    pig evaluate --user demo --eval_prompts "a lighthouse" "a red hydrant"
    pig evaluate --user held000 --users_dir runs/users/population --adapter population --against_adapter latest \
        --context_of demo --empty_context --judge false     # the population model: its rows and controls

Blocks. Prompts come in sets: `heldout` (`rl.ground_truth.HELDOUT_PROMPTS`, never trained on; for a real user, the
prompts of their held-out pairs) and `training` (the user's training prompts); `--eval_prompts` replaces them with one
set, `given`. Each set is rewritten two ways: `sampled`, `--eval_samples` rewrites per prompt at the training
temperature without repetition controls (how the policy was trained: what its reward measured) and `greedy`, one
rewrite with `pig rewrite`'s repetition controls (how it is served). Every (set, decoding) is a block, reported on
its own.

Comparisons. In each block the adapter and the same policy with the adapter disabled (the base: the generic rewriter
it was trained from) rewrite every prompt with the same sampling seed; the original prompt and every rewrite are
rendered with the same `--eval_images` seeds per prompt (common random numbers). For each cell (prompt, sample) and
each comparison (adapter vs base, adapter vs original, base vs original): the judge's preference (PIGReward with the
user's context, both orders; `--judge false` skips it) and, for a sandbox user, the ground truth (the hidden taste
measured on the same images, `rl/ground_truth.py`), each averaged over the cell's image seeds. A block reports the
mean over cells with a 95% bootstrap interval (the cell is the resampled unit) and the judge's agreement with the
truth on the same image pairs. 0.5 means "no better".

Precision. A cell's preference has a standard deviation of at most 0.5, about 0.25 when its images disagree
independently, so the interval's half-width is about 1.96 * sd / sqrt(cells). Measured on trained adapters, 24
held-out prompts x 4 samples (96 cells of 4 images) gave +-0.07 on the ground truth (cells spread more than 0.25), so
the default is 8 samples: 192 cells, +-0.02 to +-0.06. A wider ground-truth interval is flagged. The cells of one
prompt share the original's images, so the interval is, if anything, a little optimistic.

A context-conditioned adapter (the population model, or a per-user run started from it: `pig_adapter.json` records
`context_format`) is given the user's context in its chat, as served: the rationales of the configured reasoner (the
one the judge reads, cached under runs/<user>/context/). `base` stays the generic rewriter it started from: the
adapter disabled and the plain chat (`PromptRewriter.rewrite_base`). Three more rows, each with the same seeds:

- `--against_adapter PATH|latest`: the user's own per-user adapter (`per_user`; with the user's context if it reads
  one): adapter vs per_user, per_user vs original (is one model for everyone as good as a run per user?);
- `--context_of OTHER`: the control `other_context`, the same adapter given user OTHER's context for this user's
  prompts; `--empty_context`: the control `empty_context`, given an empty one (`NO_POLICY_CONTEXT`). Each is
  reported vs the original and vs the adapter, and `context_drop` is the paired drop of the win against the original
  (adapter vs original minus control vs original, per cell, with its interval): a model that reads the context loses
  at least `CONTEXT_DROP_FLOOR` of its win when it is given someone else's.

Writes `results.json` and one `grid_<set>_<decoding>.png` per block (original | base | adapter per prompt) under
`--eval_out` (default `runs/<user>/eval/<adapter's run>`). Judge, renderer and models come from training's config keys.
The helpers below (rewriting, rendering once, scoring pairs, summaries) are shared with `pig matrix`
(`policy_eval/cross_user.py`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import AdapterError, ConfigError
from policies.suffix import apply_suffix
from reports.runs import COMPARISONS, CONTROL_COMPARISONS, PER_USER_COMPARISONS, SUFFIX_COMPARISONS, format_summary
from reward.eval.metrics import bootstrap_mean
from reward.reduction import mean_or_none
from rl import ground_truth
from rl.config import PigArguments

PROMPT_SETS = ("heldout", "training")
DECODINGS = ("sampled", "greedy")
MAX_HALF_WIDTH = 0.05
"""A ground-truth interval wider than +-this is flagged: it could not resolve the 0.05-0.1 effects we look for."""
CONTEXT_DROP_FLOOR = 0.15
"""How much of its win against the original a model that reads the context must lose with another user's (issue 21)."""

ImageKey = tuple[str, int]  # an image is named by what rendered it: (text, seed)
Pair = tuple[str, ImageKey, ImageKey]  # (original prompt, image A, image B)


@dataclass
class SamplingArguments:
    """What `pig evaluate` and `pig matrix` share: prompts, rewrites and images per prompt, seeds, statistics."""

    eval_prompts: list[str] | None = field(
        default=None, metadata={"help": "Prompts to rewrite, instead of the prompt sets (one set named 'given')."}
    )
    eval_samples: int = field(
        default=8,
        metadata={
            "help": "Sampled rewrites per prompt (training temperature, seeded). A (prompt, sample) cell is "
            "the bootstrap's unit: cells = prompts * eval_samples (greedy: prompts)."
        },
    )
    eval_images: int = field(
        default=4,
        metadata={
            "help": "Image seeds per prompt, shared by the original and every rewrite and averaged within a cell. "
            "Images rendered per block <= prompts * (1 + 2 * eval_samples) * eval_images."
        },
    )
    eval_seed: int = field(
        default=1234, metadata={"help": "Base seed of the images and of the sampled rewrites (not training's)."}
    )
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples of each 95-percent interval."})
    judge: bool = field(
        default=True,
        metadata={
            "help": "Also judge every pair with PIGReward under the user's context (false: ground truth only, no "
            "judge model loaded; sandbox users only)."
        },
    )

    def __post_init__(self):
        for name in ("eval_samples", "eval_images", "bootstrap"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.eval_prompts is not None and not all(p.strip() for p in self.eval_prompts):
            raise ConfigError("--eval_prompts holds an empty prompt.")


@dataclass
class EvalArguments(SamplingArguments):
    adapter: str | None = field(
        default=None,
        metadata={
            "help": "Adapter folder (default: runs/<user>/LATEST); `population`: the population model "
            "(runs/population/LATEST). A context-conditioned adapter is given the user's context."
        },
    )
    against_adapter: str | None = field(
        default=None,
        metadata={
            "help": "The user's own per-user adapter, compared with --adapter (rows adapter vs per_user, per_user vs "
            "original): a folder, or `latest` (runs/<user>/LATEST). Given the user's context if it reads one."
        },
    )
    context_of: str | None = field(
        default=None,
        metadata={
            "help": "Control for a context-conditioned --adapter: the same adapter given this other user's context "
            "(a user id under --users_dir, or a folder), scored for --user (rows other_context vs original, adapter "
            "vs other_context, and the drop of the win vs original)."
        },
    )
    empty_context: bool = field(
        default=False,
        metadata={"help": "Control for a context-conditioned --adapter: the same adapter given an empty context."},
    )
    prompt_set: str = field(
        default="both",
        metadata={
            "help": "heldout (rl.ground_truth.HELDOUT_PROMPTS; a real user's held-out pair prompts) | training (the "
            "user's training prompts) | both (reported separately). Ignored with --eval_prompts."
        },
    )
    decoding: str = field(
        default="both",
        metadata={
            "help": "sampled (eval_samples per prompt, training temperature) | greedy (one) | both (separately)."
        },
    )
    eval_out: str | None = field(default=None, metadata={"help": "Output folder."})
    suffix: str = field(
        default="auto",
        metadata={
            "help": "The fixed-suffix baseline (`pig suffix`) compared beside the base: auto (runs/<user>/suffix when "
            "it exists) | none | a suffix.json or its folder."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.prompt_set not in (*PROMPT_SETS, "both"):
            raise ConfigError(f"--prompt_set must be heldout, training or both, got {self.prompt_set!r}.")
        if self.decoding not in (*DECODINGS, "both"):
            raise ConfigError(f"--decoding must be sampled, greedy or both, got {self.decoding!r}.")


def parse_dataclasses(types: tuple, argv: list[str] | None) -> list:
    """Training's config keys (the default recipe configs/cpu.yaml, where `PigArguments`' defaults are read from, <
    --config YAML < flags) plus a command's own dataclasses. Keys of training's trainer and policy configs (TRL's
    GRPO/RLOO/DPO and model configs) in a YAML are accepted and ignored here, so the training recipe can be reused as
    it is (`rl.config.recipe_of` reads them where a command needs them); any other unknown key, or a value of the
    wrong type, is an error (`rl.config.check_config_file`)."""
    import trl
    from trl import TrlParser

    from rl.config import check_config_file

    argv = list(sys.argv[1:] if argv is None else argv)
    check_config_file(argv, types, ignored=(trl.GRPOConfig, trl.RLOOConfig, trl.DPOConfig, trl.ModelConfig))
    parser = TrlParser(types)
    *parsed, _trainer_keys, cli_rest = parser.parse_args_and_config(
        args=argv, return_remaining_strings=True, separate_remaining_strings=True
    )
    if cli_rest:
        parser.error(f"unrecognized arguments: {' '.join(cli_rest)}")
    return parsed


def parse_args(argv: list[str] | None = None) -> tuple[PigArguments, EvalArguments]:
    pig_args, eval_args = parse_dataclasses((PigArguments, EvalArguments), argv)
    if pig_args.population is not None:  # training's key, parsed with the recipe's: it would be ignored here
        raise ConfigError(
            f"pig evaluate got --population {pig_args.population} (training's: the users a population model trains "
            "on). Evaluate the population model on one user with --user U --adapter population (or its folder)."
        )
    if not pig_args.user:
        raise ConfigError("--user is required: a user id under --users_dir (e.g. demo) or a path to a user folder.")
    return pig_args, eval_args


# ------------------------------------------------------------------------------------------- statistics (pure)
def half_width(ci: Sequence[float] | None) -> float | None:
    """Half the width of an interval (the "+-" of a symmetric one)."""
    return None if ci is None else (ci[1] - ci[0]) / 2


def cell_means(values: Sequence[float | None], per_cell: int) -> list[float | None]:
    """Mean of each run of `per_cell` consecutive values (one cell's image seeds), skipping `None` (undecided);
    `None` for a cell with no decided value."""
    if per_cell < 1 or len(values) % per_cell:
        raise ValueError(f"{len(values)} values do not split into cells of {per_cell}.")
    return [mean_or_none(values[i : i + per_cell]) for i in range(0, len(values), per_cell)]


def summarize(cells: Sequence[float | None], resamples: int = 1000, seed: int = 0) -> dict:
    """Mean preference over the decided cells, its 95% bootstrap interval over cells and the interval's half-width."""
    decided = [c for c in cells if c is not None]
    ci = bootstrap_mean(decided, resamples, seed)
    return {
        "preference": sum(decided) / len(decided) if decided else None,
        "ci95": list(ci) if ci else None,
        "half_width": half_width(ci),
        "cells": len(decided),
    }


def comparison_summary(
    truth: Sequence[float] | None, judge: Sequence[float | None] | None, per_cell: int, resamples: int = 1000
) -> dict:
    """One comparison of a block from its per-pair preferences (cell-major, `per_cell` image pairs per cell): the
    judge's and the truth's summaries over cells (each present when given) and their agreement on the pairs."""
    out = {}
    if judge is not None:
        out["judge"] = summarize(cell_means(judge, per_cell), resamples)
    if truth is not None:
        out["ground_truth"] = summarize(cell_means(truth, per_cell), resamples)
    if judge is not None and truth is not None:
        out["agreement"] = ground_truth.agreement(judge, truth)
    return out


def context_drop(cells: Sequence[dict], control: str, view: str, resamples: int = 1000) -> dict:
    """How much of the adapter's win against the original a control loses: per (prompt, sample) cell, `adapter vs
    original` minus `<control> vs original` (the same prompt, sampling seed and image seeds: paired), summarized over
    the cells where both are decided. `preference` is then the mean drop (positive: the control wins less), with its
    95% interval, and `floor_met` whether it reaches `CONTEXT_DROP_FLOOR`."""
    diffs = []
    for cell in cells:
        own, other = cell.get("adapter_vs_original", {}).get(view), cell.get(f"{control}_vs_original", {}).get(view)
        if own is not None and other is not None:
            diffs.append(own - other)
    out = summarize(diffs, resamples)
    out["floor"] = CONTEXT_DROP_FLOOR
    out["floor_met"] = None if out["preference"] is None else out["preference"] >= CONTEXT_DROP_FLOOR - 1e-9
    return out


def precision_warning(name: str, summary: dict, greedy: bool = False, limit: float = MAX_HALF_WIDTH) -> str | None:
    """A warning line when the ground-truth interval of comparison `name` is wider than +-`limit` (or missing)."""
    truth = summary.get("ground_truth")
    if truth is None or (truth["half_width"] is not None and truth["half_width"] <= limit):
        return None
    width = "undefined (fewer than 2 cells)" if truth["half_width"] is None else f"+-{truth['half_width']:.3f}"
    fix = "raise --eval_images (greedy has one rewrite per prompt)" if greedy else "raise --eval_samples/--eval_images"
    return f"warning: {name} ground-truth CI {width} is wider than +-{limit}: {fix}"


# ----------------------------------------------------------------------------------- rewriting, rendering, scoring
def rewrite_prompts(
    rewriter, prompts: list[str], decoding: str, samples: int, seed: int, context=None, base: bool = False
) -> list[list[str]]:
    """The rewriter's active policy's rewrites of each prompt: `samples` sampled ones (at the adapter's training
    temperature, no repetition controls, seeded: as training samples) or one greedy one (`PromptRewriter.rewrite`'s
    defaults, as served).

    `context`: the user's rationales, for a context-conditioned adapter (required by one, refused by any other, as in
    serving). `base`: the generic rewriter instead, the adapter disabled and the plain chat, without a context
    (`PromptRewriter.rewrite_base`: the warm start never saw one).

    The same `seed` for two policies draws the same random numbers, so identical policies give identical samples.
    """
    import contextlib

    from policies.rewriter import extract_rewrite, generate_completions

    if base and context is not None:
        raise ValueError("The generic rewriter (base=True) reads no context.")
    if decoding == "greedy":
        return [[r] for r in (rewriter.rewrite_base(prompts) if base else rewriter.rewrite(prompts, context=context))]
    if decoding != "sampled":
        raise ValueError(f"decoding must be sampled or greedy, got {decoding!r}.")
    if not base and rewriter.needs_context != (context is not None):
        raise AdapterError(
            "The adapter reads the user's context (pig_adapter.json: context_format): pass the user's rationales."
            if rewriter.needs_context
            else "The adapter was trained on the prompt alone (no context_format): it is given no context."
        )
    disabled = rewriter.model.disable_adapter() if base and rewriter.info is not None else contextlib.nullcontext()
    with disabled:
        answers = generate_completions(
            rewriter.model,
            rewriter.tokenizer,
            prompts,
            max_new_tokens=rewriter.max_new_tokens,
            temperature=rewriter.train_temperature,
            seed=seed,
            n=samples,
            system_prompt=rewriter.system_prompt,
            few_shot=rewriter.few_shot,
            context=context,
        )
    rewrites = [extract_rewrite(a) for a in answers]
    return [rewrites[i * samples : (i + 1) * samples] for i in range(len(prompts))]


def image_seeds(base_seed: int, prompts: list[str], k: int) -> list[list[int]]:
    """The `k` image seeds of each prompt, shared by its original and all its rewrites (and by every block)."""
    from rl.environment import crn_seed

    return [[crn_seed(base_seed, p, None, s) for s in range(k)] for p in prompts]


def image_pairs(
    prompts: list[str], texts_a: list[list[str]], texts_b: list[list[str]], seeds: list[list[int]]
) -> list[Pair]:
    """(prompt, image of A, image of B) for every cell (prompt i, sample s) and image seed, cell by cell.

    `texts_x[i]` holds the texts of prompt i's samples (the original: the prompt repeated); A and B share each seed.
    """
    pairs = []
    for prompt, row_a, row_b, row_seeds in zip(prompts, texts_a, texts_b, seeds, strict=True):
        for text_a, text_b in zip(row_a, row_b, strict=True):
            pairs += [(prompt, (text_a, seed), (text_b, seed)) for seed in row_seeds]
    return pairs


def render_once(renderer, keys: Iterable[ImageKey]) -> dict:
    """Render every distinct (text, seed) once, in one call: images depend on neither the block nor the scorer."""
    unique = list(dict.fromkeys(keys))
    images = renderer.render([t for t, _ in unique], [s for _, s in unique], progress="rendering")
    return dict(zip(unique, images))


def truth_preferences(taste, pairs: list[Pair], images: dict, utilities: dict) -> list[float]:
    """`ground_truth.preference` of every pair; each image's utility is measured once (cached in `utilities`, which
    therefore belongs to this one taste)."""

    def u(key: ImageKey, prompt: str) -> float:
        # A taste that depends on the subject scores an image for what its original prompt asked for.
        cache_key = (key, ground_truth.subject_of(prompt) if taste.by_subject else None)
        if cache_key not in utilities:
            utilities[cache_key] = ground_truth.utility(taste, images[key], prompt)
        return utilities[cache_key]

    return [ground_truth.preference(u(a, p), u(b, p)) for p, a, b in pairs]


def truth_by_kind(cells: Sequence[dict], comparisons: Sequence[tuple[str, str]], resamples: int = 1000) -> dict:
    """`{comparison: {kind of subject: summary}}`: each comparison's ground truth over the cells of each kind of
    subject (`rl.ground_truth.subject_kind`), for a taste that depends on what is drawn. A fixed suffix can be right
    for one kind only; this shows where a rewriter wins and where it ties."""
    kinds: dict[str, list[dict]] = {}
    for cell in cells:
        kind = ground_truth.subject_kind(cell["prompt"])
        if kind is not None:
            kinds.setdefault(kind, []).append(cell)
    return {
        f"{a}_vs_{b}": {
            kind: summarize([c.get(f"{a}_vs_{b}", {}).get("ground_truth") for c in group], resamples)
            for kind, group in sorted(kinds.items())
        }
        for a, b in comparisons
    }


def judge_preferences(pig, context, pairs: list[Pair], images: dict) -> list[float | None]:
    """PIGReward's preference for A in every pair under `context` (both orders when so configured), one batch."""
    comparisons = pig.compare(
        [p for p, _, _ in pairs], [images[a] for _, a, _ in pairs], [images[b] for _, _, b in pairs], context
    )
    return [c.preference for c in comparisons]


def check_models_for(pig_args: PigArguments, judge: bool) -> None:
    """Fail fast on a missing renderer, fidelity model, or (when judging) judge; the policy comes with the adapter."""
    from common.hub import check_models
    from rl.reward_stack import check_configured_models

    if judge:
        check_configured_models(pig_args)
    else:
        check_models({"renderer": pig_args.renderer_model, "fidelity": pig_args.fidelity_model})


def free_accelerator_memory() -> None:
    """Hand the policy's memory back before the renderer and the judge are loaded."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------- evaluation
def prompt_sets(user, eval_args: EvalArguments, sandbox: bool) -> dict[str, list[str]]:
    """Set name -> prompts, as chosen by `--eval_prompts` / `--prompt_set`."""
    if eval_args.eval_prompts:
        return {"given": list(dict.fromkeys(eval_args.eval_prompts))}
    wanted = PROMPT_SETS if eval_args.prompt_set == "both" else (eval_args.prompt_set,)
    sets = {}
    if "heldout" in wanted:
        # HELDOUT_PROMPTS are the toy world's subjects; a real user's own unseen prompts are their held-out pairs'.
        sets["heldout"] = (
            list(ground_truth.HELDOUT_PROMPTS) if sandbox else list(dict.fromkeys(h.prompt for h in user.heldout))
        )
        if not sets["heldout"]:
            raise ValueError(
                f"User {user.user_id!r} has no held-out pairs, so no held-out prompts: pass --prompt_set training "
                "or --eval_prompts."
            )
    if "training" in wanted:
        sets["training"] = list(dict.fromkeys(user.training_prompts))
    return sets


def evaluate(pig_args: PigArguments, eval_args: EvalArguments) -> dict:
    from common.devices import resolve_device
    from policies.rewriter import AdapterInfo, PromptRewriter
    from reward.similarity import TextEmbedder
    from reward.users import UserDataError, load_user
    from rl.render import Renderer
    from rl.reward_stack import build_pigreward

    user = load_user(pig_args.user, pig_args.users_dir)
    taste = ground_truth.taste_of(user)
    if taste is None and not eval_args.judge:
        raise UserDataError(
            f"User {user.user_id!r} has no sandbox taste (a real user): with --judge false there is nothing to report."
        )
    adapter = resolve_adapter(eval_args.adapter, user.user_id, pig_args.runs_dir)
    info = AdapterInfo.load(adapter)
    against = resolve_adapter(eval_args.against_adapter, user.user_id, pig_args.runs_dir, "--against_adapter")
    against_info = AdapterInfo.load(against) if against is not None else None
    other = load_user(eval_args.context_of, pig_args.users_dir) if eval_args.context_of else None
    controls = (("other_context",) if other is not None else ()) + (("empty_context",) * eval_args.empty_context)
    check_controls(info, controls, user.user_id, other)
    reads_context = info.needs_context or bool(against_info and against_info.needs_context)
    sets = prompt_sets(user, eval_args, sandbox=taste is not None)
    decodings = DECODINGS if eval_args.decoding == "both" else (eval_args.decoding,)
    blocks = [(name, decoding) for name in sets for decoding in decodings]
    device = resolve_device("auto")  # the rule of common/devices.py
    out = Path(eval_args.eval_out or Path(pig_args.runs_dir) / user.user_id / "eval" / adapter.parent.name)
    check_models_for(pig_args, eval_args.judge or reads_context)
    k, samples = eval_args.eval_images, eval_args.eval_samples

    suffix = resolve_suffix(
        eval_args.suffix, Path(pig_args.runs_dir) / user.user_id / "suffix", pig_args.context_nearest
    )
    comparisons = (
        COMPARISONS
        + (SUFFIX_COMPARISONS if suffix is not None else ())
        + (PER_USER_COMPARISONS if against is not None else ())
        + tuple(c for c in CONTROL_COMPARISONS if set(c) & set(controls))
    )
    policies = (
        ("base", "adapter")
        + (("suffix",) if suffix is not None else ())
        + (("per_user",) if against is not None else ())
        + controls
    )

    # 0. The user's context (and the control's), built once by the configured reasoner and cached: the judge reads
    # it, and a context-conditioned policy reads its rationales, as in training.
    embedder = TextEmbedder(pig_args.fidelity_model, device=device)  # fidelity, and the judge's context_nearest
    pig = build_pigreward(pig_args, device, embedder) if eval_args.judge or reads_context else None
    context = pig.build_context(user, rebuild=pig_args.rebuild_context) if pig is not None else None
    if context is not None:
        print(f"[context] {len(context.rationales)} rationales for {user.user_id} ({context.model_id})")
        recorded = (info.context_source or {}).get("reasoner_model_id")
        if info.needs_context and recorded and recorded != context.model_id:
            print(
                f"warning: the adapter was trained on contexts by {recorded}; it is given {context.model_id}'s "
                "(the configured reasoner: --judge_model / --reasoner_model)"
            )
    control_contexts = {"other_context": None, "empty_context": []}
    if other is not None:
        control_contexts["other_context"] = pig.build_context(other, rebuild=pig_args.rebuild_context)
    policy_context = context if reads_context else None
    reader = pig  # picks the rationales a policy trained with --context_nearest reads for each prompt

    def read(policy_info, user_context, prompts):
        """What a policy reads for `prompts`: nothing, or the rationales (per prompt) it was trained to read."""
        if not policy_info.needs_context:
            return None
        return reader.rationales_for(prompts, user_context, policy_info.context_nearest)

    if not eval_args.judge:
        pig, context = None, None  # built only for the policy's contexts: nothing is judged
        free_accelerator_memory()

    # 1. Rewrite: every block's prompts, by the adapter (with the user's context when it reads one), by the base (the
    # same model with the adapter disabled and the plain chat: the generic rewriter), by the controls (the adapter
    # with another context) and by the user's per-user adapter; the fixed-suffix baseline appends its one suffix to
    # every prompt. Every policy samples with the same seed.
    rewriter = PromptRewriter(adapter, device=device)
    texts: dict[tuple[str, str], dict[str, list[list[str]]]] = {}
    for name, decoding in blocks:
        prompts = sets[name]
        n = samples if decoding == "sampled" else 1
        texts[name, decoding] = {
            "original": [[p] * n for p in prompts],
            "adapter": rewrite_prompts(
                rewriter, prompts, decoding, samples, eval_args.eval_seed, read(info, policy_context, prompts)
            ),
            "base": rewrite_prompts(rewriter, prompts, decoding, samples, eval_args.eval_seed, base=True),
        }
        for control in controls:
            texts[name, decoding][control] = rewrite_prompts(
                rewriter,
                prompts,
                decoding,
                samples,
                eval_args.eval_seed,
                read(info, control_contexts[control], prompts),
            )
        if suffix is not None:
            texts[name, decoding]["suffix"] = [[apply_suffix(p, suffix)] * n for p in prompts]
    del rewriter
    free_accelerator_memory()
    if against is not None:
        rewriter = PromptRewriter(against, device=device)
        for name, decoding in blocks:
            texts[name, decoding]["per_user"] = rewrite_prompts(
                rewriter,
                sets[name],
                decoding,
                samples,
                eval_args.eval_seed,
                read(against_info, policy_context, sets[name]),
            )
        del rewriter
        free_accelerator_memory()

    # 2. Render every distinct (text, seed) of all blocks once.
    renderer = Renderer.from_args(pig_args, device)
    seeds = {name: image_seeds(eval_args.eval_seed, prompts, k) for name, prompts in sets.items()}
    all_pairs = {
        (name, decoding, a, b): image_pairs(sets[name], t[a], t[b], seeds[name])
        for (name, decoding), t in texts.items()
        for a, b in comparisons
    }
    images = render_once(renderer, (key for pairs in all_pairs.values() for _, *keys in pairs for key in keys))

    # 3. Score every block: the truth (sandbox users) and the judge on the same image pairs, per cell, then summaries.
    results: dict = {
        "user": user.user_id,
        "adapter": str(adapter),
        "adapter_reads_context": info.needs_context,
        "per_user_adapter": None if against is None else str(against),
        "controls": {c: (other.user_id if c == "other_context" else None) for c in controls},
        "suffix": suffix,
        "taste": None if taste is None else taste.to_json(),
        "context_key": None if context is None else context.key,
        "policy_context_key": None if policy_context is None else policy_context.key,
        "blocks": [],
    }
    utilities: dict = {}
    out.mkdir(parents=True, exist_ok=True)
    for name, decoding in blocks:
        prompts, t = sets[name], texts[name, decoding]
        n = len(t["adapter"][0])
        cells = [{"prompt": p, "sample": s} for p in prompts for s in range(n)]
        summary, warnings = {}, []
        for a, b in comparisons:
            pairs = all_pairs[name, decoding, a, b]
            truth = truth_preferences(taste, pairs, images, utilities) if taste is not None else None
            judge = judge_preferences(pig, context, pairs, images) if pig is not None else None
            comparison = f"{a}_vs_{b}"
            summary[comparison] = comparison_summary(truth, judge, k, eval_args.bootstrap)
            for view, values in (("judge", judge), ("ground_truth", truth)):
                if values is not None:
                    for cell, value in zip(cells, cell_means(values, k)):
                        cell.setdefault(comparison, {})[view] = value
            warning = precision_warning(f"{a} vs {b}", summary[comparison], greedy=decoding == "greedy")
            if warning:
                warnings.append(warning)
        if taste is not None and taste.by_subject:
            summary["truth_by_kind"] = truth_by_kind(cells, comparisons, eval_args.bootstrap)
        for control in controls:
            summary.setdefault("context_drop", {})[control] = {
                view: context_drop(cells, control, view, eval_args.bootstrap)
                for view in ("ground_truth", "judge")
                if any(view in cell.get(f"{control}_vs_original", {}) for cell in cells)
            }
        flat_prompts = [p for p in prompts for _ in range(n)]
        for policy in policies:
            flat = [text for row in t[policy] for text in row]
            fidelity = embedder.similarity(flat, flat_prompts)
            summary[f"fidelity_{policy}"] = sum(fidelity) / len(fidelity)
            summary[f"repeats_{policy}"] = repeat_share(flat, flat_prompts)
            if taste is not None:  # which poles the rewrites name, per subject group (the toy world's words)
                summary.setdefault("pole_shares", {})[policy] = ground_truth.pole_shares(flat, flat_prompts)
            for cell, text, value in zip(cells, flat, fidelity):
                cell[policy], cell[f"fidelity_{policy}"] = text, value
        grid = out / f"grid_{name}_{decoding}.png"
        _save_grid(grid, prompts, t, seeds[name], images, cells[::n], k)
        results["blocks"].append(
            {
                "prompt_set": name,
                "decoding": decoding,
                "prompts": len(prompts),
                "samples": n,
                "summary": summary,
                "warnings": warnings,
                "grid": grid.name,
                "cells": cells,
            }
        )
    results["judge_metrics"] = pig.pop_metrics() if pig is not None else None
    results["settings"] = {
        "eval_samples": samples,
        "eval_images": k,
        "eval_seed": eval_args.eval_seed,
        "bootstrap": eval_args.bootstrap,
        "judge_model": pig_args.judge_model if eval_args.judge else None,
        "renderer_model": pig_args.renderer_model,
        "tie_tolerance": ground_truth.TIE_TOLERANCE,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    results["out"] = str(out)
    return results


def population_adapter(runs_dir: str | Path) -> Path:
    """The population model's adapter, `runs/population/LATEST` (shared by `pig evaluate`, `pig matrix` and
    `benchmarks/first_rewrite.py`).

    Raises:
        FileNotFoundError: there is none, with the command that trains one.
    """
    from policies.rewriter import LATEST, POPULATION, latest_adapter

    if not (Path(runs_dir) / POPULATION / LATEST).is_file():
        raise FileNotFoundError(
            f"No population model: {Path(runs_dir) / POPULATION / LATEST} is missing. Train one first: "
            "`accelerate launch rl/train_policy.py --population <folder of users>`, or pass its adapter folder."
        )
    return latest_adapter(POPULATION, runs_dir)  # a broken pointer is named with the fix


def resolve_adapter(option: str | None, user_id: str, runs_dir: str, flag: str = "--adapter") -> Path | None:
    """The adapter folder an option names: a folder; `population` (--adapter) the population model,
    runs/population/LATEST; `latest` (--against_adapter) or nothing (--adapter) the user's own, runs/<user>/LATEST."""
    from policies.rewriter import POPULATION, latest_adapter

    if option is None:
        return latest_adapter(user_id, runs_dir) if flag == "--adapter" else None
    if option == POPULATION and flag == "--adapter" and not Path(option).is_dir():
        return population_adapter(runs_dir)
    if option == "latest" and flag == "--against_adapter" and not Path(option).is_dir():
        return latest_adapter(user_id, runs_dir)
    return Path(option)


def check_controls(info, controls: Sequence[str], user_id: str, other) -> None:
    """A control needs an adapter that reads the user's context, and another user than the one evaluated.

    Raises:
        ConfigError: naming the fix.
    """
    if controls and not info.needs_context:
        raise ConfigError(
            "--context_of and --empty_context are controls of a context-conditioned adapter (the population model, "
            "or a per-user run started from it), and this adapter reads the prompt alone (no context_format in its "
            "pig_adapter.json): drop them, or pass such an adapter (--adapter population)."
        )
    if other is not None and other.user_id == user_id:
        raise ConfigError(
            f"--context_of names the user evaluated ({user_id}): name another user, whose context "
            "the adapter is then given for this user's prompts."
        )


def resolve_suffix(option: str, default_folder: Path, context_nearest: int | None = None) -> str | None:
    """The fixed suffix `--suffix` names: `auto` reads `default_folder` when a search left one there, `none` none.

    With `context_nearest` (this evaluation's judge setting), a suffix searched under another one is used with a
    warning: the judge that chose it read the user differently."""
    import sys

    from policies.suffix import SUFFIX_FILE, load_suffix_record

    if option == "none":
        return None
    if option == "auto" and not (default_folder / SUFFIX_FILE).is_file():
        return None
    path = default_folder if option == "auto" else Path(option)
    record = load_suffix_record(path)
    searched = record.get("context_nearest")  # absent in records written before it was kept
    if context_nearest is not None and type(searched) is int and searched != context_nearest:

        def reading(k: int) -> str:
            return f"the {k} nearest rationales" if k else "the whole context"

        print(
            f"warning: the fixed suffix in {path} was searched with the judge reading {reading(searched)} of the "
            f"user's context, and this evaluation's judge reads {reading(context_nearest)}: rerun `pig suffix "
            f"--context_nearest {context_nearest}` for a like-for-like baseline.",
            file=sys.stderr,
        )
    return record["suffix"]


def repeat_share(rewrites: Sequence[str], originals: Sequence[str]) -> float:
    """Share of rewrites that repeat a phrase, stack a cue word in several phrases or stutter a word (the training's
    repetition gate, `rl.environment.repetition`): how far from a prompt a person would write they are."""
    from rl.environment import repetition

    return sum(repetition(r, o) < 0 for r, o in zip(rewrites, originals)) / max(1, len(rewrites))


def _save_grid(path: Path, prompts, texts, seeds, images, first_cells, k: int) -> None:
    """original | base | adapter (first sample) for each prompt, for the first two seeds; the texts are in results."""
    from rl.tracking import image_grid

    names, shown = ("original", "base", "adapter"), min(k, 2)
    rows = [[images[texts[n][i][0], seeds[i][s]] for s in range(shown) for n in names] for i in range(len(prompts))]
    labels = []
    for prompt, cell in zip(prompts, first_cells):
        scores = cell.get("adapter_vs_base", {})
        views = " ".join(f"{view.replace('_', ' ')} {_fmt(value)}" for view, value in scores.items())
        labels.append(
            f"{prompt} | adapter vs base: {views} | columns: {', '.join(names)}" + (" x2 seeds" * (shown > 1))
        )
    image_grid(rows, labels, cell=128).save(path)


# ------------------------------------------------------------------------------------------------------ report
def _fmt(value: float | None) -> str:
    return "undecided" if value is None else f"{value:.2f}"


def print_report(results: dict) -> None:
    taste = results["taste"]
    print(f"user {results['user']}, adapter {results['adapter']}")
    if results.get("adapter_reads_context"):
        print(f"the adapter reads {results['user']}'s context in its chat; base: the adapter disabled, plain chat")
    if results.get("per_user_adapter"):
        print(f"per_user: {results['user']}'s own adapter {results['per_user_adapter']}")
    for control, other in (results.get("controls") or {}).items():
        given = f"{other}'s context" if other else "an empty context"
        print(f"control {control}: the same adapter given {given} for {results['user']}'s prompts")
    if results.get("suffix") is not None:
        print(f"fixed-suffix baseline: {results['suffix']!r}")
    print(f"true taste: {taste}" if taste else "real user: judge only")
    for block in results["blocks"]:
        n, s, k = block["prompts"], block["samples"], results["settings"]["eval_images"]
        print(f"\n[{block['prompt_set']} x {block['decoding']}] {n} prompts x {s} samples = {n * s} cells, ", end="")
        print(f"{k} images each")
        print(f"{'comparison':26} {'judge (95% CI)':28} {'ground truth (95% CI)':28} agreement")
        for a, b in COMPARISONS + SUFFIX_COMPARISONS + PER_USER_COMPARISONS + CONTROL_COMPARISONS:
            if f"{a}_vs_{b}" not in block["summary"]:  # a row this evaluation did not ask for
                continue
            row = block["summary"][f"{a}_vs_{b}"]
            agreement = row.get("agreement")
            print(
                f"{a + ' vs ' + b:26} {format_summary(row.get('judge')):28} "
                f"{format_summary(row.get('ground_truth')):28} {'-' if agreement is None else f'{agreement:.2f}'}"
            )
        summary = block["summary"]
        for control, views in summary.get("context_drop", {}).items():
            for view, drop in views.items():
                if drop["preference"] is None:
                    continue
                win = summary["adapter_vs_original"][view]["preference"]
                control_win = summary[f"{control}_vs_original"][view]["preference"]
                print(
                    f"{view.replace('_', ' ')}: win vs original {_fmt(win)} with the user's context, "
                    f"{_fmt(control_win)} with {control.replace('_', ' ')}: paired drop "
                    f"{format_summary(drop)} ({'>=' if drop['floor_met'] else '<'} {drop['floor']:.2f})"
                )
        print(
            f"fidelity to the prompt: base {summary['fidelity_base']:.3f}, adapter {summary['fidelity_adapter']:.3f}"
        )
        if "repeats_base" in summary:  # results written before this figure existed lack it
            print(
                f"rewrites with a repeated phrase or a stacked cue: base {summary['repeats_base']:.2f}, "
                f"adapter {summary['repeats_adapter']:.2f}"
            )
        for comparison, kinds in summary.get("truth_by_kind", {}).items():
            shown = ", ".join(f"{kind} {format_summary(row)}" for kind, row in kinds.items() if row["cells"])
            print(f"ground truth by kind of subject, {comparison.replace('_vs_', ' vs ')}: {shown}")
        for policy, groups in summary.get("pole_shares", {}).items():
            named = "; ".join(
                f"{group}: " + ", ".join(f"{pole} {share:.2f}" for pole, share in shares.items() if share > 0)
                for group, shares in groups.items()
            )
            print(f"poles named by {policy} rewrites, per subject group: {named}")
        for warning in block["warnings"]:
            print(warning)
    print(f"\nwritten: {results['out']}/results.json, grid_*.png")


def main(argv: list[str] | None = None) -> int:
    pig_args, eval_args = parse_args(argv)
    print_report(evaluate(pig_args, eval_args))
    return 0


if __name__ == "__main__":
    from common.errors import run_command

    sys.exit(run_command(main))
