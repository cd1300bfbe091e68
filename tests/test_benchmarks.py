"""Benchmark scripts run end to end on the tiny models (their figures are only meaningful on trained ones)."""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests.conftest import REPO


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_judge_verdict_health_counts_every_verdict(tiny_models, tmp_path, capsys):
    health = _load("judge_verdict_health")
    argv = ["--model", tiny_models["vlm"], "--users", "demo", "--pairs", "3", "--runs_dir", str(tmp_path)]
    health.main(argv)
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if re.match(r"^(demo|all)\s+\d", line)}
    assert set(rows) == {"demo", "all"}
    for cells in rows.values():
        assert cells[0] == "6"  # 3 pairs, both orders
        assert abs(sum(float(c) for c in cells[1:]) - 1.0) < 0.02  # every verdict has exactly one status
    assert list(tmp_path.glob("demo/context/*.json"))  # the context was cached where asked, not in the repo


def test_judge_verdict_health_refuses_mismatched_folders(tiny_models, capsys):
    health = _load("judge_verdict_health")
    with pytest.raises(SystemExit) as stop:
        health.main(["--model", tiny_models["vlm"], "--users", "demo", "crowd", "--users_dirs", "a", "b", "c"])
    assert stop.value.code == 2
    assert "one per user" in capsys.readouterr().err


def test_judge_context_reading_reports_a_split_context_per_subject_group(tiny_models, capsys):
    """With --splits every row is reported per subject group, and the teacher's reading of a split context names the
    first pole for round subjects and the second for angular ones (and the reverse context the reverse)."""
    reading = _load("judge_context_reading")
    reading.main(["--model", tiny_models["vlm"], "--pairs", "2", "--counts", "2-0", "--splits", "2-2"])
    out = capsys.readouterr().out
    teacher = dict(re.findall(r"^(.+?subjects)\s+teacher reads (\w+|-)", out, re.M))
    assert teacher["2 round warm / 2 angular cool, round subjects"] == "warm"
    assert teacher["2 round warm / 2 angular cool, angular subjects"] == "cool"
    assert teacher["2 round cool / 2 angular warm, round subjects"] == "cool"
    assert teacher["2 round cool / 2 angular warm, angular subjects"] == "warm"
    assert (
        teacher["2 warm / 0 cool (+4 light), round subjects"]
        == teacher["2 warm / 0 cool (+4 light), angular subjects"]
    )
    assert len(re.findall(r"judge prefers warm \d\.\d\d", out)) == 6
