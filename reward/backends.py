"""Backends that run the reasoner and the judge. All share one small interface:

- `generate(conversations, settings) -> list[str]`: chat-completion for a batch of conversations whose user turns
  hold `{"type": "image", "image": PIL.Image}` items;
- `choice_probabilities(conversations, answer_prefix, candidates) -> list[tuple[float, float]]`: probabilities of the
  two candidate continuations after a fixed answer prefix (score mode), normalised over the two;
- `model_id`: a string that identifies the weights (part of cache keys): for local models the name plus
  `common.hub.weights_fingerprint`, so a model rebuilt at the same path does not reuse what the old one wrote.

`BACKENDS` maps the names used in configs to the classes. Heavy imports happen inside the constructors.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from PIL import Image


@dataclass
class GenerationSettings:
    """How a backend generates. Greedy by default: a reward should not depend on sampling noise.

    Attributes:
        max_new_tokens: hard cap on the answer length (tokens).
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature (with `do_sample`).
        repetition_penalty: > 1 discourages repeating tokens (1.0 = off); guards against "Score 1: 2" loops.
        no_repeat_ngram_size: forbid repeating any n-gram of this size (0 = off).
        stop_after_verdict: stop a sequence as soon as it has written its verdict line.
        seed: seed for sampling.
    """

    max_new_tokens: int = 320
    do_sample: bool = False
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    stop_after_verdict: bool = False
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# A verdict line at the end of the text: "Image 2 is better", "**Tie**" (not "Image 1 is better lit" mid-line).
_VERDICT_END = re.compile(r"\n[\s*#>-]*(?:image\s*[12]\s*is\s*(?:the\s*)?better|tie)\W*$", re.I)


def images_of(conversation: list[dict]) -> list[Image.Image]:
    """The images of a conversation, in the order they appear."""
    return [
        item["image"]
        for message in conversation
        if isinstance(message.get("content"), list)
        for item in message["content"]
        if item.get("type") == "image"
    ]


def load_vlm_processor(name: str):
    """`AutoProcessor.from_pretrained(name)`, or, where torchvision is missing, the same processor without videos.

    Qwen2-VL's processor always builds its video processor, which needs torchvision; CPU installs of this project
    leave torchvision out (its PyPI build breaks beside the CPU torch wheel). Image-only judging does not need videos,
    so we assemble the same processor class from the checkpoint's image processor, tokenizer and chat template.
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    from common.hub import load_kwargs

    try:
        return AutoProcessor.from_pretrained(name, **load_kwargs(weights=False))
    except ImportError as err:
        if "torchvision" not in str(err).lower():
            raise
    image_processor = AutoImageProcessor.from_pretrained(name, **load_kwargs(weights=False))
    tokenizer = AutoTokenizer.from_pretrained(name, **load_kwargs(weights=False))
    processor_class = _image_only(image_processor)
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=tokenizer.chat_template,
    )


def _image_only(image_processor):
    import transformers

    name = getattr(image_processor, "processor_class", None) or "Qwen2VLProcessor"
    base = getattr(transformers, name)

    class ImageOnlyProcessor(base):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImageOnlyProcessor.__name__ = base.__name__
    return ImageOnlyProcessor


