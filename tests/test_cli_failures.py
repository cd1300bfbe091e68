"""One way to fail on the command line: an expected failure is one `error:` line on stderr and exit status 2, no
traceback; `--debug` or `PIG_DEBUG=1` shows the traceback; a bug keeps its traceback. Real files; the commands run in
this process through the wrapper every `__main__` calls, and once more as real processes (slow lane)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from common.errors import ConfigError, run_command
from tests.conftest import REPO
from tests.test_openai_backend import ChatServer


def _run(*args, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "PIG_DEBUG"}
    environment.update(HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout
    )


def _assert_one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-3000:]
    for fragment in fragments:
        assert fragment in out.stderr, (fragment, out.stderr[-3000:])
    return errors[0]


@pytest.fixture()
def judge_server():
    from tests.conftest import serving

    with serving(ChatServer()) as srv:
        yield srv


def _judge_args(base_url: str, model: str, tmp_path) -> list[str]:
    image = str(REPO / "users" / "demo" / "images" / "ref00_chosen.png")
    other = str(REPO / "users" / "demo" / "images" / "ref00_rejected.png")
    return [
        "-m", "pig.cli", "judge", "--user", "demo", "--prompt", "a sun", image, other, "--backend", "openai",
        "--model", model, "--base_url", base_url, "--api_key_env", "PIG_TEST_NO_KEY", "--runs_dir", str(tmp_path),
    ]  # fmt: skip


def test_failing_judge_server_is_one_line_and_debug_shows_the_traceback(judge_server, tmp_path, pig_cli):
    args = _judge_args(judge_server.url, "no/such-model", tmp_path)[2:]  # after "-m pig.cli"
    plain = pig_cli(*args)
    _assert_one_line_error(plain, "HTTP 404", "does not exist", "--debug")
    with_flag = pig_cli(*args, "--debug")
    assert with_flag.returncode == 2 and "Traceback" in with_flag.stderr and "BackendError" in with_flag.stderr
    with_env = pig_cli(*args, env={"PIG_DEBUG": "1"})
    assert with_env.returncode == 2 and "Traceback" in with_env.stderr


def _in_process(command, *args, capsys) -> subprocess.CompletedProcess:
    """`command(args)` through the wrapper every script's `__main__` calls: its exit status, stdout and stderr."""
    capsys.readouterr()
    code = run_command(command, [str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


def test_training_script_unknown_user_is_one_line(tiny_models, tmp_path, capsys, monkeypatch):
    """`accelerate launch rl/train_policy.py` runs the file as a script: its `__main__` uses the same wrapper."""
    from rl.train_policy import main

    monkeypatch.delenv("PIG_DEBUG", raising=False)
    out = _in_process(
        main, "--user", "nobody", "--runs_dir", str(tmp_path), "--model_name_or_path", tiny_models["policy"],
        "--judge_model", tiny_models["vlm"], "--renderer_model", tiny_models["sd"], "--fidelity_model",
        tiny_models["minilm"], capsys=capsys,
    )  # fmt: skip
    _assert_one_line_error(out, "Unknown user 'nobody'")
    assert not (tmp_path / "nobody").exists()


def test_evaluate_bad_yaml_is_one_line(tmp_path, pig_cli):
    config = tmp_path / "eval.yaml"
    config.write_text("eval_samples: 2\njudge_mdoel: .models/x\n")
    out = pig_cli("evaluate", "--user", "demo", "--config", str(config))
    _assert_one_line_error(out, "unknown keys 'judge_mdoel' (did you mean 'judge_model'?)")


def test_rewrite_with_a_corrupt_latest_pointer_is_one_line(tmp_path, pig_cli):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "LATEST").write_text("")
    out = pig_cli("rewrite", "--user", "demo", "--runs_dir", str(tmp_path), "a sun")
    _assert_one_line_error(out, "LATEST is empty")


def test_import_script_missing_source_is_one_line(tmp_path, capsys, monkeypatch):
    from reward.eval.cli import main

    monkeypatch.delenv("PIG_DEBUG", raising=False)
    source = str(tmp_path / "absent")
    out = _in_process(main, "import", "folder", "--source", source, "--out", str(tmp_path / "out"), capsys=capsys)
    _assert_one_line_error(out, "is not a folder of user folders")


@pytest.mark.slow  # real processes: the `__main__` line of each entry point, and a judge server that never answers
def test_entry_points_as_real_processes(tiny_models, tmp_path):
    """What the tests above check in this process, once through each entry point as the shell runs it."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = _run(*_judge_args(f"http://127.0.0.1:{port}/v1", "test/pigreward", tmp_path))
    _assert_one_line_error(out, "ConnectionRefusedError", "127.0.0.1")  # retried with backoff, then one line
    out = _run(
        "rl/train_policy.py", "--user", "nobody", "--runs_dir", str(tmp_path), "--model_name_or_path",
        tiny_models["policy"], "--judge_model", tiny_models["vlm"], "--renderer_model", tiny_models["sd"],
        "--fidelity_model", tiny_models["minilm"],
    )  # fmt: skip
    _assert_one_line_error(out, "Unknown user 'nobody'")
    source = str(tmp_path / "absent")
    out = _run("-m", "reward.eval.cli", "import", "folder", "--source", source, "--out", str(tmp_path / "out"))
    _assert_one_line_error(out, "is not a folder of user folders")
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "LATEST").write_text("")
    args = ("-m", "pig.cli", "rewrite", "--user", "demo", "--runs_dir", str(tmp_path), "a sun")
    _assert_one_line_error(_run(*args), "LATEST is empty")
    with_env = _run(*args, env={"PIG_DEBUG": "1"})
    assert with_env.returncode == 2 and "Traceback" in with_env.stderr


def test_wrapper_in_process(capsys, monkeypatch):
    monkeypatch.delenv("PIG_DEBUG", raising=False)
    seen = []

    def command(argv):
        seen.append(argv)
        raise ConfigError("render_steps must be an integer. Fix the value.")

    assert run_command(command, ["--user", "demo", "--debug"]) == 2
    assert seen == [["--user", "demo"]]  # --debug is the wrapper's, never the command's
    assert "Traceback" in capsys.readouterr().err
    assert run_command(command, ["--user", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: render_steps must be an integer. Fix the value.") and "Traceback" not in err
    assert run_command(lambda argv: 3, []) == 3 and run_command(lambda argv: REPO, []) == 0

    def bug(argv):
        return {}["missing"]

    with pytest.raises(KeyError):  # a bug is not an expected failure: it keeps its traceback
        run_command(bug, [])
