"""What a runs folder holds for a user, read back without loading a model: adapters, the `LATEST` pointer, the
evaluations of an adapter, the training configuration a run recorded, the cached user contexts.

    runs/<user>/LATEST                    -> "<run>/adapter" (relative to runs/<user>/), written by rl/train_policy.py
    runs/<user>/<run>/adapter/            PEFT adapter + pig_adapter.json (policies.rewriter.AdapterInfo)
    runs/<user>/<run>/log_history.json    the trainer's log history
    runs/<user>/<run>/wandb/              the W&B run (offline by default); its run record holds the arguments
    runs/<user>/eval/<name>/results.json  `pig evaluate` of one adapter (its path is recorded in the file)
    runs/<user>/context/<key>.json        cached user contexts (reward/context.py)

The one reader of run folders: `pig report` and `pig dashboard` (reports/), `pig users` and `pig export` (pig/) find a
run with `resolve_run` and its evaluations with `evaluations`, so they always show the same ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from policies.rewriter import ADAPTER_META, AdapterInfo, latest_adapter

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class Run:
    """One training run of a user: its folder, its adapter folder and the adapter's metadata (`info`: None when the
    run saved no complete adapter, e.g. a run folder holding only its log_history.json)."""

    run_dir: Path
    adapter_dir: Path
    info: AdapterInfo | None

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def user_runs(self) -> Path:
        """runs/<user>/: where the user's runs, evaluations and contexts live."""
        return self.run_dir.parent

    @property
    def user_id(self) -> str:
        """The user the run trained for: the adapter's record, else the name of the user's runs folder."""
        return self.info.user_id if self.info is not None else self.user_runs.name


def load_run(adapter_dir: str | Path) -> Run:
    """The run that wrote `adapter_dir` (a folder holding adapter_config.json and pig_adapter.json)."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter_config.json: it is not a PEFT adapter folder.")
    return Run(adapter_dir.parent, adapter_dir, AdapterInfo.load(adapter_dir))


def resolve_run(target: str | Path, runs_dir: str | Path = "runs", need_adapter: bool = False) -> Run:
    """The run `target` names: a run folder (runs/<user>/<run>), an adapter folder (<run>/adapter), or a user id (the
    run its `runs/<user>/LATEST` points at).

    Args:
        need_adapter: the run must hold a complete adapter (`pig export`). Without it a run folder that holds a
            log_history.json or an adapter/ folder is a run (`pig report`, `pig dashboard`), with `info` None when
            its adapter is incomplete.

    Raises:
        FileNotFoundError: `target` is neither, with what to pass instead.
    """
    path = Path(target)
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return load_run(path)
        adapter = path / "adapter"
        if (adapter / "adapter_config.json").is_file() and ((adapter / ADAPTER_META).is_file() or need_adapter):
            return load_run(adapter)
        if not need_adapter and ((path / "log_history.json").is_file() or adapter.is_dir()):
            return Run(path, adapter, None)
        raise FileNotFoundError(
            f"{path} is not a run folder{' with a trained adapter' if need_adapter else ''}: it holds neither "
            f"adapter/adapter_config.json{'' if need_adapter else ' nor log_history.json'}, and it is not an adapter "
            "folder (adapter_config.json). Pass a run folder written by rl/train_policy.py (runs/<user>/<run>), an "
            "adapter folder or a user id."
        )
    pointer = Path(runs_dir) / str(target) / "LATEST"
    if not pointer.is_file():
        raise FileNotFoundError(
            f"{str(target)!r} is neither a run folder, an adapter folder, nor a user with a trained adapter "
            f"({pointer} is missing). Pass runs/<user>/<run> or a trained user's id (see `pig users`), or train one "
            f"first: pig train --user {target}."
        )
    return load_run(latest_adapter(str(target), runs_dir))  # a corrupt pointer is named with the fix


def user_runs(runs_dir: str | Path, user_id: str) -> list[Run]:
    """Every run of the user with a complete adapter (adapter_config.json and pig_adapter.json), by name."""
    folder = Path(runs_dir) / user_id
    adapters = sorted(folder.glob(f"*/adapter/{ADAPTER_META}")) if folder.is_dir() else []
    return [load_run(meta.parent) for meta in adapters if (meta.parent / "adapter_config.json").is_file()]


def latest_run(runs_dir: str | Path, user_id: str) -> Run | None:
    """The run `runs/<user>/LATEST` points at, or None when the user has none (or the pointer is broken)."""
    try:
        return load_run(latest_adapter(user_id, runs_dir))
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------------------------------- evaluations
@dataclass
class Evaluation:
    """A `pig evaluate` result of one adapter. `stale`: written before the adapter's weights (of an earlier run
    saved in the same folder), so its figures are not this adapter's."""

    path: Path
    results: dict
    stale: bool

    @property
    def name(self) -> str:
        return self.path.parent.name


