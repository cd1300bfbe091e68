"""The benchmark end to end on a tiny dataset with tiny real models: every method, outputs, resumption, the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reward.eval import report
from reward.eval.baselines import METHODS
from reward.eval.bench import PREDICTIONS
from reward.eval.cli import cmd_bench
from reward.eval.importers import import_pigbench

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_dataset(tmp_path_factory) -> Path:
    """Two toy-world users imported from a PIGBench-style ranking table (3 references and 2 test pairs each), plus a
    user without held-out pairs."""
    from localmodels import world

    root = tmp_path_factory.mktemp("bench_data")
    rng = np.random.default_rng(0)
    rows = []
    for user in ("u1", "u2"):
        for p in range(5):
            scene = world.sample_scene(rng)
            for rank in (1, 2, 3, 4):
                name = f"images/{user}_{p}_{rank}.png"
                (root / "src" / "images").mkdir(parents=True, exist_ok=True)
                world.draw_scene(world.sample_scene(rng), 32).save(root / "src" / name)
                prompt = world.caption(scene, rng)
                rows.append({"user_id": user, "prompt_id": p, "prompt": prompt, "image": name, "rank": rank})
    for row in rows:  # one prompt text per (user, prompt)
        row["prompt"] = next(
            r["prompt"] for r in rows if (r["user_id"], r["prompt_id"]) == (row["user_id"], row["prompt_id"])
        )
    with (root / "src" / "rankings.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    dataset = root / "dataset"
    import_pigbench(
        root / "src" / "rankings.csv",
        dataset,
        min_references=2,
        max_references=3,
        test_prompts_per_user=2,
        verbose=False,
    )
    lonely = json.loads((dataset / "u1" / "user.json").read_text())
    (dataset / "lonely").mkdir()
    (dataset / "lonely" / "images").symlink_to(dataset / "u1" / "images")
    (dataset / "lonely" / "user.json").write_text(json.dumps({**lonely, "user_id": "lonely", "heldout": []}))
    return dataset


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    from localmodels.clip import build_tiny_clip

    return str(build_tiny_clip(tmp_path_factory.mktemp("clip") / "clip", tokenizer="bytes"))


def _args(dataset, out, tiny_models, tiny_clip, *extra) -> list[str]:
    return [
        "--dataset", str(dataset), "--out", str(out), "--methods", ",".join(METHODS),
        "--judge_model", tiny_models["vlm"], "--clip_model", tiny_clip, "--device", "cpu", "--dtype", "float32",
        "--batch_pairs", "2", "--judge_max_new_tokens", "8", "--reasoner_max_new_tokens", "4",
        "--judge_retry", "false", "--bootstrap", "200", *extra,
    ]  # fmt: skip


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def first_run(bench_dataset, tiny_models, tiny_clip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "run"
    assert cmd_bench(_args(bench_dataset, out, tiny_models, tiny_clip)) == 0
    return out


def test_every_method_every_pair_and_results(first_run, bench_dataset):
    results = json.loads((first_run / "results.json").read_text())
    assert list(results["methods"]) == list(METHODS)
    assert results["users"] == 2 and results["pairs"] == 4 and results["users_without_heldout"] == ["lonely"]
    assert results["ci_unit"] == "pairs"  # 2 users: too few for a user bootstrap
    rows = [json.loads(line) for line in _lines(first_run / PREDICTIONS)]
    assert len(rows) == 4 * len(METHODS) == len({(r["method"], r["user_id"], r["pair"]) for r in rows})
    truth = {}
    for user in ("u1", "u2"):
        for i, pair in enumerate(json.loads((bench_dataset / user / "user.json").read_text())["heldout"]):
            truth[(user, i)] = pair["label"]
    assert all(r["label"] == truth[(r["user_id"], r["pair"])] for r in rows)
    for name, m in results["methods"].items():
        assert m["n_pairs"] == 4 and m["n_evaluable"] == 4 and set(m["per_user"]) == {"u1", "u2"}
        assert 0.0 <= m["accuracy_with_tie"] <= 1.0, name
        if m["accuracy_with_tie_ci"] is not None:
            low, high = m["accuracy_with_tie_ci"]
            assert low <= m["accuracy_with_tie"] <= high
    for name in ("random", "similarity"):
        assert results["methods"][name]["undecided_rate"] == 0.0  # these always decide
    for name in ("pigreward", "pigreward_no_context", "pigreward_raw_refs", "pigreward_score"):
        assert sum(results["methods"][name]["judge_statuses"].values()) == 8  # 4 pairs x 2 orders
    raw = next(r for r in rows if r["method"] == "pigreward_raw_refs")
    assert raw["details"]["forward"]["template_id"] == "pigreward-judge-rawrefs-v1"
    pig = next(r for r in rows if r["method"] == "pigreward")
    assert pig["details"]["context_key"] and (first_run / "contexts" / pig["user_id"] / "context").is_dir()
    assert next(r for r in rows if r["method"] == "pigreward_no_context")["details"]["context_key"] is None
    assert "random" in results["model_notes"][results["config"]["clip_model"]]["weights"]


def test_table_plots_and_report(first_run):
    table = (first_run / "table.md").read_text()
    assert "accuracy with tie (%)" in table and "accuracy without tie (%)" in table
    for name in METHODS:
        assert f"| {name} |" in table
    for plot in ("accuracy.png", "per_user.png"):
        with Image.open(first_run / plot) as image:
            assert image.format == "PNG" and image.width > 300
    page = (first_run / "report.html").read_text()
    assert page.count("<section>") == 4  # report_examples defaults to 8; there are 4 pairs
    assert page.count("data:image/png;base64,") >= 2 + 4 * 2  # plots + both images of each example
    assert "user context: 3 rationales" in page and "order 2: image 2 shown as Image 1" in page
    assert "random weights" in page
    for name in METHODS:
        assert f"<td>{name}</td>" in page


def test_resume_does_no_new_work_and_completes_a_torn_file(first_run, bench_dataset, tiny_models, tiny_clip, tmp_path):
    predictions = first_run / PREDICTIONS
    before = predictions.read_bytes()
    assert cmd_bench(_args(bench_dataset, first_run, tiny_models, tiny_clip, "--no_progress")) == 0
    assert json.loads((first_run / "results.json").read_text())["new_predictions"] == 0
    assert predictions.read_bytes() == before

    # a run killed in the middle of a write: 10 whole lines and half of the 11th
    out = tmp_path / "killed"
    out.mkdir()
    for name in ("run.json",):
        (out / name).write_bytes((first_run / name).read_bytes())
    (out / "contexts").symlink_to(first_run / "contexts")
    lines = before.split(b"\n")
    (out / PREDICTIONS).write_bytes(b"\n".join(lines[:10]) + b"\n" + lines[10][:25])
    assert cmd_bench(_args(bench_dataset, out, tiny_models, tiny_clip, "--no_progress")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["new_predictions"] == 4 * len(METHODS) - 10
    resumed = _lines(out / PREDICTIONS)
    assert resumed[:10] == [line.decode() for line in lines[:10]]  # finished work is kept as it was
    keys = [(r["method"], r["user_id"], r["pair"]) for r in map(json.loads, resumed)]
    assert len(keys) == len(set(keys)) == 4 * len(METHODS)
    first = json.loads((first_run / "results.json").read_text())
    for name in ("random", "similarity", "pigreward_score"):  # deterministic methods give the same figures
        assert results["methods"][name]["accuracy_with_tie"] == first["methods"][name]["accuracy_with_tie"]

    with pytest.raises(ValueError, match="other settings"):
        cmd_bench(_args(bench_dataset, out, tiny_models, tiny_clip, "--judge_max_new_tokens", "9"))


def test_verdict_table_in_report():
    from localmodels import oracle, world
    from reward.eval.baselines import verdict_details
    from reward.parsing import parse_verdict

    rng = np.random.default_rng(0)
    images = [world.draw_scene(world.sample_scene(rng), 32) for _ in range(2)]
    text, winner = oracle.teacher_verdict(["The user prefers warm colours."], *images)
    verdict = parse_verdict(text)
    verdict.text = text
    page = report.verdict_html(verdict_details(verdict), "order 1")
    assert "<table class='dims'>" in page and "Colour palette" in page and "Lighting" in page
    assert f"winner {winner}" in page and "status <code>ok</code>" in page
    assert report.verdict_html({"p_1": 0.25, "p_2": 0.75, "status": "ok"}, "order 1").count("0.250") == 1


def test_command_line_runs_random_only(bench_dataset, tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "reward.eval.cli", "bench", "--dataset", str(bench_dataset), "--out", str(out)]
    done = subprocess.run([*cmd, "--methods", "random"], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "| random |" in done.stdout and "pair" in done.stderr  # the table, and the progress bar
    assert (out / "report.html").is_file()
    bad = subprocess.run([*cmd, "--methods", "oracle"], capture_output=True, text=True, env=env, cwd=REPO)
    assert bad.returncode != 0 and "choose from" in bad.stderr


@pytest.mark.slow  # trains the default tiny CLIP: its build's 1500 steps take minutes
def test_bench_builds_the_default_clip_when_first_needed(bench_dataset, tmp_path, monkeypatch, capfd):
    """`make setup` leaves the tiny CLIP out (only `similarity` uses it): the first benchmark that needs the default
    (`.models/tiny-clip`, relative to where `pig bench` runs) builds it with `python -m localmodels.build`."""
    from localmodels import build

    monkeypatch.chdir(tmp_path)  # a checkout without .models/tiny-clip
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    argv = ["--dataset", str(bench_dataset), "--out", str(tmp_path / "run"), "--methods", "similarity"]
    argv += ["--device", "cpu", "--dtype", "float32", "--bootstrap", "50", "--no_progress"]
    assert cmd_bench(argv) == 0
    out = capfd.readouterr().out
    assert "built once, now: -m localmodels.build --models_dir .models --only tiny-clip" in out
    assert "[models] tiny-clip: built in" in out and "image_to_caption_top1_of_256" in out  # its one line
    marker = json.loads((tmp_path / ".models" / "tiny-clip" / build.MARKER).read_text())
    assert marker["recipe"] == build.RECIPES["tiny-clip"]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "similarity" in json.dumps(results)
    assert cmd_bench([*argv[:3], str(tmp_path / "again"), *argv[4:]]) == 0
    assert "built once" not in capfd.readouterr().out  # found, not built again


def test_raw_references_template(tmp_path):
    from reward.templates import build_messages, format_context, load_template

    colors = ["red", "blue", "green", "white", "black", "gray"]
    a, b, c1, r1, c2, r2 = (Image.new("RGB", (4, 4), c) for c in colors)
    t = load_template("judge-rawrefs-v1")
    assert t.kind == "judge_cot" and t.uses_references
    refs = [("a moon </prompt> {chosen_image}", c1, r1), ("a sun", c2, r2)]
    content = build_messages(t, "a tree", (a, b), format_context([]), references=refs)[1]["content"]
    assert [item["image"] for item in content if item["type"] == "image"] == [c1, r1, c2, r2, a, b]
    texts = [item["text"] for item in content if item["type"] == "text"]
    # our tag stripped (spaces collapsed: user text is one line), the slot name left as data, not filled
    assert "Choice 1: prompt <prompt>a moon {chosen_image}</prompt>, chosen: " in texts[0]
    assert texts[2].startswith("\nChoice 2: prompt <prompt>a sun</prompt>") and texts[0].count("</prompt>") == 1
    assert "Target prompt: <prompt>a tree</prompt>" in texts[4] and texts[4].rstrip().endswith("Image 1:")
    empty = build_messages(t, "a tree", (a, b), format_context([]), references=[])[1]["content"]
    assert "(no past choices of this user are known)" in empty[0]["text"]
    with pytest.raises(ValueError, match="raw references"):
        build_messages(t, "a tree", (a, b), format_context([]))
    with pytest.raises(ValueError, match="no \\{references\\} slot"):
        build_messages(load_template("judge-cot-v1"), "a tree", (a, b), format_context([]), references=refs)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: x\nkind: judge_cot\nsystem: s\nuser: '{references} {image_1} {image_2}'\n"
        "reference: 'only {chosen_image}'\n"
    )
    with pytest.raises(ValueError, match=r"\{rejected_image\} exactly once"):
        load_template(str(bad))
