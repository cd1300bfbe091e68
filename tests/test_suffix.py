"""The fixed-suffix baseline (`pig suffix`): candidate tails, the verdict budget, successive halving, and `pig
evaluate` comparing an adapter with it."""

from __future__ import annotations

import json

import pytest

from common.errors import ConfigError
from policies.suffix import apply_suffix, load_suffix
from policy_eval.suffix import candidate_phrases, combinations_of, halving_plan, tail_of, training_verdicts


@pytest.mark.parametrize(
    "rewrite, prompt, tail",
    [
        ("a sun, in golden tones", "a sun", "in golden tones"),
        ("A Sun, in golden tones, lone framing.", "a sun", "in golden tones, lone framing"),
        ("the bright sun, icy blue", "a sun", "icy blue"),  # after the first comma
        ("a glowing orb, the sun at dusk", "a sun", None),  # the tail names the subject again
        ("a kite, many kites", "a kite", None),  # a tail about the subject is no suffix for the others
        ("a sun", "a sun", None),
        ("a sun in golden tones", "a house", None),  # neither starts with the prompt nor has a comma
    ],
)
def test_tail_of(rewrite, prompt, tail):
    assert tail_of(rewrite, prompt) == tail


def test_candidates_are_the_most_frequent_phrases_then_their_combinations():
    prompts = ["a sun", "a house"]
    rewrites = [
        ["a sun, warm light, sparse", "a sun, icy blue", "a sun, warm light, 30"],
        ["a house, icy blue, sparse", "a house, warm light", "a house, the house at night"],
    ]
    assert candidate_phrases(rewrites, prompts, 3) == ["warm light", "sparse", "icy blue"]
    assert candidate_phrases(rewrites, prompts, 1) == ["warm light"]
    assert combinations_of(["a", "b", "c", "d", "e"]) == [
        "a",
        "a, b",
        "a, c",
        "a, d",
        "b, c",
        "b, d",
        "c, d",
        "a, b, c",
    ]
    assert combinations_of(["a", "b"]) == ["a", "a, b"]


def test_apply_suffix():
    assert apply_suffix("a sun", "in golden tones") == "a sun, in golden tones"
    assert apply_suffix(" a sun, ", "icy blue") == "a sun, icy blue"


def test_the_budget_is_a_default_training_runs_verdicts():
    from rl.config import default_recipe

    recipe = default_recipe("grpo")
    # 80 steps / 2 iterations = 40 judged batches of 2 groups of 4; per group 4 vs the original + 6 pairs, on 2 image
    # seeds, in both orders.
    assert training_verdicts(recipe, "both", 2, True) == 40 * 2 * (4 + 6) * 2 * 2 == 3200
    assert training_verdicts(recipe, "original", 2, False) == 40 * 2 * 4 * 2
    assert training_verdicts({**recipe, "num_iterations": 1}, "group", 1, True) == 80 * 2 * 6 * 2


def test_halving_plan_spends_at_most_the_budget():
    plan = halving_plan(16, 12, 3200, 2)
    assert plan == [(16, 2), (8, 4), (4, 8), (2, 16)]
    assert sum(alive * seeds * 12 * 2 for alive, seeds in plan) <= 3200
    assert halving_plan(1, 12, 100, 2) == [(1, 4)]
    assert halving_plan(3, 12, 400, 2) == [(3, 2), (2, 4)]
    with pytest.raises(ConfigError, match="raise the budget"):
        halving_plan(16, 12, 100, 2)


