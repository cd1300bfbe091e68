"""Every method the benchmark compares, by name, in one dict: `METHODS`.

A method is a plain function `predict(pairs, user, resources) -> list[Prediction]`: for each held-out pair of `user`
(`reward.users.HeldoutPair`), a preference for image 1 in [0, 1] (1 = image 1, 0 = image 2, 0.5 = tie) or `None` (no
decision), plus optional details for the report. Models are shared through [`Resources`], which builds each one on
first use (heavy imports happen there), so a run of `random` alone loads nothing.

- `random`: a seeded coin flip per pair (chance, 50%).
- `similarity`: CLIP-class image embeddings; image similarity to the user's chosen minus rejected reference images
  (the similarity metrics the paper's introduction argues against).
- `pigreward`: the reasoner's context + the chain-of-thought judge, both orders (PIGReward).
- `pigreward_no_context`: the same judge with an empty context: a non-personalized CoT judge (the paper's
  UnifiedReward-Think row plays this part).
- `pigreward_raw_refs`: the same judge shown the raw reference images instead of the rationales (the paper's
  "Qwen2.5-VL / GPT-4o given the raw references" rows; template `judge-rawrefs-v1`).
- `pigreward_score`: the judge in score mode (no chain of thought), with the context (the "without CoT" ablation).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reward.users import HeldoutPair, UserData

DEFAULT_CLIP = ".models/tiny-clip"  # make setup; on a machine with the Hub: openai/clip-vit-base-patch32
PIG_TEMPLATES = {"cot": "judge-cot-v1", "score": "judge-score-v1", "rawrefs": "judge-rawrefs-v1"}
"""Judge template of each PIGReward variant."""


@dataclass
class Prediction:
    """A method's output on one pair: `preference` for image 1 (or `None`) and free-form `details` (JSON-able)."""

    preference: float | None
    details: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ pure helpers
def reference_similarity(candidates: np.ndarray, chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """Per candidate: mean cosine similarity to the chosen reference images minus that to the rejected ones.

    Args:
        candidates: (n, d) L2-normalised embeddings of the images to score.
        chosen: (k, d) normalised embeddings of the user's chosen reference images.
        rejected: (k, d) normalised embeddings of the user's rejected reference images.
    """
    if len(chosen) == 0 or len(rejected) == 0:
        raise ValueError("The similarity baseline needs at least one chosen and one rejected reference image.")
    return (candidates @ chosen.T).mean(axis=1) - (candidates @ rejected.T).mean(axis=1)


def preference_from_scores(score_1: float, score_2: float, tol: float = 1e-9) -> float:
    """1.0 when image 1 scores higher, 0.0 when image 2 does, 0.5 when they are equal within `tol`."""
    if abs(score_1 - score_2) <= tol:
        return 0.5
    return 1.0 if score_1 > score_2 else 0.0


def verdict_details(verdict) -> dict | None:
    """A verdict (chain-of-thought `Verdict` or score-mode `ScoreVerdict`) as a JSON-able dict for the report."""
    if verdict is None:
        return None
    if hasattr(verdict, "to_dict"):
        data = verdict.to_dict()
    else:
        data = {"p_1": verdict.p_1, "p_2": verdict.p_2, "status": verdict.status, "template_id": verdict.template_id}
    data["preference_for_1"] = verdict.preference_for_1
    return data


# -------------------------------------------------------------------------------------------- shared models
class ImageEmbedder:
    """L2-normalised image embeddings of a `CLIPModel` loaded by name or path (e.g. `openai/clip-vit-base-patch32`).

    Args:
        model: hub id or local folder (see `localmodels.clip.build_tiny_clip` for one built here).
        device: `"cpu"`, `"cuda"`...
        batch_size: images per forward pass.
    """

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 32):
        import torch
        from transformers import AutoImageProcessor, CLIPModel

        from common.hub import load_kwargs

        self.model_id, self.device, self.batch_size, self._torch = model, device, batch_size, torch
        self.processor = AutoImageProcessor.from_pretrained(model, **load_kwargs(weights=False))
        self.model = CLIPModel.from_pretrained(model, **load_kwargs()).to(device).eval()

    def embed(self, images: list) -> np.ndarray:
        torch = self._torch
        chunks = []
        for start in range(0, len(images), self.batch_size):
            inputs = self.processor(images=images[start : start + self.batch_size], return_tensors="pt").to(
                self.device
            )
            with torch.inference_mode():
                out = self.model.get_image_features(**inputs)
            features = out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5 returns an output
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0))


