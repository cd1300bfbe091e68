"""Importers: per-user preference data in its published formats -> the canonical dataset of `reward.eval.dataset`.

Three sources, one result (user folders in the `reward/users.py` format + `manifest.json`):

- **PIGBench-style rankings** (`import_pigbench`): a ranking table, CSV or JSONL, one row per (user, prompt, image):

  | column | meaning |
  |---|---|
  | `user_id` | the annotator |
  | `prompt_id` | the prompt's id (the 4 images of one prompt share it) |
  | `prompt` | the prompt text |
  | `image` | path of the image file, relative to `images_dir` (default: the table's folder) or absolute |
  | `rank` | 1 (liked best) to 4 (liked least); each (user, prompt) must rank exactly the ranks {1, 2, 3, 4} |

  Only the rank-1 and rank-4 images are read (and must decode); ranks 2 and 3 only complete the rank set.

  Per user, with a seed: `test_prompts_per_user` prompts are held out and their rank-1 vs rank-4 images form a test
  pair, shown in a random order (label = the side of the rank-1 image); the user's other prompts become references
  (rank-1 chosen, rank-4 rejected), `min_references` to `max_references` of them (the paper: 5-15 per user). The
  schema of the real release (`jeongeunnn/pigbench-images`) is unverified: if its columns are named differently,
  pass `column_map={"user_id": "annotator", ...}` (canonical name -> the file's name); that map is the only place
  to adapt.
- **Pick-a-Pic v2** (`import_pickapic`): its parquet files as published (`user_id`, `caption`, `jpg_0`, `jpg_1` as
  image bytes, `label_0`, `label_1`; a tie is 0.5 / 0.5), read in batches with pyarrow (files are large). Per user,
  with a seed: `n_references` non-tie pairs are the references (chosen = the image labelled 1; the paper uses 8),
  then up to `max_heldout` of the user's other pairs are test pairs, ties kept as label 0, in their original order
  (jpg_0 = image 1). Users with too few pairs are skipped and counted.
- **Our own folders** (`import_folder`): a folder of user folders is validated user by user (`load_user`: every
  image decoded) and copied, or linked, into a dataset.

Every bad row (missing or undecodable image, unknown label, wrong rank set, empty prompt...) is skipped and recorded
with its row id (`<file>:<row>`, rows counted from 0 in file order) and a reason; an import always ends with a
manifest and a printed summary, also when it stops on an unexpected error (`"complete": false` and the error).
Images are written as PNG files inside the dataset.

The random choices use `random.Random(f"{seed}/{user_id}")`: a user's split depends on the seed and that user's
rows only, not on the other users or the file order.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import shutil
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from common.files import atomic_write_json
from reward.eval.dataset import MANIFEST, ImportLog, read_manifest, safe_user_id
from reward.users import USER_FILE, UserDataError, load_user

PIGBENCH_COLUMNS = ("user_id", "prompt_id", "prompt", "image", "rank")
PICKAPIC_COLUMNS = ("user_id", "caption", "jpg_0", "jpg_1", "label_0", "label_1")
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageProblem(Exception):
    """An image of a row cannot be used; `reason` is the manifest's skip reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


_KEEP_AS_IS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


