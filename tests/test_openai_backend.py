"""`OpenAIChatBackend` against a real HTTP server that speaks the chat-completions protocol and misbehaves on request.

The server (`ChatServer`) runs in a thread on 127.0.0.1 and checks every request the way a strict server would: the
path, the model name, the `Authorization` header, message roles, and images sent as `data:image/png;base64,...` URLs
that decode to PNGs (their sizes are recorded). A request that fails a check gets a 400, which the backend does not
retry, so a malformed request fails the test that sent it. What the server does for a request is looked up by the
request's *marker* (the first text item of its last user message) in `plan`: a list of behaviours consumed one per
attempt ("500", "429", "slow", "not-json", ...) with the last one repeating; "ok" for a marker without a plan.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from reward.backends import GenerationSettings
from reward.openai_backend import BackendError, OpenAIChatBackend
from reward.pigreward import JudgeSettings, PIGReward
from reward.users import load_user

MODEL = "test/pigreward"
SECRET = "sk-test-0123456789-SECRET"
PNG_URL = re.compile(r"data:image/png;base64,(?P<data>[A-Za-z0-9+/=]+)")


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default backlog (5) would stall a burst of concurrent connections

    def __init__(self, api_key: str | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api_key = api_key
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        self.lock = threading.Lock()
        self.plan: dict[str, list[str]] = {}  # marker -> behaviours, one per attempt, the last one repeating
        self.logprobs: dict[str, list[tuple[str, float]]] = {}  # marker -> top logprobs of the first token
        self.answer = lambda marker, body, images: f"answer to {marker}"  # the text of a chat answer
        self.top_logprobs = lambda marker, body, images: self.logprobs[marker]  # the answer to a score request
        self.delay = 0.0  # seconds every request takes
        self.slow_s = 1.0  # seconds a "slow" request takes
        self.posts = 0  # every POST, also those refused before their marker was read
        self.hits: Counter[str] = Counter()  # attempts per marker
        self.bodies: list[dict] = []
        self.image_sizes: dict[str, list[tuple[int, int]]] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    def next_behaviour(self, marker: str) -> str:
        with self.lock:
            self.hits[marker] += 1
            steps = self.plan.get(marker) or ["ok"]
            return steps.pop(0) if len(steps) > 1 or marker not in self.plan else steps[0]


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args):  # keep the test output clean
        pass

    def _send(self, status: int, payload) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": "BadRequestError", "code": status}})

    def do_POST(self):
        server = self.server
        with server.lock:
            server.posts += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}")
        auth = self.headers.get("Authorization")
        if server.api_key is not None and auth != f"Bearer {server.api_key}":
            return self._error(401, "invalid API key")
        if server.api_key is None and auth is not None:
            return self._error(400, "no API key was configured, yet an Authorization header came")
        if body.get("model") != MODEL:
            return self._error(404, f"The model `{body.get('model')}` does not exist.")
        try:
            marker, images = _check_messages(body["messages"], scoring=bool(body.get("logprobs")))
        except (AssertionError, KeyError, TypeError, ValueError) as err:
            return self._error(400, f"malformed request: {err!r}")
        with server.lock:
            server.bodies.append(body)
            server.image_sizes.setdefault(marker, []).extend(im.size for im in images)
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            time.sleep(server.delay)
        finally:
            # Counted out before the answer is written: a client thread that has its answer may send its next request
            # at once, and a handler still counting the answered one would show one request too many in flight
            # (seen on a loaded CPU: 5 with concurrency 4).
            with server.lock:
                server.in_flight -= 1
        self._behave(server.next_behaviour(marker), marker, body, images)

    def _behave(self, behaviour: str, marker: str, body: dict, images: list[Image.Image]) -> None:
        server = self.server
        if behaviour == "slow":
            time.sleep(server.slow_s)
        elif behaviour in ("500", "503", "429"):
            return self._error(int(behaviour), f"server trouble {behaviour}")
        elif behaviour == "400":
            return self._error(400, "bad field foo " + "x" * 2000)  # long: the client must truncate it
        elif behaviour == "echo-auth":
            return self._error(400, f"rejected request with headers Authorization: {self.headers['Authorization']}")
        elif behaviour == "not-json":
            return self._send(200, b"<html>502 Bad Gateway</html>")
        elif behaviour == "no-choices":
            return self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
        elif behaviour == "null-content":
            return self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]})
        if body.get("logprobs"):
            problem = _score_request_problem(body)
            if problem:
                return self._error(400, problem)
            top = [
                {"token": t, "logprob": lp, "bytes": list(t.encode())}
                for t, lp in server.top_logprobs(marker, body, images)
            ]
            first = {"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}
            choice = {"index": 0, "message": {"role": "assistant", "content": top[0]["token"]}}
            return self._send(200, {"choices": [{**choice, "logprobs": {"content": [first]}}]})
        text = server.answer(marker, body, images)
        message = {"role": "assistant", "content": text}
        self._send(200, {"object": "chat.completion", "choices": [{"index": 0, "message": message}]})


def _check_messages(messages: list[dict], scoring: bool) -> tuple[str, list[Image.Image]]:
    """Validate the messages like a strict server; return the marker and the decoded images."""
    assert isinstance(messages, list) and messages, "no messages"
    roles = [m["role"] for m in messages]
    assert set(roles) <= {"system", "user", "assistant"}, f"roles {roles}"
    if scoring:
        assert roles[-2:] == ["user", "assistant"], f"score requests end with user + assistant prefix, got {roles}"
    user = [m for m in messages if m["role"] == "user"][-1]
    content = user["content"] if isinstance(user["content"], list) else [{"type": "text", "text": user["content"]}]
    images = []
    for message in messages:
        for item in message["content"] if isinstance(message["content"], list) else []:
            assert set(item) in ({"type", "text"}, {"type", "image_url"}), f"item keys {sorted(item)}"
            if item["type"] == "image_url":
                match = PNG_URL.fullmatch(item["image_url"]["url"])
                assert match, "an image is not a base64 PNG data URL"
                image = Image.open(io.BytesIO(base64.b64decode(match["data"], validate=True)))
                assert image.format == "PNG", f"decoded as {image.format}"
                images.append(image.convert("RGB"))
            else:
                assert item["type"] == "text" and isinstance(item["text"], str), f"bad item {item}"
    marker = next(item["text"] for item in content if item["type"] == "text")
    return marker, images


def _score_request_problem(body: dict) -> str | None:
    expected = {
        "max_tokens": 1,
        "logprobs": True,
        "top_logprobs": 20,
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    wrong = {k: body.get(k) for k, v in expected.items() if body.get(k) != v}
    return f"score request fields {wrong} differ from {expected}" if wrong else None


@pytest.fixture()
def server():
    from tests.conftest import serving

    with serving(ChatServer()) as srv:
        yield srv


@pytest.fixture()
def no_key(monkeypatch):
    monkeypatch.delenv("PIG_TEST_KEY", raising=False)
    return "PIG_TEST_KEY"


def _backend(server, api_key_env: str, **kwargs) -> OpenAIChatBackend:
    options = dict(base_url=server.url, api_key_env=api_key_env, timeout=2.0, max_retries=3, backoff=0.01)
    return OpenAIChatBackend(MODEL, **{**options, **kwargs})


def _conversation(marker: str, *images: Image.Image) -> list[dict]:
    content = [{"type": "text", "text": marker}] + [{"type": "image", "image": im} for im in images]
    return [
        {"role": "system", "content": [{"type": "text", "text": "You are a test judge."}]},
        {"role": "user", "content": content},
    ]


GREEDY = GenerationSettings(max_new_tokens=32)


# ------------------------------------------------------------------------------------------------ construction
def test_base_url_default_validation_and_unknown_arguments(monkeypatch, no_key):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://judge.internal:9000/v1/")
    assert OpenAIChatBackend(MODEL, api_key_env=no_key).model_id == f"{MODEL}@http://judge.internal:9000/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert OpenAIChatBackend(MODEL, api_key_env=no_key).model_id == f"{MODEL}@http://localhost:8000/v1"
    # arguments of the local backend are accepted (one backend_kwargs block for both); typos are not
    OpenAIChatBackend(MODEL, api_key_env=no_key, device="cuda", dtype="bfloat16", batch_size=4)
    with pytest.raises(TypeError, match="concurency"):
        OpenAIChatBackend(MODEL, api_key_env=no_key, concurency=4)
    for url in ("localhost:8000/v1", "http://", "ftp://host/v1", "http://host:99999/v1", "http://h/v1?x=1"):
        with pytest.raises(ValueError, match="Malformed base_url"):
            OpenAIChatBackend(MODEL, base_url=url, api_key_env=no_key)
    with pytest.raises(ValueError, match="credentials") as info:
        OpenAIChatBackend(MODEL, base_url=f"https://user:{SECRET}@host/v1", api_key_env=no_key)
    assert SECRET not in str(info.value)


# ------------------------------------------------------------------------------------------------- generation
def test_order_preserved_and_concurrency_limited(server, no_key):
    server.delay = 0.1
    backend = _backend(server, no_key, concurrency=4)
    markers = [f"item-{i}" for i in range(16)]
    answers = backend.generate([_conversation(m) for m in markers], GREEDY)
    assert answers == [f"answer to {m}" for m in markers]
    # requests overlapped, never more than 4 at once (counted by the server, not timed: a loaded CPU stretches time)
    assert 2 <= server.max_in_flight <= 4


def test_images_sent_as_png_data_urls(server, no_key):
    backend = _backend(server, no_key)
    red, blue = Image.new("RGB", (32, 24), (255, 0, 0)), Image.new("RGBA", (16, 8), (0, 0, 255, 128))
    assert backend.generate([_conversation("pair", red, blue)], GREEDY) == ["answer to pair"]
    assert server.image_sizes["pair"] == [(32, 24), (16, 8)]
    content = server.bodies[0]["messages"][1]["content"]
    assert [item["type"] for item in content] == ["text", "image_url", "image_url"]


def test_generation_settings_map_onto_the_request(server, no_key):
    backend = _backend(server, no_key)
    backend.generate([_conversation("greedy")], GenerationSettings(max_new_tokens=17))
    greedy = server.bodies[-1]
    assert greedy["max_tokens"] == 17 and greedy["temperature"] == 0.0
    assert "repetition_penalty" not in greedy and "seed" not in greedy and "stop" not in greedy

    sampled = GenerationSettings(do_sample=True, temperature=0.7, repetition_penalty=1.15, seed=5)
    backend.generate([_conversation("s0"), _conversation("s1")], sampled)
    bodies = sorted(server.bodies[-2:], key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [5, 6]  # one seed per conversation, in input order
    assert all(b["temperature"] == 0.7 and b["repetition_penalty"] == 1.15 for b in bodies)

    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        backend.generate([_conversation("ngram")], GenerationSettings(no_repeat_ngram_size=3))
    assert server.hits["ngram"] == 0  # refused before sending anything


def test_stop_after_verdict_cuts_client_side(server, no_key):
    server.answer = lambda marker, body, images: (
        "Score 1: 4\nScore 2: 2\nImage 1 is better lit\nImage 1 is better\n\nMore."
    )
    backend = _backend(server, no_key)
    cut = backend.generate([_conversation("v")], GenerationSettings(stop_after_verdict=True))
    assert cut == ["Score 1: 4\nScore 2: 2\nImage 1 is better lit\nImage 1 is better"]
    full = backend.generate([_conversation("v")], GREEDY)
    assert full[0].endswith("More.")


# -------------------------------------------------------------------------------------------- retries and errors
def test_retries_on_5xx_429_and_malformed_bodies_are_counted(server, no_key):
    server.plan = {
        "a": ["500", "503", "ok"],
        "b": ["429", "ok"],
        "c": ["not-json", "ok"],
        "d": ["no-choices", "null-content", "ok"],
        "e": ["ok"],
    }
    backend = _backend(server, no_key)
    answers = backend.generate([_conversation(m) for m in "abcde"], GREEDY)
    assert answers == [f"answer to {m}" for m in "abcde"]
    assert server.hits == Counter(a=3, b=2, c=2, d=3, e=1)
    metrics = backend.pop_metrics()
    assert metrics["judge/http_requests"] == 11 and metrics["judge/http_retries"] == 6
    assert metrics["judge/http_failures"] == 0 and metrics["judge/http_latency_s"] > 0
    assert backend.pop_metrics()["judge/http_requests"] == 0  # popped counters reset


def test_timeout_then_success(server, no_key):
    server.plan = {"slow": ["slow", "ok"]}
    backend = _backend(server, no_key, timeout=0.3)
    assert backend.generate([_conversation("slow")], GREEDY) == ["answer to slow"]
    # It gave up on the slow attempt instead of waiting it out: the slow attempt answers too (after slow_s), so a
    # client that waited would have its answer from the first attempt and never send a second.
    assert server.hits["slow"] == 2 and backend.pop_metrics()["judge/http_retries"] == 1


def test_client_error_is_not_retried(server, no_key):
    server.plan = {"bad": ["400"]}
    backend = _backend(server, no_key)
    with pytest.raises(BackendError, match="HTTP 400: bad field foo") as info:
        backend.generate([_conversation("good"), _conversation("bad")], GREEDY)
    assert info.value.status == 400 and "[truncated]" in str(info.value) and len(str(info.value)) < 1000
    assert server.hits["bad"] == 1
    metrics = backend.pop_metrics()
    assert metrics["judge/http_retries"] == 0 and metrics["judge/http_failures"] == 1


def test_wrong_model_name_names_the_server_message(server, no_key):
    backend = OpenAIChatBackend("no/such-model", base_url=server.url, api_key_env=no_key, backoff=0.01)
    with pytest.raises(BackendError, match="HTTP 404: The model `no/such-model` does not exist"):
        backend.generate([_conversation("m")], GREEDY)


def test_malformed_answers_exhaust_retries(server, no_key):
    server.plan = {"junk": ["not-json"], "empty": ["no-choices"]}
    backend = _backend(server, no_key, max_retries=2)
    with pytest.raises(BackendError, match="not JSON.*3 attempts"):
        backend.generate([_conversation("junk")], GREEDY)
    with pytest.raises(BackendError, match="malformed answer"):
        backend.generate([_conversation("empty")], GREEDY)
    assert server.hits["junk"] == 3 and server.hits["empty"] == 3
    metrics = backend.pop_metrics()
    assert metrics["judge/http_retries"] == 4 and metrics["judge/http_failures"] == 2


def test_connection_refused_is_retried_then_reported(no_key):
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIChatBackend(
        MODEL, base_url=f"http://127.0.0.1:{port}/v1", api_key_env=no_key, max_retries=2, backoff=0.01
    )
    with pytest.raises(BackendError, match="ConnectionRefusedError.*3 attempts") as info:
        backend.generate([_conversation("x")], GREEDY)
    assert info.value.status is None
    assert backend.pop_metrics()["judge/http_requests"] == 3


# ------------------------------------------------------------------------------------------------------ API key
def test_api_key_is_sent_and_never_leaks(monkeypatch):
    monkeypatch.setenv("PIG_TEST_KEY", SECRET)
    srv = ChatServer(api_key=SECRET)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        backend = _backend(srv, "PIG_TEST_KEY")
        assert backend.generate([_conversation("ok")], GREEDY) == ["answer to ok"]  # the server checked the key
        srv.plan = {"echo": ["echo-auth"]}
        with pytest.raises(BackendError) as info:
            backend.generate([_conversation("echo")], GREEDY)
        assert "<redacted>" in str(info.value)  # the server did echo the header...
        for text in (str(info.value), repr(info.value), repr(backend), backend.model_id):
            assert SECRET not in text  # ...and the key is nowhere
        assert "PIG_TEST_KEY" in repr(backend)

        monkeypatch.setenv("PIG_TEST_KEY", "sk-wrong")
        posts = srv.posts
        with pytest.raises(BackendError, match="HTTP 401: invalid API key"):
            _backend(srv, "PIG_TEST_KEY").generate([_conversation("wrong")], GREEDY)
        assert srv.posts == posts + 1  # 401 is not retried
    finally:
        srv.shutdown()
        srv.server_close()


# ------------------------------------------------------------------------------------------------- score mode
def test_choice_probabilities_from_top_logprobs(server, no_key):
    log = math.log
    server.logprobs = {
        "both": [("1", log(0.6)), (" 2", log(0.2)), ("The", log(0.1))],
        "split": [("1", log(0.3)), (" 1", log(0.3)), ("2", log(0.2)), ("\n", log(0.05))],
        "missing": [("1", log(0.5)), ("The", log(0.3)), ("A", log(0.05))],
        "neither": [("The", log(0.7)), ("A", log(0.2))],
    }
    backend = _backend(server, no_key)
    probs = backend.choice_probabilities(
        [_conversation(m) for m in ("both", "split", "missing")], "The better image is Image ", ("1", "2")
    )
    assert probs[0] == pytest.approx((0.75, 0.25))
    assert probs[1] == pytest.approx((0.75, 0.25))  # "1" and " 1" add up
    assert probs[2] == pytest.approx((0.5 / 0.55, 0.05 / 0.55))  # absent "2" counts as the smallest listed
    last = server.bodies[-1]["messages"][-1]
    assert last == {"role": "assistant", "content": "The better image is Image "}
    with pytest.raises(BackendError, match=r"Neither candidate \('1', '2'\).*'The', 'A'"):
        backend.choice_probabilities([_conversation("neither")], "The better image is Image ", ("1", "2"))


# ---------------------------------------------------------------------------------------------------- PIGReward
WARM, COOL = (220, 60, 30), (30, 60, 220)
RATIONALE = "This user favours warm, red-orange colour palettes."


def _is_warm(image: Image.Image) -> bool:
    r, _, b = image.resize((1, 1)).getpixel((0, 0))
    return r > b


def _paper_format_answer(marker: str, body: dict, images: list[Image.Image]) -> str:
    """A fake PIGReward: a rationale for reasoner requests; for judge requests, a verdict favouring warm images, but
    only when the user context reached the prompt."""
    system = body["messages"][0]["content"][0]["text"]
    if "preference reasoner" in system:
        return f"{RATIONALE}\n\nThe chosen image is warmer."
    prompt = "".join(i["text"] for i in body["messages"][1]["content"] if i["type"] == "text")
    if RATIONALE not in prompt:
        return "I know nothing about this user."
    s1, s2 = (4 if _is_warm(im) else 2 for im in images)
    verdict = "Tie" if s1 == s2 else f"Image {1 if s1 > s2 else 2} is better"
    return (
        f"Colour: warm tones suit this user (Score 1: {s1}, Score 2: {s2})\n"
        "Composition: both balanced (Score 1: 3, Score 2: 3)\n"
        f"Score 1: {s1 + 3}\nScore 2: {s2 + 3}\n{verdict}\nAnything else I can help with?"
    )


def _user(tmp_path):
    root = tmp_path / "user"
    (root / "images").mkdir(parents=True)
    for name, colour in (("warm", WARM), ("cool", COOL)):
        Image.new("RGB", (20, 20), colour).save(root / "images" / f"{name}.png")
    ref = {"prompt": "a lighthouse", "chosen": "images/warm.png", "rejected": "images/cool.png"}
    refs = [ref, {**ref, "prompt": "a lighthouse at dusk"}]  # two references: a repeated one is refused
    (root / "user.json").write_text(json.dumps({"user_id": "warm-fan", "references": refs}))
    return load_user(str(root))


def test_pigreward_end_to_end(server, no_key, tmp_path):
    server.answer = _paper_format_answer
    backend = _backend(server, no_key)
    pig = PIGReward(judge=backend, reasoner=backend, cache_dir=tmp_path / "runs")
    context = pig.build_context(_user(tmp_path))
    assert context.texts == [RATIONALE, RATIONALE] and context.model_id == backend.model_id

    warm, cool = Image.new("RGB", (24, 16), WARM), Image.new("RGB", (24, 16), COOL)
    results = pig.compare(["a sunset", "a cat", "a house"], [warm, cool, warm], [cool, warm, warm], context)
    assert [r.preference for r in results] == [1.0, 0.0, 0.5]
    assert all(r.consistent for r in results)
    assert all(v.status == "ok" for r in results for v in (r.forward, r.backward))
    assert results[0].forward.text.endswith("Image 1 is better")  # cut after the verdict line, client-side
    assert results[0].backward.winner == 2  # A (warm) was shown second
    assert backend.pop_metrics()["judge/http_requests"] == 2 + 6  # two rationales, three pairs in both orders

    # score mode on the same server: P("1") = 0.8 when Image 1 is the warm one
    server.top_logprobs = lambda marker, body, images: [
        ("1", math.log(0.8 if _is_warm(images[0]) else 0.2)),
        ("2", math.log(0.2 if _is_warm(images[0]) else 0.8)),
    ]
    pig_score = PIGReward(backend, backend, settings=JudgeSettings(mode="score"), cache_dir=tmp_path / "runs")
    scored = pig_score.compare(["a sunset"], [warm], [cool], context)
    assert scored[0].forward.p_1 == pytest.approx(0.8) and scored[0].backward.p_1 == pytest.approx(0.2)
    assert scored[0].preference == pytest.approx(0.8) and scored[0].consistent