class Resources:
    """The models and settings shared by the methods of one benchmark run, each built on first use.

    Args:
        judge_model: judge (and by default reasoner) model: hub id or folder.
        reasoner_model: reasoner model (default: `judge_model`).
        clip_model: CLIP-class model for `similarity`.
        device, dtype, batch_size: for the VLM backend (`reward.backends.TransformersVLM`).
        judge_max_new_tokens: cap on each judge answer (chain-of-thought).
        reasoner_max_new_tokens: cap on each rationale.
        judge_retry: regenerate once (sampling) when an answer yields no decision (`JudgeSettings.retry_failed`).
        seed: seed of `random`.
        cache_dir: where user contexts are cached.
    """

    def __init__(
        self,
        judge_model: str,
        reasoner_model: str | None = None,
        clip_model: str = DEFAULT_CLIP,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        judge_max_new_tokens: int = 320,
        reasoner_max_new_tokens: int = 96,
        judge_retry: bool = True,
        seed: int = 0,
        cache_dir: str | Path = "runs/bench/contexts",
    ):
        self.judge_model, self.reasoner_model = judge_model, reasoner_model or judge_model
        self.clip_model, self.device, self.dtype, self.batch_size = clip_model, device, dtype, batch_size
        self.judge_max_new_tokens, self.reasoner_max_new_tokens = judge_max_new_tokens, reasoner_max_new_tokens
        self.judge_retry, self.seed, self.cache_dir = judge_retry, seed, Path(cache_dir)
        self._backends: dict[str, object] = {}
        self._pigs: dict[str, object] = {}
        self._clip: ImageEmbedder | None = None
        self._reference_embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def models(self, method: str) -> dict[str, str]:
        """Role -> model name that `method` loads (for `common.hub.check_models` and the results file)."""
        roles = {"judge": self.judge_model, "reasoner": self.reasoner_model, "clip": self.clip_model}
        return {role: roles[role] for role in METHODS[method].models}

    def weights(self, method: str) -> dict[str, str]:
        """Role -> fingerprint of the weights that name resolves to (a rebuilt model invalidates resumed results)."""
        from common.hub import weights_fingerprint

        return {role: weights_fingerprint(name) for role, name in self.models(method).items()}

    def load(self, method: str) -> None:
        """Build the models `method` uses now (so that loading time is not counted as judging time)."""
        if "clip" in METHODS[method].models:
            self.clip()
        if "judge" in METHODS[method].models:
            self.pig(_PIG_VARIANT[method])

    def fingerprint(self, method: str) -> dict:
        """Everything that determines `method`'s predictions: a resumed run must match it."""
        uses = METHODS[method].models
        data: dict = {"method": method, "models": self.models(method), "weights": self.weights(method)}
        if method == "random":
            data["seed"] = self.seed
        if "judge" in uses:
            from reward.templates import load_template

            data.update(judge_max_new_tokens=self.judge_max_new_tokens, judge_retry=self.judge_retry)
            data["judge_template"] = load_template(PIG_TEMPLATES[_PIG_VARIANT[method]]).id
        if "reasoner" in uses:
            data.update(reasoner_max_new_tokens=self.reasoner_max_new_tokens, reasoner_template="reasoner-v1")
        return data

    def _backend(self, name: str):
        if name not in self._backends:
            from reward.backends import TransformersVLM

            self._backends[name] = TransformersVLM(
                name, device=self.device, dtype=self.dtype, batch_size=self.batch_size
            )
        return self._backends[name]

    def pig(self, variant: str):
        """The `PIGReward` of a variant of `PIG_TEMPLATES` (`"cot"`, `"score"`, `"rawrefs"`); one shared backend."""
        if variant not in self._pigs:
            from reward.backends import GenerationSettings
            from reward.pigreward import JudgeSettings, PIGReward

            settings = JudgeSettings(
                mode="score" if variant == "score" else "cot",
                retry_failed=self.judge_retry,
                generation=GenerationSettings(max_new_tokens=self.judge_max_new_tokens, stop_after_verdict=True),
            )
            # Not `PIGReward.from_names`: the variants (cot, score, rawrefs) share one loaded VLM per model name
            # instead of loading the judge once per variant.
            self._pigs[variant] = PIGReward(
                self._backend(self.judge_model),
                self._backend(self.reasoner_model),
                judge_template=PIG_TEMPLATES[variant],
                settings=settings,
                reasoner_generation=GenerationSettings(max_new_tokens=self.reasoner_max_new_tokens),
                cache_dir=self.cache_dir,
            )
        return self._pigs[variant]

    def context(self, user: UserData):
        """The user's context from the reasoner (cached on disk; shared by `pigreward` and `pigreward_score`)."""
        return self.pig("cot").build_context(user)

    def clip(self) -> ImageEmbedder:
        if self._clip is None:
            from common.devices import resolve_device

            self._clip = ImageEmbedder(
                self.clip_model, device=resolve_device(self.device), batch_size=max(8, self.batch_size)
            )
        return self._clip

    def reference_embeddings(self, user: UserData) -> tuple[np.ndarray, np.ndarray]:
        key = str(user.root)
        if key not in self._reference_embeddings:
            emb = self.clip().embed([r.chosen for r in user.references] + [r.rejected for r in user.references])
            self._reference_embeddings[key] = (emb[: len(user.references)], emb[len(user.references) :])
        return self._reference_embeddings[key]


