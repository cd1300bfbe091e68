"""Evaluating the population model (issue 21, item 4) on the tiny real models: `pig evaluate` gives a
context-conditioned adapter the user's context (and its controls another user's, or none), compares it with the
generic rewriter (adapter disabled, plain chat) and the user's own per-user adapter; `pig matrix --population` gives
row i user i's context; `benchmarks/first_rewrite.py` times a new user's first rewrite.

The users are copies of the shipped sandbox users under new ids, with distinct contexts written into the context cache
under the keys evaluation computes, so that every rewrite can be recomputed here with the context it must have read.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from tests.conftest import REPO

CONTEXTS = {
    "alpha": ["Alpha chose the warm image twice.", "Alpha likes one clear subject."],
    "beta": ["Beta chose the dark, cool image.", "Beta likes night scenes at the harbour."],
    "gamma": ["Gamma chose the crowded, bright image."],
}
SHIPPED_AS = {"alpha": "demo", "beta": "nightowl", "gamma": "crowd"}
PROMPTS = ["a sun", "a red kite"]


def _reasoner(tiny_models, runs):
    from rl.config import PigArguments
    from rl.reward_stack import build_pigreward

    return build_pigreward(PigArguments(judge_model=tiny_models["vlm"], runs_dir=str(runs)), "cpu")


def _adapter(tiny_models, folder, user_id: str, zero: bool, seed: int, context_source: dict | None = None):
    """A LoRA on the tiny policy (`zero`: B = 0, rewrites as the base), context-conditioned when `context_source`.

    A random LoRA on every attention projection, scaled up (alpha 80 for rank 4): the random tiny policy alone samples
    the same tokens whatever its system message says; this one's rewrites change with the context it reads."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policies.rewriter import CONTEXT_FORMAT, AdapterInfo

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_models["policy"])
    modules = ["q_proj", "k_proj", "v_proj", "o_proj"]
    config = LoraConfig(r=4, lora_alpha=80, target_modules=modules, init_lora_weights=zero)
    get_peft_model(base, config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_models["policy"]).save_pretrained(folder)
    reads = context_source is not None
    AdapterInfo(
        user_id,
        tiny_models["policy"],
        "Rewrite the prompt.",
        max_new_tokens=8,
        context_format=CONTEXT_FORMAT if reads else None,
        context_source=context_source or {},
    ).save(folder)
    return folder


@pytest.fixture(scope="module")
def world(tiny_models, tmp_path_factory):
    """Users alpha, beta, gamma with cached contexts; the population model (a random context-conditioned LoRA,
    runs/population/LATEST) and alpha's per-user adapter (B = 0, prompt only: it rewrites as the generic rewriter)."""
    from policies.rewriter import POPULATION, write_latest
    from reward import context as ctx
    from reward.users import load_user

    root = tmp_path_factory.mktemp("population_eval")
    users_dir, runs = root / "users", root / "runs"
    pig = _reasoner(tiny_models, runs)
    for user_id, texts in CONTEXTS.items():
        shutil.copytree(REPO / "users" / SHIPPED_AS[user_id], users_dir / user_id)
        data = json.loads((users_dir / user_id / "user.json").read_text())
        (users_dir / user_id / "user.json").write_text(json.dumps({**data, "user_id": user_id}))
        user = load_user(str(users_dir / user_id))
        rationales = [ctx.Rationale(i, r.prompt, t) for i, (r, t) in enumerate(zip(user.references, texts))]
        context = ctx.new_context(
            user_id,
            rationales,
            pig.reasoner.model_id,
            pig.reasoner_template.id,
            user.references_hash(),
            pig.reasoner_generation.to_dict(),
            0.0,
        )
        assert context.key == pig.context_key(user)
        ctx.save(context, runs)
    source = {
        "reasoner_model_id": pig.reasoner.model_id,
        "reasoner_template": pig.reasoner_template.id,
        "reasoner_generation": pig.reasoner_generation.to_dict(),
    }
    population = _adapter(tiny_models, runs / POPULATION / "p1" / "adapter", POPULATION, False, 1, source)
    write_latest(runs, POPULATION, population)
    per_user = _adapter(tiny_models, runs / "alpha" / "r1" / "adapter", "alpha", True, 0)
    write_latest(runs, "alpha", per_user)
    return dict(root=root, users_dir=users_dir, runs=runs, population=population, per_user=per_user, source=source)