class TransformersVLM:
    """A local image-text-to-text model (Qwen2-VL, Qwen2.5-VL, ...) loaded with `from_pretrained` by name or path.

    Args:
        model: hub id (e.g. `"jeongeunnn/pigreward"`) or a local folder.
        device: `"auto"`, `"cpu"`, `"cuda"`, `"cuda:1"`...
        dtype: `"auto"`, `"float32"`, `"bfloat16"`, `"float16"` (`"auto"`: see `common.devices`).
        batch_size: conversations per forward pass / `generate` call.
        min_pixels, max_pixels: optional bounds for the image processor (pixels per image); smaller = fewer image
            tokens = faster. `None` keeps the checkpoint's setting.
    """

    def __init__(
        self,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ):
        import torch
        from transformers import AutoModelForImageTextToText

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        from common.devices import resolve_device, resolve_dtype
        from common.hub import load_kwargs, weights_fingerprint

        self.model_id = f"{model}@{weights_fingerprint(model)}"
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.processor = load_vlm_processor(model)
        self.processor.tokenizer.padding_side = "left"  # generation appends on the right
        self.image_kwargs = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v}
        self.model = AutoModelForImageTextToText.from_pretrained(
            model, dtype=resolve_dtype(dtype, self.device), **load_kwargs()
        )
        self.model.to(self.device).eval()
        self._torch = torch

    def _encode(self, conversations: list[list[dict]], suffix: str = ""):
        texts = [
            self.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) + suffix
            for c in conversations
        ]
        images = [images_of(c) for c in conversations]
        kwargs = dict(text=texts, padding=True, return_tensors="pt")
        if any(images):
            kwargs["images"] = images
            kwargs.update(self.image_kwargs)
        return self.processor(**kwargs).to(self.device)

    def generate(self, conversations: list[list[dict]], settings: GenerationSettings) -> list[str]:
        """Greedy (or sampled) answers, batched `batch_size` at a time, special tokens removed."""
        torch = self._torch
        outputs: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = self._encode(conversations[start : start + self.batch_size])
            prompt_len = batch["input_ids"].shape[1]
            kwargs = dict(
                max_new_tokens=settings.max_new_tokens,
                do_sample=settings.do_sample,
                repetition_penalty=settings.repetition_penalty,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
            if settings.do_sample:
                kwargs.update(temperature=settings.temperature, top_k=0, top_p=1.0)
                torch.manual_seed(settings.seed + start)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if settings.no_repeat_ngram_size:
                kwargs["no_repeat_ngram_size"] = settings.no_repeat_ngram_size
            if settings.stop_after_verdict:
                kwargs["stopping_criteria"] = [_StopAfterVerdict(self.processor.tokenizer, prompt_len)]
            with torch.inference_mode():
                generated = self.model.generate(**batch, **kwargs)
            outputs += self.processor.batch_decode(generated[:, prompt_len:], skip_special_tokens=True)
        return [o.strip() for o in outputs]

    def choice_probabilities(
        self, conversations: list[list[dict]], answer_prefix: str, candidates: tuple[str, str]
    ) -> list[tuple[float, float]]:
        """P(candidate 1), P(candidate 2) after `answer_prefix`, renormalised over the two; one forward pass each."""
        torch = self._torch
        ids = self._candidate_ids(answer_prefix, candidates)
        probabilities = []
        for start in range(0, len(conversations), self.batch_size):
            batch = self._encode(conversations[start : start + self.batch_size], suffix=answer_prefix)
            with torch.inference_mode():
                logits = self.model(**batch).logits[:, -1, :].float()  # left padding: the last position is real
            pair = torch.log_softmax(logits, dim=-1)[:, list(ids)].exp()
            mass = pair.sum(dim=-1, keepdim=True).clamp_min(1e-30)
            probabilities += [tuple(row) for row in (pair / mass).tolist()]
        return probabilities

    def _candidate_ids(self, prefix: str, candidates: tuple[str, str]) -> tuple[int, int]:
        tokenizer = self.processor.tokenizer
        base = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        ids = []
        for cand in candidates:
            full = tokenizer(prefix + cand, add_special_tokens=False)["input_ids"]
            if full[: len(base)] != base or len(full) == len(base):
                raise ValueError(
                    f"Candidate {cand!r} does not extend the answer prefix {prefix!r} by whole tokens for "
                    f"{self.model_id}; choose a prefix/candidates pair that tokenizes cleanly."
                )
            ids.append(full[len(base)])
        if ids[0] == ids[1]:
            raise ValueError(f"Candidates {candidates} start with the same token for {self.model_id}.")
        return ids[0], ids[1]


class _StopAfterVerdict:
    """Stop each sequence once its newest line is a verdict ("Image 2 is better", "Tie")."""

    def __init__(self, tokenizer, prompt_len: int, window: int = 24):
        self.tokenizer, self.prompt_len, self.window = tokenizer, prompt_len, window

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        start = max(self.prompt_len, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        lead = "\n" if start == self.prompt_len else ""  # the answer's first line is a line start too
        return torch.tensor([bool(_VERDICT_END.search(lead + t)) for t in tails], device=input_ids.device)


# Backend name (as used in configs) -> "module:Class"; imported on use, so that each backend's heavy imports are paid
# only by those who use it.
BACKENDS = {
    "transformers": "reward.backends:TransformersVLM",
    "openai": "reward.openai_backend:OpenAIChatBackend",
}


def backend_class(name: str):
    """The backend class registered under `name` in `BACKENDS`."""
    import importlib

    if name not in BACKENDS:
        raise ValueError(f"Unknown judge backend {name!r}; choose one of {sorted(BACKENDS)}.")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)