def evaluations(run: Run) -> list[Evaluation]:
    """The evaluations of `run`'s adapter under runs/<user>/eval/, newest first (stale ones included, flagged).

    `pig evaluate` records the adapter path as given on its command line (relative to where it ran), so an
    evaluation matches when that path resolves to this adapter or ends in this run's `<user>/<run>/adapter`, and it
    scored the adapter's own user (`pig evaluate --user B --adapter <A's adapter>` measures user B's taste).
    """
    if run.info is None:
        return []  # an evaluation scores an adapter
    found = []
    weights = run.adapter_dir / ADAPTER_WEIGHTS
    written = weights.stat().st_mtime if weights.is_file() else 0.0
    for path in sorted((run.user_runs / "eval").glob("*/results.json")):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue  # a half-written or foreign file is not an evaluation of this adapter
        recorded = Path(str(results.get("adapter", "")))
        tail = (run.user_runs.name, run.name, run.adapter_dir.name)
        same = recorded.resolve() == run.adapter_dir.resolve() or recorded.parts[-3:] == tail
        if same and results.get("user") == run.info.user_id:
            found.append(Evaluation(path, results, stale=path.stat().st_mtime < written))
    return sorted(found, key=lambda e: e.path.stat().st_mtime, reverse=True)


def latest_evaluation(run: Run) -> Evaluation | None:
    """The newest evaluation of `run`'s adapter that is not stale."""
    return next((e for e in evaluations(run) if not e.stale), None)


COMPARISONS = (("adapter", "base"), ("adapter", "original"), ("base", "original"))
"""The comparisons of every `pig evaluate` block, `a` over `b`; its results name each `f"{a}_vs_{b}"`."""
SUFFIX_COMPARISONS = (("adapter", "suffix"), ("suffix", "original"))
"""The comparisons a block adds when the user has a fixed-suffix baseline (`pig suffix`)."""
PER_USER_COMPARISONS = (("adapter", "per_user"), ("per_user", "original"))
"""The comparisons a block adds with the user's own per-user adapter (`pig evaluate --against_adapter`)."""
CONTROL_COMPARISONS = (
    ("adapter", "other_context"),
    ("other_context", "original"),
    ("adapter", "empty_context"),
    ("empty_context", "original"),
)
"""The comparisons a block adds with a context-conditioned adapter's controls (`--context_of`, `--empty_context`):
the same adapter given another user's context, or an empty one."""


def format_summary(summary: dict | None) -> str:
    """`0.62 [0.55, 0.69] +-0.07` (mean, 95% interval, half-width), or `-`."""
    if summary is None or summary["preference"] is None:
        return "-"
    ci = summary["ci95"]
    if ci is None:
        return f"{summary['preference']:.2f}"
    return f"{summary['preference']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] +-{summary['half_width']:.2f}"


def evaluation_rows(results: dict) -> list[dict]:
    """One row per block of an evaluation: prompt set, decoding, cells, and for each comparison the ground truth's
    and the judge's preference (with the truth's 95% interval), the fidelity of base and adapter rewrites."""
    rows = []
    for block in results.get("blocks", []):
        summary = block.get("summary", {})
        row = {
            "prompt_set": block.get("prompt_set"),
            "decoding": block.get("decoding"),
            "cells": (block.get("prompts") or 0) * (block.get("samples") or 0),
            "fidelity_base": summary.get("fidelity_base"),
            "fidelity_adapter": summary.get("fidelity_adapter"),
            "repeats_base": summary.get("repeats_base"),
            "repeats_adapter": summary.get("repeats_adapter"),
        }
        for a, b in COMPARISONS:
            comparison = f"{a}_vs_{b}"
            views = summary.get(comparison, {})
            row[comparison] = {
                "ground_truth": (views.get("ground_truth") or {}).get("preference"),
                "ground_truth_ci95": (views.get("ground_truth") or {}).get("ci95"),
                "judge": (views.get("judge") or {}).get("preference"),
            }
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- what the run recorded
def run_config(run: Run) -> dict | None:
    """The arguments the run recorded in its W&B run (offline or not): `{"pig": PigArguments, "policy":
    ModelConfig, "trainer": the TRL config}`, or None when the run logged no W&B run (`--report_to none`). The `.wandb`
    file is the only place a run folder keeps them (the adapter's training_args.bin is a pickle, which we do not
    load)."""
    from reports.wandb_offline import read_config

    return read_config(run.run_dir / "wandb")


