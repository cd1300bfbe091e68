"""The RL environment: rewrites -> images -> PIGReward verdicts for one user -> rewards.

For every group (one original prompt, `num_generations` rewrites) and every image slot k:

1. render the original prompt and each rewrite with the same seed s_k (common random numbers), in batches;
2. judge each rewrite's image against the original's, in both orders, under the user's context;
3. preference of a rewrite = mean over its image slots of the combined two-order preference (tie = 0.5);
4. fidelity of a rewrite = MiniLM cosine similarity between rewrite and original prompt, so that the policy cannot
   win by dropping the user's subject (Promptist's relevance guard).

TRL calls each reward function with the whole batch of its process. Both terms are computed once per batch by
[`PersonalizedEnvironment`] and exposed as two reward functions, so TRL logs them separately (`rewards/preference`,
`rewards/fidelity`) and combines them with `reward_weights = [1, fidelity_weight]`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from policies.rewriter import completion_text, extract_rewrite
from reward.context import UserContext
from reward.pigreward import Comparison, PIGReward
from reward.reduction import mean_or_none, split_groups
from reward.similarity import TextEmbedder
from rl.render import Renderer


def crn_seed(base_seed: int, prompt: str, step: int | None, slot: int) -> int:
    """The seed of image slot `slot` for every image of the group of `prompt` at `step` (`None`: same every step)."""
    key = f"{base_seed}|{prompt}|{'fixed' if step is None else step}|{slot}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF


@dataclass
class BatchResult:
    """Everything computed for one reward batch (kept for logging)."""

    step: int
    originals: list[str]
    rewrites: list[str]
    preference: list[float | None]
    fidelity: list[float]
    original_images: dict[int, list]  # group start index -> images per slot
    rewrite_images: list[list]  # per completion -> images per slot
    comparisons: list[list[Comparison]]  # per completion -> per slot


class PersonalizedEnvironment:
    """Computes the preference and fidelity rewards of a batch once and serves them to TRL.

    Args:
        pig: the frozen [`PIGReward`].
        context: the user's context (built once before training).
        renderer: the [`Renderer`].
        embedder: sentence embedder for fidelity.
        num_generations: group size (TRL's `num_generations`); every batch must hold whole groups.
        images_per_prompt: image slots per prompt; more slots = less seed noise in the reward, more rendering.
        seed: base seed of the common random numbers.
        seed_per_step: draw new seeds every step (otherwise the original prompt's images are rendered once and reused).
        sample_logger: optional callable `(BatchResult) -> None` for W&B tables (main process only).
    """

    def __init__(
        self,
        pig: PIGReward,
        context: UserContext,
        renderer: Renderer,
        embedder: TextEmbedder,
        num_generations: int,
        images_per_prompt: int = 1,
        seed: int = 0,
        seed_per_step: bool = True,
        sample_logger=None,
    ):
        if images_per_prompt < 1:
            raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}.")
        self.pig, self.context, self.renderer, self.embedder = pig, context, renderer, embedder
        self.num_generations, self.images_per_prompt = num_generations, images_per_prompt
        self.seed, self.seed_per_step, self.sample_logger = seed, seed_per_step, sample_logger
        self._last_key: tuple | None = None
        self._last: BatchResult | None = None
        self.undecided = 0

    # TRL reward functions: `f(prompts, completions, **kwargs) -> list[float | None]`, named by `__name__`.
    def preference(self, prompts, completions, original_prompt, trainer_state=None, log_metric=None, **kwargs):
        return self._result(completions, original_prompt, trainer_state, log_metric).preference

    def fidelity(self, prompts, completions, original_prompt, trainer_state=None, log_metric=None, **kwargs):
        return self._result(completions, original_prompt, trainer_state, log_metric).fidelity

    def _result(self, completions, originals, trainer_state, log_metric) -> BatchResult:
        rewrites = [extract_rewrite(completion_text(c)) for c in completions]
        step = trainer_state.global_step if trainer_state is not None else 0
        key = (step, tuple(originals), tuple(rewrites))
        if key != self._last_key:
            self._last = self.compute(list(originals), rewrites, step, log_metric)
            self._last_key = key
        return self._last

    def compute(self, originals: list[str], rewrites: list[str], step: int, log_metric=None) -> BatchResult:
        """Render, judge and score one batch of whole groups."""
        groups = split_groups(originals, self.num_generations)
        slots = range(self.images_per_prompt)
        seed_step = step if self.seed_per_step else None
        group_seeds = {g.start: [crn_seed(self.seed, originals[g.start], seed_step, k) for k in slots] for g in groups}

        # 1. Render: the original of each group and every rewrite, sharing the group's seeds.
        render_prompts, render_seeds = [], []
        for g in groups:
            for k in slots:
                render_prompts.append(originals[g.start])
                render_seeds.append(group_seeds[g.start][k])
            for i in g:
                for k in slots:
                    render_prompts.append(rewrites[i])
                    render_seeds.append(group_seeds[g.start][k])
        images = iter(self.renderer.render(render_prompts, render_seeds))
        original_images, rewrite_images = {}, [None] * len(rewrites)
        for g in groups:
            original_images[g.start] = [next(images) for _ in slots]
            for i in g:
                rewrite_images[i] = [next(images) for _ in slots]

        # 2. Judge every rewrite image against the original image of the same slot (both orders, one batch).
        judged_prompts, images_a, images_b, owners = [], [], [], []
        for g in groups:
            for i in g:
                for k in slots:
                    judged_prompts.append(originals[i])
                    images_a.append(rewrite_images[i][k])
                    images_b.append(original_images[g.start][k])
                    owners.append(i)
        began = time.perf_counter()
        comparisons = self.pig.compare(judged_prompts, images_a, images_b, self.context)
        judge_seconds = time.perf_counter() - began
        per_completion: list[list[Comparison]] = [[] for _ in rewrites]
        for i, comparison in zip(owners, comparisons):
            per_completion[i].append(comparison)

        # 3. Reduce: preference per rewrite; `None` (no decided verdict) stays `None` and is counted.
        preference = [mean_or_none(c.preference for c in comps) for comps in per_completion]
        fidelity = self.embedder.similarity(rewrites, originals)
        result = BatchResult(
            step, originals, rewrites, preference, fidelity, original_images, rewrite_images, per_completion
        )

        if log_metric is not None:
            undecided = sum(p is None for p in preference)
            metrics = {
                "reward/undecided_fraction": undecided / len(preference),
                "judge/pairs_per_s": len(comparisons) / judge_seconds if judge_seconds else 0.0,
                "policy/rewrite_chars": sum(map(len, rewrites)) / len(rewrites),
                "policy/empty_rewrites": float(sum(not r for r in rewrites)),
                **self.pig.pop_metrics(),
                **self.renderer.pop_metrics(),
            }
            for name, value in metrics.items():
                log_metric(name, value)
        if self.sample_logger is not None:
            self.sample_logger(result)
        return result
