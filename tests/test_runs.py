"""The one run reader (`reports.runs`): `pig report`, `pig users` and `pig export` find a run and its evaluation the
same way. Built from literal files, no model: a run folder is JSON and an (empty) weights file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from policies.rewriter import AdapterInfo


def _run(runs: Path, user: str = "demo", name: str = "grpo-1") -> Path:
    run_dir = runs / user / name
    adapter = run_dir / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    AdapterInfo(user_id=user, base_model="base", system_prompt="rewrite", max_new_tokens=24).save(adapter)
    (run_dir / "log_history.json").write_text(json.dumps([{"step": 1, "reward": 0.5}]))
    (runs / user / "LATEST").write_text(f"{name}/adapter")
    return run_dir


def _evaluation(runs: Path, folder: str, adapter: Path, when: float, user: str = "demo") -> Path:
    path = runs / user / "eval" / folder / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"user": user, "adapter": str(adapter), "blocks": [], "folder": folder}))
    os.utime(path, (when, when))
    return path


def test_report_users_and_export_read_the_same_evaluation(tmp_path):
    """Two evaluations of one adapter: the one named after the run (older) and a newer one. Every command shows the
    newest that is not stale; before the readers were merged, the report showed eval/<run> and `pig users` the
    newest."""
    from pig.users import user_entry
    from reports.report import read_run
    from reports.runs import latest_evaluation, resolve_run

    runs = tmp_path / "runs"
    run_dir = _run(runs)
    weights = run_dir / "adapter" / "adapter_model.safetensors"
    os.utime(weights, (1000, 1000))
    _evaluation(runs, run_dir.name, run_dir / "adapter", when=2000)
    newer = _evaluation(runs, "heldout-greedy", run_dir / "adapter", when=3000)
    _evaluation(runs, "other-user", run_dir / "adapter", when=4000, user="demo").write_text(
        json.dumps({"user": "nightowl", "adapter": str(run_dir / "adapter"), "blocks": []})  # scored another taste
    )

    by_user, by_folder = resolve_run("demo", runs), resolve_run(run_dir)
    assert by_user.run_dir == by_folder.run_dir == resolve_run(run_dir / "adapter").run_dir
    assert latest_evaluation(by_user).path == newer
    assert read_run(run_dir).eval_dir == newer.parent
    users_dir = tmp_path / "users"
    users_dir.mkdir()
    assert user_entry("demo", users_dir, runs)["evaluation"]["path"] == str(newer)

    os.utime(weights, (5000, 5000))  # the adapter was overwritten by a later run: every evaluation is stale
    assert latest_evaluation(resolve_run(run_dir)) is None and read_run(run_dir).evaluation is None


def test_a_run_without_an_adapter_is_a_run_for_the_report_only(tmp_path):
    from reports.runs import evaluations, resolve_run

    run_dir = tmp_path / "runs" / "demo" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "log_history.json").write_text("[]")
    run = resolve_run(run_dir)
    assert run.info is None and run.user_id == "demo" and evaluations(run) == []
    with pytest.raises(FileNotFoundError, match="not a run folder with a trained adapter"):
        resolve_run(run_dir, need_adapter=True)
    with pytest.raises(FileNotFoundError, match="pig train --user nobody"):
        resolve_run("nobody", tmp_path / "runs")
