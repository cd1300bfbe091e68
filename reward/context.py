"""The user context C_u: one rationale per reference, built once per user and cached as JSON.

The cache file is keyed by everything that determines its contents (reasoner model, template id, generation settings,
hash of the references), so changing any of them builds a new context instead of reusing a stale one. Files are
written atomically (temporary file + `os.replace`), so two runs for the same user can race without corrupting it.
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
