"""The prompt-rewriting policy: its chat prompt, how a rewrite is read from its answer, and loading it with a
user's LoRA adapter for serving.

The policy sees only the user's prompt; what it knows about the user lives in the per-user LoRA adapter that
reinforcement learning trained against that user's PIGReward verdicts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_PROMPT = (
    "Rewrite the image prompt for an image generator: keep its subject, add a few style words. "
    "Reply with the prompt only."
)
# The policy is a generic rewriter warm-started by supervised fine-tuning (`localmodels/rewriter_sft.py`), so it needs
# no examples in its prompt: every token of the chat is paid for in each generation and backward pass. FEW_SHOT is
# for an instruction model used without a warm start (`few_shot=FEW_SHOT`): it covers both poles of colour, light
# and layout so as not to pre-bake a taste.
FEW_SHOT = (
    ("a dog", "a dog running on a beach, bright daylight, wide shot"),
    ("a castle", "a dark castle under a cool blue night sky, many towers"),
    ("a flower", "a single red flower, warm evening light, minimal background"),
)
ADAPTER_META = "pig_adapter.json"
_PREFIX = re.compile(r"^(?:rewritten\s*prompt|prompt|rewrite|answer)\s*[:\-]\s*", re.I)


def build_chat(prompt: str, system_prompt: str = SYSTEM_PROMPT, few_shot=()) -> list[dict]:
    """The conversation the policy completes for one user prompt: system, few-shot turns, the prompt."""
    messages = [{"role": "system", "content": system_prompt}]
    for question, answer in few_shot:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": prompt}]


def extract_rewrite(completion: str, max_chars: int = 300) -> str:
    """The rewritten prompt inside a policy answer: first non-empty line, without a "Prompt:" label or quotes.

    An empty answer stays empty (it renders the unconditional image and earns the low reward it deserves).
    """
    for line in completion.strip().splitlines():
        line = _PREFIX.sub("", line.strip()).strip().strip("\"'`").strip()
        if line:
            return line[:max_chars]
    return ""


def completion_text(completion) -> str:
    """TRL passes conversational completions as `[{"role": "assistant", "content": ...}]`, plain ones as str."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # content parts
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    raise TypeError(f"Unexpected completion format: {type(completion).__name__}.")


@dataclass
class AdapterInfo:
    """Metadata saved next to a user's adapter (`pig_adapter.json`), needed to serve it the way it was trained."""

    user_id: str
    base_model: str
    system_prompt: str
    max_new_tokens: int
    few_shot: list = field(default_factory=list)
    trained_steps: int = 0
    trainer: str = "grpo"
    temperature: float = 1.0  # the sampling temperature of training: evaluation samples "as in training" with it

    def save(self, folder: str | Path) -> None:
        Path(folder, ADAPTER_META).write_text(json.dumps(self.__dict__, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> AdapterInfo:
        path = Path(folder, ADAPTER_META)
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} has no {ADAPTER_META}: it is not an adapter exported by rl/train_policy.py. "
                "Point at an adapter folder written by rl/train_policy.py (it holds adapter_config.json and "
                f"{ADAPTER_META}), e.g. runs/<user>/<run>/adapter."
            )
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def latest_adapter(user_id: str, runs_dir: str | Path = "runs") -> Path:
    """The adapter of the user's most recent finished training run (`runs/<user>/LATEST` names it)."""
    pointer = Path(runs_dir) / user_id / "LATEST"
    if not pointer.is_file():
        raise FileNotFoundError(
            f"No trained adapter for user {user_id!r}: {pointer} is missing. Train one first: "
            f"`accelerate launch rl/train_policy.py --user {user_id}`."
        )
    folder = pointer.parent / pointer.read_text(encoding="utf-8").strip()  # relative to runs/<user>/
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{pointer} points at {folder}, which holds no adapter_config.json.")
    return folder


def generate_completions(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    n: int = 1,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    system_prompt: str = SYSTEM_PROMPT,
    few_shot=(),
) -> list[str]:
    """The policy's raw answers to `build_chat(prompt)`: `n` per prompt, grouped by prompt; greedy when `temperature`
    is 0, else sampled with `seed` (the global RNG is left alone). Shared by serving and DPO pair collection.

    `no_repeat_ngram_size` blocks n-grams repeated *within the answer* only: transformers' own option also counts the
    prompt, which forbids copying the user's words ("a kite flying over the beach" came back as "... over a lake").
    `repetition_penalty` (transformers') does count the prompt, so it also pushes the rewrite off the user's subject.
    """
    import torch
    from transformers import LogitsProcessorList

    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
    texts = [
        tokenizer.apply_chat_template(
            build_chat(p, system_prompt, few_shot), tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation appends on the right
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    finally:
        tokenizer.padding_side = side
    sampling = (
        dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        if temperature
        else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    )
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            repetition_penalty=repetition_penalty,
            logits_processor=LogitsProcessorList(
                [_AnswerNoRepeatNGram(no_repeat_ngram_size, batch["input_ids"].shape[1])]
                if no_repeat_ngram_size
                else []
            ),
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            **sampling,
        )
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


class _AnswerNoRepeatNGram:
    """transformers' `NoRepeatNGramLogitsProcessor` applied to the generated tokens only (prompts are left-padded to
    one length, so the answer starts at the same column in every row)."""

    def __init__(self, n: int, prompt_length: int):
        from transformers import NoRepeatNGramLogitsProcessor

        self.inner, self.start = NoRepeatNGramLogitsProcessor(n), prompt_length

    def __call__(self, input_ids, scores):
        return self.inner(input_ids[:, self.start :], scores)


class PromptRewriter:
    """A base causal LM plus a user's LoRA adapter, rewriting prompts (greedy by default).

    Greedy decoding of a small policy tends to repeat a phrase until the token limit ("in the distance, in the
    distance, ..."); `rewrite` therefore blocks 3-grams repeated within its answer unless told otherwise. Training
    samples at `train_temperature` (recorded with the adapter); pass `temperature` to sample the way it was trained.

    Args:
        adapter: folder with `adapter_config.json`, `adapter_model.safetensors` and `pig_adapter.json`; `None` to use
            the bare base model (the untrained policy, for comparisons).
        base_model: base model name/path; defaults to the one recorded with the adapter.
        device: `"cpu"`, `"cuda"`...
    """

    def __init__(self, adapter: str | Path | None = None, base_model: str | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.info = AdapterInfo.load(adapter) if adapter else None
        base = base_model or (self.info.base_model if self.info else None)
        if base is None:
            raise ValueError("PromptRewriter needs an adapter or a base_model.")
        self.tokenizer = AutoTokenizer.from_pretrained(adapter or base)
        self.tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter))
        self.model = model.to(device).eval()
        self.device = device
        self.system_prompt = self.info.system_prompt if self.info else SYSTEM_PROMPT
        self.few_shot = [tuple(pair) for pair in self.info.few_shot] if self.info else ()
        self.max_new_tokens = self.info.max_new_tokens if self.info else 48
        self.train_temperature = self.info.temperature if self.info else 1.0

    def rewrite(
        self,
        prompts: list[str],
        temperature: float = 0.0,
        seed: int = 0,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 3,
    ) -> list[str]:
        """One rewrite per prompt: greedy when `temperature` is 0, else sampled (seeded, reproducible)."""
        answers = generate_completions(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=self.max_new_tokens,
            temperature=temperature,
            seed=seed,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            system_prompt=self.system_prompt,
            few_shot=self.few_shot,
        )
        return [extract_rewrite(a) for a in answers]
