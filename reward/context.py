"""The user context C_u: one rationale per reference, built once per user and cached as JSON.

The cache file is keyed by everything that determines its contents (reasoner model, template id, generation settings,
hash of the references), so changing any of them builds a new context instead of reusing a stale one. Files are
written atomically (temporary file + `os.replace`), so two runs for the same user can race without corrupting it.

Each rationale is also cached on its own (`<cache_dir>/<user>/context/rationales/<key>.json`), keyed by what it
depends on: the reasoner, the template, the generation settings and its one reference (prompt and the bytes of both
images). The reasoner sees one reference per conversation, so a rationale depends on nothing else; a user who adds
choices (the choice page, issue 22) gets a new context in which only the new references went through the reasoner.
(Batched generation pads a conversation beside others; the key ignores that, as the whole-context key always has.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.files import atomic_write_json

CONTEXT_VERSION = 1
logger = logging.getLogger(__name__)


@dataclass
class Rationale:
    reference_index: int
    prompt: str
    text: str


@dataclass
class UserContext:
    """What PIGReward knows about one user.

    Attributes:
        user_id: the user.
        rationales: one per reference, in reference order.
        model_id: the reasoner that wrote them.
        template_id: the reasoner template.
        references_hash: `UserData.references_hash()` at build time.
        generation: the generation settings used (they change the text, so they are part of the key).
        created_at: UNIX time of the build.
        build_seconds: how long the reasoner took.
    """

    user_id: str
    rationales: list[Rationale]
    model_id: str
    template_id: str
    references_hash: str
    generation: dict = field(default_factory=dict)
    created_at: float = 0.0
    build_seconds: float = 0.0
    version: int = CONTEXT_VERSION

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.rationales]

    @property
    def key(self) -> str:
        return context_key(self.model_id, self.template_id, self.references_hash, self.generation)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> UserContext:
        data = dict(data)
        data["rationales"] = [Rationale(**r) for r in data["rationales"]]
        return cls(**data)


def context_key(model_id: str, template_id: str, references_hash: str, generation: dict) -> str:
    """A short stable hash of everything a context depends on."""
    payload = json.dumps(
        {"v": CONTEXT_VERSION, "model": model_id, "template": template_id, "refs": references_hash, "gen": generation},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def context_path(cache_dir: str | Path, user_id: str, key: str) -> Path:
    return Path(cache_dir) / user_id / "context" / f"{key}.json"


def load_cached(path: Path, expected_key: str) -> UserContext | None:
    """The cached context at `path` if it exists, parses and matches `expected_key`; otherwise `None`.

    A corrupt file (not JSON, not a context, or written for another key) is never trusted: a warning names it, and
    the caller rebuilds the context and overwrites it. The cache holds derived data only, so rebuilding is the fix.
    """
    if not path.is_file():
        return None
    try:
        context = UserContext.from_dict(json.loads(path.read_text(encoding="utf-8")))
        key = context.key
        if not all(isinstance(r.text, str) for r in context.rationales):
            raise TypeError("a rationale's text is not a string")
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError, AttributeError) as err:
        logger.warning("Context cache %s is corrupt (%s: %s); rebuilding it.", path, type(err).__name__, err)
        return None
    if key != expected_key:
        logger.warning("Context cache %s holds another key (%s, not %s); rebuilding it.", path, key, expected_key)
        return None
    return context


def save(context: UserContext, cache_dir: str | Path) -> Path:
    path = context_path(cache_dir, context.user_id, context.key)
    atomic_write_json(path, context.to_dict())
    return path


def new_context(user_id, rationales, model_id, template_id, references_hash, generation, started) -> UserContext:
    return UserContext(
        user_id=user_id,
        rationales=rationales,
        model_id=model_id,
        template_id=template_id,
        references_hash=references_hash,
        generation=generation,
        created_at=time.time(),
        build_seconds=time.time() - started,
    )


# ------------------------------------------------------------------------------------ one rationale per reference
def reference_digest(prompt: str, chosen_path: str | Path, rejected_path: str | Path) -> str:
    """SHA-256 of one reference: its prompt and the bytes of its two images (in their roles)."""
    digest = hashlib.sha256(prompt.encode("utf-8") + b"\0")
    for path in (chosen_path, rejected_path):
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()


def rationale_key(model_id: str, template_id: str, generation: dict, reference_digest: str) -> str:
    """A short stable hash of everything one rationale depends on."""
    payload = json.dumps(
        {"v": CONTEXT_VERSION, "model": model_id, "template": template_id, "gen": generation, "ref": reference_digest},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def rationale_path(cache_dir: str | Path, user_id: str, key: str) -> Path:
    return Path(cache_dir) / user_id / "context" / "rationales" / f"{key}.json"


def load_rationale(path: Path, expected_key: str) -> str | None:
    """The cached rationale text at `path` if it parses and was written for `expected_key`; otherwise `None` (a
    corrupt file is rebuilt, with a warning, like a corrupt context)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["key"] != expected_key or not isinstance(data["text"], str):
            raise ValueError(f"written for key {data['key']!r}")
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError) as err:
        logger.warning("Rationale cache %s is corrupt (%s: %s); rebuilding it.", path, type(err).__name__, err)
        return None
    return data["text"]


