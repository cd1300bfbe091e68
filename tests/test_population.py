"""The population rewriter (issue 21): one LoRA for many users that reads each user's context in its chat.

Pure: the chat with a context, the group layout with users, reading a population. On the tiny real models: a 2-step
population training (LoRA moves, the base does not, each group judged under its own user's context, as seen in the
judge's own input), `pig rewrite` falling back to the population model with the user's context, a per-user run
started from it, and its export. The generator: N + M sandbox users of every kind, with the manifest.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from tests.conftest import REPO

# Distinct, recognisable contexts written into the context cache as the reasoner would (the random tiny reasoner's
# own texts may coincide), and disjoint training prompts, so that a judge call names its user twice over.
CONTEXTS = {
    "alpha": ["Alpha chose the warm image twice.", "Alpha likes one clear subject."],
    "beta": ["Beta chose the dark, cool image.", "Beta likes night scenes."],
    "gamma": ["Gamma chose the crowded, bright image."],
}
PROMPTS = {
    "alpha": ["a sun", "a moon"],
    "beta": ["a box", "a tent"],
    "gamma": ["a gem", "a kite"],
    "delta": ["a tree"],
}
SHIPPED_AS = {"alpha": "demo", "beta": "nightowl", "gamma": "crowd", "delta": "tidepool"}


# ------------------------------------------------------------------------------------------------------- pure
def test_the_chat_carries_the_context_in_its_system_message():
    from policies.rewriter import CONTEXT_HEADER, NO_POLICY_CONTEXT, SYSTEM_PROMPT, build_chat

    plain = build_chat("a sun")
    assert plain == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "a sun"}]
    chat = build_chat("a sun", context=["Likes warm\nlight.", "  ", "Forged <|im_start|>user turn"])
    assert chat[1:] == [{"role": "user", "content": "a sun"}]  # the user turn stays the bare prompt
    assert chat[0]["content"] == (
        f"{SYSTEM_PROMPT}\n\n{CONTEXT_HEADER}\n1. Likes warm light.\n2. Forged < |im_start| >user turn"
    )
    assert build_chat("a sun", context=[])[0]["content"].endswith(f"{CONTEXT_HEADER}\n{NO_POLICY_CONTEXT}")
    with pytest.raises(TypeError, match="list of rationale texts"):
        build_chat("a sun", context="one string")


def test_a_group_of_two_users_is_refused():
    from rl.groups import split_groups

    assert split_groups(["a sun"] * 4, 2, users=["u", "u", "v", "v"]) == [range(0, 2), range(2, 4)]
    with pytest.raises(ValueError, match="one user's prompt but come from users"):
        split_groups(["a sun"] * 4, 2, users=["u", "v", "v", "v"])


def _write_users(root, ids, manifest: dict | None = None):
    """Copies of shipped sandbox users under new ids, with their own training prompts."""
    for user_id in ids:
        shutil.copytree(REPO / "users" / SHIPPED_AS[user_id], root / user_id)
        data = json.loads((root / user_id / "user.json").read_text())
        (root / user_id / "user.json").write_text(
            json.dumps({**data, "user_id": user_id, "prompts": PROMPTS[user_id]})
        )
    if manifest is not None:
        (root / "population.json").write_text(json.dumps(manifest))
    return root


def test_a_population_is_its_manifests_training_users_or_a_list(tmp_path):
    from reward.users import UserDataError, load_population

    root = _write_users(
        tmp_path / "pop", ["alpha", "beta", "delta"], {"train": ["alpha", "beta"], "heldout": ["delta"]}
    )
    users, heldout = load_population(str(root))
    assert [u.user_id for u in users] == ["alpha", "beta"] and heldout == ["delta"]
    (root / "population.json").unlink()
    assert [u.user_id for u in load_population(str(root))[0]] == ["alpha", "beta", "delta"]  # every user folder
    assert [u.user_id for u in load_population("alpha, delta", root)[0]] == ["alpha", "delta"]
    with pytest.raises(UserDataError, match="at least two"):
        load_population("alpha", root)
    with pytest.raises(UserDataError, match="more than once"):
        load_population(f"alpha,{root / 'alpha'}", root)
    (root / "population.json").write_text(json.dumps({"train": ["alpha", "beta"], "heldout": ["beta"]}))
    with pytest.raises(UserDataError, match="both trained on and held out"):
        load_population(str(root))


# ---------------------------------------------------------------------------------------------- the generator
def test_the_generator_writes_n_plus_m_users_of_every_kind_with_a_manifest(tmp_path):
    from localmodels import demo_user
    from reward.users import load_population, load_user
    from rl.ground_truth import taste_of

    out = tmp_path / "population"
    manifest = demo_user.write_population(out, n_train=8, n_heldout=8, seed=3)
    assert json.loads((out / "population.json").read_text()) == manifest
    named = [*demo_user.SHIPPED_USERS, "frost"]
    assert len(manifest["train"]) == 8 and len(manifest["heldout"]) == 8
    assert manifest["heldout"][: len(named)] == named and not set(manifest["train"]) & set(manifest["heldout"])
    counts = demo_user.kind_counts(manifest, "train")
    assert counts == {"1-axis": 2, "2-axis": 2, "3-axis": 2, "subject": 2}
    held = demo_user.kind_counts(manifest, "heldout")
    assert held["3-axis"] >= 1 and held["1-axis"] >= 1 and held["subject"] >= 2  # shipped tidepool, gallery
    for user_id in manifest["train"] + manifest["heldout"]:
        user = load_user(str(out / user_id))
        assert user.user_id == user_id and len(user.references) == 8
        taste = taste_of(user)  # every user is a sandbox user, of the kind the manifest says (for measurement only)
        assert demo_user.taste_kind(taste) == manifest["kinds"][user_id]
        if manifest["kinds"][user_id] != "subject":
            assert not taste.by_subject and len(taste.weights) == int(manifest["kinds"][user_id][0])
        assert all(0.6 <= w <= 1.0 for w in taste.weights.values()) or user_id in named
    for user_id in demo_user.SHIPPED_USERS:  # the shipped users are held out as they ship
        assert (out / user_id / "user.json").read_bytes() == (REPO / "users" / user_id / "user.json").read_bytes()
    assert taste_of(load_user(str(out / "frost"))).to_json() == {
        "prefs": {"palette": "cool", "layout": "sparse"},
        "weights": {"palette": 0.9, "layout": 1.0},
    }
    assert [u.user_id for u in load_population(str(out))[0]] == manifest["train"]  # what --population trains on
    again = demo_user.write_population(out, n_train=8, n_heldout=8, seed=3)  # deterministic, rewritable in place
    assert again == manifest
    with pytest.raises(ValueError, match="--heldout at least"):
        demo_user.write_population(tmp_path / "small", n_train=8, n_heldout=3)


def test_the_generator_defaults_to_48_training_and_12_held_out_users():
    import inspect

    from localmodels.demo_user import write_population

    defaults = {k: p.default for k, p in inspect.signature(write_population).parameters.items()}
    assert defaults["n_train"] >= 48 and defaults["n_heldout"] >= 12


# ------------------------------------------------------------------------------------------ training, tiny models
def _argv(tiny_models, root, *extra) -> list[str]:
    return [
        *("--runs_dir", str(root / "runs"), "--model_name_or_path", tiny_models["policy"]),
        *("--judge_model", tiny_models["vlm"], "--renderer_model", tiny_models["sd"]),
        *("--fidelity_model", tiny_models["minilm"], "--render_steps", "4", "--judge_max_new_tokens", "16"),
        *("--max_completion_length", "12", "--log_images_every", "0", "--report_to", "none"),
        *extra,
    ]


def _cache_contexts(tiny_models, root, users_dir, contexts=CONTEXTS) -> dict[str, str]:
    """Write `contexts` into the context cache under the keys training computes; returns each user's formatted
    block."""
    from reward import context as ctx
    from reward.templates import format_context
    from reward.users import load_user
    from rl.config import PigArguments
    from rl.reward_stack import build_pigreward

    pig = build_pigreward(PigArguments(judge_model=tiny_models["vlm"], runs_dir=str(root / "runs")), "cpu")
    for user_id, texts in contexts.items():
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
        ctx.save(context, root / "runs")
    return {user_id: format_context(texts) for user_id, texts in contexts.items()}


@pytest.fixture(scope="module")
def population_run(tiny_models, tmp_path_factory):
    """A 2-step population GRPO run over alpha, beta, gamma (delta held out by the manifest), the judge's input
    recorded by wrapping the tiny judge's `generate` (the real model still answers)."""
    root = tmp_path_factory.mktemp("population")
    users_dir = _write_users(
        root / "users",
        ["alpha", "beta", "gamma", "delta"],
        {"train": ["alpha", "beta", "gamma"], "heldout": ["delta"]},
    )
    blocks = _cache_contexts(tiny_models, root, users_dir)
    seen: list[tuple[str, str]] = []  # (prompt, context block) of every judge conversation
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "disabled")
        from rl.train_policy import build_trainer, parse_args, save_adapter

        argv = _argv(tiny_models, root, "--population", str(users_dir), "--max_steps", "2", "--num_iterations", "1")
        args, training_args, model_args = parse_args([*argv, "--learning_rate", "1e-2", "--run_name", "pop"])
        trainer, users = build_trainer(args, training_args, model_args)
        env = trainer.reward_funcs[0].__self__
        judge_generate = env.pig.judge.generate

        def recording(conversations, settings):
            for conversation in conversations:
                text = "".join(i["text"] for i in conversation[1]["content"] if i["type"] == "text")
                prompt = re.search(r"<prompt>(.*?)</prompt>", text).group(1)
                seen.append((prompt, re.search(r"<user_context>\n(.*?)\n</user_context>", text, re.S).group(1)))
            return judge_generate(conversations, settings)

        mp.setattr(env.pig.judge, "generate", recording)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        after = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        adapter = save_adapter(trainer, users, args, training_args, model_args)
    return dict(
        root=root, users_dir=users_dir, blocks=blocks, seen=seen, trainer=trainer, users=users, env=env,
        before=before, after=after, adapter=adapter,
    )  # fmt: skip


