"""Benchmark scripts run end to end on the tiny models (their figures are only meaningful on trained ones)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import load_benchmark


def test_judge_verdict_health_counts_every_verdict(tiny_models, tmp_path, capsys):
    health = load_benchmark("judge_verdict_health")
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
    health = load_benchmark("judge_verdict_health")
    with pytest.raises(SystemExit) as stop:
        health.main(["--model", tiny_models["vlm"], "--users", "demo", "crowd", "--users_dirs", "a", "b", "c"])
    assert stop.value.code == 2
    assert "one per user" in capsys.readouterr().err


def test_judge_context_reading_reports_a_split_context_per_subject_group(tiny_models, capsys):
    """With --splits every row is reported per subject group, and the teacher's reading of a split context names the
    first pole for round subjects and the second for angular ones (and the reverse context the reverse)."""
    reading = load_benchmark("judge_context_reading")
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


@pytest.mark.slow
def test_feedback_loop_clicks_updates_and_follows_a_drift(tiny_models, tmp_path, capsys, monkeypatch):
    """benchmarks/feedback_loop.py on the tiny models: the simulated person's clicks become references through the
    page's functions, every round updates the adapter (each update continues the previous one), the drift run flips
    the taste the measurement reads, and the figures and curve are written."""
    import json

    import yaml

    bench = load_benchmark("feedback_loop")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": tiny_models["policy"],
                "judge_model": tiny_models["vlm"],
                "renderer_model": tiny_models["sd"],
                "fidelity_model": tiny_models["minilm"],
                "render_steps": 4,
                "judge_max_new_tokens": 16,
                "max_completion_length": 12,
                "learning_rate": 1e-2,
                "report_to": [],
            }
        )
    )
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    out = tmp_path / "bench"
    code = bench.main(
        ["--config", str(config), "--out", str(out), "--oneshot", "none", "--rounds", "1", "--drift_rounds", "2"]
        + ["--drift_after", "1", "--choices", "2", "--update_steps", "2", "--heldout_prompts", "2"]
        + ["--start_refs", "2"]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    steady, drift = results["runs"]["steady"]["rounds"], results["runs"]["drift"]["rounds"]
    assert len(steady) == 1 and len(drift) == 2 and (out / "curve.png").stat().st_size > 0
    for row in steady + drift:
        assert 0.0 <= row["adapter_vs_original"]["ground_truth"] <= 1.0
        assert len(row["clicks"]) == 2 and set(row["clicks"]) <= {"left", "right", "skip"}
    assert drift[1]["references"] == 2 + sum(c != "skip" for r in drift for c in r["clicks"])
    user = json.loads((out / "drift" / "users" / "sim-drift" / "user.json").read_text())
    flipped = results["runs"]["drift"]["drift"]
    assert flipped["after_round"] == 1 and drift[1]["taste"] == flipped["new_taste"] != drift[0]["taste"]
    from localmodels.oracle import parse_taste

    assert parse_taste(user["sandbox"]).describe() == flipped["new_taste"]
    from policies.rewriter import AdapterInfo

    second = AdapterInfo.load(Path(drift[1]["adapter"]))
    assert Path(second.init_adapter).resolve() == Path(drift[0]["adapter"]).resolve()
    assert "[drift] the taste flips" in capsys.readouterr().out


def test_judge_truth_by_nearest_reports_each_judge_and_the_teacher(tiny_models, trained_run, tmp_path, capsys):
    """One row per (judge, K) and per (teacher rule, K) on the run's own rollouts; agreement and decided are shares."""
    bench = load_benchmark("judge_truth_by_nearest")
    argv = ["--user", trained_run["user"], "--users_dir", str(trained_run["users"]), "--run", str(trained_run["run"])]
    argv += ["--models", tiny_models["vlm"], "--renderer_model", tiny_models["sd"]]
    argv += ["--embedder", tiny_models["minilm"]]
    bench.main([*argv, "--nearest", "1,0", "--pairs", "3", "--runs_dir", str(tmp_path)])
    row = r"^(.+?)\s+(1|whole)\s+([\d.]+|-)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$"
    rows = re.findall(row, capsys.readouterr().out, re.M)
    assert [(name.strip(), k) for name, k, *_ in rows] == [
        (tiny_models["vlm"], "1"),
        (tiny_models["vlm"], "whole"),
        ("teacher", "1"),
        ("teacher", "whole"),
        ("teacher, prior always", "1"),
        ("teacher, prior always", "whole"),
    ]
    for _, _, agreement, decided, pref, truth in rows:
        assert agreement == "-" or 0 <= float(agreement) <= 1
        assert 0 <= float(decided) <= 1 and 0 <= float(pref) <= 1 and 0 <= float(truth) <= 1


