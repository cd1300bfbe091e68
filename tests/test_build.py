"""`python -m localmodels.build`: the model beside the others builds in a second process, idempotently, and its
failure stops the build with the end of its log."""

from __future__ import annotations

import json
import re

import pytest

from localmodels import build

TWO_SMALL = ["--only", "tiny-random", "--only", "all-MiniLM-L6-v2"]  # two builds of seconds


def _recipe(folder) -> str:
    return json.loads((folder / build.MARKER).read_text())["recipe"]


def test_beside_build_runs_in_a_second_process_and_a_rerun_builds_nothing(tmp_path, capsys):
    args = ["--models_dir", str(tmp_path), *TWO_SMALL]
    build.main([*args, "--beside", "tiny-random"])
    out = capsys.readouterr().out
    beside, log = r"\[models\] tiny-random: built in \d+ s in a second process", tmp_path / "tiny-random.build.log"
    assert re.search(f"{beside} · log {re.escape(str(log))}", out), out
    assert f"[models] all-MiniLM-L6-v2: built in 0 s · log {tmp_path / 'all-MiniLM-L6-v2.build.log'}" in out
    assert len(out.splitlines()) == 2  # one line per model: what the builds write goes to their logs
    assert "source" in (tmp_path / "all-MiniLM-L6-v2.build.log").read_text()  # the build's figures, in its log
    assert _recipe(tmp_path / "tiny-random") == build.RECIPES["tiny-random"]
    assert _recipe(tmp_path / "all-MiniLM-L6-v2") == build.RECIPES["all-MiniLM-L6-v2"]
    assert "tiny-random: built in" in (tmp_path / "tiny-random.build.log").read_text()  # the child's own report

    build.main([*args, "--beside", "tiny-random"])
    out = capsys.readouterr().out
    assert out.count("up to date") == 2 and "second process" not in out


def test_a_failed_beside_build_stops_with_its_log(tmp_path):
    (tmp_path / "tiny-random").write_text("a file where the model's folder should be")
    with pytest.raises(SystemExit, match=r"tiny-random failed \(exit 1\); the end of .*tiny-random\.build\.log"):
        build.main(["--models_dir", str(tmp_path), *TWO_SMALL, "--beside", "tiny-random"])
    assert _recipe(tmp_path / "all-MiniLM-L6-v2") == build.RECIPES["all-MiniLM-L6-v2"]  # the others' work is kept


def test_the_clip_is_built_on_demand_only():
    """`make setup` (no --only) leaves out the tiny CLIP, which only `pig bench` uses: it builds it when first needed
    (`--only tiny-clip`; the slow lane's test_eval_bench runs that path)."""
    everything = list(build.RECIPES)
    assert build.selected([], []) == [name for name in everything if name != "tiny-clip"]
    assert build.selected(["tiny-clip"], []) == ["tiny-clip"]
    assert build.selected([], ["tiny-clip"]) == everything  # forced: built too
    assert build.selected(["tiny-random", "all-MiniLM-L6-v2"], []) == ["all-MiniLM-L6-v2", "tiny-random"]