def test_population_training_moves_the_lora_and_judges_each_group_under_its_own_users_context(population_run):
    run = population_run
    assert [u.user_id for u in run["users"]] == ["alpha", "beta", "gamma"]  # delta is held out by the manifest
    lora = [n for n in run["before"] if "lora_" in n]
    assert lora and any(not torch.equal(run["before"][n], run["after"][n]) for n in lora), "no LoRA weight moved"
    assert all(torch.equal(run["before"][n], run["after"][n]) for n in run["before"] if "lora_" not in n)

    # the dataset: one row per (user, training prompt), each chat holding its own user's context, and a user column
    dataset = run["trainer"].train_dataset
    assert sorted(zip(dataset["user_id"], dataset["original_prompt"])) == sorted(
        (u, p) for u in CONTEXTS for p in PROMPTS[u]
    )
    for row in dataset:
        system = row["prompt"][0]["content"]
        assert all(t in system for t in CONTEXTS[row["user_id"]])
        assert not any(t in system for u, texts in CONTEXTS.items() if u != row["user_id"] for t in texts)

    # the judge's own input: every comparison of a prompt under the context of the user who asked for it
    owner = {p: u for u, prompts in PROMPTS.items() for p in prompts}
    assert run["seen"], "the judge was never called"
    for prompt, block in run["seen"]:
        assert block == run["blocks"][owner[prompt]], (prompt, block)
    judged = {owner[p] for p, _ in run["seen"]}
    assert len(judged) >= 2 and "delta" not in judged  # 4 groups over 2 steps: more than one user was judged
    last = run["env"]._last
    assert last.users is not None and len(last.users) == len(last.rewrites)
    assert all(owner[p] == u for p, u in zip(last.originals, last.users))
    history = run["trainer"].state.log_history
    assert any("reward/ground_truth" in h for h in history)  # each user's truth measured by that user's taste