def save_image(source: bytes | Path | None, stem: Path, what: str) -> Path:
    """Decode an image (bytes or a file) to check it, then write it next to `stem` and return the path written.

    JPEG, PNG and WebP bytes are written unchanged (`stem` + their extension): re-encoding Pick-a-Pic's JPEGs as PNG
    multiplies the dataset's size several times over. Other formats are converted to an RGB PNG.

    Raises:
        ImageProblem: `missing_image` (no bytes / no file) or `undecodable_image`.
    """
    if source is None or (isinstance(source, bytes) and not source):
        raise ImageProblem("missing_image", f"{what}: no image data")
    if isinstance(source, Path) and not source.is_file():
        raise ImageProblem("missing_image", f"{what}: {source} does not exist")
    data = source if isinstance(source, bytes) else source.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            kind = image.format
            rgb = None if kind in _KEEP_AS_IS else image.convert("RGB")
    except _DECODE_ERRORS as err:
        raise ImageProblem("undecodable_image", f"{what}: {type(err).__name__}: {err}") from err
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.parent / (stem.name + _KEEP_AS_IS.get(kind, ".png"))  # not with_suffix: stems may hold dots
    if rgb is None:
        path.write_bytes(data)
    else:
        rgb.save(path, format="PNG")
    return path


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty. Choose a new output folder or pass overwrite=True.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _run(log: ImportLog, out: Path, work: Callable[[], None], verbose: bool) -> ImportLog:
    """Run an import; write the manifest and print the summary however it ends."""
    try:
        work()
    except BaseException as err:
        atomic_write_json(out / MANIFEST, log.manifest(complete=False, error=f"{type(err).__name__}: {err}"))
        print(log.summary(out, complete=False), file=sys.stderr)
        raise
    atomic_write_json(out / MANIFEST, log.manifest(complete=True))
    if verbose:
        print(log.summary(out))
    return log


def _write_user(out: Path, log: ImportLog, folder: str, source_id: object, references: list, heldout: list) -> None:
    data = {
        "user_id": folder,
        "description": f"Imported from {log.source_format} {log.source} (source user id {str(source_id)!r}).",
        "references": references,
        "heldout": heldout,
    }
    atomic_write_json(out / folder / USER_FILE, data)
    log.add_user(data)


