"""A user's data on disk: the references PIGReward learns the user from, optional held-out pairs, training prompts.

Format (one folder per user, `users/<user_id>/user.json`; image paths are relative to that folder):

```json
{
  "user_id": "demo",
  "description": "optional free text",
  "references": [
    {"prompt": "a lighthouse on a cliff", "chosen": "images/ref00_chosen.png", "rejected": "images/ref00_rejected.png"}
  ],
  "heldout": [
    {"prompt": "a red hydrant", "image_1": "images/test00_a.png", "image_2": "images/test00_b.png", "label": 1}
  ],
  "prompts": ["a sun over the sea", "a small house"],
  "sandbox": {"prefs": {"palette": "warm", "layout": "sparse"}, "weights": {"palette": 1.0, "layout": 0.8}}
}
```

- `references` (required, at least one): past choices. `chosen` is the image the user preferred.
- `heldout` (optional): pairs kept out of the context to measure the judge; `label` is 1, 2 or 0 (tie).
- `prompts` (optional): prompts to train the rewriting policy on; the reference prompts are used when absent.
- `sandbox` (optional, synthetic users only): the user's hidden taste in the toy world (`localmodels.oracle`), read
  only by the ground-truth evaluation and monitoring (`rl/ground_truth.py`), never by PIGReward or the reward. Write
  such a user with `python -m localmodels.demo_user --out users/U --taste palette=cool:1.0,light=dark:0.8`.

Every image is opened and decoded when the user is loaded, so a missing or corrupt file fails at once with the file
and the entry named, not in the middle of training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from common.errors import PigError

USER_FILE = "user.json"
_TOP_KEYS = {"user_id", "description", "references", "heldout", "prompts", "sandbox"}
_REFERENCE_KEYS = {"prompt", "chosen", "rejected"}
_HELDOUT_KEYS = {"prompt", "image_1", "image_2", "label"}


class UserDataError(PigError, ValueError):
    """A user's data is missing or malformed; the message names the file, the entry and the fix."""


@dataclass
class Reference:
    prompt: str
    chosen: Image.Image
    rejected: Image.Image
    chosen_path: Path
    rejected_path: Path


@dataclass
class HeldoutPair:
    prompt: str
    image_1: Image.Image
    image_2: Image.Image
    label: int
    image_1_path: Path
    image_2_path: Path


@dataclass
class UserData:
    user_id: str
    root: Path
    references: list[Reference]
    heldout: list[HeldoutPair] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    description: str = ""
    sandbox: dict | None = None  # a synthetic user's hidden taste (validated by rl/ground_truth.py); None if real

    @property
    def training_prompts(self) -> list[str]:
        """The prompts the policy trains on: `prompts` if given, else the reference prompts (deduplicated)."""
        return list(dict.fromkeys(self.prompts or [r.prompt for r in self.references]))

    def references_hash(self) -> str:
        """SHA-256 over the reference prompts and image bytes: changes whenever a reference changes."""
        digest = hashlib.sha256()
        for ref in self.references:
            digest.update(ref.prompt.encode("utf-8") + b"\0")
            digest.update(ref.chosen_path.read_bytes() + b"\0")
            digest.update(ref.rejected_path.read_bytes() + b"\0")
        return digest.hexdigest()


def available_users(users_dir: str | Path) -> list[str]:
    users_dir = Path(users_dir)
    return sorted(p.parent.name for p in users_dir.glob(f"*/{USER_FILE}")) if users_dir.is_dir() else []


def resolve_user_dir(user: str, users_dir: str | Path) -> Path:
    """`user` is a user id under `users_dir`, or a path to a user folder (or to its `user.json`)."""
    candidate = Path(user)
    if candidate.name == USER_FILE and candidate.is_file():
        return candidate.parent
    if (candidate / USER_FILE).is_file() and (candidate.is_absolute() or "/" in user or user.startswith(".")):
        return candidate
    folder = Path(users_dir) / user
    if (folder / USER_FILE).is_file():
        return folder
    known = available_users(users_dir)
    raise UserDataError(
        f"Unknown user {user!r}: no {folder / USER_FILE}. Known users in {users_dir}: {known or 'none'}. "
        f"Pass one of those, a path to a user folder, or create {folder}/{USER_FILE} (format: reward/users.py)."
    )


MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""Largest image a user folder may hold (8192 x 8192). Checked on the header, before decoding: a small file that
decodes to gigabytes (a decompression bomb) is refused without being decoded. PIL's own guard (89M pixels, a warning
only; an error at twice that) is left as it is; the judge sees images of well under a megapixel anyway."""
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def user_id_of(user: str, users_dir: str | Path) -> str:
    """The id a user's outputs are filed under (`runs/<user_id>/...`): the `user_id` of their `user.json`, however
    `user` names them (`demo`, `users/demo`, `users/demo/user.json`). Reads only the JSON; `load_user` checks the rest.

    Raises:
        UserDataError: unknown user, unreadable JSON, or a missing or malformed `user_id`.
    """
    file = resolve_user_dir(user, users_dir) / USER_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserDataError(f"{file} is not valid JSON: {err}.") from err
    user_id = data.get("user_id") if isinstance(data, dict) else None
    return _user_id(user_id, file)


def _user_id(user_id: object, file: Path) -> str:
    if not isinstance(user_id, str) or not user_id.strip() or "/" in user_id or user_id.strip() in (".", ".."):
        raise UserDataError(
            f"{file}: 'user_id' must be a non-empty string without '/' (it names the folder runs/<user_id>), got "
            f"{user_id!r}."
        )
    return user_id.strip()


def load_image(root: Path, value: object, where: str) -> tuple[Image.Image, Path]:
    """Open and decode an image path (relative to `root`) as 8-bit RGB; errors name `where` and the fix.

    Conversion rules (stated, never silent guesses): CMYK, YCbCr, palette and grey images are converted to RGB by PIL
    (CMYK without its ICC profile); 16-bit grey is scaled to 8 bits (the high byte; PIL's own conversion clips it
    to white); transparency is flattened onto white. Refused: missing, empty, truncated or undecodable files, images
    over `MAX_IMAGE_PIXELS`, float-valued images, and animations (a reference is the one picture the user chose:
    export that frame as a PNG).
    """
    if not isinstance(value, str) or not value.strip():
        raise UserDataError(f"{where}: expected an image path (string), got {value!r}.")
    path = (root / value) if not Path(value).is_absolute() else Path(value)
    if not path.is_file():
        raise UserDataError(
            f"{where}: image {path} does not exist. Fix the path (relative to {root}) or add the file."
        )
    if path.stat().st_size == 0:
        raise UserDataError(f"{where}: image {path} is an empty file (0 bytes). Replace it with a valid PNG/JPEG.")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise UserDataError(
                    f"{where}: image {path} is {width} x {height} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
                    "(reward.users.MAX_IMAGE_PIXELS; a decompression bomb or a needlessly large file). Downscale it "
                    "to at most 8192 x 8192 (the judge sees under a megapixel)."
                )
            if getattr(image, "n_frames", 1) > 1:
                raise UserDataError(
                    f"{where}: image {path} is an animation ({image.n_frames} frames). A reference is the one "
                    "picture the user chose: export that frame as a PNG and point at it."
                )
            image.load()
            return _to_rgb(image, path, where), path
    except Image.DecompressionBombError as err:  # PIL refuses at open beyond twice its own limit
        raise UserDataError(
            f"{where}: image {path} is over the pixel limit ({err}). Downscale it to at most 8192 x 8192."
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, UserDataError):
            raise
        raise UserDataError(
            f"{where}: image {path} cannot be read ({err}). Replace it with a valid PNG/JPEG."
        ) from err


def _to_rgb(image: Image.Image, path: Path, where: str) -> Image.Image:
    """8-bit RGB by the rules of `load_image`."""
    if image.mode in _SIXTEEN_BIT:
        import numpy as np

        high_byte = (np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return Image.fromarray(high_byte, "L").convert("RGB")
    if image.mode == "F":
        raise UserDataError(
            f"{where}: image {path} holds floating-point pixels (mode F): no standard mapping to colours. Save it "
            "as an 8-bit PNG/JPEG."
        )
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_image(a: Path, b: Path) -> bool:
    """The same file, or two files with the same bytes."""
    return a.resolve() == b.resolve() or (a.stat().st_size == b.stat().st_size and _digest(a) == _digest(b))


def _check_keys(entry: object, allowed: set[str], required: set[str], where: str) -> dict:
    if not isinstance(entry, dict):
        raise UserDataError(f"{where}: expected an object with keys {sorted(required)}, got {type(entry).__name__}.")
    unknown = set(entry) - allowed
    if unknown:
        raise UserDataError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)}).")
    missing = required - set(entry)
    if missing:
        raise UserDataError(f"{where}: missing keys {sorted(missing)}.")
    return entry


def _prompt(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserDataError(f"{where}: 'prompt' must be a non-empty string, got {value!r}.")
    return value.strip()


def load_user(user: str, users_dir: str | Path = "users") -> UserData:
    """Load and validate a user's data.

    Args:
        user: a user id (folder name under `users_dir`) or a path to a user folder.
        users_dir: where user folders live.

    Raises:
        UserDataError: unknown user, malformed JSON, unknown or missing keys, empty references, unreadable images,
            bad labels; the message names the file and entry.
    """
    root = resolve_user_dir(user, users_dir)
    file = root / USER_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserDataError(f"{file} is not valid JSON: {err}.") from err
    data = _check_keys(data, _TOP_KEYS, {"user_id", "references"}, str(file))
    user_id = _user_id(data["user_id"], file)
    refs = data["references"]
    if not isinstance(refs, list) or not refs:
        raise UserDataError(
            f"{file}: 'references' is empty. PIGReward knows a user only through past choices: add at least one "
            '{"prompt", "chosen", "rejected"} entry (the paper uses 4-15).'
        )
    references, seen = [], {}
    for i, entry in enumerate(refs):
        where = f"{file}: references[{i}]"
        entry = _check_keys(entry, _REFERENCE_KEYS, _REFERENCE_KEYS, where)
        chosen, chosen_path = load_image(root, entry["chosen"], f"{where}.chosen")
        rejected, rejected_path = load_image(root, entry["rejected"], f"{where}.rejected")
        if _same_image(chosen_path, rejected_path):
            raise UserDataError(
                f"{where}: 'chosen' and 'rejected' are the same image ({chosen_path}, {rejected_path}): such a "
                "reference says nothing about the user's taste. Point 'rejected' at the image the user passed over, "
                "or remove the entry."
            )
        prompt = _prompt(entry["prompt"], where)
        key = (prompt, _digest(chosen_path), _digest(rejected_path))
        if key in seen:
            raise UserDataError(
                f"{where} repeats references[{seen[key]}] (same prompt and images): a repeated reference counts "
                "one choice twice in the user's context. Remove the duplicate."
            )
        seen[key] = i
        references.append(Reference(prompt, chosen, rejected, chosen_path, rejected_path))
    heldout = []
    if not isinstance(data.get("heldout") or [], list):
        raise UserDataError(f"{file}: 'heldout' must be a list of pairs, got {type(data['heldout']).__name__}.")
    for i, entry in enumerate(data.get("heldout") or []):
        where = f"{file}: heldout[{i}]"
        entry = _check_keys(entry, _HELDOUT_KEYS, _HELDOUT_KEYS, where)
        if entry["label"] not in (0, 1, 2) or isinstance(entry["label"], bool):
            raise UserDataError(f"{where}: 'label' must be 1, 2 or 0 (tie), got {entry['label']!r}.")
        image_1, path_1 = load_image(root, entry["image_1"], f"{where}.image_1")
        image_2, path_2 = load_image(root, entry["image_2"], f"{where}.image_2")
        if _same_image(path_1, path_2):
            raise UserDataError(
                f"{where}: 'image_1' and 'image_2' are the same image ({path_1}): the pair cannot measure the judge. "
                "Fix the path or remove the entry."
            )
        heldout.append(HeldoutPair(_prompt(entry["prompt"], where), image_1, image_2, entry["label"], path_1, path_2))
    prompts = data.get("prompts") or []
    if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise UserDataError(f"{file}: 'prompts' must be a list of non-empty strings.")
    description = data.get("description") or ""
    sandbox = data.get("sandbox")
    if sandbox is not None and not isinstance(sandbox, dict):
        raise UserDataError(f"{file}: 'sandbox' must be an object with 'prefs' and 'weights', got {sandbox!r}.")
    return UserData(user_id, root, references, heldout, [p.strip() for p in prompts], str(description), sandbox)


# ------------------------------------------------------------------------------------------------------ populations
POPULATION_MANIFEST = "population.json"
"""A folder of users may hold this manifest (`python -m localmodels.demo_user --population N --heldout M` writes one):
`{"train": [user ids], "heldout": [user ids], ...}`, the ids being sub-folders of that folder. A population run
trains on `train` only; `heldout` users are never trained on."""


def load_population(spec: str, users_dir: str | Path = "users") -> tuple[list[UserData], list[str]]:
    """The users a population run trains on, and the ids its manifest holds out.

    Args:
        spec: a folder of user folders (with a `population.json`: its `train` users; without one: every sub-folder
            holding a user.json), or a comma-separated list of user ids under `users_dir` or paths to user folders.
        users_dir: where the ids of a comma list live.

    Raises:
        UserDataError: an unknown user, a malformed manifest, a user id twice, fewer than two users; or any user's
            own data error (see `load_user`).
    """
    folder = Path(spec)
    heldout: list[str] = []
    if folder.is_dir() and not (folder / USER_FILE).is_file():
        manifest = folder / POPULATION_MANIFEST
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise UserDataError(f"{manifest} is not valid JSON: {err}.") from err
            ids, heldout = (data.get(k) if isinstance(data, dict) else None for k in ("train", "heldout"))
            heldout = [] if heldout is None else heldout
            valid = isinstance(ids, list) and ids and isinstance(heldout, list)
            if not (valid and all(isinstance(i, str) and i for i in ids + heldout)):
                raise UserDataError(
                    f'{manifest}: expected {{"train": [user ids], "heldout": [user ids]}} with at least one '
                    "training user. Fix it, or remove it to train on every user folder there."
                )
            overlap = sorted(set(ids) & set(heldout))
            if overlap:
                raise UserDataError(f"{manifest}: users {overlap} are both trained on and held out. Fix the manifest.")
            members = [str(folder / i) for i in ids]
        else:
            members = [str(folder / name) for name in available_users(folder)]
    else:
        members = [m.strip() for m in spec.split(",") if m.strip()]
    users = [load_user(m, users_dir) for m in members]
    ids = [u.user_id for u in users]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise UserDataError(f"--population {spec}: user ids {repeated} appear more than once. Name each user once.")
    if len(users) < 2:
        raise UserDataError(
            f"--population {spec} holds {len(users)} user(s): a population needs at least two (for one user, train "
            "a per-user adapter with --user)."
        )
    return users, heldout
