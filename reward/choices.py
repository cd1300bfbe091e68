"""A person's choices between two images, recorded into their user folder so that nothing is lost or corrupted
(written by the choice page, `pig choose`; read by `pig update`, `pig users` and training's adapter metadata).

What a choice adds to the user folder (the user format: `reward/users.py`):

    user.json                              one more `references` entry per "left"/"right" choice
    images/choices/<pair_id>-chosen.png    the two images the person saw, the chosen and the other one
    images/choices/<pair_id>-rejected.png
    choices.jsonl                          the append-only log: every choice (skips too) with what was shown
    .choices.lock                          the lock file that makes writers take turns

The log holds one JSON object per line. A `"choice"` line is written for every choice: the pair id, `left`, `right`
or `skip`, the prompt, what each side showed (the policy that wrote it, the text rendered, the seeds, the adapter) and,
for left/right, the two image paths of the reference. A left/right choice is then followed by a `"committed"` line
once `user.json` holds its reference, or a `"refused"` line (with the reason) when it cannot become one (e.g. the two
images are the same picture). Skips are logged and never become references.

Recording one choice, all under an exclusive `flock` on `.choices.lock` (two pages open on the same user, two tabs
of one page, a double click: they take turns; POSIX only):

1. the two images are written atomically (temporary file, fsync, rename);
2. the "choice" line is appended to the log and fsynced: from here on the choice survives a crash;
3. `user.json` is rewritten atomically (`common.files.atomic_write_json`) with the new reference, after the new
   reference was checked the way `load_user` checks one (images decode, differ, do not repeat a reference); the folder
   is then loaded back with `reward.users.load_user`, and restored to its previous `user.json` if it does not load;
4. the "committed" line is appended.

A crash (power cut, `kill -9`) therefore leaves, at worst: two image files no reference names (before step 2: the page
had not confirmed the choice), or a logged choice whose reference is not yet in `user.json` (between steps 2 and 3),
or a reference without its "committed" line (between 3 and 4). `user.json` is whole in every case, so the folder
loads. Before each recording, and with `finish_pending`, logged choices without a "committed" or "refused" line are
finished (their reference added if it is not there), so a choice that reached the log is never lost. A pair id is
recorded once: submitting it again returns the first record (a double click, a retried request).

Fault injection for tests: with `PIG_CHOICE_STOP_AT=<step>` (`images`, `logged`, `user_json`) the writing process
stops itself (SIGSTOP) right after that step, so that a test can kill it at exactly that point.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from common.files import atomic_write_bytes, atomic_write_json
from reward.users import USER_FILE, UserDataError, load_user

CHOICE_LOG = "choices.jsonl"
LOCK_FILE = ".choices.lock"
IMAGE_DIR = "images/choices"
CHOICES = ("left", "right", "skip")
STOP_AT_ENV = "PIG_CHOICE_STOP_AT"
_PAIR_ID = re.compile(r"^[0-9A-Za-z_-]{6,64}$")
logger = logging.getLogger(__name__)


@dataclass
class ChoiceRecord:
    """The outcome of `record_choice`.

    Attributes:
        pair_id: the pair the choice was about.
        choice: "left", "right" or "skip".
        duplicate: the pair had been recorded before; nothing was written (the first record is returned).
        reference: the reference's index in `user.json`, None for a skip.
        references: how many references the user has now.
    """

    pair_id: str
    choice: str
    duplicate: bool
    reference: int | None
    references: int


@dataclass
class ChoiceCounts:
    """What a user's choice log holds: committed left/right choices (references made on the page), skips, pending
    (logged, not yet in `user.json`) and refused ones."""

    choices: int = 0
    skips: int = 0
    pending: int = 0
    refused: int = 0

    @property
    def total(self) -> int:
        return self.choices + self.skips + self.pending + self.refused


# ------------------------------------------------------------------------------------------------------ the log
def read_log(user_dir: str | Path) -> list[dict]:
    """The log's entries in order. A line that is not a JSON object (a write cut short by a crash) is skipped with a
    warning: it never held a committed choice, since a choice is committed only on a later line."""
    path = Path(user_dir) / CHOICE_LOG
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if not isinstance(entry, dict) or "event" not in entry or "pair_id" not in entry:
            logger.warning("%s line %d is not a log entry (a write cut short?); skipped.", path, number)
            continue
        entries.append(entry)
    return entries


def count_choices(user_dir: str | Path) -> ChoiceCounts:
    """How many choices the user's log holds, by outcome (see `ChoiceCounts`)."""
    counts = ChoiceCounts()
    state = _pair_states(read_log(user_dir))
    for choice, outcome in state.values():
        if choice == "skip":
            counts.skips += 1
        elif outcome == "committed":
            counts.choices += 1
        elif outcome == "refused":
            counts.refused += 1
        else:
            counts.pending += 1
    return counts