# ---------------------------------------------------------------------------------------------------- methods
def predict_random(pairs: list[HeldoutPair], user: UserData, resources: Resources) -> list[Prediction]:
    """A coin flip per pair, seeded by (seed, user, pair images): the same pair gets the same flip in every run."""
    out = []
    for pair in pairs:
        rng = random.Random(f"{resources.seed}/{user.user_id}/{pair.image_1_path.name}/{pair.image_2_path.name}")
        out.append(Prediction(float(rng.random() < 0.5)))
    return out


def predict_similarity(pairs: list[HeldoutPair], user: UserData, resources: Resources) -> list[Prediction]:
    """Image 1 wins when it is more similar to the user's chosen references (and less to the rejected) than image 2."""
    chosen, rejected = resources.reference_embeddings(user)
    emb = resources.clip().embed([p.image_1 for p in pairs] + [p.image_2 for p in pairs])
    scores = reference_similarity(emb, chosen, rejected)
    n = len(pairs)
    return [
        Prediction(preference_from_scores(float(s1), float(s2)), {"score_1": float(s1), "score_2": float(s2)})
        for s1, s2 in zip(scores[:n], scores[n:])
    ]


def _judge(pig, pairs: list[HeldoutPair], context, references=None) -> list[Prediction]:
    comparisons = pig.compare(
        [p.prompt for p in pairs], [p.image_1 for p in pairs], [p.image_2 for p in pairs], context, references
    )
    key = getattr(context, "key", None)
    return [
        Prediction(
            c.preference,
            {
                "forward": verdict_details(c.forward),
                "backward": verdict_details(c.backward),
                "consistent": c.consistent,
                "context_key": key,
            },
        )
        for c in comparisons
    ]


def predict_pigreward(pairs: list[HeldoutPair], user: UserData, resources: Resources) -> list[Prediction]:
    """PIGReward: the reasoner's context for this user, then the chain-of-thought judge in both orders."""
    return _judge(resources.pig("cot"), pairs, resources.context(user))


def predict_pigreward_no_context(pairs: list[HeldoutPair], user: UserData, resources: Resources) -> list[Prediction]:
    """The same judge told nothing about the user: a non-personalized chain-of-thought judge."""
    return _judge(resources.pig("cot"), pairs, [])


def predict_pigreward_raw_refs(pairs: list[HeldoutPair], user: UserData, resources: Resources) -> list[Prediction]:
    """The same judge shown the user's raw references (prompt, chosen, rejected images) instead of rationales."""
    return _judge(resources.pig("rawrefs"), pairs, [], references=user.references)


def predict_pigreward_score(pairs: list[HeldoutPair], user: UserData, resources: Resources) -> list[Prediction]:
    """The judge with the user's context in score mode: P(Image 1) vs P(Image 2), no chain of thought."""
    return _judge(resources.pig("score"), pairs, resources.context(user))


@dataclass(frozen=True)
class Method:
    """A method of the benchmark: its function, a one-line description, and the model roles it loads."""

    predict: Callable[[list[HeldoutPair], UserData, Resources], list[Prediction]]
    description: str
    models: tuple[str, ...] = ()


METHODS: dict[str, Method] = {
    "random": Method(predict_random, "seeded coin flip (chance)"),
    "similarity": Method(predict_similarity, "CLIP image similarity to chosen minus rejected references", ("clip",)),
    "pigreward": Method(
        predict_pigreward, "PIGReward: reasoner context + CoT judge, both orders", ("judge", "reasoner")
    ),
    "pigreward_no_context": Method(
        predict_pigreward_no_context, "same CoT judge, empty context (non-personal)", ("judge",)
    ),
    "pigreward_raw_refs": Method(
        predict_pigreward_raw_refs, "same CoT judge given the raw reference images", ("judge",)
    ),
    "pigreward_score": Method(predict_pigreward_score, "score mode (no CoT), with the context", ("judge", "reasoner")),
}
_PIG_VARIANT = {
    "pigreward": "cot",
    "pigreward_no_context": "cot",
    "pigreward_raw_refs": "rawrefs",
    "pigreward_score": "score",
}
