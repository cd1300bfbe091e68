"""Fail fast, with a clear message, when a model named in a config cannot be loaded here.

A model is either a local folder (built by `make setup`, or downloaded by the user) or a Hugging Face Hub id. Loading
a hub id that is neither cached nor reachable would otherwise fail only after a minute of retries, deep inside
`from_pretrained`, with an error that does not say which of the four models was the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from common.errors import PigError


class ModelUnavailableError(PigError, RuntimeError):
    """A configured model is neither a local folder, nor in the Hugging Face cache, nor reachable on the Hub."""


TRUST_REMOTE_CODE_ENV = "PIG_TRUST_REMOTE_CODE"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Weight formats that `torch.load` unpickles: loading one can run code. Never loaded from a folder a user hands us."""
LOCAL_MODEL_NOTE = "LOCALMODEL.json"
"""A model folder built by `localmodels/` carries this note (how it was built, random or trained weights), so that a
report can say which kind of model produced its figures."""


def local_model_note(name_or_path: str) -> dict | None:
    """The `LOCALMODEL.json` note of a model folder (e.g. `{"weights": "random", ...}`), if it has a readable one."""
    path = Path(name_or_path) / LOCAL_MODEL_NOTE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def remote_code_allowed() -> bool:
    """Whether model loading may run Python code shipped with a checkpoint (`trust_remote_code`). Off unless the
    env var `PIG_TRUST_REMOTE_CODE=1` is set: every model this project uses is a stock transformers/diffusers class,
    so a checkpoint asking to run its own code is either a model we do not support or an attack."""
    return os.environ.get(TRUST_REMOTE_CODE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def load_kwargs(weights: bool = True) -> dict:
    """Keyword arguments of every `from_pretrained` call: no checkpoint code unless `remote_code_allowed()`, and for
    weights (`weights=True`) safetensors only (`use_safetensors=True`: a folder with only pickle weights fails instead
    of being unpickled). Tokenizers and processors take `weights=False`. One switch for every model (policy, judge,
    renderer, embedder), as TRL 1.16's `ModelConfig` has no `trust_remote_code` field."""
    return {"trust_remote_code": remote_code_allowed(), **({"use_safetensors": True} if weights else {})}


def pickle_only_weights(folder: str | Path) -> list[Path]:
    """The pickle-format weight files of a local model folder that holds no `.safetensors` file at all (empty when
    the folder has safetensors weights, which is what `load_kwargs` makes the loaders read)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir() or any(folder.rglob("*.safetensors")):
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")


def looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything starting with `/`, `.` or `~`, or with more slashes, is a path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def weights_fingerprint(name: str) -> str:
    """A short id of the weights a model name resolves to here, for cache keys (contexts, benchmark resumption).

    A local folder: a hash of its files' names, sizes and modification times (rebuilding a model at the same path
    changes it, so contexts written by the old weights are not reused). A Hub id: the cached snapshot's commit, or
    `"hub"` when it is not cached. Cheap: no file is read.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return "local-" + digest.hexdigest()[:12]
    if path.is_file():
        stat = path.stat()
        return "file-" + hashlib.sha256(f"{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    from huggingface_hub.constants import HF_HUB_CACHE

    ref = Path(HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "refs" / "main"
    return ref.read_text().strip()[:12] if ref.is_file() else "hub"


def is_cached(repo_id: str) -> bool:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(repo_id, local_files_only=True)
        return True
    except (LocalEntryNotFoundError, OSError, ValueError):
        return False


def hub_reachable(timeout: float = 5.0) -> tuple[bool, str]:
    """Whether the Hub endpoint answers within `timeout` seconds, and why not."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/api/models?limit=1", method="HEAD"), timeout=timeout
        )
        return True, ""
    except urllib.error.HTTPError:
        return True, ""  # the server answered; an HTTP error status still means the network path works
    except (urllib.error.URLError, OSError) as err:
        return False, f"{endpoint} is unreachable ({getattr(err, 'reason', err)})"


def check_models(models: dict[str, str], *, timeout: float = 5.0) -> None:
    """Check every configured model before anything heavy is loaded.

    Args:
        models: role -> model name or path, e.g. `{"policy": "Qwen/Qwen2.5-1.5B-Instruct", "judge": ".models/x"}`.

    Raises:
        ModelUnavailableError: listing every model that cannot be loaded and how to fix it.
    """
    problems = []
    hub_ids = []
    for role, name in models.items():
        if not name:
            continue
        path = Path(name).expanduser()
        if path.exists():
            pickled = ", ".join(p.name for p in pickle_only_weights(path))
            if pickled:
                problems.append(
                    f"- {role}: {name!r} holds its weights only in pickle format ({pickled}), which can run code "
                    "when loaded; this project loads safetensors only. Convert the folder (load "
                    "it where you trust it and `save_pretrained` it: safetensors is the default), or use a checkpoint "
                    "that ships .safetensors files."
                )
            continue
        if looks_like_path(name):
            problems.append(
                f"- {role}: local folder {name!r} does not exist. Run `make setup` to build the local models, or "
                "point the config at an existing folder."
            )
        elif not is_cached(name):
            hub_ids.append((role, name))
    if hub_ids:
        reachable, why = hub_reachable(timeout)
        if not reachable:
            for role, name in hub_ids:
                problems.append(
                    f"- {role}: {name!r} is not in the local Hugging Face cache and the Hub cannot be reached "
                    f"({why}). "
                    f"On a machine with access run `hf download {name}` (and copy the cache), or set the {role} model "
                    "to a local folder."
                )
    if problems:
        raise ModelUnavailableError("Some configured models cannot be loaded here:\n" + "\n".join(problems))
