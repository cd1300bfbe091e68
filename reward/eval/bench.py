"""The benchmark run: every method on every held-out pair of a per-user preference dataset, resumable.

```python
results = run_bench(BenchConfig(dataset="users", out="runs/bench/demo", methods=["pigreward", "random"]))
```

Output folder:

- `predictions.jsonl`: one line per finished (method, user, pair), appended after each batch of `batch_pairs` pairs
  and flushed to disk. A re-run skips what is there, so a killed run resumes where it stopped; a torn last line (the
  mark of a kill) is dropped and recomputed.
- `run.json`: the fingerprint of each method's settings (models, templates, token caps, seed). Resuming with other
  settings for a method already in the folder is refused: its old predictions would be mixed with new ones.
- `contexts/`: the reasoner's cached user contexts.
- `results.json`, `table.md`, `accuracy.png`, `per_user.png`, `report.html`: see `reward.eval.report`.

Users are taken in folder-name order (`max_users`: the first N); users without held-out pairs are counted and left out.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.files import atomic_write_json
from reward.eval import metrics
from reward.eval.baselines import DEFAULT_CLIP, METHODS, Resources
from reward.eval.dataset import DatasetUser, list_users, read_manifest

PREDICTIONS = "predictions.jsonl"
RUN_FILE = "run.json"
DEFAULT_JUDGE = ".models/tiny-pigreward"


@dataclass
class BenchConfig:
    """Settings of a benchmark run.

    Attributes:
        dataset: folder of user folders (`reward.eval.dataset`), e.g. `users` or an imported dataset.
        out: output folder (created; an existing one is resumed).
        methods: names from `reward.eval.baselines.METHODS`, in table order.
        judge_model: judge model (hub id or folder); also the reasoner unless `reasoner_model` is set.
        reasoner_model: reasoner model (default: `judge_model`).
        clip_model: CLIP-class model of `similarity` (hub id or folder).
        max_users: evaluate only the first N users (folder-name order); `None` = all.
        seed: seed of `random` and of the bootstrap and the report's example choice.
        device: `"auto"`, `"cpu"`, `"cuda"`... (`"auto"`: see `common.devices`).
        dtype: `"auto"`, `"float32"`, `"bfloat16"` (`"auto"`: see `common.devices`).
        batch_size: conversations per forward pass of the VLM backend (both orders of a pair are two conversations).
        batch_pairs: pairs per method call; each call's results are saved before the next (the resume granularity).
        judge_max_new_tokens: cap on each chain-of-thought judge answer (tokens).
        reasoner_max_new_tokens: cap on each rationale (tokens).
        judge_retry: regenerate once, sampling, when a judge answer yields no decision.
        bootstrap: bootstrap resamples for the 95% confidence intervals.
        ci_unit: `"auto"`, `"users"` or `"pairs"` (see `reward.eval.metrics`).
        report_examples: example pairs shown in `report.html`.
        progress: show a tqdm progress bar.
    """

    dataset: str
    out: str
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    judge_model: str = DEFAULT_JUDGE
    reasoner_model: str | None = None
    clip_model: str = DEFAULT_CLIP
    max_users: int | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    batch_pairs: int = 8
    judge_max_new_tokens: int = 320
    reasoner_max_new_tokens: int = 96
    judge_retry: bool = True
    bootstrap: int = 1000
    ci_unit: str = "auto"
    report_examples: int = 8
    progress: bool = True

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"Unknown methods {unknown or '(none given)'}; choose from {list(METHODS)}.")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"Methods are listed twice: {self.methods}.")
        for name in ("batch_size", "batch_pairs", "judge_max_new_tokens", "reasoner_max_new_tokens", "bootstrap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"max_users must be >= 1 (or None for all), got {self.max_users}.")
        if self.ci_unit not in ("auto", "users", "pairs"):
            raise ValueError(f"ci_unit must be 'auto', 'users' or 'pairs', got {self.ci_unit!r}.")

    def resources(self) -> Resources:
        return Resources(
            judge_model=self.judge_model,
            reasoner_model=self.reasoner_model,
            clip_model=self.clip_model,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            judge_max_new_tokens=self.judge_max_new_tokens,
            reasoner_max_new_tokens=self.reasoner_max_new_tokens,
            judge_retry=self.judge_retry,
            seed=self.seed,
            cache_dir=Path(self.out) / "contexts",
        )


# ------------------------------------------------------------------------------------------ predictions file
def read_predictions(path: Path) -> list[dict]:
    """The finished predictions; a torn or corrupt *last* line (a killed write) is cut off the file and dropped.

    Raises:
        ValueError: a corrupt line before the last one (the file was damaged, not just interrupted).
    """
    if not path.is_file():
        return []
    data = path.read_bytes()
    rows, keep, offset = [], 0, 0
    lines = data.split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        end = offset + len(line) + 1
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if i != last:
                    raise ValueError(
                        f"{path}: line {i + 1} is not valid JSON ({err}) and is not the last line, so the file was "
                        "damaged, not interrupted. Delete that line (its prediction is recomputed) and run again."
                    ) from err
                print(f"{path}: dropped a torn last line (a killed run); it is recomputed.")
                break
            keep = min(end, len(data))
        offset = end
    if keep != len(data) or (data and not data.endswith(b"\n")):
        with path.open("wb") as f:  # cut the torn tail; end with a newline so appended lines stay whole
            f.write(data[:keep].rstrip(b"\n") + b"\n" if keep else b"")
    return rows


def append_predictions(path: Path, rows: list[dict]) -> None:
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _check_run_file(out: Path, dataset: Path, fingerprints: dict[str, dict]) -> None:
    path = out / RUN_FILE
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if old and old.get("dataset") != str(dataset):
        raise ValueError(
            f"{out} holds a run on {old.get('dataset')}, not {dataset}. Use another --out for another dataset."
        )
    merged = dict(old.get("methods", {}))
    for method, fp in fingerprints.items():
        if method in merged and merged[method] != fp:
            raise ValueError(
                f"{out} holds predictions of {method!r} made with other settings:\n  then {merged[method]}\n  now  "
                f"{fp}\nUse another --out, or delete that method's lines from {out / PREDICTIONS} to recompute it."
            )
        merged[method] = fp
    atomic_write_json(path, {"dataset": str(dataset), "methods": merged})


# --------------------------------------------------------------------------------------------------- the run
def select_users(dataset: Path, max_users: int | None) -> tuple[list[DatasetUser], list[str]]:
    """The users evaluated (with held-out pairs, first `max_users` in folder order) and those without pairs."""
    users = list_users(dataset)
    evaluated = [u for u in users if u.n_heldout > 0]
    without = [u.user_id for u in users if u.n_heldout == 0]
    return (evaluated[:max_users] if max_users else evaluated), without


def run_bench(config: BenchConfig) -> dict:
    """Run (or resume) the benchmark and write every output; returns the content of `results.json`."""
    from common.hub import check_models
    from reward.users import load_user

    started = time.time()
    dataset, out = Path(config.dataset).resolve(), Path(config.out)
    users, without_heldout = select_users(dataset, config.max_users)
    resources = config.resources()
    needed = {f"{role} ({m})": name for m in config.methods for role, name in resources.models(m).items()}
    check_models(needed)  # before anything heavy: a missing model is named at once, with the fix
    out.mkdir(parents=True, exist_ok=True)
    _check_run_file(out, dataset, {m: resources.fingerprint(m) for m in config.methods})
    predictions_path = out / PREDICTIONS
    done = {(r["method"], r["user_id"], r["pair"]) for r in read_predictions(predictions_path)}
    total = sum(u.n_heldout for u in users) * len(config.methods)
    already = sum((m, u.user_id, i) in done for u in users for m in config.methods for i in range(u.n_heldout))
    print(
        f"bench: {len(users)} users, {sum(u.n_heldout for u in users)} held-out pairs, methods {config.methods}; "
        f"{already}/{total} predictions already in {predictions_path}"
    )
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=already, unit="pair", desc="bench", disable=not config.progress, smoothing=0.1)
    new = 0
    for method in config.methods:
        if any((method, u.user_id, i) not in done for u in users for i in range(u.n_heldout)):
            resources.load(method)  # load before timing: `seconds` per pair is judging time only
    for entry in users:
        todo = {m: [i for i in range(entry.n_heldout) if (m, entry.user_id, i) not in done] for m in config.methods}
        if not any(todo.values()):
            continue
        user = load_user(str(entry.folder))
        for method, indices in todo.items():
            for start in range(0, len(indices), config.batch_pairs):
                chunk = indices[start : start + config.batch_pairs]
                bar.set_postfix_str(f"{method} · user {entry.user_id}")
                tick = time.time()
                predictions = METHODS[method].predict([user.heldout[i] for i in chunk], user, resources)
                seconds = (time.time() - tick) / len(chunk)
                if len(predictions) != len(chunk):
                    raise RuntimeError(f"Method {method!r} returned {len(predictions)} predictions for {len(chunk)}.")
                rows = []
                for i, prediction in zip(chunk, predictions):
                    pref = prediction.preference
                    if pref is not None and not 0.0 <= pref <= 1.0:
                        raise ValueError(f"Method {method!r} returned preference {pref} outside [0, 1].")
                    pair = user.heldout[i]
                    rows.append(
                        {
                            "method": method,
                            "user_id": entry.user_id,
                            "pair": i,
                            "label": pair.label,
                            "preference": pref,
                            "seconds": seconds,
                            "prompt": pair.prompt,
                            "image_1": _relative(pair.image_1_path, dataset),
                            "image_2": _relative(pair.image_2_path, dataset),
                            "details": prediction.details,
                        }
                    )
                append_predictions(predictions_path, rows)
                done.update((method, entry.user_id, i) for i in chunk)
                new += len(chunk)
                bar.update(len(chunk))
    bar.close()

    from reward.eval import report

    rows = _selected_rows(read_predictions(predictions_path), users, config.methods)
    results = summarize_run(rows, config, users, without_heldout, dataset, resources)
    results["new_predictions"] = new
    results["wall_seconds"] = time.time() - started
    atomic_write_json(out / "results.json", results)
    report.write_all(out, results, rows, dataset, users, config)
    print(report.table_markdown(results))
    print(f"bench: {new} new predictions in {results['wall_seconds']:.1f} s; outputs in {out}")
    return results


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))  # not resolved: a linked user folder stays inside the dataset
    except ValueError:
        return str(path.resolve())


def _selected_rows(rows: list[dict], users: list[DatasetUser], methods: list[str]) -> list[dict]:
    """The rows of this run's users and methods, one per key (the first), in (method, user, pair) order."""
    wanted = {u.user_id: u.n_heldout for u in users}
    seen, kept = set(), []
    for row in rows:
        key = (row["method"], row["user_id"], row["pair"])
        if row["method"] in methods and row["pair"] < wanted.get(row["user_id"], 0) and key not in seen:
            seen.add(key)
            kept.append(row)
    order = {m: i for i, m in enumerate(methods)}
    users_order = {u.user_id: i for i, u in enumerate(users)}
    return sorted(kept, key=lambda r: (order[r["method"]], users_order[r["user_id"]], r["pair"]))


