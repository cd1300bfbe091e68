"""PIGReward: a preference reasoner builds a user context once; a pairwise judge compares images under it.

```python
pig = PIGReward.from_names(judge="jeongeunnn/pigreward", reasoner="jeongeunnn/pigreward-bootstrap")
context = pig.build_context(load_user("demo"))            # cached under runs/<user>/context/
results = pig.compare(prompts, images_a, images_b, context)  # both orders, one preference for A each
```
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from reward import context as ctx
from reward.backends import GenerationSettings, backend_class
from reward.parsing import STATUSES, Verdict, parse_verdict
from reward.reduction import position_consistent, preference_from_orders, swap
from reward.templates import Template, build_messages, format_context, load_template
from reward.users import Reference, UserData


@dataclass
class JudgeSettings:
    """How verdicts are produced and which ones count.

    Attributes:
        mode: `"cot"` (chain-of-thought generation, parsed; the paper's method) or `"score"` (no CoT: P(Image 1) vs
            P(Image 2) read from the logits after a fixed answer prefix; one forward pass, no parsing, but the paper
            reports that removing CoT costs accuracy).
        both_orders: judge every pair as (A, B) and (B, A) and average, cancelling position bias.
        strict: count only verdicts with status `ok`; otherwise every verdict with a winner counts (the winner then
            comes from the recomputed totals, see `reward.parsing`).
        retry_failed: regenerate once, sampling with a repetition penalty, when an answer yields no decision.
        generation: generation settings of the first attempt (greedy by default).
        context_references: build a user's context from their most recent N references only (0: all of them).
            Choices made on the page are appended, so a window follows a taste that moves, and keeps the context as
            long as the judge was trained to read.
        context_nearest: judge each prompt under the N rationales whose choices' prompts are nearest to it (cosine
            similarity of sentence embeddings; 0: under the whole context). A taste that depends on what is drawn
            (warm light for landscapes, cool for products) then reaches the judge as the one taste of the choices
            that resemble the judged prompt, which a judge reads far better than a context whose rationales disagree
            by subject. Needs the PIGReward's `prompt_embedder`.
    """

    mode: str = "cot"
    both_orders: bool = True
    strict: bool = False
    retry_failed: bool = True
    generation: GenerationSettings = field(
        default_factory=lambda: GenerationSettings(max_new_tokens=320, stop_after_verdict=True)
    )
    context_references: int = 0
    context_nearest: int = 0

    def __post_init__(self):
        if self.mode not in ("cot", "score"):
            raise ValueError(f"judge mode must be 'cot' or 'score', got {self.mode!r}.")
        if self.context_references < 0:
            raise ValueError(f"context_references must be >= 0 (0: all), got {self.context_references}.")
        if self.context_nearest < 0:
            raise ValueError(f"context_nearest must be >= 0 (0: the whole context), got {self.context_nearest}.")


@dataclass
class ScoreVerdict:
    """A score-mode answer: probabilities of "Image 1" and "Image 2" after the answer prefix."""

    p_1: float
    p_2: float
    template_id: str | None = None
    status: str = "ok"

    @property
    def winner(self) -> int:
        return 0 if abs(self.p_1 - self.p_2) < 1e-9 else (1 if self.p_1 > self.p_2 else 2)

    @property
    def preference_for_1(self) -> float:
        return self.p_1


@dataclass
class JudgeFailure:
    """A verdict that never came: the judge call failed (`kind`: e.g. `http_503`, `unreachable`). Undecided."""

    kind: str
    message: str = ""
    template_id: str | None = None
    winner = None
    preference_for_1 = None

    @property
    def status(self) -> str:
        return "judge_failed"

    @property
    def text(self) -> str:
        return f"[no answer: {self.kind}] {self.message}"


@dataclass
class Comparison:
    """The judge's view of one pair (A, B): both presentation orders and their combination.

    Attributes:
        preference: preference for A in [0, 1] (1 = A wins, 0.5 = tie), `None` if no order was decided.
        forward: verdict with A as Image 1. backward: verdict with A as Image 2 (`None` if not judged).
        consistent: both orders named the same winner (`None` unless both were decided).
    """

    preference: float | None
    forward: Verdict | ScoreVerdict | JudgeFailure
    backward: Verdict | ScoreVerdict | JudgeFailure | None
    consistent: bool | None


class PIGReward:
    """The frozen personalized reward: reasoner + judge behind any backend of `reward.backends.BACKENDS`.

    Args:
        judge: backend for the judge.
        reasoner: backend for the reasoner (may be the same object as `judge`); needed to build contexts.
        judge_template: template id/path; `mode="score"` needs a `judge_score` template.
        reasoner_template: template id/path of the reasoner.
        settings: [`JudgeSettings`].
        reasoner_generation: generation settings for rationales.
        cache_dir: where user contexts are cached (`<cache_dir>/<user>/context/<key>.json`).
        prompt_embedder: a `reward.similarity.TextEmbedder` (or anything with `embed(texts)` returning normalised
            rows), for `settings.context_nearest`.
    """

    def __init__(
        self,
        judge,
        reasoner=None,
        judge_template: str | None = None,
        reasoner_template: str = "reasoner-v1",
        settings: JudgeSettings | None = None,
        reasoner_generation: GenerationSettings | None = None,
        cache_dir: str | Path = "runs",
        prompt_embedder=None,
    ):
        if settings is not None and settings.context_nearest and prompt_embedder is None:
            raise ValueError(
                "JudgeSettings.context_nearest selects rationales by prompt similarity, so PIGReward needs a "
                "prompt_embedder (e.g. reward.similarity.TextEmbedder('sentence-transformers/all-MiniLM-L6-v2'))."
            )
        self.prompt_embedder = prompt_embedder
        self._nearest = ctx.NearestRationales(prompt_embedder)
        self.judge = judge
        self.reasoner = reasoner
        self.settings = settings or JudgeSettings()
        default = "judge-cot-v1" if self.settings.mode == "cot" else "judge-score-v1"
        self.judge_template: Template = load_template(judge_template or default)
        expected = "judge_cot" if self.settings.mode == "cot" else "judge_score"
        if self.judge_template.kind != expected:
            raise ValueError(
                f"Judge mode {self.settings.mode!r} needs a {expected} template, but {self.judge_template.id!r} is "
                f"{self.judge_template.kind}."
            )
        self.reasoner_template: Template = load_template(reasoner_template)
        self.reasoner_generation = reasoner_generation or GenerationSettings(max_new_tokens=96)
        self.cache_dir = Path(cache_dir)
        self.metrics = JudgeMetrics()

    @classmethod
    def from_names(
        cls,
        judge: str,
        reasoner: str | None = None,
        backend: str = "transformers",
        backend_kwargs: dict | None = None,
        **kwargs,
    ) -> PIGReward:
        """Build the backends by model name/path; the reasoner shares the judge's backend when the names match."""
        make = backend_class(backend)
        judge_backend = make(judge, **(backend_kwargs or {}))
        reasoner = reasoner or judge
        reasoner_backend = judge_backend if reasoner == judge else make(reasoner, **(backend_kwargs or {}))
        return cls(judge_backend, reasoner_backend, **kwargs)

    def pop_metrics(self) -> dict[str, float]:
        """Judge metrics since the last call (statuses, retries, consistency, and the backend's own counters)."""
        metrics = self.metrics.pop()
        for backend in {id(b): b for b in (self.judge, self.reasoner) if b is not None}.values():
            if hasattr(backend, "pop_metrics"):
                metrics.update(backend.pop_metrics())
        return metrics

    # ----------------------------------------------------------------------------------------------- user context
    def context_user(self, user: UserData) -> UserData:
        """`user` as their context sees them: their most recent `settings.context_references` references (all when
        0); the rest of the user (training prompts, held-out pairs) is unchanged."""
        n = self.settings.context_references
        if not n or len(user.references) <= n:
            return user
        return dataclasses.replace(user, references=list(user.references[-n:]))

    def context_key(self, user: UserData) -> str:
        user = self.context_user(user)
        return ctx.context_key(
            self.reasoner.model_id,
            self.reasoner_template.id,
            user.references_hash(),
            self.reasoner_generation.to_dict(),
        )

    def build_context(self, user: UserData, rebuild: bool = False) -> ctx.UserContext:
        """The user's context, from the cache when nothing it depends on changed; otherwise built and cached.

        The reasoner runs once per reference (batched) whose rationale is not cached yet (`reward/context.py`: each
        rationale is cached under its own reference's key), so a user who added references pays only for the new
        ones; `rebuild` runs it on every reference. No per-user training.
        """
        if self.reasoner is None:
            raise ValueError("This PIGReward has no reasoner backend, so it cannot build user contexts.")
        user = self.context_user(user)
        key = self.context_key(user)
        path = ctx.context_path(self.cache_dir, user.user_id, key)
        cached = None if rebuild else ctx.load_cached(path, key)
        if cached is not None:
            return cached
        started = time.time()
        generation = self.reasoner_generation.to_dict()
        keys = [
            ctx.rationale_key(
                self.reasoner.model_id,
                self.reasoner_template.id,
                generation,
                ctx.reference_digest(ref.prompt, ref.chosen_path, ref.rejected_path),
            )
            for ref in user.references
        ]
        paths = [ctx.rationale_path(self.cache_dir, user.user_id, k) for k in keys]
        texts = [None if rebuild else ctx.load_rationale(p, k) for p, k in zip(paths, keys)]
        todo = [i for i, text in enumerate(texts) if text is None]
        if todo:
            refs = [user.references[i] for i in todo]
            conversations = [build_messages(self.reasoner_template, r.prompt, (r.chosen, r.rejected)) for r in refs]
            for i, text in zip(todo, self.reasoner.generate(conversations, self.reasoner_generation)):
                texts[i] = _clean_rationale(text)
                ctx.save_rationale(paths[i], keys[i], texts[i], user.references[i].prompt, self.reasoner.model_id)
        rationales = [ctx.Rationale(i, ref.prompt, t) for i, (ref, t) in enumerate(zip(user.references, texts))]
        context = ctx.new_context(
            user.user_id,
            rationales,
            self.reasoner.model_id,
            self.reasoner_template.id,
            user.references_hash(),
            self.reasoner_generation.to_dict(),
            started,
        )
        ctx.save(context, self.cache_dir)
        return context

    # ------------------------------------------------------------------------------------------------------ judge
    def judge_pairs(
        self,
        prompts: list[str],
        images_1: list,
        images_2: list,
        context: ctx.UserContext | list[str] | None,
        references: list[Reference] | None = None,
    ) -> list[Verdict | ScoreVerdict]:
        """One verdict per (prompt, image 1, image 2), in that presentation order, batched by the backend.

        `references` (the user's raw past choices) is for judge templates with a `{references}` slot only, such as
        `judge-rawrefs-v1` (the "judge given the raw references" baseline); other templates refuse it.
        """
        if not (len(prompts) == len(images_1) == len(images_2)):
            raise ValueError(f"judge_pairs got {len(prompts)} prompts, {len(images_1)} and {len(images_2)} images.")
        contexts = self.contexts_for(prompts, context)
        raw = None if references is None else [(r.prompt, r.chosen, r.rejected) for r in references]
        conversations = [
            build_messages(self.judge_template, p, (a, b), c, references=raw)
            for p, a, b, c in zip(prompts, images_1, images_2, contexts)
        ]
        if self.settings.mode == "score":
            probs = self.judge.choice_probabilities(
                conversations, self.judge_template.answer_prefix, self.judge_template.candidates
            )
            verdicts = [ScoreVerdict(p1, p2, self.judge_template.id) for p1, p2 in probs]
            self.metrics.record_statuses(verdicts)
            return verdicts
        texts = self.judge.generate(conversations, self.settings.generation)
        verdicts = [parse_verdict(t) for t in texts]
        failed = [i for i, v in enumerate(verdicts) if v.winner is None]
        if failed and self.settings.retry_failed:
            self.metrics.retries += len(failed)
            gen = self.settings.generation
            retry = GenerationSettings(
                max_new_tokens=gen.max_new_tokens,
                do_sample=True,
                temperature=0.7,
                repetition_penalty=max(gen.repetition_penalty, 1.15),
                no_repeat_ngram_size=gen.no_repeat_ngram_size,
                stop_after_verdict=gen.stop_after_verdict,
                seed=gen.seed + 1,
            )
            for i, text in zip(failed, self.judge.generate([conversations[i] for i in failed], retry)):
                second = parse_verdict(text)
                second.attempts = 2
                if second.winner is not None:
                    self.metrics.retry_successes += 1
                verdicts[i], texts[i] = second, text
        for verdict, text in zip(verdicts, texts):
            verdict.template_id = self.judge_template.id
            verdict.text = text
        self.metrics.record_statuses(verdicts)
        return verdicts

    def contexts_for(self, prompts: list[str], context: ctx.UserContext | list[str] | None) -> list[str]:
        """The context block each prompt is judged under: the whole context, or with `settings.context_nearest` the
        rationales (in the context's order) of the N choices whose prompts are nearest to that prompt. A plain list
        of rationale texts carries no prompts, so it is always used whole."""
        return [format_context(texts) for texts in self.rationales_for(prompts, context)]

    def rationales_for(
        self, prompts: list[str], context: ctx.UserContext | list[str] | None, k: int | None = None
    ) -> list[list[str]]:
        """The rationale texts each prompt is read with (`k` None: `settings.context_nearest`; 0: the whole context):
        `reward.context.NearestRationales.select`, with this judge's prompt embedder. The judge reads these
        (`contexts_for`), and so does a policy trained with `--context_nearest`."""
        return self._nearest.select(prompts, context, self.settings.context_nearest if k is None else k)

    def nearest_rationales(self, prompts: list[str], rationales: list[ctx.Rationale], k: int) -> list[list[int]]:
        """For each prompt, the indices (ascending) of the `k` rationales whose choices' prompts are most similar."""
        return self._nearest.indices(prompts, rationales, k)

    def _counted(self, verdict: Verdict | ScoreVerdict) -> float | None:
        if self.settings.strict and verdict.status != "ok":
            return None
        return verdict.preference_for_1

    def compare(
        self,
        prompts: list[str],
        images_a: list,
        images_b: list,
        context: ctx.UserContext | list[str] | None,
        references: list[Reference] | None = None,
    ) -> list[Comparison]:
        """Preference for each A over its B, judged in both orders when `settings.both_orders` (one batch).

        `references`: see `judge_pairs` (raw-reference templates only).
        """
        n = len(prompts)
        if self.settings.both_orders:
            verdicts = self.judge_pairs(
                prompts + prompts, images_a + images_b, images_b + images_a, context, references=references
            )
            forward, backward = verdicts[:n], verdicts[n:]
        else:
            forward = self.judge_pairs(prompts, images_a, images_b, context, references=references)
            backward = [None] * n
        results = []
        for fwd, bwd in zip(forward, backward):
            pref_ab = self._counted(fwd)
            pref_ba = swap(self._counted(bwd)) if bwd is not None else None
            for verdict, pref in ((fwd, pref_ab), (bwd, pref_ba)):
                if verdict is not None and pref is None:
                    self.metrics.failures[verdict.status] = self.metrics.failures.get(verdict.status, 0) + 1
            consistent = position_consistent(pref_ab, pref_ba)
            self.metrics.record_consistency(consistent)
            results.append(Comparison(preference_from_orders(pref_ab, pref_ba), fwd, bwd, consistent))
        return results

    def failed_comparisons(self, n: int, kind: str, message: str = "") -> list[Comparison]:
        """`n` undecided comparisons standing for a judge call that failed (`kind`), counted under
        `judge/failures/<kind>` (one per verdict that was asked for) and in the status counts as `judge_failed`."""
        orders = 2 if self.settings.both_orders else 1
        self.metrics.failures[kind] = self.metrics.failures.get(kind, 0) + n * orders
        self.metrics.statuses["judge_failed"] = self.metrics.statuses.get("judge_failed", 0) + n * orders
        failure = JudgeFailure(kind, message, self.judge_template.id)
        return [Comparison(None, failure, failure if orders == 2 else None, None) for _ in range(n)]