def _argv(tiny_models, world, *extra) -> list[str]:
    return [
        *("--users_dir", str(world["users_dir"]), "--runs_dir", str(world["runs"])),
        *("--judge_model", tiny_models["vlm"], "--renderer_model", tiny_models["sd"]),
        *("--fidelity_model", tiny_models["minilm"], "--render_steps", "2", "--judge_max_new_tokens", "8"),
        *("--judge_mode", "score", "--eval_prompts", *PROMPTS, "--eval_samples", "2", "--eval_images", "1"),
        *("--bootstrap", "50"),
        *extra,
    ]


def _sampled(rewriter, context, samples: int, seed: int = 1234, base: bool = False) -> list[list[str]]:
    """The rewrites `pig evaluate` must sample, recomputed with `generate_completions` (the serving's own function)."""
    import contextlib

    from policies.rewriter import extract_rewrite, generate_completions

    with rewriter.model.disable_adapter() if base else contextlib.nullcontext():
        answers = generate_completions(
            rewriter.model,
            rewriter.tokenizer,
            PROMPTS,
            max_new_tokens=rewriter.max_new_tokens,
            temperature=rewriter.train_temperature,
            seed=seed,
            n=samples,
            system_prompt=rewriter.system_prompt,
            context=context,
        )
    rewrites = [extract_rewrite(a) for a in answers]
    return [rewrites[i * samples : (i + 1) * samples] for i in range(len(PROMPTS))]


def _texts(block: dict, policy: str, samples: int) -> list[list[str]]:
    cells = block["cells"]
    return [[c[policy] for c in cells[i * samples : (i + 1) * samples]] for i in range(len(PROMPTS))]


# ----------------------------------------------------------------------------------------------------- pure
def test_context_drop_is_the_paired_drop_of_the_win_against_the_original():
    from policy_eval.evaluate_policy import CONTEXT_DROP_FLOOR, context_drop

    cells = [
        {"adapter_vs_original": {"ground_truth": 0.9}, "other_context_vs_original": {"ground_truth": 0.6}},
        {"adapter_vs_original": {"ground_truth": 0.8}, "other_context_vs_original": {"ground_truth": 0.7}},
        {"adapter_vs_original": {"ground_truth": None}, "other_context_vs_original": {"ground_truth": 0.1}},
    ]
    drop = context_drop(cells, "other_context", "ground_truth", resamples=200)
    assert drop["preference"] == pytest.approx(0.2) and drop["cells"] == 2  # (0.3 + 0.1) / 2; undecided left out
    assert drop["floor"] == CONTEXT_DROP_FLOOR == 0.15 and drop["floor_met"] is True
    assert 0.1 - 1e-9 <= drop["ci95"][0] <= drop["ci95"][1] <= 0.3 + 1e-9
    cells[0]["other_context_vs_original"]["ground_truth"] = 0.9  # the control wins as much: it does not read context
    assert context_drop(cells, "other_context", "ground_truth")["floor_met"] is False
    assert context_drop(cells, "other_context", "judge")["preference"] is None  # no judge view in these cells


def test_comparisons_of_a_population_evaluation_are_named_for_the_report():
    from reports.runs import CONTROL_COMPARISONS, PER_USER_COMPARISONS

    assert PER_USER_COMPARISONS == (("adapter", "per_user"), ("per_user", "original"))
    assert {f"{a}_vs_{b}" for a, b in CONTROL_COMPARISONS} == {
        "adapter_vs_other_context",
        "other_context_vs_original",
        "adapter_vs_empty_context",
        "empty_context_vs_original",
    }


