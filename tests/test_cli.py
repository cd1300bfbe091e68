"""The `pig` command line: context, judge, and errors a user sees (in this process: `pig_cli` in conftest)."""

from __future__ import annotations

import json

from tests.conftest import REPO


def test_context_builds_then_reads_cache(tiny_models, tmp_path, pig_cli):
    args = ["context", "--user", "demo", "--model", tiny_models["vlm"], "--runs_dir", str(tmp_path), "--json"]
    first = pig_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    data = json.loads(first.stdout)
    assert data["user_id"] == "demo" and len(data["rationales"]) == 8
    assert data["template_id"] == "pigreward-reasoner-v1"
    second = json.loads(pig_cli(*args).stdout)
    assert second["created_at"] == data["created_at"]  # served from the cache, not rebuilt


def test_judge_prints_both_orders(tiny_models, tmp_path, pig_cli):
    images = REPO / "users" / "demo" / "images"
    args = ["judge", "--user", "demo", "--model", tiny_models["vlm"], "--runs_dir", str(tmp_path), "--prompt", "a sun"]
    args += [str(images / "ref00_chosen.png"), str(images / "ref00_rejected.png")]
    out = pig_cli(*args, "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert set(data["orders"]) == {"image_1 shown first", "image_2 shown first"}
    for verdict in data["orders"].values():
        assert verdict["template_id"] == "pigreward-judge-cot-v1" and "status" in verdict
    table = pig_cli(*args)
    assert "== image_1 shown first" in table.stdout and "preference for image_1" in table.stdout


def test_judge_missing_image_is_a_clear_error(tiny_models, pig_cli):
    out = pig_cli("judge", "--user", "demo", "--model", tiny_models["vlm"], "--prompt", "x", "nope.png", "nope2.png")
    assert out.returncode == 2 and "nope.png does not exist" in out.stderr


def test_missing_local_model_names_the_fix(tmp_path, pig_cli):
    out = pig_cli("context", "--user", "demo", "--model", str(tmp_path / "absent"))
    assert out.returncode == 2 and "make setup" in out.stderr


def test_rewrite_without_training_says_how(tmp_path, pig_cli):
    out = pig_cli("rewrite", "--user", "demo", "--runs_dir", str(tmp_path), "a sun")
    assert out.returncode == 2 and "Train one first" in out.stderr