def _pair_states(entries: list[dict]) -> dict[str, tuple[str, str | None]]:
    """pair_id -> (choice, outcome: "committed", "refused" or None) of every logged choice, in log order."""
    states: dict[str, tuple[str, str | None]] = {}
    for entry in entries:
        pair_id = entry["pair_id"]
        if entry["event"] == "choice" and pair_id not in states:
            states[pair_id] = (entry.get("choice"), None)
        elif entry["event"] in ("committed", "refused") and pair_id in states:
            states[pair_id] = (states[pair_id][0], entry["event"])
    return states


def _append(path: Path, entry: dict) -> None:
    """One line, fsynced. A line cut short by a crash before it gets its newline first: it cannot swallow this one."""
    line = json.dumps(entry, ensure_ascii=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = "\n" + line
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------ the lock, steps
@contextlib.contextmanager
def user_lock(user_dir: str | Path) -> Iterator[None]:
    """An exclusive lock on the user folder's choices (`flock` on `.choices.lock`), held for the block. Writers in
    other processes and in other threads (each takes its own open file) wait for it."""
    path = Path(user_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock, also when the block raised


def _step(name: str, on_step: Callable[[str], None] | None) -> None:
    if on_step is not None:
        on_step(name)
    if os.environ.get(STOP_AT_ENV) == name:  # fault injection for tests (module docstring)
        os.kill(os.getpid(), signal.SIGSTOP)


# -------------------------------------------------------------------------------------------------- recording
def record_choice(
    user_dir: str | Path,
    user_id: str,
    pair_id: str,
    prompt: str,
    choice: str,
    left_image,
    right_image,
    shown: dict | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ChoiceRecord:
    """Record one choice between two images (PIL) into the user folder, safely (module docstring).

    Args:
        user_dir: the user's folder (`users/<id>`); created with its `user.json` by the first left/right choice of a
            new user.
        user_id: the `user_id` a new user's `user.json` gets (an existing one keeps its own).
        pair_id: the pair's id (letters, digits, `-`, `_`; 6-64 characters): a pair is recorded once.
        prompt: the prompt both images were rendered for (the reference's prompt).
        choice: "left", "right" or "skip".
        left_image, right_image: the images as shown.
        shown: what was shown, logged under "shown" as it is (JSON-ready): e.g. `{"left": {...}, "right": {...}}`
            with each side's policy, rendered text and seeds.
        on_step: called after each durable step ("images", "logged", "user_json", "committed").

    Returns:
        The `ChoiceRecord`; `duplicate` when the pair had been recorded already.

    Raises:
        UserDataError: a bad choice or pair id, an existing folder that does not load (fix it first), or a reference
            `load_user` would refuse (e.g. two identical images); nothing is added to `user.json` then.
    """
    user_dir = Path(user_dir)
    if choice not in CHOICES:
        raise UserDataError(f"A choice is one of {', '.join(CHOICES)}, got {choice!r}.")
    if not isinstance(pair_id, str) or not _PAIR_ID.match(pair_id):
        raise UserDataError(f"pair id {pair_id!r}: 6-64 letters, digits, '-' or '_' (it names the image files).")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserDataError(f"A choice needs the prompt its images were rendered for, got {prompt!r}.")
    log = user_dir / CHOICE_LOG
    with user_lock(user_dir):
        _finish_pending_locked(user_dir, on_step)
        states = _pair_states(read_log(user_dir))
        if pair_id in states:
            return _record_of(user_dir, pair_id, states[pair_id][0], duplicate=True)
        entry = {"event": "choice", "pair_id": pair_id, "choice": choice, "prompt": prompt.strip()}
        entry.update(user_id=user_id, time=time.time(), shown=shown or {})
        if choice == "skip":
            _append(log, entry)
            _step("logged", on_step)
            return ChoiceRecord(pair_id, choice, False, None, _references_in(user_dir))
        if (user_dir / USER_FILE).is_file():
            load_user(str(user_dir.resolve()))  # an existing folder that does not load is reported, never written to
        chosen, rejected = (left_image, right_image) if choice == "left" else (right_image, left_image)
        paths = {"chosen": f"{IMAGE_DIR}/{pair_id}-chosen.png", "rejected": f"{IMAGE_DIR}/{pair_id}-rejected.png"}
        for image, rel in ((chosen, paths["chosen"]), (rejected, paths["rejected"])):
            atomic_write_bytes(user_dir / rel, _png(image))
        _step("images", on_step)
        _append(log, {**entry, **paths})
        _step("logged", on_step)
        index = _commit(user_dir, user_id, pair_id, prompt.strip(), paths, on_step)
        return ChoiceRecord(pair_id, choice, False, index, _references_in(user_dir))


def finish_pending(user_dir: str | Path) -> int:
    """Finish the logged left/right choices without a "committed" or "refused" line (a writer died between logging
    and committing): add each one's reference to `user.json` unless it is there. Returns how many were finished."""
    user_dir = Path(user_dir)
    if not (user_dir / CHOICE_LOG).is_file():
        return 0
    with user_lock(user_dir):
        return _finish_pending_locked(user_dir, None)


def _finish_pending_locked(user_dir: Path, on_step) -> int:
    entries = read_log(user_dir)
    states = _pair_states(entries)
    pending = [p for p, (choice, outcome) in states.items() if choice in ("left", "right") and outcome is None]
    firsts = {e["pair_id"]: e for e in entries if e["event"] == "choice"}
    for pair_id in pending:
        entry = firsts[pair_id]
        paths = {"chosen": entry.get("chosen"), "rejected": entry.get("rejected")}
        try:
            _commit(user_dir, entry.get("user_id") or user_dir.name, pair_id, entry["prompt"], paths, on_step)
        except UserDataError as err:  # already refused in _commit's log line; the others still get their turn
            logger.warning("Logged choice %s could not become a reference: %s", pair_id, err)
    if pending:
        logger.warning("Finished %d choice(s) a writer had logged but not committed (%s).", len(pending), user_dir)
    return len(pending)


def _commit(user_dir: Path, user_id: str, pair_id: str, prompt: str, paths: dict, on_step) -> int:
    """Steps 3 and 4 for one logged choice (lock held): its reference into `user.json`, checked, then "committed".
    A reference that is already there (a crash after step 3) is only marked committed."""
    log, file = user_dir / CHOICE_LOG, user_dir / USER_FILE
    old_bytes = file.read_bytes() if file.is_file() else None
    data = json.loads(old_bytes) if old_bytes is not None else {"user_id": user_id, "references": []}
    refs = data.setdefault("references", [])
    reference = {"prompt": prompt, "chosen": paths["chosen"], "rejected": paths["rejected"]}
    there = [i for i, r in enumerate(refs) if isinstance(r, dict) and r.get("chosen") == paths["chosen"]]
    if there:
        _append(log, {"event": "committed", "pair_id": pair_id, "reference": there[0], "time": time.time()})
        return there[0]
    try:
        _check_new_reference(user_dir, reference, refs)
    except UserDataError as err:
        _append(log, {"event": "refused", "pair_id": pair_id, "reason": str(err), "time": time.time()})
        raise
    refs.append(reference)
    atomic_write_json(file, data)
    try:
        load_user(str(user_dir.resolve()))  # the folder as training will read it
    except UserDataError as err:
        if old_bytes is None:
            file.unlink()
        else:
            atomic_write_bytes(file, old_bytes)
        _append(log, {"event": "refused", "pair_id": pair_id, "reason": str(err), "time": time.time()})
        raise
    _step("user_json", on_step)
    _append(log, {"event": "committed", "pair_id": pair_id, "reference": len(refs) - 1, "time": time.time()})
    _step("committed", on_step)
    return len(refs) - 1


def _check_new_reference(user_dir: Path, reference: dict, refs: list) -> None:
    """What `load_user` would refuse about one new reference, checked before `user.json` is touched: images that do
    not decode, the same picture twice, a repeat of an existing reference (same prompt and images)."""
    from reward.users import _digest, _same_image, load_image

    where = f"{user_dir / USER_FILE}: new reference {reference['chosen']}"
    _, chosen = load_image(user_dir, reference["chosen"], f"{where}.chosen")
    _, rejected = load_image(user_dir, reference["rejected"], f"{where}.rejected")
    if _same_image(chosen, rejected):
        raise UserDataError(
            f"{where}: the two images are the same picture, so the choice says nothing about the user's taste: skip "
            "such a pair."
        )
    key = (reference["prompt"], _digest(chosen), _digest(rejected))
    for i, ref in enumerate(refs):
        try:
            other = (ref["prompt"].strip(), _digest(user_dir / ref["chosen"]), _digest(user_dir / ref["rejected"]))
        except (KeyError, TypeError, AttributeError, OSError):
            continue  # load_user names a malformed entry itself
        if other == key:
            raise UserDataError(f"{where} repeats references[{i}] (same prompt and images): not recorded twice.")


def recorded_choice(user_dir: str | Path, pair_id: str) -> ChoiceRecord | None:
    """The record of `pair_id` if the user's log holds it (as a duplicate: nothing is written), else None."""
    state = _pair_states(read_log(user_dir)).get(pair_id)
    return None if state is None else _record_of(Path(user_dir), pair_id, state[0], duplicate=True)


def _record_of(user_dir: Path, pair_id: str, choice: str, duplicate: bool) -> ChoiceRecord:
    index = None
    for entry in read_log(user_dir):
        if entry["pair_id"] == pair_id and entry["event"] == "committed":
            index = entry.get("reference")
    return ChoiceRecord(pair_id, choice, duplicate, index, _references_in(user_dir))


def _references_in(user_dir: Path) -> int:
    file = user_dir / USER_FILE
    return len(json.loads(file.read_text(encoding="utf-8")).get("references", [])) if file.is_file() else 0


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
