"""The fixed-suffix baseline as a policy: one suffix, chosen per user by `pig suffix` (`policy_eval/suffix.py`),
appended to every prompt. Kept apart from the search so that serving and evaluation read it without the judge."""

from __future__ import annotations

import json
from pathlib import Path

from common.errors import ConfigError

SUFFIX_FILE = "suffix.json"


def apply_suffix(prompt: str, suffix: str) -> str:
    """`"a sun"`, `"in golden tones"` -> `"a sun, in golden tones"`."""
    return f"{prompt.strip().rstrip(',')}, {suffix}"


def load_suffix(path: str | Path) -> str:
    """The suffix a `pig suffix` run chose, from its folder or `suffix.json`, validated."""
    return load_suffix_record(path)["suffix"]


def load_suffix_record(path: str | Path) -> dict:
    """The whole record of a `pig suffix` run (its folder or `suffix.json`), its suffix validated; `context_nearest`,
    when present, is how many nearest rationales the judge read (0: the whole context)."""
    path = Path(path)
    file = path / SUFFIX_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"No fixed-suffix baseline at {file}: run `pig suffix --user <user>` first.") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{file} is not valid JSON ({err}); rerun `pig suffix`.") from None
    suffix = data.get("suffix") if isinstance(data, dict) else None
    if not isinstance(suffix, str) or not suffix.strip():
        raise ConfigError(f"{file} has no non-empty 'suffix' string; rerun `pig suffix`.")
    return data
