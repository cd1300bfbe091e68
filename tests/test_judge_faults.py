"""Judge faults during training (issue 11): a failed judge call makes its batch undecided and counted by cause, an
alarm fires past `max_undecided_fraction`, and a judge that keeps failing stops the run after a checkpoint that
`--resume` continues from. The judge is the real OpenAI-compatible backend talking to a stub HTTP server in a thread
that answers, returns errors, or is gone."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rl.judge_faults import JudgeUnavailable, UndecidedAlarm, failure_kind, is_permanent
from tests.test_training import _tiny_argv

MODEL = "stub/pigreward"
# A verdict the parser accepts as decided (status ok).
VERDICT = "Colour: warm tones (Score 1: 4, Score 2: 2)\nScore 1: 4\nScore 2: 2\nImage 1 is better"


class StubJudge(ThreadingHTTPServer):
    """Answers chat completions with `VERDICT` while `mode` is "ok"; after `fail_after` answers (if set) it switches
    to `fail_mode`: "500" (an HTTP 500), "400" (a refusal) or "close" (the connection is closed, no answer)."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        self.lock = threading.Lock()
        self.mode, self.fail_mode, self.fail_after, self.answered, self.posts = "ok", "500", None, 0, 0

    def behaviour(self) -> str:
        with self.lock:
            self.posts += 1
            if self.fail_after is not None and self.answered >= self.fail_after:
                self.mode = self.fail_mode
            if self.mode == "ok":
                self.answered += 1
            return self.mode


class _Handler(BaseHTTPRequestHandler):
    server: StubJudge

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode = self.server.behaviour()
        if mode == "close":
            self.close_connection = True
            return  # no status line: the client sees the connection end without an answer
        if mode in ("500", "400"):
            status, payload = int(mode), {"error": {"message": f"stub says {mode}"}}
        else:
            assert body["model"] == MODEL
            status, payload = 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": VERDICT}}]}
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture()
def stub():
    from tests.conftest import serving

    with serving(StubJudge()) as server:
        yield server


def test_failure_kinds_and_which_failures_are_permanent():
    from reward.openai_backend import BackendError

    assert failure_kind(BackendError("x", status=None)) == "unreachable"
    assert failure_kind(BackendError("x", status=503)) == "http_503"
    assert failure_kind(BackendError("x", status=200)) == "malformed_answer"
    assert is_permanent(BackendError("x", status=404)) and is_permanent(BackendError("x", status=401))
    assert not any(is_permanent(BackendError("x", status=s)) for s in (None, 200, 429, 500, 503))


def test_alarm_fires_once_per_crossing(capsys):
    alarm = UndecidedAlarm(0.25)
    assert [alarm.check(f, step) for step, f in enumerate([0.0, 0.5, 0.75, 0.1, 0.3])] == [0, 1, 1, 0, 1]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[warning] judge:")]
    assert alarm.fired == 2 and len(lines) == 2
    assert "50% of the judge's comparisons at step 1 were undecided (max_undecided_fraction=0.25)" in lines[0]
    assert UndecidedAlarm(1.0).check(1.0, 0) is False
    with pytest.raises(ValueError, match="max_undecided_fraction"):
        UndecidedAlarm(1.5)


@pytest.fixture(scope="module")
def render_stack(tiny_models):
    from reward.similarity import TextEmbedder
    from rl.config import PigArguments
    from rl.render import Renderer

    args = PigArguments(renderer_model=tiny_models["sd"], render_steps=2)
    return Renderer.from_args(args, "cpu"), TextEmbedder(tiny_models["minilm"], device="cpu")


def _environment(stub, render_stack, **kwargs):
    from reward.pigreward import PIGReward
    from rl.environment import PersonalizedEnvironment

    pig = PIGReward.from_names(
        MODEL, backend="openai", backend_kwargs=dict(base_url=stub.url, max_retries=1, backoff=0.01, timeout=10)
    )
    renderer, embedder = render_stack
    return PersonalizedEnvironment(
        pig, ["The user likes warm colours."], renderer, embedder, num_generations=2, compare_to="original", **kwargs
    )


ORIGINALS, REWRITES = ["a sun", "a sun"], ["a warm sun", "a red sun at dusk"]