# ---------------------------------------------------------------------------------------------------- PIGBench
def read_ranking_table(table: Path, column_map: dict[str, str] | None = None) -> list[dict]:
    """Rows of a CSV/JSONL ranking table under the canonical column names (`PIGBENCH_COLUMNS`) plus `_row`.

    Raises:
        ValueError: unknown file type, or columns missing (naming the columns found and `column_map`).
    """
    names = {c: (column_map or {}).get(c, c) for c in PIGBENCH_COLUMNS}
    unknown = set(column_map or {}) - set(PIGBENCH_COLUMNS)
    if unknown:
        raise ValueError(f"column_map has unknown canonical names {sorted(unknown)}; use {list(PIGBENCH_COLUMNS)}.")
    if table.suffix == ".csv":
        with table.open(newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
            found = list(raw[0]) if raw else []
    elif table.suffix in (".jsonl", ".ndjson"):
        raw = []
        for i, line in enumerate(table.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{table}: line {i + 1} is not JSON ({err}).") from err
                if not isinstance(row, dict):
                    raise ValueError(
                        f"{table}: line {i + 1} is JSON but not an object ({type(row).__name__}): every line must be "
                        f"one row, an object with the columns {list(PIGBENCH_COLUMNS)}."
                    )
                raw.append(row)
        found = sorted({k for r in raw for k in r})
    else:
        raise ValueError(f"Ranking table {table} must be .csv or .jsonl (columns {list(PIGBENCH_COLUMNS)}).")
    missing = [f"{c!r} (looked for {n!r})" for c, n in names.items() if raw and n not in found]
    if missing or not raw:
        raise ValueError(
            f"Ranking table {table} lacks columns {', '.join(missing) or '(it has no rows)'}; it has {found}. Rename "
            'them, or map them with column_map={"user_id": "<its column>", ...} (--column_map user_id=<its column>).'
        )
    return [{"_row": f"{table.name}:{i}", **{c: r.get(n) for c, n in names.items()}} for i, r in enumerate(raw)]


def _int_rank(value: object) -> int | None:
    try:
        rank = float(value)
    except (TypeError, ValueError):
        return None
    return int(rank) if rank.is_integer() and 1 <= rank <= 4 else None


def import_pigbench(
    table: str | os.PathLike,
    out: str | os.PathLike,
    *,
    images_dir: str | os.PathLike | None = None,
    seed: int = 0,
    min_references: int = 5,
    max_references: int = 15,
    test_prompts_per_user: int = 1,
    column_map: dict[str, str] | None = None,
    overwrite: bool = False,
    verbose: bool = True,
) -> ImportLog:
    """Import a PIGBench-style ranking table (see the module docstring for its columns and the split).

    Args:
        table: the CSV/JSONL ranking table.
        out: the dataset folder to write (must be empty or absent unless `overwrite`).
        images_dir: folder the `image` paths are relative to (default: the table's folder).
        seed: seed of the held-out prompt choice, the reference choice and the test-pair order.
        min_references: users with fewer usable prompts than `test_prompts_per_user + min_references` are skipped.
        max_references: at most this many references per user (a seeded sample of the user's other prompts).
        test_prompts_per_user: held-out prompts per user (each gives one rank-1 vs rank-4 test pair).
        column_map: canonical column name -> the table's column name, for tables named differently.
        overwrite: replace a non-empty `out`.
        verbose: print the summary.

    Returns:
        The [`ImportLog`] (also written as `out/manifest.json`).
    """
    if not 1 <= min_references <= max_references:
        raise ValueError(f"Need 1 <= min_references <= max_references, got {min_references}, {max_references}.")
    if test_prompts_per_user < 1:
        raise ValueError(f"test_prompts_per_user must be >= 1, got {test_prompts_per_user}.")
    table, out = Path(table), Path(out)
    base = Path(images_dir) if images_dir is not None else table.parent
    rows = read_ranking_table(table, column_map)
    _prepare_out(out, overwrite)
    options = dict(
        images_dir=str(base),
        min_references=min_references,
        max_references=max_references,
        test_prompts_per_user=test_prompts_per_user,
        column_map=column_map or {},
    )
    log = ImportLog("pigbench", str(table), seed, options)

    def work() -> None:
        groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for row in rows:
            log.rows_read += 1
            user, prompt_id = str(row["user_id"] or "").strip(), str(row["prompt_id"] or "").strip()
            row["rank"] = _int_rank(row["rank"])
            if not user:
                log.skip_row(row["_row"], "missing_user_id")
            elif not prompt_id:
                log.skip_row(row["_row"], "missing_prompt_id")
            elif row["rank"] is None:
                log.skip_row(row["_row"], "bad_rank", "rank must be an integer 1-4")
            else:
                groups[user][prompt_id].append(row)
        for user in sorted(groups):
            _pigbench_user(user, groups[user])

    def _pigbench_user(user: str, prompts: dict[str, list[dict]]) -> None:
        folder = safe_user_id(user)
        if (out / folder).exists():
            log.skip_user(user, "user_id_collision", f"folder {folder} is taken by another user id")
            for group in prompts.values():
                for row in group:
                    log.skip_row(row["_row"], "user_id_collision")
            return
        usable: dict[str, tuple[str, str, str]] = {}  # prompt id -> (prompt, rank-1 file, rank-4 file)
        for prompt_id in sorted(prompts):
            group = prompts[prompt_id]
            ranks = sorted(r["rank"] for r in group)
            texts = {str(r["prompt"] or "").strip() for r in group}
            problem = None
            if ranks != [1, 2, 3, 4]:
                problem = ("bad_rank_set", f"user {user} prompt {prompt_id}: ranks {ranks}, need [1, 2, 3, 4]")
            elif len(texts) != 1 or not next(iter(texts)):
                problem = ("bad_prompt", f"user {user} prompt {prompt_id}: prompt texts {sorted(texts)}")
            if problem:
                for row in group:
                    log.skip_row(row["_row"], *problem)
                continue
            by_rank = {r["rank"]: r for r in group}
            stem = f"p{safe_user_id(prompt_id)}"
            files = []
            for rank in (1, 4):
                row = by_rank[rank]
                value = str(row["image"] or "").strip()
                try:
                    written = save_image(
                        base / value if value else None,
                        out / folder / f"images/{stem}_rank{rank}",
                        f"rank-{rank} image",
                    )
                except ImageProblem as problem:
                    for other in group:
                        if other is row:
                            log.skip_row(row["_row"], problem.reason, problem.detail)
                        else:
                            log.skip_row(other["_row"], "bad_group", f"prompt {prompt_id} of user {user}: bad image")
                    for name in files:
                        (out / folder / name).unlink()
                    break
                files.append(written.relative_to(out / folder).as_posix())
            else:
                usable[prompt_id] = (next(iter(texts)), files[0], files[1])
        need = test_prompts_per_user + min_references
        if len(usable) < need:
            log.skip_user(user, "too_few_prompts", f"{len(usable)} usable ranked prompts, need {need}")
            shutil.rmtree(out / folder, ignore_errors=True)
            return
        rng = random.Random(f"{seed}/{user}")
        ids = sorted(usable)
        tests = rng.sample(ids, test_prompts_per_user)
        rest = [p for p in ids if p not in tests]
        rng.shuffle(rest)
        refs = rest[:max_references]
        heldout = []
        for prompt_id in tests:
            prompt, best, worst = usable[prompt_id]
            best_first = rng.random() < 0.5
            image_1, image_2 = (best, worst) if best_first else (worst, best)
            heldout.append({"prompt": prompt, "image_1": image_1, "image_2": image_2, "label": 1 if best_first else 2})
        references = [{"prompt": usable[p][0], "chosen": usable[p][1], "rejected": usable[p][2]} for p in refs]
        for prompt_id in rest[max_references:]:  # not needed: keep the dataset to what user.json refers to
            for name in usable[prompt_id][1:]:
                (out / folder / name).unlink()
        _write_user(out, log, folder, user, references, heldout)

    return _run(log, out, work, verbose)


# --------------------------------------------------------------------------------------------------- Pick-a-Pic
def pickapic_label(label_0: object, label_1: object) -> int | None:
    """Pick-a-Pic's two label columns -> 1 (jpg_0 preferred), 2 (jpg_1 preferred), 0 (tie), `None` (unknown)."""
    try:
        a, b = float(label_0), float(label_1)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(a) and math.isfinite(b)):
        return None
    return {(1.0, 0.0): 1, (0.0, 1.0): 2, (0.5, 0.5): 0}.get((a, b))


def _image_bytes(value: object) -> bytes | None:
    # Published as plain binary; some exports wrap images as {"bytes": ..., "path": ...}.
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None


@dataclass
class _PickapicUser:
    user_id: str
    folder: str
    rows: list[tuple[int, int, int, str]] = field(default_factory=list)  # (file index, row, label, caption)
    ref_queue: list = field(default_factory=list)
    test_queue: list = field(default_factory=list)
    references: list = field(default_factory=list)  # rows written and usable
    heldout: list = field(default_factory=list)
    pending: dict = field(default_factory=dict)  # row key -> "ref" | "test", to decode in the next pass
    bad: set = field(default_factory=set)  # rows whose images could not be used
    files: dict = field(default_factory=dict)  # row key -> (image 0, image 1) paths relative to the user folder
    ref_order: dict = field(default_factory=dict)  # row key -> position in the seeded non-tie order
    test_order: dict = field(default_factory=dict)  # row key -> position in the seeded order of all rows


@dataclass(frozen=True)
class _PickapicSettings:
    seed: int
    n_references: int
    max_heldout: int
    min_heldout: int
    max_users: int | None
    batch_size: int


class _PickapicImport:
    """One Pick-a-Pic import, in the order `run` calls its steps: read the small columns (`read_rows`), choose the
    users (`eligible_users`), order each user's rows (`start_user`) and plan what to decode (`plan`), decode the
    planned images pass after pass (`decode_pending`), then write each complete user (`write_user`)."""

    def __init__(self, files: list[Path], out: Path, log: ImportLog, settings: _PickapicSettings):
        self.files, self.out, self.log, self.settings = files, out, log, settings
        self.users: dict[str, _PickapicUser] = {}
        self.info: dict[tuple[int, int], tuple[int, str]] = {}  # row key (file index, row) -> (label, caption)

    def run(self) -> None:
        self.read_rows()
        eligible = self.eligible_users()
        for user in eligible:
            self.start_user(user)
        while any(u.pending for u in eligible):
            self.decode_pending(eligible)
            for user in eligible:
                self.plan(user)
        for user in eligible:
            self.write_user(user)

    def row_id(self, f: int, r: int) -> str:
        return f"{self.files[f].name}:{r}"

    def batches(self, file_index: int, columns: list[str]):
        """(index of the batch's first row, batch) of one parquet file, reading only `columns`."""
        import pyarrow.parquet as pq

        start = 0
        parquet = pq.ParquetFile(self.files[file_index])
        for batch in parquet.iter_batches(batch_size=self.settings.batch_size, columns=columns):
            yield start, batch
            start += batch.num_rows

    def read_rows(self) -> None:
        """First pass, small columns only: every usable row goes to its user; the others are counted as skipped."""
        for f in range(len(self.files)):
            for start, batch in self.batches(f, ["user_id", "caption", "label_0", "label_1"]):
                columns = batch.to_pydict()
                for j in range(batch.num_rows):
                    self.log.rows_read += 1
                    r = start + j
                    uid, caption = columns["user_id"][j], columns["caption"][j]
                    label = pickapic_label(columns["label_0"][j], columns["label_1"][j])
                    if uid is None or not str(uid).strip():
                        self.log.skip_row(self.row_id(f, r), "missing_user_id")
                    elif not isinstance(caption, str) or not caption.strip():
                        self.log.skip_row(self.row_id(f, r), "empty_caption")
                    elif label is None:
                        labels = (columns["label_0"][j], columns["label_1"][j])
                        self.log.skip_row(self.row_id(f, r), "unknown_label", f"label_0, label_1 = {labels}")
                    else:
                        uid = str(uid).strip()
                        if uid not in self.users:
                            self.users[uid] = _PickapicUser(uid, safe_user_id(uid))
                        self.users[uid].rows.append((f, r))
                        self.info[(f, r)] = (label, caption.strip())

    def eligible_users(self) -> list[_PickapicUser]:
        """Users with enough pairs and a folder of their own, then the seeded sample of `max_users` of them."""
        n_references, min_heldout, max_users = (
            self.settings.n_references,
            self.settings.min_heldout,
            self.settings.max_users,
        )
        eligible = []
        folders: dict[str, str] = {}
        for uid in sorted(self.users, key=lambda u: (len(u), u)):  # numeric ids in numeric order
            user = self.users[uid]
            non_ties = [k for k in user.rows if self.info[k][0] != 0]
            if len(non_ties) < n_references or len(user.rows) - n_references < min_heldout:
                detail = f"{len(user.rows)} pairs, {len(non_ties)} non-tie; need {n_references} non-tie+{min_heldout}"
                self.log.skip_user(uid, "too_few_pairs", detail)
            elif user.folder in folders:
                taken_by = folders[user.folder]
                self.log.skip_user(uid, "user_id_collision", f"folder {user.folder} is taken by user {taken_by}")
            else:
                folders[user.folder] = uid
                eligible.append(user)
        if max_users is not None and len(eligible) > max_users:
            keep = set(id(u) for u in random.Random(f"{self.settings.seed}/users").sample(eligible, max_users))
            for user in eligible:
                if id(user) not in keep:
                    self.log.skip_user(user.user_id, "max_users", f"not in the seeded sample of {max_users} users")
            eligible = [u for u in eligible if id(u) in keep]
        return eligible

    def start_user(self, user: _PickapicUser) -> None:
        """The user's two seeded orders (non-tie rows for references, all rows for test pairs), then the first plan."""
        rng = random.Random(f"{self.settings.seed}/{user.user_id}")
        user.ref_queue = [k for k in user.rows if self.info[k][0] != 0]
        rng.shuffle(user.ref_queue)
        user.test_queue = list(user.rows)
        rng.shuffle(user.test_queue)
        user.ref_order = {k: i for i, k in enumerate(user.ref_queue)}
        user.test_order = {k: i for i, k in enumerate(user.test_queue)}
        self.plan(user)

    def plan(self, user: _PickapicUser) -> None:
        """Queue rows to decode until the user's references and test pairs would be complete.

        References are the first usable rows of the user's seeded non-tie order; a reference replacing a bad one is
        the next row of that order, taken from the test pairs if it is already one. Test pairs are the first
        usable rows of the user's seeded order of all rows that are not references.
        """
        n_refs = len(user.references) + sum(v == "ref" for v in user.pending.values())
        while n_refs < self.settings.n_references and user.ref_queue:
            key = user.ref_queue.pop(0)
            if key in user.bad or user.pending.get(key) == "ref":
                continue
            if key in user.heldout:
                user.heldout.remove(key)
                user.references.append(key)
            else:
                user.pending[key] = "ref"  # also turns a pending test pair into a reference
            n_refs += 1
        taken = set(user.references) | set(user.heldout) | set(user.pending) | user.bad
        n_tests = len(user.heldout) + sum(v == "test" for v in user.pending.values())
        while n_tests < self.settings.max_heldout and user.test_queue:
            key = user.test_queue.pop(0)
            if key not in taken:
                user.pending[key] = "test"
                taken.add(key)
                n_tests += 1

    def decode_pending(self, eligible: list[_PickapicUser]) -> None:
        """One pass over the image columns of the files that hold planned rows: decode and save each planned row."""
        wanted = {k: u for u in eligible for k in u.pending}
        for f in sorted({k[0] for k in wanted}):
            for start, batch in self.batches(f, ["jpg_0", "jpg_1"]):
                for j in range(batch.num_rows):
                    user = wanted.get((f, start + j))
                    if user is not None:
                        raw = [_image_bytes(batch.column(c)[j].as_py()) for c in ("jpg_0", "jpg_1")]
                        self.save_row(user, (f, start + j), raw)

    def save_row(self, user: _PickapicUser, key: tuple[int, int], raw: list[bytes | None]) -> None:
        """Save a planned row's two images; a row whose images cannot be used is counted and marked bad."""
        f, r = key
        role = user.pending.pop(key)
        images = self.out / user.folder / "images"
        try:
            if raw[0] is not None and raw[0] == raw[1]:
                raise ImageProblem("identical_images", "jpg_0 and jpg_1 are the same bytes")
            written = [save_image(raw[side], images / f"r{f}-{r}_{side}", f"jpg_{side}") for side in (0, 1)]
        except ImageProblem as problem:
            self.log.skip_row(self.row_id(*key), problem.reason, problem.detail)
            user.bad.add(key)
            for stale in images.glob(f"r{f}-{r}_[01].*"):
                stale.unlink()
            return
        user.files[key] = tuple(w.relative_to(self.out / user.folder).as_posix() for w in written)
        (user.references if role == "ref" else user.heldout).append(key)

    def write_user(self, user: _PickapicUser) -> None:
        """The user's folder, in the seeded orders; a user left with too few usable pairs is removed and counted."""
        if len(user.references) < self.settings.n_references or len(user.heldout) < self.settings.min_heldout:
            detail = f"{len(user.references)} usable references, {len(user.heldout)} usable test pairs"
            self.log.skip_user(user.user_id, "too_few_usable_pairs", detail)
            shutil.rmtree(self.out / user.folder, ignore_errors=True)
            return
        references, heldout = [], []
        user.references.sort(key=user.ref_order.get)
        user.heldout.sort(key=user.test_order.get)
        for key in user.references:
            label, caption = self.info[key]
            images = user.files[key]
            chosen = 0 if label == 1 else 1
            references.append({"prompt": caption, "chosen": images[chosen], "rejected": images[1 - chosen]})
        for key in user.heldout:
            label, caption = self.info[key]
            images = user.files[key]
            heldout.append({"prompt": caption, "image_1": images[0], "image_2": images[1], "label": label})
        _write_user(self.out, self.log, user.folder, user.user_id, references, heldout)


def _parquet_files(source: Path) -> list[Path]:
    files = sorted(source.glob("*.parquet")) if source.is_dir() else [source]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"No parquet file at {source}: pass a .parquet file or a folder of them.")
    return files