def test_load_suffix_names_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match="run `pig suffix"):
        load_suffix(tmp_path)
    (tmp_path / "suffix.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_suffix(tmp_path)
    (tmp_path / "suffix.json").write_text(json.dumps({"suffix": "  "}))
    with pytest.raises(ConfigError, match="non-empty 'suffix'"):
        load_suffix(tmp_path / "suffix.json")
    (tmp_path / "suffix.json").write_text(json.dumps({"suffix": "icy blue"}))
    assert load_suffix(tmp_path) == "icy blue"


def test_suffix_search_and_evaluate_end_to_end(tiny_models, tmp_path, capsys):
    """On the tiny models (score mode): the search judges the given vocabulary within its budget, keeps the best by
    the judge, and `pig evaluate --suffix` adds adapter vs suffix and suffix vs original to every block, with the
    language figures per subject group."""
    from policy_eval import suffix as search_module
    from policy_eval.evaluate_policy import main as evaluate_main
    from tests.test_evaluate import _adapter, _argv

    argv = [
        *_argv(tiny_models, tmp_path)[: _argv(tiny_models, tmp_path).index("--eval_prompts")],
        "--user",
        "demo",
        "--candidates",
        "in golden tones",
        "icy blue",
        "dark night",
        "--verdict_budget",
        "400",
        "--suffix_out",
        str(tmp_path / "suffix"),
    ]
    assert search_module.main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "suffix" / "suffix.json").read_text())
    assert "best fixed suffix" in printed and "a default training run spends 3200" in printed
    assert result["verdicts"] <= 400 and result["verdict_budget"] == 400
    assert result["context_nearest"] == 0  # the judge read the whole context, and the file says so
    assert {row["suffix"] for row in result["candidates"]} == {"in golden tones", "icy blue", "dark night"}
    (plan,) = result["plan"]  # a given list is judged in one stage
    finalists = [row for row in result["candidates"] if row["reached"].endswith(f"round {len(plan)} of {len(plan)}")]
    assert result["suffix"] == max(finalists, key=lambda row: row["judge"])["suffix"]
    assert all(row["ground_truth"] is not None for row in result["candidates"])  # demo is a sandbox user
    # 12 training prompts x 2 orders per candidate and image seed
    assert result["verdicts"] == sum(p["candidates"] * p["image_seeds"] * 12 * 2 for p in plan)

    adapter = _adapter(tiny_models, tmp_path / "adapter", "demo", zero=True)
    eval_argv = _argv(tiny_models, tmp_path, "--user", "demo", "--adapter", str(adapter), "--decoding", "sampled")
    assert evaluate_main([*eval_argv, "--suffix", str(tmp_path / "suffix"), "--eval_out", str(tmp_path / "e")]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["suffix"] == result["suffix"]
    (block,) = results["blocks"]
    summary = block["summary"]
    assert {"adapter_vs_suffix", "suffix_vs_original", "fidelity_suffix", "repeats_suffix"} <= set(summary)
    assert set(summary["pole_shares"]) == {"base", "adapter", "suffix"}
    assert set(summary["pole_shares"]["suffix"]) == {"round", "angular"}  # "a sun" and "a red kite"
    assert "adapter vs suffix" in printed and f"fixed-suffix baseline: {result['suffix']!r}" in printed
    # --suffix none leaves the baseline out
    assert evaluate_main([*eval_argv, "--suffix", "none", "--eval_out", str(tmp_path / "e2")]) == 0
    plain = json.loads((tmp_path / "e2" / "results.json").read_text())
    assert plain["suffix"] is None and "adapter_vs_suffix" not in plain["blocks"][0]["summary"]


def test_a_suffix_searched_under_another_reading_of_the_context_is_flagged(tmp_path, capsys):
    """`pig evaluate --suffix`: a suffix chosen by a judge that read another number of nearest rationales is used,
    with a warning that names both readings and the fix; a matching or older (unrecorded) search gets none."""
    from policy_eval.evaluate_policy import resolve_suffix

    folder = tmp_path / "suffix"
    folder.mkdir()
    (folder / "suffix.json").write_text(json.dumps({"suffix": "in blue tones", "context_nearest": 2}))
    assert resolve_suffix(str(folder), tmp_path, context_nearest=0) == "in blue tones"
    err = capsys.readouterr().err
    assert "the 2 nearest rationales" in err and "the whole context" in err and "--context_nearest 0" in err
    assert resolve_suffix("auto", folder, context_nearest=2) == "in blue tones"
    assert capsys.readouterr().err == ""
    (folder / "suffix.json").write_text(json.dumps({"suffix": "in blue tones"}))
    assert resolve_suffix(str(folder), tmp_path, context_nearest=3) == "in blue tones"
    assert capsys.readouterr().err == ""
