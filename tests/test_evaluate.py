"""`pig evaluate` and `pig matrix`: the ground-truth arithmetic with hand-computed literals, then both commands end to
end on tiny real models (LoRA adapters made with PEFT, no training)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO


# ------------------------------------------------------------------------------------------------ pure arithmetic
def test_cell_means_average_each_cells_seeds_and_skip_undecided():
    from policy_eval.evaluate_policy import cell_means

    assert cell_means([1.0, 0.0, None, None, 0.5, None], 2) == [0.5, None, 0.5]
    assert cell_means([0.25, 0.75, 1.0], 1) == [0.25, 0.75, 1.0]
    with pytest.raises(ValueError, match="do not split"):
        cell_means([1.0, 0.0, 1.0], 2)


def test_summarize_mean_interval_and_half_width():
    from policy_eval.evaluate_policy import half_width, summarize

    assert summarize([1.0, 1.0, 1.0, 1.0]) == {"preference": 1.0, "ci95": [1.0, 1.0], "half_width": 0.0, "cells": 4}
    # Two cells 0 and 1: a resample's mean is 0, 0.5 or 1 (1/4, 1/2, 1/4), so the 2.5-97.5% interval is [0, 1].
    assert summarize([0.0, 1.0]) == {"preference": 0.5, "ci95": [0.0, 1.0], "half_width": 0.5, "cells": 2}
    # An undecided cell is left out; one cell has no interval.
    assert summarize([None, 0.25]) == {"preference": 0.25, "ci95": None, "half_width": None, "cells": 1}
    assert summarize([None]) == {"preference": None, "ci95": None, "half_width": None, "cells": 0}
    assert half_width((0.4, 0.6)) == pytest.approx(0.1) and half_width(None) is None


def test_bootstrap_half_width_matches_the_normal_approximation():
    """96 cells whose preferences spread with sd 0.25 (half the cells 0.25, half 0.75): 1.96 * 0.25 / sqrt(96) = 0.050.
    (Trained adapters' cells spread more, hence 8 samples per prompt by default: see
    policy_eval/evaluate_policy.py.)"""
    from policy_eval.evaluate_policy import summarize

    summary = summarize([0.25, 0.75] * 48, resamples=4000)
    assert summary["preference"] == pytest.approx(0.5)
    assert summary["half_width"] == pytest.approx(0.05, abs=0.006)
    assert summarize([0.25, 0.75] * 12)["half_width"] > 0.08  # 24 cells (greedy, one rewrite per prompt): too wide


def test_comparison_summary_and_agreement_by_hand():
    from policy_eval.evaluate_policy import comparison_summary

    truth = [1.0, 1.0, 0.0, 0.5]  # two cells of two image pairs
    judge = [1.0, None, 1.0, 0.0]
    out = comparison_summary(truth, judge, per_cell=2, resamples=200)
    assert out["ground_truth"]["preference"] == pytest.approx((1.0 + 0.25) / 2)
    assert out["judge"]["preference"] == pytest.approx((1.0 + 0.5) / 2)
    # Pairs both decide: (1, 1) agree, (1, 0) disagree; (None, 1) undecided judge, (0, 0.5) tied truth do not count.
    assert out["agreement"] == pytest.approx(0.5)
    assert set(comparison_summary(truth, None, per_cell=2)) == {"ground_truth"}  # --judge false
    assert set(comparison_summary(None, judge, per_cell=2)) == {"judge"}  # a real user


def test_precision_warning_only_for_wide_ground_truth():
    from policy_eval.evaluate_policy import precision_warning

    def summary(width):
        return {"ground_truth": {"preference": 0.6, "ci95": [0.6 - width, 0.6 + width], "half_width": width}}

    assert precision_warning("adapter vs base", summary(0.03)) is None
    assert precision_warning("adapter vs base", summary(0.05)) is None
    line = precision_warning("adapter vs base", summary(0.08))
    assert "adapter vs base" in line and "+-0.080" in line and "raise --eval_samples/--eval_images" in line
    assert "raise --eval_images (greedy" in precision_warning("x", summary(0.08), greedy=True)
    no_interval = {"ground_truth": {"preference": 1.0, "ci95": None, "half_width": None}}
    assert "undefined" in precision_warning("x", no_interval)
    assert precision_warning("x", {"judge": {"half_width": 0.3}}) is None  # the judge's width is not flagged


def test_repeat_share_counts_the_rewrites_the_repetition_gate_penalises():
    from policy_eval.evaluate_policy import repeat_share

    rewrites = ["a sun, in amber tones", "a sun, busy scene, busy framing", "a tent by the sea, the sea at night"]
    assert repeat_share(rewrites, ["a sun", "a sun", "a tent by the sea"]) == pytest.approx(1 / 3)
    assert repeat_share([], []) == 0.0


def test_image_pairs_are_cell_major_with_shared_seeds():
    from policy_eval.evaluate_policy import image_pairs

    pairs = image_pairs(["a", "b"], [["a1", "a2"], ["b1", "b2"]], [["a", "a"], ["b", "b"]], [[1, 2], [3, 4]])
    assert pairs == [
        ("a", ("a1", 1), ("a", 1)),
        ("a", ("a1", 2), ("a", 2)),
        ("a", ("a2", 1), ("a", 1)),
        ("a", ("a2", 2), ("a", 2)),
        ("b", ("b1", 3), ("b", 3)),
        ("b", ("b1", 4), ("b", 4)),
        ("b", ("b2", 3), ("b", 3)),
        ("b", ("b2", 4), ("b", 4)),
    ]


def test_truth_preferences_measure_each_image_once():
    from localmodels import world
    from policy_eval.evaluate_policy import truth_preferences
    from rl.ground_truth import parse_taste, utility

    warm = world.draw_scene(world.Scene("sun", "warm", "bright", "sparse", 0))
    cool = world.draw_scene(world.Scene("sun", "cool", "bright", "sparse", 0))
    images = {("warm", 0): warm, ("cool", 0): cool}
    taste = parse_taste({"prefs": {"palette": "warm"}, "weights": {"palette": 1.0}})
    assert utility(taste, warm) > utility(taste, cool) + 0.02
    utilities: dict = {}
    pairs = [("p", ("warm", 0), ("cool", 0)), ("p", ("cool", 0), ("warm", 0)), ("p", ("warm", 0), ("warm", 0))]
    assert truth_preferences(taste, pairs, images, utilities) == [1.0, 0.0, 0.5]
    assert set(utilities) == {(("warm", 0), None), (("cool", 0), None)}  # one taste for every subject
    # A subject-dependent taste measures an image once per subject it is asked for (sun, box, moon: 3 x 2 images).
    split = parse_taste(
        {"prefs": {}, "weights": {"palette": 1.0}, "by_subject": {"palette": {"round": "warm", "angular": "cool"}}}
    )
    utilities = {}
    pairs = [
        ("a sun", ("warm", 0), ("cool", 0)),
        ("a box", ("warm", 0), ("cool", 0)),
        ("a moon", ("warm", 0), ("cool", 0)),
    ]
    assert truth_preferences(split, pairs, images, utilities) == [1.0, 0.0, 1.0]
    assert len(utilities) == 6


def test_truth_by_kind_splits_each_comparison_by_the_prompts_kind_of_subject():
    from policy_eval.evaluate_policy import truth_by_kind

    cells = [
        {"prompt": "a full moon", "adapter_vs_suffix": {"ground_truth": 1.0}},
        {"prompt": "a beach ball", "adapter_vs_suffix": {"ground_truth": 0.75}},
        {"prompt": "a paper kite", "adapter_vs_suffix": {"ground_truth": 0.5}},
        {"prompt": "an oak tree", "adapter_vs_suffix": {"ground_truth": None}},  # undecided: left out
        {"prompt": "a lighthouse", "adapter_vs_suffix": {"ground_truth": 0.0}},  # no toy-world subject: left out
    ]
    kinds = truth_by_kind(cells, [("adapter", "suffix")], resamples=50)["adapter_vs_suffix"]
    assert list(kinds) == ["angular", "round"]
    assert kinds["round"]["preference"] == 0.875 and kinds["round"]["cells"] == 2
    assert kinds["angular"]["preference"] == 0.5 and kinds["angular"]["cells"] == 1


def test_matrix_floor_by_hand():
    from policy_eval.cross_user import matrix_floor

    floor = matrix_floor(
        [[0.8, 0.5, 0.5], [0.6, 0.7, 0.5], [0.4, 0.4, 0.6]],
        [(0.7, 0.6), (0.8, 0.55), (0.55, 0.48)],
    )
    rows = floor["rows"]
    assert [r["off_diagonal_mean"] for r in rows] == pytest.approx([0.5, 0.55, 0.4])
    assert [r["gap"] for r in rows] == pytest.approx([0.3, 0.15, 0.2])
    assert [r["specific"] for r in rows] == [True, False, True]  # 0.6 - 0.4 is exactly the margin: passes
    assert [r["beats_generic"] for r in rows] == [True, True, False]  # 0.55 > 0.5 but its CI reaches 0.48
    assert floor["passed"] is False
    ok = matrix_floor([[0.9, 0.6], [0.5, 0.75]], [(0.6, 0.52), (0.7, 0.6)])
    assert ok["passed"] is True and ok["margin"] == 0.2
    alone = matrix_floor([[0.9]], [(0.6, None)])  # one user: nothing to be specific against; no CI: not beaten
    assert alone["rows"][0]["specific"] is None and alone["rows"][0]["beats_generic"] is False
    with pytest.raises(ValueError, match="n x n"):
        matrix_floor([[0.5, 0.5]], [(0.5, 0.4)])


def test_adapters_must_share_one_base_and_chat():
    from policies.rewriter import AdapterInfo
    from policy_eval.cross_user import check_shared_base

    a, b = AdapterInfo("demo", "base-x", "Rewrite.", 40), AdapterInfo("nightowl", "base-x", "Rewrite.", 40)
    check_shared_base(["A", "B"], [a, b])
    with pytest.raises(ValueError, match="differ in base_model"):
        check_shared_base(["A", "B"], [a, AdapterInfo("nightowl", "base-y", "Rewrite.", 40)])
    with pytest.raises(ValueError, match="differ in system_prompt"):
        check_shared_base(["A", "B"], [a, AdapterInfo("nightowl", "base-x", "Other.", 40)])


def test_prompt_sets_of_sandbox_and_real_users():
    from policy_eval.evaluate_policy import EvalArguments, prompt_sets
    from reward.users import load_user
    from rl.ground_truth import HELDOUT_PROMPTS

    user = load_user("demo", REPO / "users")
    sets = prompt_sets(user, EvalArguments(), sandbox=True)
    assert sets == {"heldout": list(HELDOUT_PROMPTS), "training": user.training_prompts}
    assert list(prompt_sets(user, EvalArguments(prompt_set="training"), sandbox=True)) == ["training"]
    assert prompt_sets(user, EvalArguments(eval_prompts=["a b", "a b"]), sandbox=True) == {"given": ["a b"]}
    real = prompt_sets(user, EvalArguments(prompt_set="heldout"), sandbox=False)  # a real user's own unseen prompts
    assert real["heldout"] == list(dict.fromkeys(h.prompt for h in user.heldout))
    with pytest.raises(ValueError, match="--decoding"):
        EvalArguments(decoding="beam")


# ------------------------------------------------------------------------------------------------- end to end
def _argv(tiny_models, tmp_path, *extra) -> list[str]:
    return [
        "--users_dir",
        str(REPO / "users"),
        "--runs_dir",
        str(tmp_path / "runs"),
        "--judge_model",
        tiny_models["vlm"],
        "--renderer_model",
        tiny_models["sd"],
        "--fidelity_model",
        tiny_models["minilm"],
        "--render_steps",
        "2",
        "--judge_max_new_tokens",
        "8",
        # Score mode: the random tiny judge's CoT rarely parses; P(Image 1) always decides, so the judge's view exists.
        "--judge_mode",
        "score",
        "--eval_prompts",
        "a sun",
        "a red kite",
        "--eval_samples",
        "2",
        "--eval_images",
        "1",
        *extra,
    ]


def _adapter(tiny_models, folder, user_id: str, zero: bool, seed: int = 0):
    """A LoRA on the tiny policy: `zero` = PEFT's default init (B = 0: rewrites exactly like the base), otherwise
    random A and B (rewrites differently)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policies.rewriter import AdapterInfo

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_models["policy"])
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=zero)
    get_peft_model(base, config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_models["policy"]).save_pretrained(folder)
    AdapterInfo(user_id, tiny_models["policy"], "Rewrite the prompt.", max_new_tokens=8).save(folder)
    return folder