def import_pickapic(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    n_references: int = 8,
    max_heldout: int = 10,
    min_heldout: int = 1,
    max_users: int | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
    verbose: bool = True,
) -> ImportLog:
    """Import Pick-a-Pic v2 parquet files (see the module docstring for the columns and the split).

    Reading is two-phase so that memory does not grow with the file: a first pass reads the small columns (user,
    caption, labels) to plan every user's split; later passes read the image columns in batches of `batch_size` rows
    and decode only the planned rows. A planned row whose image turns out bad is replaced by the user's next row of
    the same seeded order (another pass, only when needed).

    Args:
        source: a `.parquet` file or a folder of them (all are read, in name order).
        out: the dataset folder to write (must be empty or absent unless `overwrite`).
        seed: seed of every split.
        n_references: references per user (non-tie pairs; the paper uses 8).
        max_heldout: at most this many test pairs per user.
        min_heldout: users with fewer usable test pairs are skipped.
        max_users: keep a seeded sample of this many of the eligible users (`None`: all).
        batch_size: rows per parquet batch (memory: about this many rows of image bytes).
        overwrite: replace a non-empty `out`.
        verbose: print the summary.

    Returns:
        The [`ImportLog`] (also written as `out/manifest.json`).
    """
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError("Reading Pick-a-Pic parquet files needs pyarrow: pip install pyarrow.") from err
    if n_references < 1 or min_heldout < 1 or max_heldout < min_heldout:
        raise ValueError(
            f"Need n_references >= 1 and 1 <= min_heldout <= max_heldout, got {n_references}, {min_heldout}, "
            f"{max_heldout}."
        )
    source, out = Path(source), Path(out)
    files = _parquet_files(source)
    for file in files:
        found = pq.ParquetFile(file).schema_arrow.names
        missing = [c for c in PICKAPIC_COLUMNS if c not in found]
        if missing:
            raise ValueError(
                f"{file} lacks Pick-a-Pic columns {missing} (it has {found}); expected {list(PICKAPIC_COLUMNS)}."
            )
    _prepare_out(out, overwrite)
    options = dict(
        n_references=n_references,
        max_heldout=max_heldout,
        min_heldout=min_heldout,
        max_users=max_users,
        batch_size=batch_size,
        files=[f.name for f in files],
    )
    log = ImportLog("pickapic", str(source), seed, options)
    settings = _PickapicSettings(seed, n_references, max_heldout, min_heldout, max_users, batch_size)
    return _run(log, out, _PickapicImport(files, out, log, settings).run, verbose)


