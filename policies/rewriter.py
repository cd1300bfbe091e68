"""The prompt-rewriting policy: its chat prompt, how a rewrite is read from its answer, and loading it with a
user's LoRA adapter for serving.

A per-user adapter sees only the user's prompt: what it knows about the user lives in the LoRA weights that
reinforcement learning trained against that user's PIGReward verdicts. A *context-conditioned* adapter (the population
model, issue 21: one LoRA for every user) also reads the user's context, the reasoner's rationales about their past
choices, as text in its system message (`build_chat(..., context=rationales)`); its `pig_adapter.json` records that
(`AdapterInfo.context_format`), so serving knows to ask for the user's context.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import AdapterError

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

CONTEXT_FORMAT = "rationales-v1"
"""How a context-conditioned policy is given the user's context (recorded as `AdapterInfo.context_format`): the
system prompt, a blank line, `CONTEXT_HEADER`, then the reasoner's rationales one per numbered line
(`format_policy_context`). A new layout needs a new id: an adapter is served with the layout it was trained on."""
CONTEXT_HEADER = "What this user's past choices say about their taste:"
NO_POLICY_CONTEXT = "(nothing is known about this user yet)"
POPULATION = "population"
"""The runs folder of the population model: `runs/population/<run>/adapter`, `runs/population/LATEST` (read by
`pig rewrite --user U` for a user without an adapter of their own)."""


def format_policy_context(rationales) -> str:
    """The user's context as the policy reads it: one numbered line per rationale, in order (or a fixed marker for
    an empty context). Each rationale is made one line (it cannot forge a numbered line of its own) and chat-control
    tokens are broken (it cannot open a turn); nothing else is changed or parsed: the policy reads the reasoner's
    text as it is, like the judge (`reward.templates.format_context`, which `policies/` may not import)."""
    lines = [" ".join(str(r).split()).replace("<|", "< |").replace("|>", "| >") for r in rationales]
    lines = [line for line in lines if line]
    if not lines:
        return NO_POLICY_CONTEXT
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1))


def build_chat(prompt: str, system_prompt: str = SYSTEM_PROMPT, few_shot=(), context=None) -> list[dict]:
    """The conversation the policy completes for one user prompt: system, few-shot turns, the prompt.

    `context` (the user's rationales, a list of str; `[]` for a user nothing is known about) is for a
    context-conditioned policy: it goes into the system message under `CONTEXT_HEADER` (`CONTEXT_FORMAT`), so the
    user turn stays the bare prompt, as in the warm start's training. `None` (the default) is the plain chat of a
    per-user adapter. Training, evaluation and serving all build the chat here.
    """
    if context is not None:
        if isinstance(context, str):
            raise TypeError("context is a list of rationale texts (one per past choice), not one string.")
        system_prompt = f"{system_prompt}\n\n{CONTEXT_HEADER}\n{format_policy_context(context)}"
    messages = [{"role": "system", "content": system_prompt}]
    for question, answer in few_shot:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": prompt}]


def per_prompt_contexts(context, n: int) -> list:
    """`context` for each of `n` prompts: None (no context), one user's rationales (a list of str, the same for every
    prompt), or already one list of rationales per prompt (a policy that reads the rationales nearest each prompt,
    `AdapterInfo.context_nearest`)."""
    if context is None or isinstance(context, str) or not context or all(isinstance(c, str) for c in context):
        return [context] * n
    if len(context) != n or not all(isinstance(c, list) for c in context):
        raise ValueError(
            "context is one user's rationales (a list of str) or one list of rationales per prompt; got "
            f"{len(context)} entries for {n} prompts."
        )
    return list(context)


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
    # What the adapter was trained on and from (issue 22; None in adapters saved before): the user's references and
    # how many of them were choices made on the choice page (`reward.choices`), and the adapter it continued.
    references: int | None = None
    choices: int | None = None
    init_adapter: str | None = None
    # A context-conditioned adapter (`CONTEXT_FORMAT`; None: it reads the prompt only), and how the contexts it was
    # trained on were built (reasoner model, template, generation settings): serve it with contexts built that way.
    context_format: str | None = None
    context_source: dict = field(default_factory=dict)
    # With K > 0 the policy read, for each prompt, only the rationales of the user's K choices whose prompts are
    # nearest to it (MiniLM cosine, the ones the judge read: `--context_nearest K`): serve it the same way.
    context_nearest: int = 0

    @property
    def needs_context(self) -> bool:
        """Whether the adapter reads the user's context in its chat (and must be served with one)."""
        return self.context_format is not None

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
        try:
            info = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
            raise AdapterError(
                f"{path} is corrupt ({err}). Retrain the adapter, or restore the file that rl/train_policy.py wrote."
            ) from err
        if info.context_format not in (None, CONTEXT_FORMAT):
            raise AdapterError(
                f"{path}: the adapter reads the user's context in the layout {info.context_format!r}, which this "
                f"version of pig-rl does not know (it writes {CONTEXT_FORMAT!r}). Serve it with the version that "
                "trained it, or retrain."
            )
        return info


