"""The RL environment: rewrites -> images -> PIGReward verdicts for one user -> rewards.

For every group (one original prompt, `num_generations` rewrites) and every image slot k:

1. render the original prompt and each rewrite with the same seed s_k (common random numbers), in batches;
2. judge, under the user's context and in both orders (`compare_to`): each rewrite's image against the original's
   (`original`: "does the rewrite beat the plain prompt?", Promptist's comparison), and/or each rewrite's image against
   every other rewrite's image of its group (`group`: round robin, the win rate Pref-GRPO uses; its target moves with
   the policy, so it keeps separating rewrites once they all beat the original);
3. preference of a rewrite = mean over its comparisons of the combined two-order preference (tie = 0.5). A
   comparison the judge could not decide in either order counts as a tie (0.5): it carries no information, and
   returning `None` would make TRL score it like a lost comparison (`nansum`, docs/TRAINING.md). Undecided
   comparisons are counted (`reward/undecided_fraction`), never hidden; so is a judge call that failed, by cause
   (`judge/failures/<kind>`), and a batch whose undecided share passes `max_undecided_fraction` raises an alarm. A
   judge that keeps failing stops the run (`rl.judge_faults`);
4. fidelity of a rewrite = MiniLM cosine similarity between rewrite and original prompt, used as a *gate*
   (Promptist's relevance floor): `min(0, cos - fidelity_floor)`, zero for any rewrite that keeps the prompt's
   meaning, negative for one that drops it. Added as a term, its small differences among faithful rewrites were noise
   that group scaling blew up to full-size advantages.

5. repetition of a rewrite = `-(repeats / phrases)` (`repetition`): a phrase that repeats an earlier one or reuses
   an earlier phrase's content word (one not in the original prompt), or a word that repeats the word before it, is a
   repeat; zero for a rewrite without any. Policies trained on the judge alone learned to stack a cue ("lone framing,
   lone framing framing", "busy scene, busy framing, busy composition"): the renderer reads each copy, so the reward
   rose while the prompt stopped being one a person would write, and the stacked cue crowded out the user's other
   axes. Weighted by `repetition_weight` (1 by default).

For sandbox users a ground truth (the user's hidden taste, on pixels) also scores every rewrite's images against the
original's; it is logged beside the judge's reward (`reward/ground_truth`, `judge/ground_truth_agreement`) to watch
for reward hacking, and never enters the reward.

A population run (one context-conditioned policy for many users, issue 21) gives the environment one context per user
(`{user_id: context}`) and, for sandbox users, one ground truth per user; TRL passes each sample's `user_id` (a
dataset column) to the reward functions, every group is one user's (`rl.groups.split_groups` checks it), and each
group is judged under its own user's context and measured by its own user's taste.

TRL calls each reward function with the whole batch of its process. The terms are computed once per batch by
[`PersonalizedEnvironment`] and exposed as three reward functions, so TRL logs them separately (`rewards/preference`,
`rewards/fidelity`, `rewards/repetition`) and combines them with
`reward_weights = [1, fidelity_weight, repetition_weight]`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from policies.rewriter import completion_text, extract_rewrite
from reward.context import UserContext
from reward.pigreward import Comparison, PIGReward
from reward.reduction import win_rates
from reward.similarity import TextEmbedder
from rl.config import COMPARE_TO
from rl.ground_truth import agreement
from rl.groups import split_groups
from rl.judge_faults import JudgeUnavailable, UndecidedAlarm, failure_kind, is_permanent
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
    preference: list[float]
    fidelity: list[float]
    repetition: list[float]
    original_images: dict[int, list]  # group start index -> images per slot
    rewrite_images: list[list]  # per completion -> images per slot
    comparisons: list[list[Comparison]]  # per completion -> its comparisons with the original, per slot
    similarity: list[float] | None = None  # raw cosine similarity of each rewrite to its original
    ground_truth: list[float] | None = None  # sandbox users: true preference of each rewrite over the original
    users: list[str] | None = None  # a population run: each rewrite's user


# Short function words that any phrase may reuse ("in amber tones, in a park"): they never make a repeat.
_FUNCTION_WORDS = frozenset("the and with for from into onto over under above below near its their this that".split())


def _content_words(phrase: str) -> set[str]:
    return {w for w in phrase.split() if len(w) >= 3 and w.isalpha() and w not in _FUNCTION_WORDS}


def repetition(rewrite: str, original: str = "") -> float:
    """`-(repeats / phrases)` of a rewrite: 0 without repeats, towards -1 for a rewrite made of repeats.

    Phrases are the comma-separated parts (compared lower-cased, spaces collapsed). A repeat is a word equal to the
    word just before it (a stutter), or a phrase that reuses an earlier phrase's content word (3+ letters, not a
    function word, not a word of the original prompt) or equals an earlier phrase: stacking one cue in several
    phrases (`"busy scene, busy framing"`) is as degenerate as repeating the phrase.

    Examples: `"a tent, lone framing, lone framing framing"` has 3 phrases and 2 repeats (the stuttered "framing",
    and the third phrase reusing "lone"): -0.67. `"a tent, busy scene, busy framing, busy composition"`: -0.5.
    `"a tent by the sea, the sea at night"` with original `"a tent by the sea"`: 0 ("sea" is the prompt's word).
    """
    phrases = [" ".join(p.lower().split()) for p in rewrite.split(",")]
    phrases = [p for p in phrases if p]
    if not phrases:
        return 0.0
    own = _content_words(original.lower().replace(",", " "))
    repeats, seen, used = 0, set(), set()
    for phrase in phrases:
        words = phrase.split()
        kept = [w for i, w in enumerate(words) if i == 0 or w != words[i - 1]]
        repeats += len(words) - len(kept)
        phrase = " ".join(kept)
        content = _content_words(phrase) - own
        repeats += phrase in seen or bool(content & used)
        seen.add(phrase)
        used |= content
    share = min(1.0, repeats / len(phrases))
    return -share if share else 0.0


def split_start(index: int, group_size: int) -> int:
    """Index of the first completion of the group that holds completion `index` (TRL lays groups out back to back)."""
    return index - index % group_size


class PersonalizedEnvironment:
    """Computes the preference and fidelity rewards of a batch once and serves them to TRL.

    Args:
        pig: the frozen [`PIGReward`].
        context: the user's context (built once before training), or for a population run `{user_id: context}`: each
            sample is then judged under the context of its `user_id` (TRL passes the dataset column of that name).
        renderer: the [`Renderer`].
        embedder: sentence embedder for fidelity.
        num_generations: group size (TRL's `num_generations`); every batch must hold whole groups.
        images_per_prompt: image slots per prompt; more slots = less seed noise in the reward, more rendering.
        seed: base seed of the common random numbers.
        seed_per_step: draw new seeds every step (otherwise the original prompt's images are rendered once and reused).
        compare_to: `"original"`, `"group"` or `"both"` (the mean of the two win rates); see the module docstring.
        fidelity_floor: cosine similarity below which the fidelity gate penalises a rewrite.
        ground_truth: optional `(images_a, images_b, prompts=...) -> list[float]` true preferences (sandbox users; the
            original prompts name what was asked for), logged only; for a population, `{user_id: that function}`
            over every user of `context`.
        sample_logger: optional callable `(BatchResult) -> None` for W&B tables (main process only).
        profile: optional [`rl.step_profile.StepProfile`] that receives the seconds of rendering, judging, the rest of
            the reward and sample logging, and the number of judged rewrites.
        rollout_log: optional path of a JSON-lines file that receives one row per rewrite and batch (step, prompt,
            rewrite, rewards, ground truth): what each process was rewarded for (one file per process).
        max_undecided_fraction: undecided share of a batch's comparisons above which the alarm fires (1 = never).
        max_failed_batches: reward batches in a row whose judge call failed (`BackendError`) before the judge counts
            as gone for good and `JudgeUnavailable` is raised; a failed batch before that is undecided, counted.
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
        compare_to: str = "original",
        fidelity_floor: float = 0.0,
        ground_truth=None,
        sample_logger=None,
        profile=None,
        rollout_log: str | Path | None = None,
        max_undecided_fraction: float = 1.0,
        max_failed_batches: int = 3,
    ):
        if images_per_prompt < 1:
            raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}.")
        if compare_to not in COMPARE_TO:
            raise ValueError(f"compare_to must be one of {COMPARE_TO}, got {compare_to!r}.")
        if compare_to != "original" and num_generations < 2:
            raise ValueError(f"compare_to={compare_to!r} compares rewrites of a group: num_generations must be >= 2.")
        self.population = isinstance(context, Mapping)
        if self.population:
            if not context:
                raise ValueError("A population environment needs at least one user's context.")
            if ground_truth is not None and set(ground_truth) != set(context):
                raise ValueError("A population's ground truth must name the same users as its contexts.")
        elif isinstance(ground_truth, Mapping):
            raise ValueError("One user's environment takes one ground-truth function, not a mapping.")
        self.contexts = dict(context) if self.population else None
        self.pig, self.context, self.renderer, self.embedder = pig, context, renderer, embedder
        self.num_generations, self.images_per_prompt = num_generations, images_per_prompt
        self.seed, self.seed_per_step, self.sample_logger = seed, seed_per_step, sample_logger
        self.compare_to, self.fidelity_floor, self.ground_truth = compare_to, fidelity_floor, ground_truth
        self.profile = profile
        if max_failed_batches < 1:
            raise ValueError(f"max_failed_batches must be >= 1, got {max_failed_batches}.")
        self.alarm = UndecidedAlarm(max_undecided_fraction)
        self.max_failed_batches, self.failed_batches = max_failed_batches, 0
        self.rollout_log = Path(rollout_log) if rollout_log else None
        self._last_key: tuple | None = None
        self._last: BatchResult | None = None

    # TRL reward functions: `f(prompts, completions, **kwargs) -> list[float | None]`, named by `__name__`.
    def preference(
        self, prompts, completions, original_prompt, trainer_state=None, log_metric=None, user_id=None, **kwargs
    ):
        return self._result(completions, original_prompt, trainer_state, log_metric, user_id).preference

    def fidelity(
        self, prompts, completions, original_prompt, trainer_state=None, log_metric=None, user_id=None, **kwargs
    ):
        return self._result(completions, original_prompt, trainer_state, log_metric, user_id).fidelity

    def repetition(
        self, prompts, completions, original_prompt, trainer_state=None, log_metric=None, user_id=None, **kwargs
    ):
        return self._result(completions, original_prompt, trainer_state, log_metric, user_id).repetition

    def _result(self, completions, originals, trainer_state, log_metric, users=None) -> BatchResult:
        rewrites = [extract_rewrite(completion_text(c)) for c in completions]
        step = trainer_state.global_step if trainer_state is not None else 0
        users = list(users) if self.population and users is not None else None
        key = (step, tuple(originals), tuple(rewrites), tuple(users or ()))
        if key != self._last_key:
            self._last = self.compute(list(originals), rewrites, step, log_metric, users=users)
            self._last_key = key
        return self._last

    def compute(
        self, originals: list[str], rewrites: list[str], step: int, log_metric=None, users: list[str] | None = None
    ) -> BatchResult:
        """Render, judge and score one batch of whole groups (`users`: each sample's user, population runs only)."""
        began = time.perf_counter()
        if self.population:
            if users is None:
                raise ValueError(
                    "A population environment needs each sample's user: the training dataset's `user_id` column "
                    "(TRL passes it to the reward functions) or compute(..., users=...)."
                )
            unknown = sorted(set(users) - set(self.contexts))
            if unknown:
                raise ValueError(f"No context was built for users {unknown}: build every user's context first.")
        elif users is not None:
            raise ValueError("users= is for a population environment (built with one context per user).")
        groups = split_groups(originals, self.num_generations, users)
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
        rendered = time.perf_counter()
        images = iter(self.renderer.render(render_prompts, render_seeds))
        render_seconds = time.perf_counter() - rendered
        original_images, rewrite_images = {}, [None] * len(rewrites)
        for g in groups:
            original_images[g.start] = [next(images) for _ in slots]
            for i in g:
                rewrite_images[i] = [next(images) for _ in slots]

        # 2. Judge (one batch, both orders): each rewrite vs the original, and/or each pair of rewrites of a group.
        judged_prompts, images_a, images_b, pairs = [], [], [], []
        for g in groups:
            for i in g:
                if self.compare_to != "group":
                    for k in slots:
                        pairs.append((i, None, k))
                if self.compare_to != "original":
                    pairs += [(i, j, k) for j in g if j > i for k in slots]
        for i, j, k in pairs:
            judged_prompts.append(originals[i])
            images_a.append(rewrite_images[i][k])
            images_b.append(
                original_images[split_start(i, self.num_generations)][k] if j is None else rewrite_images[j][k]
            )
        judged = time.perf_counter()
        judged_users = [users[i] for i, _, _ in pairs] if users is not None else None
        comparisons = self._judge(judged_prompts, images_a, images_b, step, judged_users)
        judge_seconds = time.perf_counter() - judged

        # 3. Reduce: win rates per rewrite; an undecided comparison is a tie (0.5), counted (`reward.reduction`).
        win_original, win_group, undecided = win_rates(
            [(i, j) for i, j, _ in pairs], [c.preference for c in comparisons], len(rewrites)
        )
        vs_original: list[list[Comparison]] = [[] for _ in rewrites]
        for (i, j, _), comparison in zip(pairs, comparisons):
            if j is None:
                vs_original[i].append(comparison)
        preference = {
            "original": win_original,
            "group": win_group,
            "both": [(a + b) / 2 for a, b in zip(win_original, win_group)],
        }[self.compare_to]
        similarity = self.embedder.similarity(rewrites, originals)
        fidelity = [min(0.0, s - self.fidelity_floor) for s in similarity]
        truth = judged_truth = None
        if self.ground_truth is not None:  # the sandbox user's truth: logged beside the reward, never part of it
            # One call: each rewrite's images vs its original's (the monitor), then every pair the judge saw.
            n_monitor = len(rewrites) * self.images_per_prompt
            flat = self._truth(
                [rewrite_images[i][k] for i in range(len(rewrites)) for k in slots] + images_a,
                [original_images[split_start(i, self.num_generations)][k] for i in range(len(rewrites)) for k in slots]
                + images_b,
                [originals[i] for i in range(len(rewrites)) for _ in slots] + judged_prompts,
                None if users is None else [users[i] for i in range(len(rewrites)) for _ in slots] + judged_users,
            )
            n = self.images_per_prompt
            truth = [sum(flat[i * n : (i + 1) * n]) / n for i in range(len(rewrites))]
            judged_truth = flat[n_monitor:]
        result = BatchResult(
            step,
            originals,
            rewrites,
            preference,
            fidelity,
            [repetition(r, o) for r, o in zip(rewrites, originals)],
            original_images,
            rewrite_images,
            vs_original,
            similarity,
            truth,
            users,
        )

        alarm = self.alarm.check(undecided / len(comparisons), step)
        if log_metric is not None:
            metrics = {
                "reward/undecided_fraction": undecided / len(comparisons),
                "judge/undecided_alarm": float(alarm),
                "reward/similarity": sum(similarity) / len(similarity),
                "judge/pairs_per_s": len(comparisons) / judge_seconds if judge_seconds else 0.0,
                "policy/rewrite_chars": sum(map(len, rewrites)) / len(rewrites),
                "policy/empty_rewrites": float(sum(not r for r in rewrites)),
                "policy/distinct_rewrites": len(set(rewrites)) / len(rewrites),
                **self.pig.pop_metrics(),
                **self.renderer.pop_metrics(),
            }
            if self.compare_to != "group":
                metrics["reward/win_rate_vs_original"] = sum(win_original) / len(win_original)
            if truth is not None:
                metrics["reward/ground_truth"] = sum(truth) / len(truth)
                agree = agreement([c.preference for c in comparisons], judged_truth)  # on the pairs judged
                if agree is not None:
                    metrics["judge/ground_truth_agreement"] = agree
            for name, value in metrics.items():
                log_metric(name, value)
        logged = time.perf_counter()
        if self.sample_logger is not None:
            self.sample_logger(result)
        if self.rollout_log is not None:
            self._append_rollouts(result)
        if self.profile is not None:
            self.profile.record("render", render_seconds)
            self.profile.record("judge", judge_seconds)
            self.profile.record("reward", logged - began - render_seconds - judge_seconds, rollouts=len(rewrites))
            self.profile.record("log", time.perf_counter() - logged)
        return result

    def _truth(self, images_a: list, images_b: list, prompts: list[str], users: list[str] | None) -> list[float]:
        """The ground truth of each pair; in a population, each pair measured by its own user's taste."""
        if users is None:
            return self.ground_truth(images_a, images_b, prompts=prompts)
        flat: list[float] = [0.0] * len(prompts)
        for user, index in _by_user(users).items():
            got = self.ground_truth[user](
                [images_a[i] for i in index], [images_b[i] for i in index], prompts=[prompts[i] for i in index]
            )
            for i, value in zip(index, got):
                flat[i] = value
        return flat

    def _judge(
        self, prompts: list[str], images_a: list, images_b: list, step: int, users: list[str] | None = None
    ) -> list[Comparison]:
        """`pig.compare` (in a population, one call per user under that user's context), where a failed judge call
        (`BackendError`) makes the batch undecided, counted by cause, until `max_failed_batches` batches in a row
        failed or the server refused the request: then `JudgeUnavailable`."""
        from reward.openai_backend import BackendError

        try:
            if users is None:
                comparisons = self.pig.compare(prompts, images_a, images_b, self.context)
            else:
                comparisons = [None] * len(prompts)
                for user, index in _by_user(users).items():
                    judged = self.pig.compare(
                        [prompts[i] for i in index],
                        [images_a[i] for i in index],
                        [images_b[i] for i in index],
                        self.contexts[user],
                    )
                    for i, comparison in zip(index, judged):
                        comparisons[i] = comparison
        except BackendError as err:
            self.failed_batches += 1
            kind = failure_kind(err)
            if is_permanent(err) or self.failed_batches >= self.max_failed_batches:
                why = "refused the request" if is_permanent(err) else f"failed {self.failed_batches} batches in a row"
                raise JudgeUnavailable(f"The judge {why} at step {step} ({kind}): {err}") from err
            print(
                f"[warning] judge: the judge call of step {step} failed ({kind}; {self.failed_batches} of "
                f"{self.max_failed_batches} batches in a row before the run stops): its {len(prompts)} comparisons "
                f"are undecided. {err}",
                file=sys.stderr,
                flush=True,
            )
            return self.pig.failed_comparisons(len(prompts), kind, str(err))
        self.failed_batches = 0
        return comparisons

    def _append_rollouts(self, batch: BatchResult) -> None:
        self.rollout_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.rollout_log, "a", encoding="utf-8") as f:
            for i, rewrite in enumerate(batch.rewrites):
                row = {
                    "step": batch.step,
                    **({"user": batch.users[i]} if batch.users is not None else {}),
                    "prompt": batch.originals[i],
                    "rewrite": rewrite,
                    "preference": batch.preference[i],
                    "fidelity": batch.fidelity[i],
                    "repetition": batch.repetition[i],
                    "ground_truth": batch.ground_truth[i] if batch.ground_truth is not None else None,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _by_user(users: list[str]) -> dict[str, list[int]]:
    """The indices of each user's items, users in order of first appearance."""
    index: dict[str, list[int]] = {}
    for i, user in enumerate(users):
        index.setdefault(user, []).append(i)
    return index