def test_a_failed_judge_call_is_counted_undecided_and_raises_the_alarm(stub, render_stack, capsys):
    env = _environment(stub, render_stack, max_undecided_fraction=0.5, max_failed_batches=3)
    logged = {}
    env.compute(ORIGINALS, REWRITES, 0, logged.__setitem__)
    assert logged["reward/undecided_fraction"] == 0.0 and logged["judge/undecided_alarm"] == 0.0
    assert logged["judge/failures/no_verdict"] == 0.0 and "judge/failures/http_500" not in logged

    stub.mode = "500"
    logged = {}
    result = env.compute(ORIGINALS, REWRITES, 1, logged.__setitem__)
    assert result.preference == [0.5, 0.5]  # undecided: ties, counted, never a silent default
    assert logged["reward/undecided_fraction"] == 1.0 and logged["judge/undecided_alarm"] == 1.0
    assert logged["judge/failures/http_500"] == 4.0  # 2 comparisons x 2 orders
    assert logged["judge/status/judge_failed"] == 1.0
    assert all(c.forward.status == "judge_failed" for cs in result.comparisons for c in cs)
    err = capsys.readouterr().err
    assert "judge call of step 1 failed (http_500; 1 of 3 batches in a row" in err
    assert "100% of the judge's comparisons at step 1 were undecided" in err

    stub.mode = "ok"  # the server is back: decided again, and the count of failed batches starts over
    logged = {}
    result = env.compute(ORIGINALS, REWRITES, 2, logged.__setitem__)
    assert logged["reward/undecided_fraction"] == 0.0 and logged["judge/undecided_alarm"] == 0.0
    assert env.failed_batches == 0 and all(c.preference is not None for cs in result.comparisons for c in cs)


def test_a_judge_gone_for_good_raises(stub, render_stack):
    env = _environment(stub, render_stack, max_failed_batches=2)
    stub.mode = "close"
    env.compute(ORIGINALS, REWRITES, 0)  # the first failed batch: undecided
    with pytest.raises(JudgeUnavailable, match=r"failed 2 batches in a row at step 1 \(unreachable\)"):
        env.compute(ORIGINALS, REWRITES, 1)
    stub.mode = "400"  # a refusal does not heal by waiting: stops at once
    env = _environment(stub, render_stack, max_failed_batches=5)
    with pytest.raises(JudgeUnavailable, match=r"refused the request at step 0 \(http_400\)"):
        env.compute(ORIGINALS, REWRITES, 0)


@pytest.mark.slow  # a real training stopped by the judge, then resumed
def test_training_stops_with_a_checkpoint_when_the_judge_dies_and_resumes(tiny_models, tmp_path, stub, capsys):
    """Server answers the context and the first judged batch, then fails: the next batch is undecided (counted, the
    alarm fires), the one after stops the run after a checkpoint; with the server back, `--resume` finishes it."""
    from common.errors import run_command
    from rl import checkpoint
    from rl.train_policy import main

    argv = _tiny_argv(tiny_models, tmp_path, "--max_steps", "6", "--save_steps", "100", "--log_images_every", "0")
    argv += ["--judge_backend", "openai", "--judge_model", MODEL, "--judge_base_url", stub.url]
    argv += ["--judge_max_failed_batches", "2", "--report_to", "none", "--run_name", "dies"]
    stub.fail_after = 8 + 80  # 8 rationales of the demo user's context, 80 verdicts for the batch of steps 1-2
    assert run_command(main, argv) == 2
    err = capsys.readouterr().err
    run_dir = tmp_path / "runs" / "demo" / "dies"
    error = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in err
    assert "The judge failed 2 batches in a row at step 4 (http_500)" in error[0]
    assert f"Saved {run_dir / 'checkpoint-4'} (step 4)" in error[0] and "--resume" in error[0]
    assert checkpoint.checkpoint_step(run_dir / "checkpoint-4") == 4  # complete: trainer_state.json written last
    assert not (run_dir / "adapter").exists()
    # the log history the checkpoint carries (and the resumed run restores)
    rows = json.loads((run_dir / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    failed = [r for r in rows if r.get("judge/failures/http_500")]
    assert [r["step"] for r in failed] == [3] and failed[0]["judge/undecided_alarm"] == 1.0  # the batch of 3-4
    assert failed[0]["reward/undecided_fraction"] == 1.0

    stub.fail_after, stub.mode = None, "ok"
    adapter = main([*argv, "--resume"])
    assert adapter == run_dir / "adapter"
    history = json.loads((run_dir / "log_history.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4, 5, 6]
    assert [h["reward/undecided_fraction"] for h in history if "reward/undecided_fraction" in h] == [0.0, 1.0, 0.0]