def _statuses(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        for order in ("forward", "backward"):
            verdict = (row.get("details") or {}).get(order)
            if verdict:
                counts[verdict["status"]] = counts.get(verdict["status"], 0) + 1
    return dict(sorted(counts.items()))


def summarize_run(
    rows: list[dict],
    config: BenchConfig,
    users: list[DatasetUser],
    without_heldout: list[str],
    dataset: Path,
    resources: Resources,
) -> dict:
    """The content of `results.json`: per method, the figures of `reward.eval.metrics.summarize` and timings."""
    from common.hub import local_model_note

    all_outcomes = [metrics.PairOutcome(r["user_id"], r["label"], r["preference"]) for r in rows]
    unit = metrics.choose_ci_unit(all_outcomes, config.ci_unit)
    methods = {}
    for method in config.methods:
        mine = [r for r in rows if r["method"] == method]
        outcomes = [
            metrics.PairOutcome(r["user_id"], r["label"], r["preference"], (r.get("details") or {}).get("consistent"))
            for r in mine
        ]
        summary = metrics.summarize(outcomes, unit=unit, n_resamples=config.bootstrap, seed=config.seed)
        summary["description"] = METHODS[method].description
        summary["seconds_per_pair"] = sum(r["seconds"] for r in mine) / len(mine) if mine else None
        summary["judge_statuses"] = _statuses(mine)
        methods[method] = summary
    manifest = read_manifest(dataset)
    model_names = {name for m in config.methods for name in resources.models(m).values()}
    return {
        "dataset": str(dataset),
        "manifest": None if manifest is None else {k: manifest.get(k) for k in ("source_format", "source", "counts")},
        "users": len(users),
        "pairs": sum(u.n_heldout for u in users),
        "users_without_heldout": without_heldout,
        "ci_unit": unit,
        "config": {k: v for k, v in asdict(config).items() if k != "progress"},
        "fingerprints": {m: resources.fingerprint(m) for m in config.methods},
        "model_notes": {n: note for n in sorted(model_names) if (note := local_model_note(n)) is not None},
        "methods": methods,
    }