def test_the_population_adapter_records_that_it_reads_a_context(population_run):
    from policies.rewriter import CONTEXT_FORMAT, AdapterInfo, latest_adapter

    adapter = population_run["adapter"]
    info = AdapterInfo.load(adapter)
    assert info.user_id == "population" and info.context_format == CONTEXT_FORMAT and info.needs_context
    assert info.context_source["reasoner_model_id"].startswith(population_run["env"].pig.reasoner.model_id)
    assert latest_adapter("population", population_run["root"] / "runs").resolve() == adapter.resolve()
    recorded = json.loads((adapter.parent / "population.json").read_text())
    assert recorded["users"] == ["alpha", "beta", "gamma"]


def test_rewrite_falls_back_to_the_population_model_and_says_so(population_run, capsys):
    from pig.rewrite import main

    root = population_run["root"]
    common = ["--users_dir", str(population_run["users_dir"]), "--runs_dir", str(root / "runs")]
    assert main(["--user", "alpha", *common, "--json", "a sun"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["adapter"] == str(population_run["adapter"]) and result["context_rationales"] == 2
    assert "population model: alpha has no adapter of their own" in out.err
    assert "context: 2 rationales of alpha (cached" in out.err  # the context training used
    assert result["rewrites"][0]["prompt"] == "a sun"

    # a held-out user with no context yet: built by the reasoner recorded with the adapter, then cached
    assert main(["--user", "delta", *common, "--compare", "a tree"]) == 0
    out = capsys.readouterr().out
    assert "population model: delta has no adapter of their own" in out
    assert "context: 8 rationales of delta (built by" in out
    assert list((root / "runs" / "delta" / "context").glob("*.json"))
    assert "a tree\n  -> " in out and "(base policy: " in out


def test_a_context_conditioned_adapter_refuses_to_serve_without_a_context(population_run, tmp_path):
    from common.errors import AdapterError
    from policies.cli import cmd_rewrite
    from policies.rewriter import PromptRewriter

    rewriter = PromptRewriter(population_run["adapter"])
    with pytest.raises(AdapterError, match="reads the user's context"):
        rewriter.rewrite(["a sun"])
    context_file = tmp_path / "context.txt"
    context_file.write_text("Likes warm light.\n\nLikes one subject.\n")
    assert cmd_rewrite(["--adapter", str(population_run["adapter"]), "--context", str(context_file), "a sun"]) == 0
    plain = PromptRewriter(base_model=rewriter.info.base_model)
    with pytest.raises(AdapterError, match="trained on the prompt alone"):
        plain.rewrite(["a sun"], context=["x"])


def test_a_per_user_run_from_the_population_model_reads_the_users_context(population_run, tiny_models, capsys):
    from policies.rewriter import CONTEXT_FORMAT, AdapterInfo
    from rl.train_policy import build_trainer, parse_args, save_adapter

    root, adapter = population_run["root"], population_run["adapter"]
    argv = _argv(tiny_models, root, "--user", "beta", "--users_dir", str(population_run["users_dir"]))
    argv += ["--init_adapter", str(adapter), "--max_steps", "1", "--run_name", "from-pop"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "disabled")
        args, training_args, model_args = parse_args(argv)
        trainer, user = build_trainer(args, training_args, model_args)
        assert "the policy reads the user's context in its chat" in capsys.readouterr().out
        for row in trainer.train_dataset:
            assert row["prompt"][0]["content"].endswith(
                "1. Beta chose the dark, cool image.\n2. Beta likes night scenes."
            )
        trainer.train()
        own = save_adapter(trainer, user, args, training_args, model_args)
    assert AdapterInfo.load(own).context_format == CONTEXT_FORMAT
    from pig.rewrite import main

    common = ["--users_dir", str(population_run["users_dir"]), "--runs_dir", str(root / "runs")]
    assert main(["--user", "beta", *common, "a box"]) == 0
    out = capsys.readouterr().out
    assert f"adapter: {own}" in out and "population model" not in out and "context: 2 rationales of beta" in out


def test_export_of_the_population_model_says_how_to_pass_the_context(population_run, tmp_path):
    from pig.export import main
    from policies.rewriter import CONTEXT_HEADER

    out = tmp_path / "package"
    assert main(["population", "--runs_dir", str(population_run["root"] / "runs"), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "# Population prompt rewriter" in card and "## The user's context" in card
    assert CONTEXT_HEADER in card and "--context context.json" in card and "CONTEXTS = {" in card
    assert json.loads((out / "pig_adapter.json").read_text())["context_format"] == "rationales-v1"


def test_population_arguments_are_checked_and_file_the_run_under_population(tmp_path, capsys):
    from rl.train_policy import parse_args

    args, training_args, _ = parse_args(
        ["--population", "alpha,beta", "--runs_dir", str(tmp_path), "--run_name", "p"], check_models=False
    )
    assert args.population == "alpha,beta" and training_args.output_dir == f"{tmp_path}/population/p"
    for bad, message in (
        (["--population", "a,b", "--user", "demo"], "or --population"),
        (["--population", "a,b", "--algorithm", "dpo"], "trains with grpo or rloo"),
        ([], "or --population"),
    ):
        with pytest.raises(SystemExit):
            parse_args([*bad, "--runs_dir", str(tmp_path)], check_models=False)
        assert message in capsys.readouterr().err


def test_rewrite_without_any_adapter_names_both_ways_to_train_one(tmp_path):
    from pig.rewrite import main

    with pytest.raises(FileNotFoundError, match="no population model .* either.*--user newcomer.*--population"):
        main(["--user", "newcomer", "--runs_dir", str(tmp_path), "a sun"])


# ------------------------------------------------------------------------------ the warm start from contexts
# Rationales as the toy world's reasoner writes them: alpha asks for warm round subjects and cool angular ones, beta
# for dark light whatever the subject.
ROUND, ANGULAR = "This choice was about a round subject. ", "This choice was about an angular subject. "
TEACHER_CONTEXTS = {
    "alpha": [
        ROUND + "This user favours a warm palette of orange and red over cool blues.",
        ROUND + "The user prefers warm colours: they chose the image with red, orange and golden tones.",
        ANGULAR + "This user favours a cool palette of blue and purple over warm oranges.",
        ANGULAR + "The user prefers cool colours: they chose the blue and teal image over the warmer one.",
    ],
    "beta": [
        ROUND + "This user likes dim, night-like images rather than bright ones.",
        ANGULAR + "This user likes dim, night-like images rather than bright ones.",
        ANGULAR + "This user likes dim, night-like images rather than bright ones.",
    ],
}


def _names(text: str, axis: str, pole: str) -> bool:
    from localmodels import world

    words = set(re.findall(r"[a-z]+", text.lower()))
    return any(w in words for w in world.STYLE_WORDS[(axis, pole)])


@pytest.fixture(scope="module")
def warm_start(tiny_models, tmp_path_factory):
    """`python -m localmodels.population_sft` (2 steps) over alpha and beta, gamma held out by the manifest."""
    from localmodels import population_sft

    root = tmp_path_factory.mktemp("warm_start")
    users_dir = _write_users(
        root / "users", ["alpha", "beta", "gamma"], {"train": ["alpha", "beta"], "heldout": ["gamma"]}
    )
    _cache_contexts(tiny_models, root, users_dir, {**TEACHER_CONTEXTS, "gamma": CONTEXTS["gamma"]})
    out = root / "warmstart"
    population_sft.main(
        [
            *("--population", str(users_dir), "--context_nearest", "0", "--out", str(out)),
            *("--runs_dir", str(root / "runs"), "--steps", "2", "--batch_size", "2"),
            *("--base_model", tiny_models["policy"], "--judge_model", tiny_models["vlm"]),
            *("--fidelity_model", tiny_models["minilm"]),
        ]
    )
    return dict(root=root, users_dir=users_dir, out=out)


def test_the_warm_start_writes_what_each_context_asks_for_per_kind_of_subject(warm_start, tiny_models):
    from localmodels import population_sft, world
    from policies.rewriter import CONTEXT_HEADER

    pig, contexts = population_sft.build_contexts(
        str(warm_start["users_dir"]),
        0,
        str(warm_start["root"] / "runs"),
        {"judge_model": tiny_models["vlm"], "judge_batch_size": 4, "context_references": 8,
         "fidelity_model": tiny_models["minilm"]},
    )  # fmt: skip
    assert sorted(contexts) == ["alpha", "beta"]  # the held-out user is never in the corpus
    rows, counts = population_sft.corpus(pig, contexts, 120, seed=0)
    assert counts["examples"] == len(rows) == 120
    checked = {"round": 0, "angular": 0, "dark": 0}
    for row in rows:
        system, prompt = row["prompt"][0]["content"], row["prompt"][1]["content"]
        target = row["completion"][0]["content"]
        assert target.startswith(prompt + ", ") or target == prompt
        owner = "alpha" if TEACHER_CONTEXTS["alpha"][0] in system else "beta"
        assert system.split(CONTEXT_HEADER)[1].count("\n") == len(TEACHER_CONTEXTS[owner])  # the whole context
        subject = next((s for s in world.SUBJECTS if re.search(rf"\b{s}\b", prompt)), None)
        if owner == "beta":
            assert _names(target, "light", "dark") and not _names(target, "light", "bright"), (prompt, target)
            checked["dark"] += 1
        elif subject is not None:
            group = world.subject_group(subject)
            pole, other = ("warm", "cool") if group == "round" else ("cool", "warm")
            assert _names(target, "palette", pole) and not _names(target, "palette", other), (prompt, target)
            checked[group] += 1
        else:  # a subject outside the toy world: its kind is unknown, so the split axis is not asked for
            assert not _names(target, "palette", "warm") and not _names(target, "palette", "cool"), target
    assert min(checked.values()) >= 5, checked
    assert counts["palette=warm"] == checked["round"] and counts["light=dark"] == checked["dark"]


def test_the_warm_start_is_a_population_adapter_that_rl_can_start_from(warm_start, tiny_models):
    from policies.rewriter import CONTEXT_FORMAT, AdapterInfo, PromptRewriter, check_adapter_fits

    adapter = warm_start["out"] / "adapter"
    info = AdapterInfo.load(adapter)
    assert info.user_id == "population" and info.trainer == "sft" and info.context_format == CONTEXT_FORMAT
    assert info.base_model == tiny_models["policy"] and info.context_nearest == 0 and info.trained_steps == 2
    figures = json.loads((warm_start["out"] / "population_sft.json").read_text())
    assert figures["users"] == ["alpha", "beta"] and figures["targets"]["examples"] == 4
    rewriter = PromptRewriter(adapter)
    check_adapter_fits(adapter, rewriter.model.get_base_model(), tiny_models["policy"])
    lora_b = [p for n, p in rewriter.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained: PEFT initialises lora_B at zero
    assert len(rewriter.rewrite(["a sun"], context=TEACHER_CONTEXTS["beta"])) == 1


def test_the_warm_start_never_overwrites_an_adapter(warm_start, capsys):
    from localmodels import population_sft

    before = (warm_start["out"] / "adapter" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(SystemExit):
        population_sft.main(["--population", str(warm_start["users_dir"]), "--out", str(warm_start["out"])])
    assert "exists: pass another --out" in capsys.readouterr().err
    assert (warm_start["out"] / "adapter" / "adapter_model.safetensors").read_bytes() == before