def test_judge_truth_by_nearest_needs_a_run_with_rollouts(tmp_path, capsys):
    bench = load_benchmark("judge_truth_by_nearest")
    with pytest.raises(SystemExit) as stop:
        bench.main(["--user", "tidepool", "--run", str(tmp_path)])
    assert stop.value.code == 2
    assert "rollouts" in capsys.readouterr().err


def test_judge_injection_prints_every_condition_per_judge(tiny_models, capsys):
    injection = load_benchmark("judge_injection")
    injection.main(["--models", tiny_models["vlm"], "--pairs", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {tiny_models['vlm']} |")]
    assert [row.split(" | ")[1] for row in rows] == list(injection.CONDITIONS)
    with pytest.raises(SystemExit):
        injection.main(["--pairs", "0"])
    assert "--pairs 0" in capsys.readouterr().err


def test_nearest_same_kind_prints_a_share_per_k(tiny_models, capsys):
    nearest = load_benchmark("nearest_same_kind")
    nearest.main(["--references", "4", "--nearest", "1,4", "--users", "1", "--embedder", tiny_models["minilm"]])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| 4 |")]
    assert [r[1] for r in rows] == ["training", "held-out"]
    # with K = all four choices, half are about each kind (the choices alternate between round and angular)
    assert all(0.0 <= float(r[2]) <= 1.0 and float(r[3].rstrip(" |")) == 0.5 for r in rows)
    with pytest.raises(SystemExit, match="--nearest '0'"):
        nearest.main(["--nearest", "0"])


def test_suffix_ceiling_compares_the_ideal_split_with_every_fixed_suffix(tiny_models, tmp_path, capsys):
    """tidepool (warm for round subjects, cool for angular ones): the ideal rewrite names the pole of each prompt's
    kind, both fixed suffixes are compared, and the rows carry one figure per kind of subject."""
    ceiling = load_benchmark("suffix_ceiling")
    argv = ["--user", "tidepool", "--renderer_model", tiny_models["sd"], "--runs_dir", str(tmp_path)]
    ceiling.main([*argv, "--phrasings", "1", "--eval_images", "1", "--render_steps", "2"])
    out = capsys.readouterr().out
    counts = re.search(r"held-out prompts: (\d+) \((\d+) angular, (\d+) round\)", out)
    total, angular, round_ = (int(c) for c in counts.groups())
    assert total == angular + round_ == 3 * round_  # a third of the toy world's subjects are round
    rows = [line for line in out.splitlines() if " vs " in line and "[" in line and not line.startswith("ceiling")]
    assert [r.split("  ")[0] for r in rows] == [
        "ideal split vs plain prompt",
        "ideal split vs 'in warm tones'",
        "ideal split vs 'in cool tones'",
        "'in warm tones' vs plain prompt",
        "'in cool tones' vs plain prompt",
    ]
    assert all(len(re.findall(r"\d\.\d\d \[", r)) == 3 for r in rows)  # all, angular, round
    assert re.search(r"ceiling of any rewriter vs the best fixed suffix: \d\.\d\d \[", out)
    from localmodels.demo_user import parse_taste_spec

    two_axes = ceiling.fixed_choices(parse_taste_spec("light=bright:0.6,layout=busy/sparse:1.0"))
    assert {ceiling.tail(c, 0) for c in two_axes} == {
        "bright lighting, sparse composition",
        "bright lighting, busy composition",
        "dark lighting, sparse composition",
        "dark lighting, busy composition",
    }
    with pytest.raises(SystemExit, match="--phrasings 4"):
        ceiling.main([*argv, "--phrasings", "4"])


def test_judge_sft_step_times_the_three_ways_and_pads_less_by_length(capsys):
    step = load_benchmark("judge_sft_step")
    step.main(["--examples", "64", "--steps", "2", "--rounds", "1", "--batch_size", "8"])
    rows = {
        line[:28].strip(): line[28:].split()
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(("full", "answer"))
    }
    assert list(rows) == ["full logits, shuffled", "answer logits, shuffled", "answer logits, by length"]
    assert rows["full logits, shuffled"][1] == "1.00x"
    assert float(rows["answer logits, by length"][2]) < float(rows["answer logits, shuffled"][2])
    with pytest.raises(SystemExit):
        step.main(["--examples", "4", "--steps", "2", "--batch_size", "8"])


def test_context_evidence_counts_what_each_reading_gets_right_and_wrong():
    evidence = load_benchmark("context_evidence").evidence
    wanted = [{"palette": "warm", "layout": "sparse"}] * 4
    readings = [
        {"palette": "warm", "layout": "sparse"},  # all of it
        {"palette": "warm", "light": "dark"},  # half of it, and a cue the user does not weigh
        {"palette": "cool"},  # the opposite pole
        {},  # nothing
    ]
    assert evidence(readings, wanted) == {"recall": (1 + 0.5 + 0 + 0) / 4, "false_cue": 2 / 4, "nothing": 1 / 4}


def test_context_evidence_prints_a_row_per_user_and_k(tiny_models, tmp_path, capsys):
    bench = load_benchmark("context_evidence")
    argv = ["--users", "tidepool", "demo", "--runs_dir", str(tmp_path), "--judge_model", tiny_models["vlm"]]
    assert bench.main([*argv, "--fidelity_model", tiny_models["minilm"], "--nearest", "0,3"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(("tidepool ", "demo "))]
    assert [(r[0], r[-4]) for r in rows] == [("tidepool", "0"), ("tidepool", "3"), ("demo", "0"), ("demo", "3")]
    assert all(0.0 <= float(x) <= 1.0 for r in rows for x in r[-3:])
    with pytest.raises(SystemExit):
        bench.main([*argv, "--nearest", "-1"])


def test_rollout_cues_counts_cues_and_all_right_rewrites_by_stretch(tmp_path, capsys):
    """demo wants warm and sparse: of four rewrites, one names both (all right), one names warm and busy (a wrong
    pole), one names nothing, one names sparse alone (not all)."""
    import json

    cues = load_benchmark("rollout_cues")
    run = tmp_path / "demo" / "default-s0"
    (run / "rollouts").mkdir(parents=True)
    rows = [
        {"step": 0, "prompt": "a sun", "rewrite": "a sun, warm tones, sparse framing", "preference": 1.0},
        {"step": 0, "prompt": "a sun", "rewrite": "a sun, warm tones, busy scene", "preference": 0.5},
        {"step": 2, "prompt": "a box", "rewrite": "a box", "preference": 0.0},
        {"step": 2, "prompt": "a box", "rewrite": "a box, sparse framing", "preference": 0.5},
    ]
    for row in rows:
        row.update(fidelity=0.0, repetition=0.0, ground_truth=row["preference"])
    (run / "rollouts" / "rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cues.main([str(run), "--users_dir", "users", "--stretches", "2"]) == 0
    out = capsys.readouterr().out
    figures = {
        label.strip(): (float(c), float(a), float(p))
        for label, c, a, p in re.findall(
            r"^  (.+?)\s+n=\d+\s+cues/rewrite (\S+)\s+all right (\S+)\s+preference (\S+)", out, re.M
        )
    }
    assert figures["steps 0-0"] == (2.0, 0.5, 0.75)
    assert figures["steps 2-2"] == (0.5, 0.0, 0.25)
    assert figures["all steps"] == (1.25, 0.25, 0.5)
    with pytest.raises(SystemExit, match="No rollout log"):
        cues.main([str(tmp_path / "demo" / "none")])
