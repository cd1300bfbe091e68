"""The choice page's functions without the page (feedback/session.py) and `pig update` (feedback/update.py), on the
tiny real models: pairs for a user without and with an adapter, choices into the folder, the context updated with
only the new reference reasoned about, an update that continues the adapter and records what it has seen."""

from __future__ import annotations

import json

import pytest

from common.errors import PigError
from feedback.session import ChoiceSession, ChooseArguments
from reward.choices import read_log
from reward.users import load_user
from rl.config import PigArguments, recipe_of
from tests.test_context_cache import CountingReasoner


def _session(tiny_models, user: str, users_dir, runs_dir, **choose) -> ChoiceSession:
    pig_args = PigArguments(
        user=str(user),
        users_dir=str(users_dir),
        runs_dir=str(runs_dir),
        judge_model=tiny_models["vlm"],
        renderer_model=tiny_models["sd"],
        fidelity_model=tiny_models["minilm"],
        render_steps=4,
        judge_max_new_tokens=16,
    )
    args = ChooseArguments(base_model=tiny_models["policy"], page_seed=0, **choose)
    recipe = {**recipe_of([]), "max_completion_length": 12}
    return ChoiceSession.from_args(pig_args, args, recipe)


def test_pairs_and_choices_without_an_adapter(tiny_models, demo_user_copy, tmp_path):
    runs = tmp_path / "runs"
    session = _session(tiny_models, demo_user_copy, demo_user_copy.parent, runs)
    assert session.adapter is None and len(session.context_texts()) == 8
    session.pig.reasoner = CountingReasoner(session.pig.reasoner)

    pair = session.propose("a gem")
    assert pair.prompt == "a gem" and pair.left.policy == pair.right.policy == "base"  # two base samples
    assert pair.left.text != pair.right.text and pair.left.sample_seed != pair.right.sample_seed
    assert pair.left.image_seed == pair.right.image_seed  # common random numbers: the words make the difference
    assert pair.left_image.tobytes() != pair.right_image.tobytes()
    record = session.record(pair.pair_id, "right")
    assert (record.reference, record.references, record.duplicate) == (8, 9, False)
    assert session.pig.reasoner.calls == [1]  # only the new reference went through the reasoner
    assert len(session.context_texts()) == 8  # context_references: the 8 most recent references, the new one last

    user = load_user(str(demo_user_copy))
    assert user.references[8].prompt == "a gem"
    assert user.references[8].chosen.tobytes() == pair.right_image.tobytes()
    logged = read_log(demo_user_copy)[0]
    assert logged["shown"]["right"]["text"] == pair.right.text and logged["shown"]["adapter"] is None

    assert session.record(pair.pair_id, "left").duplicate  # a second click on the same pair writes nothing
    skipped = session.propose()
    assert skipped.prompt in user.training_prompts
    assert session.record(skipped.pair_id, "skip").reference is None
    with pytest.raises(PigError, match="not on offer"):
        session.record("0123456789abcdef", "left")
    assert len(load_user(str(demo_user_copy)).references) == 9 and session.pig.reasoner.calls == [1]
    assert session.summary() == {
        "user_id": "demo",
        "references": 9,
        "choices": 1,
        "skips": 1,
        "adapter": None,
        "opponent": "base",
    }


def test_a_new_user_starts_from_the_base_policy(tiny_models, tmp_path):
    users = tmp_path / "users"
    with pytest.raises(PigError, match="Unknown user 'alice'"):
        _session(tiny_models, "alice", users, tmp_path / "runs")
    session = _session(tiny_models, "alice", users, tmp_path / "runs", new_user=True)
    assert session.context is None and session.prompts() == []
    with pytest.raises(PigError, match="Type a prompt"):
        session.propose()
    pair = session.propose("a red tree")
    session.record(pair.pair_id, "left")
    assert load_user("alice", users).references[0].prompt == "a red tree"
    assert len(session.context_texts()) == 1 and session.prompts() == ["a red tree"]


def _training(tiny_models) -> list[str]:
    return [
        *("--model_name_or_path", tiny_models["policy"], "--judge_model", tiny_models["vlm"]),
        *("--renderer_model", tiny_models["sd"], "--fidelity_model", tiny_models["minilm"], "--render_steps", "4"),
        *("--judge_max_new_tokens", "16", "--max_completion_length", "12", "--log_images_every", "0"),
        *("--report_to", "none"),
    ]