def check_adapter_files(folder: str | Path) -> None:
    """An adapter folder we may load: PEFT's config and safetensors weights (a pickle `adapter_model.bin` could run
    code when loaded, and is never read).

    Raises:
        AdapterError: naming the missing file and the fix.
    """
    folder = Path(folder)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (folder / name).is_file():
            pickled = (folder / "adapter_model.bin").is_file() and name == "adapter_model.safetensors"
            pickled = " (its adapter_model.bin is a pickle file, never loaded)" if pickled else ""
            raise AdapterError(
                f"Adapter folder {folder} has no {name}{pickled}. Point at a folder written by rl/train_policy.py "
                "(adapter_config.json, adapter_model.safetensors, pig_adapter.json)."
            )


def check_adapter_fits(folder: str | Path, model, base_name: str) -> None:
    """The adapter's LoRA matrices fit `model` (every target module exists, with the in/out sizes they were trained
    on), read from the safetensors header without loading the weights. An adapter trained on another base model
    otherwise fails deep inside PEFT with a size-mismatch dump, or, where shapes happen to agree, loads silently.

    Raises:
        AdapterError: naming the first module that does not fit.
    """
    from safetensors import safe_open

    with safe_open(str(Path(folder, "adapter_model.safetensors")), framework="pt") as weights:
        shapes = {key: weights.get_slice(key).get_shape() for key in weights.keys()}
    for key, shape in shapes.items():
        for part, axis in ((".lora_A.", 1), (".lora_B.", 0)):
            if part not in key:
                continue
            module_name = key.split(part)[0].removeprefix("base_model.model.")
            try:
                weight = model.get_submodule(module_name).weight
            except AttributeError:
                weight = None
            # lora_A is (r, in_features), lora_B is (out_features, r): the side that meets the base module must match
            if weight is None or weight.shape[axis] != shape[axis]:
                raise AdapterError(
                    f"The adapter {folder} does not fit the base model {base_name!r}: its weight {key} has shape "
                    f"{list(shape)}, the base model's {module_name} "
                    f"{'does not exist' if weight is None else 'has shape ' + str(list(weight.shape))}. It was "
                    "trained on another base model: serve it with the base model recorded in its pig_adapter.json "
                    "(drop --base_model), or train an adapter for this base model."
                )


def _same_model(a: str, b: str) -> bool:
    """Two model names are the same model: equal hub ids, or paths to the same folder."""
    return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


LATEST = "LATEST"
"""`runs/<user>/LATEST` holds one line: the adapter folder of the user's most recent finished run, relative to
`runs/<user>/` (e.g. `grpo-20250101-120000/adapter`). Written by `write_latest`, read by `latest_adapter`."""


def write_latest(runs_dir: str | Path, user_id: str, adapter_dir: str | Path) -> Path:
    """Point `runs/<user>/LATEST` at `adapter_dir` (a relative path, so a moved runs folder keeps working)."""
    pointer = Path(runs_dir) / user_id / LATEST
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(os.path.relpath(Path(adapter_dir).resolve(), pointer.parent.resolve()) + "\n")
    return pointer


