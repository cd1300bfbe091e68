"""Many users: `pig train-all` skips trained users and trains the others with the real training code (one tiny real
run), `pig users` reports what the folders hold, `pig rewrite --file` rewrites a prompts file in batches."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import REPO


def _user(users, name: str) -> None:
    shutil.copytree(REPO / "users" / "demo", users / name)
    data = json.loads((users / name / "user.json").read_text())
    (users / name / "user.json").write_text(json.dumps({**data, "user_id": name}))


def _real_adapter(folder, policy: str, user_id: str) -> None:
    """A real (untrained) PEFT LoRA of the tiny policy with its pig_adapter.json: an earlier run's adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from policies.rewriter import SYSTEM_PROMPT, AdapterInfo

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(policy), LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(folder)
    AdapterInfo(user_id, policy, SYSTEM_PROMPT, 12, trained_steps=3).save(folder)


def _tiny_training(tiny_models) -> list[str]:
    return [
        *("--model_name_or_path", tiny_models["policy"], "--judge_model", tiny_models["vlm"]),
        *("--renderer_model", tiny_models["sd"], "--fidelity_model", tiny_models["minilm"]),
        *("--render_steps", "4", "--judge_mode", "score", "--max_completion_length", "12"),
        *("--max_steps", "1", "--learning_rate", "1e-2", "--log_images_every", "0", "--report_to", "none"),
    ]


@pytest.fixture(scope="module")
def world(tiny_models, tmp_path_factory):
    """users/{anna,ben}; anna already trained (runs/anna/LATEST -> old/adapter); then `pig train-all` once."""
    from pig.users import train_all

    root = tmp_path_factory.mktemp("many_users")
    users, runs = root / "users", root / "runs"
    _user(users, "anna")
    _user(users, "ben")
    _real_adapter(runs / "anna" / "old" / "adapter", tiny_models["policy"], "anna")
    (runs / "anna" / "LATEST").write_text("old/adapter\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "disabled")
        env.chdir(root)  # relative --users_dir/--runs_dir, as typed on the command line
        status = train_all(["--users_dir", "users", "--runs_dir", "runs", "--", *_tiny_training(tiny_models)])
    assert status == 0
    return {"root": root, "users": users, "runs": runs, "tiny": tiny_models}


def test_train_all_trains_the_untrained_user_only(world, capsys):
    from policies.rewriter import AdapterInfo, latest_adapter

    assert (world["runs"] / "anna" / "LATEST").read_text() == "old/adapter\n", "a trained user was retrained"
    assert [p.name for p in (world["runs"] / "anna").iterdir() if p.is_dir() and p.name != "context"] == ["old"]
    adapter = latest_adapter("ben", world["runs"])
    info = AdapterInfo.load(adapter)
    assert info.user_id == "ben" and info.trained_steps == 1  # a real run of rl/train_policy.py, 1 step
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter.parent / "log_history.json").is_file()


