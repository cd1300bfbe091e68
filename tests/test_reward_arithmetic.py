"""The reward's arithmetic on *decided* verdicts (issue 23): which rewrite a comparison credits, and with how much.

Ties cannot tell the two sides of a comparison apart (0.5 and 1 - 0.5 are equal), so every test here uses verdicts
that decide, with literal expected rewards: first the pure reduction (`reward.reduction.win_rates`), then the whole
environment (render, judge in both orders, reduce) against a judge server whose verdicts are known in advance.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from reward.reduction import win_rates


# ------------------------------------------------------------------------------------------ the pure reduction
def test_the_first_of_a_pair_is_credited_p_the_second_one_minus_p():
    vs_reference, vs_items, undecided = win_rates([(0, 1)], [0.75], 2)
    assert vs_items == [0.75, 0.25]
    assert vs_reference == [0.5, 0.5]  # no comparison with the reference: neutral
    assert undecided == 0


def test_round_robin_of_three_decided_verdicts():
    # 0 beats 1, 0 beats 2, 2 beats 1: 0 won both its comparisons, 2 one of two, 1 none
    pairs = [(0, 1), (0, 2), (1, 2)]
    assert win_rates(pairs, [1.0, 1.0, 0.0], 3) == ([0.5, 0.5, 0.5], [1.0, 0.0, 0.5], 0)
    # the same games with the winners reversed: the rewards reverse
    assert win_rates(pairs, [0.0, 0.0, 1.0], 3) == ([0.5, 0.5, 0.5], [0.0, 1.0, 0.5], 0)


def test_a_pair_listed_the_other_way_round_gives_the_same_rewards():
    # "1 beats 0 with 0.8" is "0 beats 1 with 0.2"
    assert win_rates([(1, 0)], [0.8], 2)[1] == pytest.approx([0.2, 0.8])
    assert win_rates([(0, 1)], [0.2], 2)[1] == pytest.approx([0.2, 0.8])


def test_comparisons_with_the_reference_are_averaged_per_item_and_undecided_is_a_counted_tie():
    pairs = [(0, None), (0, None), (1, None), (1, None), (2, None)]
    vs_reference, vs_items, undecided = win_rates(pairs, [1.0, 0.0, 1.0, None, None], 3)
    assert vs_reference == [0.5, 0.75, 0.5]  # (1 + 0) / 2; (1 + tie) / 2; one undecided comparison: a tie
    assert vs_items == [0.5, 0.5, 0.5]
    assert undecided == 2


def test_reference_and_group_comparisons_are_kept_apart():
    # the original-vs-rewrite and the rewrite-vs-rewrite comparisons of one group of two, as the environment lists
    # them (compare_to="both"): 0 loses to the original but beats 1; 1 beats the original
    pairs = [(0, None), (0, 1), (1, None)]
    assert win_rates(pairs, [0.0, 0.9, 1.0], 2) == ([0.0, 1.0], pytest.approx([0.9, 0.1]), 0)


def test_one_preference_per_pair():
    with pytest.raises(ValueError, match="3 pairs but 2 preferences"):
        win_rates([(0, None), (1, None), (0, 1)], [1.0, 0.0], 2)


# ----------------------------------------------------------------------------- the environment, decided verdicts
# The judge server below prefers the brighter of its two images, with a verdict the parser reads as decided; so the
# reward of every rewrite follows from the brightness of the images alone, in either presentation order.
BRIGHTER = {
    1: "Light: brighter (Score 1: 4, Score 2: 2)\nScore 1: 4\nScore 2: 2\nImage 1 is better",
    2: "Light: brighter (Score 1: 2, Score 2: 4)\nScore 1: 2\nScore 2: 4\nImage 2 is better",
}
MODEL = "stub/brightness-judge"
PNG_URL = re.compile(r"data:image/png;base64,(?P<data>[A-Za-z0-9+/=]+)")


def brightness(image: Image.Image) -> float:
    pixels = image.convert("L").getdata()
    return sum(pixels) / len(pixels)


class BrightnessJudge(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        self.lock = threading.Lock()
        self.judged = 0


class _Handler(BaseHTTPRequestHandler):
    server: BrightnessJudge

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["model"] == MODEL
        images = [
            Image.open(io.BytesIO(base64.b64decode(match["data"])))
            for message in body["messages"]
            if isinstance(message["content"], list)
            for item in message["content"]
            if item["type"] == "image_url" and (match := PNG_URL.fullmatch(item["image_url"]["url"]))
        ]
        assert len(images) == 2, f"a judge request should carry the two images of a pair, got {len(images)}"
        first, second = map(brightness, images)
        assert first != second, "two images of equal brightness: the stub cannot decide"
        with self.server.lock:
            self.server.judged += 1
        text = BRIGHTER[1 if first > second else 2]
        raw = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture()
def judge():
    from tests.conftest import serving

    with serving(BrightnessJudge()) as server:
        yield server


@pytest.fixture(scope="module")
def render_stack(tiny_models):
    from reward.similarity import TextEmbedder
    from rl.config import PigArguments
    from rl.render import Renderer

    args = PigArguments(renderer_model=tiny_models["sd"], render_steps=2)
    return Renderer.from_args(args, "cpu"), TextEmbedder(tiny_models["minilm"], device="cpu")


# four rewrites of one prompt: the tiny renderer draws four images of distinct brightness from them
ORIGINAL, REWRITES = "a sun", ["a warm sun", "a red sun at dusk", "a sun over the sea, wide shot", "a pale sun"]


def test_the_environment_rewards_the_rewrites_the_judge_prefers(judge, render_stack):
    from reward.pigreward import PIGReward
    from rl.environment import PersonalizedEnvironment

    pig = PIGReward.from_names(
        MODEL, backend="openai", backend_kwargs=dict(base_url=judge.url, max_retries=1, backoff=0.01, timeout=30)
    )
    renderer, embedder = render_stack
    env = PersonalizedEnvironment(
        pig, ["The user likes bright images."], renderer, embedder, num_generations=4, compare_to="both"
    )
    logged = {}
    result = env.compute([ORIGINAL] * 4, REWRITES, 0, logged.__setitem__)
    assert judge.judged == (4 + 6) * 2  # 4 rewrites vs the original, 6 pairs of rewrites; both orders each
    assert logged["reward/undecided_fraction"] == 0.0
    assert all(c.preference in (0.0, 1.0) and c.consistent for cs in result.comparisons for c in cs)

    light = [brightness(images[0]) for images in result.rewrite_images]
    original = brightness(result.original_images[0][0])
    rank = [sorted(light).index(b) for b in light]  # 0 = darkest rewrite, 3 = brightest
    assert sorted(rank) == [0, 1, 2, 3], f"rewrites of equal brightness {light}: pick other rewrites"
    # against the group: the darkest rewrite lost its three comparisons, the brightest won its three
    win_group = [r / 3 for r in rank]
    win_original = [1.0 if b > original else 0.0 for b in light]
    assert sorted(win_group) == [0.0, 1 / 3, 2 / 3, 1.0]
    assert 0 < sum(win_original) < 4, "every rewrite on one side of the original: pick other rewrites"
    assert result.preference == pytest.approx([(a + b) / 2 for a, b in zip(win_original, win_group)])
    assert logged["reward/win_rate_vs_original"] == pytest.approx(sum(win_original) / 4)

    # The same images under compare_to="group" and "original": each win rate alone.
    for compare_to, expected in (("group", win_group), ("original", win_original)):
        env = PersonalizedEnvironment(
            pig, ["The user likes bright images."], renderer, embedder, num_generations=4, compare_to=compare_to
        )
        assert env.compute([ORIGINAL] * 4, REWRITES, 0).preference == pytest.approx(expected), compare_to