def latest_adapter(user_id: str, runs_dir: str | Path = "runs") -> Path:
    """The adapter of the user's most recent finished training run (`runs/<user>/LATEST` names it)."""
    pointer = Path(runs_dir) / user_id / LATEST
    if not pointer.is_file():
        raise FileNotFoundError(
            f"No trained adapter for user {user_id!r}: {pointer} is missing. Train one first: "
            f"`accelerate launch rl/train_policy.py --user {user_id}`."
        )
    try:
        target = pointer.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as err:
        target, problem = "", f"is not text ({err})"
    else:
        problem = "is empty" if not target else "holds more than one line" if "\n" in target else ""
    if problem:
        raise AdapterError(
            f"{pointer} {problem}: it should hold one line, the adapter folder relative to {pointer.parent} (e.g. "
            f"grpo-20250101-120000/adapter). Write that line, delete the file and retrain, or pass --adapter."
        )
    folder = pointer.parent / target  # relative to runs/<user>/
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{pointer} points at {folder}, which holds no adapter_config.json. Fix the pointer (one line, the "
            "adapter folder relative to it), pass --adapter, or retrain."
        )
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
    context=None,
) -> list[str]:
    """The policy's raw answers to `build_chat(prompt, ..., context)`: `n` per prompt, grouped by prompt; greedy when
    `temperature` is 0, else sampled with `seed` (the global RNG is left alone). Shared by serving and DPO pair
    collection. `context`: one user's rationales, shown with every prompt (a context-conditioned policy only).

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
            build_chat(p, system_prompt, few_shot, c), tokenize=False, add_generation_prompt=True
        )
        for p, c in zip(prompts, per_prompt_contexts(context, len(prompts)))
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

        from common.hub import load_kwargs

        self.info = AdapterInfo.load(adapter) if adapter else None
        base = base_model or (self.info.base_model if self.info else None)
        if base is None:
            raise ValueError("PromptRewriter needs an adapter or a base_model.")
        if adapter:
            check_adapter_files(adapter)
            recorded = self.info.base_model
            if base_model and not _same_model(base_model, recorded) and Path(recorded).expanduser().exists():
                raise AdapterError(
                    f"The adapter {adapter} was trained on {recorded!r}, which is here, but --base_model is "
                    f"{base_model!r}. Drop --base_model (the recorded base is used), or train an adapter for "
                    f"{base_model!r}. (--base_model is for a base model that moved.)"
                )
        self.tokenizer = AutoTokenizer.from_pretrained(adapter or base, **load_kwargs(weights=False))
        self.tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, **load_kwargs())
        if adapter:
            from peft import PeftModel

            check_adapter_fits(adapter, model, base)
            model = PeftModel.from_pretrained(model, str(adapter))
        self.model = model.to(device).eval()
        self.device = device
        self.system_prompt = self.info.system_prompt if self.info else SYSTEM_PROMPT
        self.few_shot = [tuple(pair) for pair in self.info.few_shot] if self.info else ()
        self.max_new_tokens = self.info.max_new_tokens if self.info else 48
        self.train_temperature = self.info.temperature if self.info else 1.0
        self.needs_context = bool(self.info and self.info.needs_context)

    def rewrite(
        self,
        prompts: list[str],
        temperature: float = 0.0,
        seed: int = 0,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 3,
        context=None,
    ) -> list[str]:
        """One rewrite per prompt: greedy when `temperature` is 0, else sampled (seeded, reproducible).

        `context`: the user's rationales (list of str), required by a context-conditioned adapter (`needs_context`)
        and refused by any other (its chat never held one); or one list per prompt, or a function from the prompts
        to that (an adapter that reads the rationales nearest each prompt, `AdapterInfo.context_nearest`).

        Raises:
            AdapterError: a context is missing, or given to an adapter that does not read one.
        """
        if self.needs_context and context is None:
            raise AdapterError(
                "This adapter reads the user's context (pig_adapter.json: context_format "
                f"{self.info.context_format!r}): pass the user's rationales, e.g. `pig rewrite --user U`, which "
                "builds or reads U's context."
            )
        if context is not None and not self.needs_context:
            raise AdapterError(
                "This adapter was trained on the prompt alone (no context_format in its pig_adapter.json): serve it "
                "without a context."
            )
        if callable(context):
            context = context(prompts)
        return self._rewrite(prompts, temperature, seed, repetition_penalty, no_repeat_ngram_size, context)

    def rewrite_base(self, prompts: list[str], **decoding) -> list[str]:
        """The base policy's rewrites (`--compare`): the adapter disabled and the plain chat, without a context (the
        warm start never saw one)."""
        if self.info is None:
            return self._rewrite(prompts, **decoding)
        with self.model.disable_adapter():
            return self._rewrite(prompts, **decoding)

    def _rewrite(
        self, prompts, temperature=0.0, seed=0, repetition_penalty=1.0, no_repeat_ngram_size=3, context=None
    ) -> list[str]:
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
            context=context,
        )
        return [extract_rewrite(a) for a in answers]