def test_train_all_again_skips_everyone_and_force_plans_everyone(world, capsys, monkeypatch):
    from pig.users import plan_training, train_all

    monkeypatch.chdir(world["root"])
    before = sorted(p.name for p in (world["runs"] / "ben").iterdir())
    assert train_all(["--users_dir", "users", "--runs_dir", "runs", "--", "--max_steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "anna: skip" in out and "ben: skip" in out and "0 to train, 2 skipped" in out
    assert sorted(p.name for p in (world["runs"] / "ben").iterdir()) == before

    assert train_all(["--users_dir", "users", "--runs_dir", "runs", "--force", "--users", "ben", "--dry_run"]) == 0
    assert "ben: train (--force" in capsys.readouterr().out
    plan = plan_training("users", "runs", force=True)
    assert [(name, reason.split()[0]) for name, _, reason in plan] == [("anna", "train"), ("ben", "train")]
    (world["runs"] / "anna" / "LATEST").rename(world["runs"] / "anna" / "LATEST.bak")
    try:
        assert plan_training("users", "runs")[0][2] == "train (no adapter yet)"
    finally:
        (world["runs"] / "anna" / "LATEST.bak").rename(world["runs"] / "anna" / "LATEST")


def test_train_all_refuses_before_training(world, tmp_path, monkeypatch, capsys):
    from pig.users import train_all
    from reward.users import UserDataError

    with pytest.raises(SystemExit):
        train_all(["--users_dir", str(world["users"]), "--", "--user", "anna"])
    assert "train-all sets it for each user" in capsys.readouterr().err
    with pytest.raises(UserDataError, match=r"--users names \['zoe'\]"):
        train_all(["--users_dir", str(world["users"]), "--users", "zoe"])
    with pytest.raises(UserDataError, match="No users in"):
        train_all(["--users_dir", str(tmp_path)])
    users = tmp_path / "users"
    shutil.copytree(world["users"], users)
    (users / "ben" / "user.json").write_text("{not json")
    runs = tmp_path / "runs"
    with pytest.raises(UserDataError, match=r"1 of 2 users cannot be trained(.|\n)*ben"):
        train_all(["--users_dir", str(users), "--runs_dir", str(runs)])
    assert not runs.exists(), "training started before every user was checked"


def test_users_lists_context_adapters_and_latest_evaluation(world, capsys):
    from pig.users import list_users

    ben_adapter = sorted((world["runs"] / "ben").glob("*/adapter"))[0]
    evaluation = world["runs"] / "ben" / "eval" / ben_adapter.parent.name / "results.json"
    evaluation.parent.mkdir(parents=True)
    block = {
        "prompt_set": "heldout",
        "decoding": "greedy",
        "prompts": 3,
        "samples": 1,
        "summary": {"adapter_vs_base": {"ground_truth": {"preference": 0.625, "ci95": [0.5, 0.75]}}},
    }
    evaluation.write_text(json.dumps({"user": "ben", "adapter": str(ben_adapter), "blocks": [block]}))
    (world["users"] / "carl").mkdir()
    (world["users"] / "carl" / "user.json").write_text('{"user_id": "carl", "references": []}')
    try:
        assert list_users(["--users_dir", str(world["users"]), "--runs_dir", str(world["runs"]), "--json"]) == 0
        entries = {e["user_id"]: e for e in json.loads(capsys.readouterr().out)}
        assert list_users(["--users_dir", str(world["users"]), "--runs_dir", str(world["runs"])]) == 0
        text = capsys.readouterr().out
    finally:
        shutil.rmtree(world["users"] / "carl")
        shutil.rmtree(evaluation.parent.parent)
    assert set(entries) == {"anna", "ben", "carl"}
    anna, ben, carl = entries["anna"], entries["ben"], entries["carl"]
    assert [(a["run"], a["latest"], a["trained_steps"]) for a in anna["adapters"]] == [("old", True, 3)]
    assert anna["evaluation"] is None and anna["references"] == 8 and anna["sandbox"] is True
    # ben's training built and cached his context from his current references
    assert ben["context"]["cached"] and all(c["current"] for c in ben["context"]["cached"])
    assert ben["latest"] == ben_adapter.parent.name and ben["evaluation"]["of_latest"] is True
    row = ben["evaluation"]["rows"][0]
    assert row["cells"] == 3 and row["adapter_vs_base"]["ground_truth"] == 0.625
    assert "references" in carl["error"] and carl["adapters"] == []
    assert "adapter vs base truth 0.62" in text and "carl  (UNUSABLE" in text and "<- LATEST" in text


def test_rewrite_file_batches_to_jsonl(world, tmp_path, capsys):
    from policies.cli import cmd_rewrite, read_prompts
    from policies.rewriter import PromptRewriter, latest_adapter

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("# my prompts\na sun\n\n  a red hydrant  \n# skip me\na tree\n")
    assert read_prompts(prompts_file) == [(2, "a sun"), (4, "a red hydrant"), (6, "a tree")]
    adapter = latest_adapter("ben", world["runs"])
    out = tmp_path / "rewrites.jsonl"
    argv = ["--adapter", str(adapter), "--file", str(prompts_file), "--batch_size", "2"]
    assert cmd_rewrite([*argv, "--out", str(out), "--compare"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["line"], r["prompt"]) for r in rows] == [(2, "a sun"), (4, "a red hydrant"), (6, "a tree")]
    rewriter = PromptRewriter(adapter)
    expected = rewriter.rewrite(["a sun", "a red hydrant"]) + rewriter.rewrite(["a tree"], seed=2)
    assert [r["rewrite"] for r in rows] == expected
    with rewriter.model.disable_adapter():
        assert rows[2]["base_rewrite"] == rewriter.rewrite(["a tree"])[0]
    assert "rewriting" in capsys.readouterr().err  # the progress bar

    assert cmd_rewrite(argv) == 0  # no --out: JSON lines on stdout
    assert [json.loads(line)["rewrite"] for line in capsys.readouterr().out.splitlines()] == expected


@pytest.mark.parametrize(
    "content, message",
    [(None, "does not exist"), ("# only a comment\n\n   \n", "holds no prompt"), (b"\xff\xfe\x00", "not UTF-8")],
)
def test_rewrite_file_errors_name_the_problem(tmp_path, capsys, content, message):
    from policies.cli import cmd_rewrite

    path = tmp_path / "prompts.txt"
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SystemExit) as exit_info:
        cmd_rewrite(["--adapter", "unused", "--file", str(path)])  # checked before any model is loaded
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_rewrite_needs_prompts_or_a_file(capsys):
    from policies.cli import cmd_rewrite

    for argv in (["--user", "demo"], ["--user", "demo", "--file", os.devnull, "a sun"]):
        with pytest.raises(SystemExit):
            cmd_rewrite(argv)
        assert "one of them" in capsys.readouterr().err


def test_evaluations_of_an_adapter_are_its_own_users_and_not_older_than_it(tmp_path):
    """Literal folders: which `results.json` under runs/<user>/eval/ describe an adapter (reports.runs.evaluations)."""
    from policies.rewriter import SYSTEM_PROMPT, AdapterInfo
    from reports.runs import evaluations, latest_evaluation, load_run

    adapter = tmp_path / "runs" / "ann" / "r1" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    AdapterInfo("ann", "base", SYSTEM_PROMPT, 12).save(adapter)
    written = (adapter / "adapter_model.safetensors").stat().st_mtime

    def evaluation(name: str, user: str, path: str, age: float = -10.0):
        file = tmp_path / "runs" / "ann" / "eval" / name / "results.json"
        file.parent.mkdir(parents=True)
        file.write_text(json.dumps({"user": user, "adapter": path, "blocks": []}))
        os.utime(file, (written - age, written - age))

    evaluation("own", "ann", "runs/ann/r1/adapter")  # relative to wherever it ran
    evaluation("own-absolute", "ann", str(adapter), age=-20)
    evaluation("older", "ann", "runs/ann/r1/adapter", age=60)  # before these weights: an earlier run's adapter
    evaluation("other-adapter", "ann", "runs/bob/r1/adapter")  # same run name, another user's adapter
    evaluation("other-taste", "bob", "runs/ann/r1/adapter")  # ann's adapter under bob's taste
    found = {e.name: e.stale for e in evaluations(load_run(adapter))}
    assert found == {"own": False, "own-absolute": False, "older": True}
    assert latest_evaluation(load_run(adapter)).name == "own-absolute"
