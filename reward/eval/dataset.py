"""The canonical per-user preference dataset: a folder of user folders plus a provenance manifest.

```
DATASET/
  manifest.json                 provenance (optional: the repo's `users/` has none and is a dataset too)
  <user_id>/user.json           the format of `reward/users.py`
  <user_id>/images/*      (JPEG / PNG / WebP, kept as the source stored them)
```

Each `user.json` holds the user's `references` (prompt, chosen, rejected: what PIGReward learns the user from) and
`heldout` test pairs (prompt, image_1, image_2, label: 1 or 2 = the image the user preferred, 0 = the user saw no
difference). `reward.eval.bench` evaluates every method on the held-out pairs of every user; users without held-out
pairs are counted and left out.

`manifest.json` (written by every importer in `reward.eval.importers`):

```json
{
  "schema": "pig-preferences-v1",
  "complete": true,                      // false when the import stopped early (then "error" says why)
  "source_format": "pickapic",           // "pigbench", "pickapic", "folder" or "toy" (localmodels.demo_user)
  "source": "/data/pickapic/test.parquet",
  "seed": 0,
  "options": {"n_references": 8, ...},   // the importer's settings
  "created_at": "2026-11-29T12:00:00+00:00",
  "counts": {"users": 10, "references": 80, "heldout": 43, "heldout_ties": 6,
             "rows_read": 200, "rows_skipped": 3, "users_skipped": 2},
  "skipped_rows": [{"row": "test.parquet:17", "reason": "undecodable_image", "detail": "jpg_1: cannot identify..."}],
  "skipped_reasons": {"undecodable_image": 1, "unknown_label": 2},
  "skipped_users": [{"user_id": "42", "reason": "too_few_pairs", "detail": "3 non-tie pairs, need 8 + 1"}]
}
```
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from reward.users import USER_FILE, UserDataError

SCHEMA = "pig-preferences-v1"
MANIFEST = "manifest.json"
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def safe_user_id(user_id: object) -> str:
    """A folder-safe user id: characters other than letters, digits, `.`, `_`, `-` become `_` (ids stay readable)."""
    text = _SAFE_ID.sub("_", str(user_id).strip()).strip(".")
    if not text:
        raise ValueError(f"User id {user_id!r} has no usable characters for a folder name.")
    return text


@dataclass
class DatasetUser:
    """A user folder of a dataset, known from its `user.json` without decoding images."""

    user_id: str
    folder: Path
    n_references: int
    n_heldout: int


def list_users(dataset: str | os.PathLike) -> list[DatasetUser]:
    """The user folders of a dataset, sorted by folder name; reads `user.json` files only (no image is decoded).

    Raises:
        UserDataError: when the folder does not exist, holds no `*/user.json`, or a `user.json` is not valid JSON;
            the message names the file and the fix.
    """
    root = Path(dataset)
    if not root.is_dir():
        raise UserDataError(
            f"Dataset folder {root} does not exist. Import one first (python -m reward.eval.cli import --help)."
        )
    users = []
    for file in sorted(root.glob(f"*/{USER_FILE}")):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise UserDataError(f"{file} is not valid JSON ({err}). Re-import the dataset or fix the file.") from err
        if not isinstance(data, dict):
            raise UserDataError(f"{file} must hold a JSON object (format: reward/users.py).")
        users.append(
            DatasetUser(
                user_id=str(data.get("user_id", file.parent.name)),
                folder=file.parent,
                n_references=len(data.get("references") or []),
                n_heldout=len(data.get("heldout") or []),
            )
        )
    if not users:
        raise UserDataError(
            f"{root} holds no user folders (*/{USER_FILE}). Point --dataset at a folder of user folders, e.g. "
            "`users`, or import one (python -m reward.eval.cli import --help)."
        )
    return users


def read_manifest(dataset: str | os.PathLike) -> dict | None:
    """The dataset's `manifest.json`, or `None` when it has none (like the repo's `users/`)."""
    path = Path(dataset) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserDataError(f"{path} is not valid JSON ({err}). Re-import the dataset.") from err


@dataclass
class ImportLog:
    """What an import did: counts, skipped rows and users (with reasons), written as the dataset's manifest.

    Attributes:
        source_format: `"pigbench"`, `"pickapic"`, `"folder"` or `"toy"`.
        source: the path imported from.
        seed: the seed of every random choice of the import.
        options: the importer's settings.
    """

    source_format: str
    source: str
    seed: int
    options: dict
    rows_read: int = 0
    skipped_rows: list[dict] = field(default_factory=list)
    skipped_users: list[dict] = field(default_factory=list)
    users: int = 0
    references: int = 0
    heldout: int = 0
    heldout_ties: int = 0

    def skip_row(self, row: str, reason: str, detail: str = "") -> None:
        self.skipped_rows.append({"row": row, "reason": reason, "detail": detail})

    def skip_user(self, user_id: str, reason: str, detail: str = "") -> None:
        self.skipped_users.append({"user_id": user_id, "reason": reason, "detail": detail})

    def add_user(self, user_json: dict) -> None:
        self.users += 1
        self.references += len(user_json["references"])
        self.heldout += len(user_json.get("heldout") or [])
        self.heldout_ties += sum(p["label"] == 0 for p in user_json.get("heldout") or [])

    def manifest(self, complete: bool, error: str | None = None) -> dict:
        data = {
            "schema": SCHEMA,
            "complete": complete,
            "source_format": self.source_format,
            "source": self.source,
            "seed": self.seed,
            "options": self.options,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "counts": {
                "users": self.users,
                "references": self.references,
                "heldout": self.heldout,
                "heldout_ties": self.heldout_ties,
                "rows_read": self.rows_read,
                "rows_skipped": len(self.skipped_rows),
                "users_skipped": len(self.skipped_users),
            },
            "skipped_reasons": dict(sorted(Counter(r["reason"] for r in self.skipped_rows).items())),
            "skipped_user_reasons": dict(sorted(Counter(u["reason"] for u in self.skipped_users).items())),
            "skipped_rows": self.skipped_rows,
            "skipped_users": self.skipped_users,
        }
        if error is not None:
            data["error"] = error
        return data

    def summary(self, out: Path, complete: bool = True) -> str:
        """A few human-readable lines: what was imported and what was skipped, by reason."""
        lines = [
            f"{'imported' if complete else 'INCOMPLETE import'} {self.source_format} {self.source} -> {out}",
            f"  users {self.users}, references {self.references}, held-out pairs {self.heldout} "
            f"({self.heldout_ties} ties); rows read {self.rows_read}",
        ]
        if self.skipped_rows:
            reasons = Counter(r["reason"] for r in self.skipped_rows)
            by_reason = ", ".join(f"{k} {v}" for k, v in reasons.items())
            lines.append(f"  skipped rows {len(self.skipped_rows)}: {by_reason}")
            lines += [f"    {r['row']}: {r['reason']} {r['detail']}".rstrip() for r in self.skipped_rows[:10]]
            if len(self.skipped_rows) > 10:
                lines.append(f"    ... {len(self.skipped_rows) - 10} more in {out / MANIFEST}")
        if self.skipped_users:
            reasons = Counter(u["reason"] for u in self.skipped_users)
            lines.append(
                f"  skipped users {len(self.skipped_users)}: " + ", ".join(f"{k} {v}" for k, v in reasons.items())
            )
        return "\n".join(lines)