def quarter_means(values: list[float]) -> tuple[float, float, int]:
    """`(first, last, k)`: the means of the first and the last `k` values, `k` a quarter of them (at least 1). The
    one summary of a logged term that the training's `[done]` lines, `pig export`'s card and `pig report` show."""
    k = max(1, len(values) // 4)
    return sum(values[:k]) / k, sum(values[-k:]) / k, k


def learning_summary(history: list[dict]) -> dict:
    """Steps, training time and, for each reward term logged, the mean of the first and the last quarter of the
    logged steps (as the training's own `[done]` lines report them)."""
    summary: dict = {
        "steps": max((h.get("step", 0) for h in history), default=0),
        "train_runtime_s": next((h["train_runtime"] for h in reversed(history) if "train_runtime" in h), None),
    }
    for key in ("reward", "rewards/preference/mean", "rewards/fidelity/mean", "reward/ground_truth"):
        values = [h[key] for h in history if isinstance(h.get(key), (int, float))]
        if values:
            first, last, k = quarter_means(values)
            summary[key] = {"first": first, "last": last, "steps_averaged": k}
    return summary


def read_history(run: Run) -> list[dict]:
    path = run.run_dir / "log_history.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


# --------------------------------------------------------------------------------------------------- user contexts
def run_context(run: Run) -> tuple[dict | None, str]:
    """The user's cached context: the only one, or the newest built before the run's adapter was saved.

    The run folder does not record its context's key; the cache is keyed by the reasoner, template, generation
    settings and references, so several contexts exist only after one of those changed.
    """
    run_dir, user_id = run.run_dir, run.user_id
    folder = run.user_runs / "context"
    found = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("user_id") == user_id:
            found.append((data.get("created_at", 0.0), path, data))
    if not found:
        return None, f"no cached context for {user_id} in {folder}"
    if len(found) == 1:
        return found[0][2], found[0][1].name
    saved = (run_dir / "log_history.json").stat().st_mtime
    before = [f for f in found if f[0] <= saved] or found
    created, path, data = max(before, key=lambda f: f[0])
    return data, f"{path.name}: the newest of {len(found)} cached contexts built before this run ended"


@dataclass
class ContextStatus:
    """The cached contexts of a user (reward/context.py) and whether one was built from the current references.

    Whether it is *the* context a run will use also depends on the reasoner model, template and generation settings
    (its cache key); those come from a training config, so this reports the model that wrote each cached context.
    """

    cached: list[dict] = field(default_factory=list)  # one per file: path, key, model_id, rationales, current

    @property
    def current(self) -> list[dict]:
        return [c for c in self.cached if c["current"]]

    def describe(self) -> str:
        if not self.cached:
            return "none cached (built at the first `pig context` / `pig train`)"
        if not self.current:
            return f"{len(self.cached)} cached, all stale (the references changed since): rebuilt at the next run"
        best = self.current[-1]
        return f"cached for the current references ({best['rationales']} rationales by {best['model_id']})"


def context_status(runs_dir: str | Path, user_id: str, references_hash: str | None) -> ContextStatus:
    """The contexts cached under runs/<user>/context/, oldest first; `current` when built from `references_hash`."""
    status = ContextStatus()
    folder = Path(runs_dir) / user_id / "context"
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue  # the cache never trusts an unreadable file either (reward.context.load_cached)
        status.cached.append(
            {
                "path": str(path),
                "key": path.stem,
                "model_id": data.get("model_id"),
                "rationales": len(data.get("rationales", [])),
                "current": references_hash is not None and data.get("references_hash") == references_hash,
            }
        )
    return status