def test_evaluate_sandbox_user_reports_ground_truth_beside_the_judge(tiny_models, tmp_path, capsys):
    """An untrained LoRA (B = 0) rewrites exactly like the base, greedy or sampled with the same seed: adapter vs base
    is a tie to the last digit for the truth and for the two-order judge. Without the judge, the same images give the
    same ground truth."""
    from policy_eval.evaluate_policy import main, parse_args

    adapter = _adapter(tiny_models, tmp_path / "adapter", "demo", zero=True)
    argv = _argv(tiny_models, tmp_path, "--user", "demo", "--adapter", str(adapter))
    assert parse_args(argv)[1].eval_prompts == ["a sun", "a red kite"]
    with pytest.raises(SystemExit):
        parse_args([*argv, "--num_generations", "4"])  # a trainer flag on the command line is an error here
    assert main([*argv, "--eval_out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["taste"] == {
        "prefs": {"palette": "warm", "layout": "sparse"},
        "weights": {"palette": 1.0, "layout": 0.8},
    }
    blocks = {(b["prompt_set"], b["decoding"]): b for b in results["blocks"]}
    assert list(blocks) == [("given", "sampled"), ("given", "greedy")]
    assert [len(blocks[key]["cells"]) for key in blocks] == [4, 2]  # 2 prompts x 2 samples; 2 prompts x 1
    for block in blocks.values():
        assert all(cell["adapter"] == cell["base"] for cell in block["cells"])
        same = block["summary"]["adapter_vs_base"]
        assert same["ground_truth"]["preference"] == 0.5 and same["ground_truth"]["half_width"] == 0.0
        assert same["judge"]["preference"] == pytest.approx(0.5, abs=1e-9)
        assert same["agreement"] is None  # every true preference is a tie: no pair decides
        assert block["summary"]["repeats_adapter"] == block["summary"]["repeats_base"]  # the same rewrites
        for name in ("adapter_vs_original", "base_vs_original"):
            assert 0 <= block["summary"][name]["ground_truth"]["preference"] <= 1
            assert block["summary"][name]["judge"]["cells"] == len(block["cells"])
        assert (tmp_path / "eval" / block["grid"]).is_file()
    # the adapter is the base, so adapter vs original and base vs original are the same pairs
    sampled = blocks["given", "sampled"]["summary"]
    assert sampled["adapter_vs_original"]["ground_truth"] == sampled["base_vs_original"]["ground_truth"]
    assert "[given x sampled] 2 prompts x 2 samples = 4 cells, 1 images each" in printed
    assert "warning:" in printed  # 4 cells cannot give +-0.05

    assert main([*argv, "--judge", "false", "--decoding", "sampled", "--eval_out", str(tmp_path / "truth")]) == 0
    alone = json.loads((tmp_path / "truth" / "results.json").read_text())
    (block,) = alone["blocks"]
    assert "judge" not in block["summary"]["adapter_vs_original"] and alone["judge_metrics"] is None
    assert block["summary"]["adapter_vs_original"]["ground_truth"] == sampled["adapter_vs_original"]["ground_truth"]


def test_matrix_end_to_end(tiny_models, tmp_path, capsys):
    """Two sandbox users: demo's adapter is the generic rewriter itself (B = 0), nightowl's a random LoRA. Every image
    is rendered once and scored under both tastes and both contexts; the floor fails for demo (no better than
    generic)."""
    from policy_eval.cross_user import main

    adapters = [
        _adapter(tiny_models, tmp_path / "demo", "demo", zero=True),
        _adapter(tiny_models, tmp_path / "nightowl", "nightowl", zero=False, seed=1),
    ]
    out = tmp_path / "matrix"
    argv = _argv(tiny_models, tmp_path, "--users", "demo", "nightowl", "--adapters", *map(str, adapters))
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "matrix.json").read_text())
    assert results["users"] == ["demo", "nightowl"] and results["prompts"] == ["a sun", "a red kite"]
    assert results["rewrites"]["demo"] == results["rewrites"]["generic"]
    assert results["rewrites"]["nightowl"] != results["rewrites"]["generic"]
    truth, judge = results["ground_truth"], results["judge"]
    for source in (truth, judge):
        for view in ("vs_original", "vs_generic"):
            assert len(source[view]) == 2 and all(len(row) == 2 for row in source[view])
            assert all(cell["cells"] == 4 for row in source[view] for cell in row)  # 2 prompts x 2 samples
            assert all(0 <= cell["preference"] <= 1 for row in source[view] for cell in row)
    # demo's adapter draws the generic rewriter's images: a tie with it, and its row vs original is generic's.
    assert [cell["preference"] for cell in truth["vs_generic"][0]] == [0.5, 0.5]
    assert [cell["preference"] for cell in judge["vs_generic"][0]] == pytest.approx([0.5, 0.5], abs=1e-9)
    assert truth["vs_original"][0] == truth["generic_vs_original"]
    floor = results["floor"]
    assert floor["rows"][0]["vs_generic"] == 0.5 and floor["rows"][0]["beats_generic"] is False
    assert floor["passed"] is False and "floor FAILED" in printed
    assert results["agreement"]["vs_original"][1][0] is None or 0 <= results["agreement"]["vs_original"][1][0] <= 1
    assert (out / "matrix.png").stat().st_size > 0
    assert results["suffixes"] is None and "vs_suffix" not in truth  # nobody has a fixed suffix yet

    # With every user's fixed suffix, each row also gets adapter vs its suffix and the suffix vs the original. Both
    # users get the same suffix here, so their suffix rows are the same images scored the same way.
    for user_id in ("demo", "nightowl"):
        folder = tmp_path / "runs" / user_id / "suffix"
        folder.mkdir(parents=True)
        (folder / "suffix.json").write_text(json.dumps({"suffix": "in golden tones"}))
    assert main([*argv, "--judge", "false", "--out", str(tmp_path / "m2")]) == 0
    printed = capsys.readouterr().out
    with_suffix = json.loads((tmp_path / "m2" / "matrix.json").read_text())
    assert with_suffix["suffixes"] == {"demo": "in golden tones", "nightowl": "in golden tones"}
    rows = with_suffix["ground_truth"]["suffix_vs_original"]
    assert rows[0] == rows[1] and len(with_suffix["ground_truth"]["vs_suffix"]) == 2
    assert "adapter vs its user's fixed suffix" in printed
    assert main([*argv, "--judge", "false", "--suffix", "none", "--out", str(tmp_path / "m3")]) == 0
    assert json.loads((tmp_path / "m3" / "matrix.json").read_text())["suffixes"] is None


def test_matrix_refuses_a_real_user(tiny_models, tmp_path, demo_user_copy):
    from policy_eval.cross_user import cross_user_matrix, parse_args
    from reward.users import UserDataError

    data = json.loads((demo_user_copy / "user.json").read_text())
    del data["sandbox"]
    (demo_user_copy / "user.json").write_text(json.dumps(data))
    argv = _argv(tiny_models, tmp_path, "--users", "demo", "--adapters", str(tmp_path / "none"))
    argv[argv.index("--users_dir") + 1] = str(demo_user_copy.parent)
    with pytest.raises(UserDataError, match="needs sandbox users.*demo"):
        cross_user_matrix(*parse_args(argv))