def _clean_rationale(text: str, max_chars: int = 600) -> str:
    """Keep a rationale to its first paragraph and a bounded length: it is pasted into every judge prompt."""
    text = text.strip().split("\n\n")[0].strip()
    return text[:max_chars].rstrip()


@dataclass
class JudgeMetrics:
    """Running counts since the last `pop()`: statuses, undecided verdicts by cause, retries, position consistency.

    `failures` counts the verdicts of `compare` that gave no usable preference, by cause: the parser's status (an
    answer without a decision, or with a status other than ok under `strict`), or the kind of a judge call that
    failed (`failed_comparisons`). Popped as `judge/failures/<kind>` counts; the parser's kinds are always present.
    """

    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys([s for s in STATUSES if s != "ok"], 0))
    retries: int = 0
    retry_successes: int = 0
    consistent: int = 0
    decided_pairs: int = 0

    def record_statuses(self, verdicts) -> None:
        for v in verdicts:
            self.statuses[v.status] = self.statuses.get(v.status, 0) + 1

    def record_consistency(self, flag: bool | None) -> None:
        if flag is not None:
            self.decided_pairs += 1
            self.consistent += int(flag)

    def pop(self) -> dict[str, float]:
        """Metrics under the `judge/` namespace, then reset."""
        total = sum(self.statuses.values())
        out = {f"judge/status/{k}": (v / total if total else 0.0) for k, v in self.statuses.items()}
        out["judge/verdicts"] = float(total)
        out.update({f"judge/failures/{k}": float(v or 0) for k, v in self.failures.items()})
        out["judge/retries"] = float(self.retries)
        out["judge/retry_successes"] = float(self.retry_successes)
        if self.decided_pairs:
            out["judge/position_consistency"] = self.consistent / self.decided_pairs
        self.__init__()
        return out