def test_update_continues_the_adapter_and_pig_users_shows_what_it_saw(tiny_models, demo_user_copy, tmp_path, capsys):
    from feedback.update import main as update
    from pig.users import list_users
    from policies.rewriter import AdapterInfo, latest_adapter

    runs, users = tmp_path / "runs", demo_user_copy.parent
    common = ["--user", "demo", "--users_dir", str(users), "--runs_dir", str(runs)]
    assert update([*common, "--steps", "1", "--", *_training(tiny_models)]) == 0
    first = latest_adapter("demo", runs)
    info = AdapterInfo.load(first)
    assert (info.references, info.choices, info.init_adapter, info.trained_steps) == (8, 0, None, 1)

    session = _session(tiny_models, "demo", users, runs)  # --adapter auto: the user's LATEST
    assert session.adapter.resolve() == first.resolve()
    pair = session.propose("a tent")
    mine, other = (pair.left, pair.right) if pair.left.policy == "adapter" else (pair.right, pair.left)
    assert mine.policy == "adapter"
    if other.policy == "base":
        assert other.sample_seed == mine.sample_seed  # the same sampling seed, adapter on and off
    else:  # one step in, the adapter may still write the base's rewrite: the original prompt is then the opponent
        assert (other.policy, other.text) == ("original", "a tent")
        assert session._sample("a tent", mine.sample_seed, adapter=False) == mine.text
    session.record(pair.pair_id, "left")
    capsys.readouterr()

    assert update([*common, "--steps", "2", "--", *_training(tiny_models)]) == 0
    out = capsys.readouterr().out
    assert f"continuing {first}" in out and "trained on 8 references (0 from the page)" in out
    second = latest_adapter("demo", runs)
    info = AdapterInfo.load(second)
    assert second.parent.name.startswith("update-") and second != first
    assert (info.references, info.choices, info.trained_steps) == (9, 1, 2)
    assert info.init_adapter == str(first.resolve())
    assert (first / "adapter_model.safetensors").is_file()  # the parent run is kept: the chain is the history
    assert (second.parent / "report.html").is_file()

    pair = session.propose("a tent")  # the page follows LATEST: the updated adapter writes the next pairs
    assert session.adapter.resolve() == second.resolve() and pair.adapter == str(second)

    assert list_users(["--users_dir", str(users), "--runs_dir", str(runs), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["references"] == 9 and entry["page_choices"] == {"choices": 1, "skips": 0, "pending": 0, "refused": 0}
    adapters = {a["run"]: a for a in entry["adapters"]}
    assert adapters[second.parent.name] | {"path": None} == {
        "run": second.parent.name,
        "path": None,
        "trainer": "grpo",
        "trained_steps": 2,
        "latest": True,
        "references": 9,
        "choices": 1,
        "parent": first.parent.name,
    }
    assert list_users(["--users_dir", str(users), "--runs_dir", str(runs)]) == 0
    text = capsys.readouterr().out
    assert "choices:  1 made on the page (pig choose), 0 skips" in text
    assert f"9 references incl. 1 page choices, from {first.parent.name}) <- LATEST" in text


def test_update_refuses_flags_it_sets(demo_user_copy):
    from feedback.update import main as update

    with pytest.raises(SystemExit):
        update(["--user", str(demo_user_copy), "--steps", "2", "--", "--max_steps", "5"])


def test_the_adapter_a_user_starts_from(tmp_path):
    """Their own LATEST, else the population model's (it reads the user's context), else none (the base policy)."""
    from feedback.session import starting_adapter
    from feedback.update import parent_adapter
    from policies.rewriter import POPULATION, write_latest

    runs = tmp_path / "runs"
    assert starting_adapter("demo", runs) is None and parent_adapter("latest", "demo", runs) is None
    for owner in (POPULATION, "demo"):
        folder = runs / owner / "run" / "adapter"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
        write_latest(runs, owner, folder)
        assert starting_adapter("demo", runs).resolve() == folder.resolve()
        assert parent_adapter("latest", "demo", runs).resolve() == folder.resolve()
    assert starting_adapter("anna", runs).parts[-3] == POPULATION
    assert parent_adapter("none", "demo", runs) is None