def save_rationale(path: Path, key: str, text: str, prompt: str, model_id: str) -> None:
    record = {"key": key, "text": text, "prompt": prompt, "model_id": model_id, "created_at": time.time()}
    atomic_write_json(path, record)


class NearestRationales:
    """Picks, for each prompt, the rationales of the user's choices whose prompts are nearest to it.

    A taste that depends on what is drawn (warm light for round subjects, cool for angular ones) is two tastes in one
    context; read only the rationales about similar subjects, it is one. The judge reads contexts this way with
    `--context_nearest K`, and so does a policy trained with it (`AdapterInfo.context_nearest`), in training and in
    serving. Prompts are compared by cosine of `embedder.embed(texts)` (normalised rows, e.g.
    `reward.similarity.TextEmbedder`); embeddings are cached.
    """

    MAX_CACHED = 50_000

    def __init__(self, embedder):
        self.embedder = embedder
        self._embedded: dict[str, object] = {}

    def select(self, prompts: list[str], context, k: int) -> list[list[str]]:
        """Each prompt's rationale texts: the whole context when `k` is 0 or the context has at most `k` rationales,
        else the `k` whose choices' prompts are most similar (in the context's order). A plain list of rationale
        texts carries no prompts, so it is always used whole."""
        if not isinstance(context, UserContext):
            return [list(context or [])] * len(prompts)
        if not k or len(context.rationales) <= k:
            return [context.texts] * len(prompts)
        return [[context.rationales[i].text for i in rows] for rows in self.indices(prompts, context.rationales, k)]

    def indices(self, prompts: list[str], rationales: list[Rationale], k: int) -> list[list[int]]:
        """For each prompt, the indices (ascending) of the `k` rationales whose choices' prompts are most similar."""
        import torch

        if self.embedder is None:
            raise ValueError(
                f"Reading the {k} nearest rationales needs a prompt embedder (e.g. "
                "reward.similarity.TextEmbedder('sentence-transformers/all-MiniLM-L6-v2'))."
            )
        texts = sorted({*prompts, *(r.prompt for r in rationales)} - self._embedded.keys())
        if texts:
            self._embedded.update(zip(texts, self.embedder.embed(texts).float().cpu()))
        if len(self._embedded) > self.MAX_CACHED:  # prompts of a long run: keep the cache bounded
            self._embedded = {t: self._embedded[t] for t in {*prompts, *(r.prompt for r in rationales)}}
        judged = torch.stack([self._embedded[p] for p in prompts])
        choices = torch.stack([self._embedded[r.prompt] for r in rationales])
        top = (judged @ choices.T).topk(k, dim=1).indices
        return [sorted(row.tolist()) for row in top]