# ------------------------------------------------------------------------------------------- pig evaluate
def test_evaluate_gives_the_population_model_the_users_context_and_its_controls_others(
    tiny_models, world, tmp_path, capsys
):
    """--adapter population reads alpha's context; --context_of beta reads beta's; --empty_context none; base is the
    adapter disabled with the plain chat; --against_adapter latest is alpha's own prompt-only adapter (B = 0), so it
    rewrites exactly as the base. Every rewrite is recomputed here with the context it must have read."""
    from policies.rewriter import PromptRewriter
    from policy_eval.evaluate_policy import main

    out = tmp_path / "eval"
    argv = _argv(tiny_models, world, "--user", "alpha", "--adapter", "population", "--against_adapter", "latest")
    assert main([*argv, "--context_of", "beta", "--empty_context", "--eval_out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["adapter"] == str(world["runs"] / "population" / "p1" / "adapter")
    assert results["adapter_reads_context"] is True
    assert results["per_user_adapter"] == str(world["runs"] / "alpha" / "r1" / "adapter")
    assert results["controls"] == {"other_context": "beta", "empty_context": None}
    assert results["policy_context_key"] == results["context_key"]  # the context the judge reads, alpha's

    rewriter = PromptRewriter(world["population"])
    blocks = {b["decoding"]: b for b in results["blocks"]}
    sampled, greedy = blocks["sampled"], blocks["greedy"]
    read = {"adapter": CONTEXTS["alpha"], "other_context": CONTEXTS["beta"], "empty_context": []}
    for policy, context in read.items():
        assert _texts(sampled, policy, 2) == _sampled(rewriter, context, 2), policy
        assert [c[policy] for c in greedy["cells"]] == rewriter.rewrite(PROMPTS, context=context), policy
    assert _texts(sampled, "base", 2) == _sampled(rewriter, None, 2, base=True)
    assert [c["base"] for c in greedy["cells"]] == rewriter.rewrite_base(PROMPTS)
    for policy in ("other_context", "empty_context", "base"):  # the context changes the rewrites
        assert _texts(sampled, "adapter", 2) != _texts(sampled, policy, 2), policy

    for block in (sampled, greedy):
        summary = block["summary"]
        # alpha's own adapter is the base model with the plain chat: the same rewrites, the same images, the same row
        assert [c["per_user"] for c in block["cells"]] == [c["base"] for c in block["cells"]]
        assert summary["per_user_vs_original"]["ground_truth"] == summary["base_vs_original"]["ground_truth"]
        for name in ("adapter_vs_per_user", "adapter_vs_other_context", "adapter_vs_empty_context"):
            assert 0 <= summary[name]["ground_truth"]["preference"] <= 1
            assert summary[name]["judge"]["cells"] == len(block["cells"])
        for control in ("other_context", "empty_context"):
            drop = summary["context_drop"][control]
            expected = (
                summary["adapter_vs_original"]["ground_truth"]["preference"]
                - summary[f"{control}_vs_original"]["ground_truth"]["preference"]
            )
            assert drop["ground_truth"]["preference"] == pytest.approx(expected)  # every truth cell is decided
            assert drop["ground_truth"]["floor_met"] == (expected >= 0.15 - 1e-9)
            assert "judge" in drop
        assert set(summary["pole_shares"]) == {"base", "adapter", "per_user", "other_context", "empty_context"}
    assert "the adapter reads alpha's context in its chat" in printed
    assert "control other_context: the same adapter given beta's context" in printed
    assert "adapter vs other_context" in printed and "per_user vs original" in printed
    assert "with other context: paired drop" in printed and "with empty context: paired drop" in printed


def test_evaluate_without_the_judge_still_gives_the_population_model_its_context(tiny_models, world, tmp_path):
    from policies.rewriter import PromptRewriter
    from policy_eval.evaluate_policy import main

    out = tmp_path / "truth"
    argv = _argv(tiny_models, world, "--user", "beta", "--adapter", str(world["population"]), "--judge", "false")
    assert main([*argv, "--decoding", "greedy", "--eval_out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["context_key"] is None and results["policy_context_key"] is not None and not results["controls"]
    (block,) = results["blocks"]
    expected = PromptRewriter(world["population"]).rewrite(PROMPTS, context=CONTEXTS["beta"])
    assert [c["adapter"] for c in block["cells"]] == expected
    assert "judge" not in block["summary"]["adapter_vs_original"] and "context_drop" not in block["summary"]


def test_evaluate_refuses_controls_it_cannot_run(tiny_models, world):
    from common.errors import ConfigError
    from policy_eval.evaluate_policy import evaluate, parse_args

    plain = _argv(tiny_models, world, "--user", "alpha", "--adapter", str(world["per_user"]))
    with pytest.raises(ConfigError, match="controls of a context-conditioned adapter"):
        evaluate(*parse_args([*plain, "--empty_context"]))
    population = _argv(tiny_models, world, "--user", "alpha", "--adapter", "population")
    with pytest.raises(ConfigError, match="--context_of names the user evaluated"):
        evaluate(*parse_args([*population, "--context_of", "alpha"]))
    with pytest.raises(ConfigError, match="--adapter population"):  # training's option, not ignored
        parse_args([*plain, "--population", "latest"])


def test_a_context_conditioned_adapter_is_never_sampled_without_its_context(world):
    from common.errors import AdapterError
    from policies.rewriter import PromptRewriter
    from policy_eval.evaluate_policy import rewrite_prompts

    rewriter = PromptRewriter(world["population"])
    with pytest.raises(AdapterError, match="reads the user's context"):
        rewrite_prompts(rewriter, PROMPTS, "sampled", 2, 0)
    with pytest.raises(ValueError, match="reads no context"):
        rewrite_prompts(rewriter, PROMPTS, "sampled", 2, 0, context=["x"], base=True)
    plain = PromptRewriter(world["per_user"])
    with pytest.raises(AdapterError, match="trained on the prompt alone"):
        rewrite_prompts(plain, PROMPTS, "sampled", 2, 0, context=["x"])


# ---------------------------------------------------------------------------------------------- pig matrix
def test_population_matrix_gives_row_i_user_is_context(tiny_models, world, tmp_path, capsys):
    from policies.rewriter import PromptRewriter
    from policy_eval.cross_user import main

    out = tmp_path / "matrix"
    users = ["alpha", "beta", "gamma"]
    argv = _argv(tiny_models, world, "--users", *users, "--population_model", "latest", "--out", str(out))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "matrix.json").read_text())
    assert results["population"] == str(world["runs"] / "population" / "p1" / "adapter")
    assert len(results["context_keys"]) == 3 and len(set(results["context_keys"])) == 3
    rewriter = PromptRewriter(world["population"])
    for user_id in users:
        assert results["rewrites"][user_id] == _sampled(rewriter, CONTEXTS[user_id], 2), user_id
    assert results["rewrites"]["generic"] == _sampled(rewriter, None, 2, base=True)
    assert results["rewrites"]["alpha"] != results["rewrites"]["beta"]
    truth = results["ground_truth"]
    for source in (truth, results["judge"]):
        for view in ("vs_original", "vs_generic"):
            assert [len(row) for row in source[view]] == [3, 3, 3]
            assert all(cell["cells"] == 4 for row in source[view] for cell in row)  # 2 prompts x 2 samples
    floor = results["floor"]
    for i, row in enumerate(floor["rows"]):  # the per-user floor, on the population model's rows
        others = [truth["vs_original"][i][j]["preference"] for j in range(3) if j != i]
        assert row["diagonal"] == truth["vs_original"][i][i]["preference"]
        assert row["off_diagonal_mean"] == pytest.approx(sum(others) / 2)
        assert row["specific"] == (row["gap"] >= 0.2 - 1e-9)
    assert "population model " in printed and "rows: context of" in printed
    assert ("floor PASSED" in printed) == floor["passed"]
    assert (out / "matrix.png").stat().st_size > 0


def test_population_matrix_gives_a_model_trained_on_nearest_rationales_the_nearest(tiny_models, world, tmp_path):
    """A population model trained with --context_nearest K reads, in row i, the K rationales of user i nearest each
    prompt, as in training and `pig evaluate` (not user i's whole context)."""
    from policies.rewriter import AdapterInfo, PromptRewriter
    from policy_eval.cross_user import main
    from reward.context import NearestRationales
    from reward.similarity import TextEmbedder
    from reward.users import load_user

    model = tmp_path / "nearest"
    shutil.copytree(world["population"], model)
    info = AdapterInfo.load(model)
    info.context_nearest = 1
    info.context_source = {**info.context_source, "prompt_embedder": tiny_models["minilm"]}
    info.save(model)
    users = ["alpha", "beta"]
    argv = _argv(tiny_models, world, "--users", *users, "--population_model", str(model), "--judge", "false")
    assert main([*argv, "--out", str(tmp_path / "matrix")]) == 0
    results = json.loads((tmp_path / "matrix" / "matrix.json").read_text())
    pig, nearest = _reasoner(tiny_models, world["runs"]), NearestRationales(TextEmbedder(tiny_models["minilm"]))
    rewriter = PromptRewriter(model)
    for user_id in users:
        context = pig.build_context(load_user(str(world["users_dir"] / user_id)))
        read = nearest.select(PROMPTS, context, 1)
        assert all(len(r) == 1 for r in read) and read != [CONTEXTS[user_id]] * len(PROMPTS)
        assert results["rewrites"][user_id] == _sampled(rewriter, read, 2), user_id


def test_population_matrix_refuses_what_it_cannot_compare(tiny_models, world):
    from common.errors import AdapterError, ConfigError
    from policy_eval.cross_user import cross_user_matrix, parse_args

    argv = _argv(tiny_models, world, "--users", "alpha", "beta", "--judge", "false")
    with pytest.raises(ConfigError, match="--population_model and --adapters"):
        parse_args([*argv, "--population_model", "latest", "--adapters", "a", "b"])
    with pytest.raises(ConfigError, match="takes it as --population_model"):  # training's option, not ignored
        parse_args([*argv, "--population", "latest"])
    with pytest.raises(AdapterError, match="reads the prompt alone"):
        cross_user_matrix(*parse_args([*argv, "--population_model", str(world["per_user"])]))
    empty = [*argv, "--runs_dir", str(world["root"] / "no-runs"), "--population_model", "latest"]
    with pytest.raises(FileNotFoundError, match="No population model.*--population <folder of users>"):
        cross_user_matrix(*parse_args(empty))


# --------------------------------------------------------------------------------------------- benchmark
def test_first_rewrite_benchmark_times_a_new_users_context_and_rewrite(world, tmp_path, capsys):
    """A new user (a fresh copy: nothing cached anywhere) gets a context built by the recorded reasoner and one
    rewrite by the population model with it; the figures add up and nothing is written beside the user or runs/."""
    from policies.rewriter import PromptRewriter

    spec = importlib.util.spec_from_file_location("first_rewrite", REPO / "benchmarks" / "first_rewrite.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    newcomer = tmp_path / "newcomer"
    shutil.copytree(REPO / "users" / "demo", newcomer)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    runs_before = sorted(world["runs"].rglob("*"))
    argv = ["--user", str(newcomer), "--runs_dir", str(world["runs"]), "--prompt", "a gem", "--repeats", "1"]
    result = bench.main(argv)
    printed = capsys.readouterr().out
    assert result["adapter"] == str(world["runs"] / "population" / "p1" / "adapter")  # runs/population/LATEST
    assert result["reasoner"] == world["source"]["reasoner_model_id"].rsplit("@", 1)[0]
    parts = ["imports", "read user", "load reasoner", "build context", "load policy", "rewrite"]
    assert list(result["parts_s"]) == parts
    assert all(s >= 0 for s in result["parts_s"].values()) and result["parts_s"]["build context"] > 0
    assert result["cold_s"] == pytest.approx(sum(result["parts_s"].values()))
    assert len(result["warm_repeats_s"]) == 1 and result["warm_s"] > 0
    assert len(result["context"]) == result["references"] == 8  # one rationale per reference, built now
    expected = PromptRewriter(world["population"]).rewrite(["a gem"], context=result["context"])
    assert result["rewrite"] == expected[0]
    assert "cold total" in printed and f"a gem -> {result['rewrite']}" in printed
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing cached beside the user
    assert sorted(world["runs"].rglob("*")) == runs_before
    with pytest.raises(SystemExit, match="reads the prompt alone"):
        bench.main([*argv, "--adapter", str(world["per_user"])])
