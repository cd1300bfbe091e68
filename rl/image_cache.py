"""Rendered images on disk, keyed by what decides their pixels, shared by runs and processes (issue 9).

An image is named by the renderer's identity (its weight files: path, size and modification time, so a rebuilt or
updated model gets a new namespace), the settings that change pixels (steps, guidance, size, dtype, device type),
the prompt and the seed. `pig evaluate` run twice on the same adapter renders nothing the second time; a resumed
training run finds the images of the steps it repeats.

Files are written under a temporary name and renamed into place (atomic on POSIX file systems), so a process never
reads a half-written image; two processes that render the same key write the same content, and the last rename wins.
A file that cannot be read back (disk trouble, a truncated copy) is a miss and is rendered again.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from PIL import Image

from common.files import atomic_write_bytes, atomic_write_json

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


def model_fingerprint(model: str) -> str:
    """Identity of a pipeline folder (or a Hub id's cached snapshot): each file's relative path, size and mtime.

    A Hub id that is not in the local cache is named by its id alone (its weights will be downloaded, and a new
    revision on the Hub would not change the name: pin the revision, or clear the cache, when that matters)."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model, local_files_only=True))
        except Exception:  # not cached (or no hub library): the id is all we know
            return hashlib.sha256(model.encode()).hexdigest()
    parts = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            stat = path.stat()
            parts.append(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class ImageCache:
    """PNG files under `root/<namespace>/<2 hex>/<key>.png`, with hit and miss counts.

    Args:
        root: cache folder (e.g. `runs/cache/images`).
        identity: everything but the prompt and seed that decides the pixels (see `rl.render.Renderer`); hashed
            into the namespace.
    """

    def __init__(self, root: str | Path, identity: dict):
        self.identity = identity
        self.namespace = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = Path(root) / self.namespace
        self.hits = 0
        self.misses = 0
        self._identity_written = False

    def path(self, prompt: str, seed: int) -> Path:
        key = hashlib.sha256(f"{seed}|{prompt}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.png"

    def get(self, prompt: str, seed: int) -> Image.Image | None:
        path = self.path(prompt, seed)
        try:
            with Image.open(path) as image:
                image.load()
                result = image.convert("RGB")
        except (OSError, ValueError):  # absent, or unreadable: render it again
            self.misses += 1
            return None
        self.hits += 1
        return result

    def put(self, prompt: str, seed: int, image: Image.Image) -> None:
        if not self._identity_written:  # once per cache object, not a stat per image
            atomic_write_json(self.folder / "identity.json", self.identity)
            self._identity_written = True
        png = io.BytesIO()
        image.save(png, format="PNG")
        atomic_write_bytes(self.path(prompt, seed), png.getvalue(), fsync=False)  # a file lost in a crash: a miss

    def pop_metrics(self) -> dict[str, float]:
        looked = self.hits + self.misses
        out = {"render/disk_cache_hits": float(self.hits)}
        if looked:
            out["render/disk_cache_hit_rate"] = self.hits / looked
        self.hits = self.misses = 0
        return out