# ------------------------------------------------------------------------------------------------ own folders
def import_folder(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    link: bool = False,
    overwrite: bool = False,
    verbose: bool = True,
) -> ImportLog:
    """Validate a folder of user folders (every image decoded) and copy or link the valid users into a dataset.

    Args:
        source: a folder of `<user>/user.json` folders (e.g. the repo's `users/`).
        out: the dataset folder to write (must be empty or absent unless `overwrite`).
        link: symlink the user folders instead of copying them (the dataset then follows later edits of `source`).
        overwrite: replace a non-empty `out`.
        verbose: print the summary.
    """
    source, out = Path(source).resolve(), Path(out)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder of user folders.")
    if out.resolve() == source or source in out.resolve().parents:
        raise ValueError(f"The output {out} must lie outside the source {source}.")
    folders = sorted(p.parent for p in source.glob(f"*/{USER_FILE}"))
    _prepare_out(out, overwrite)
    source_manifest = read_manifest(source)
    provenance = {k: source_manifest.get(k) for k in ("source_format", "source", "seed")} if source_manifest else None
    options = {"link": link, "source_manifest": provenance}
    log = ImportLog("folder", str(source), 0, options)

    def work() -> None:
        for folder in folders:
            log.rows_read += 1
            try:
                load_user(str(folder))  # decodes every image: a broken user fails here, not in the benchmark
            except UserDataError as err:
                log.skip_row(folder.name, "invalid_user", str(err))
                log.skip_user(folder.name, "invalid_user", str(err))
                continue
            target = out / folder.name
            if link:
                os.symlink(folder, target, target_is_directory=True)
            else:
                shutil.copytree(folder, target)
            log.add_user(json.loads((folder / USER_FILE).read_text(encoding="utf-8")))

    return _run(log, out, work, verbose)
