"""PIGReward on a tiny real Qwen2-VL: context caching, both-order judging, score mode, status accounting."""

from __future__ import annotations

import json
import threading

import pytest
from PIL import Image

from common.files import atomic_write_json
from reward import context as ctx
from reward.backends import GenerationSettings, TransformersVLM, load_vlm_processor
from reward.parsing import STATUSES
from reward.pigreward import JudgeSettings, PIGReward
from reward.reduction import position_consistent, preference_from_orders, swap
from reward.users import load_user


@pytest.fixture(scope="module")
def backend(tiny_models):
    return TransformersVLM(tiny_models["vlm"], device="cpu", dtype="float32", batch_size=4)


def _pig(backend, tmp_path, **settings):
    return PIGReward(
        backend,
        backend,
        settings=JudgeSettings(generation=GenerationSettings(max_new_tokens=24, stop_after_verdict=True), **settings),
        reasoner_generation=GenerationSettings(max_new_tokens=12),
        cache_dir=tmp_path / "runs",
    )


def test_processor_loads_without_torchvision(tiny_models):
    processor = load_vlm_processor(tiny_models["vlm"])
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert processor.chat_template


def test_context_built_once_then_cached(backend, tmp_path, demo_user_copy):
    pig = _pig(backend, tmp_path)
    user = load_user(str(demo_user_copy))
    first = pig.build_context(user)
    assert len(first.rationales) == len(user.references)
    assert first.template_id == "pigreward-reasoner-v1" and first.model_id == backend.model_id
    path = ctx.context_path(tmp_path / "runs", "demo", first.key)
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    second = pig.build_context(user)
    assert second.to_dict() == first.to_dict() and path.stat().st_mtime_ns == stamp  # read, not rebuilt

    # a changed reference image changes the key: a new context is built, the old file is kept
    img = demo_user_copy / "images" / "ref00_chosen.png"
    with Image.open(img) as im:
        changed = im.convert("RGB")
    changed.putpixel((0, 0), tuple(255 - c for c in changed.getpixel((0, 0))))
    changed.save(img)
    third = pig.build_context(load_user(str(demo_user_copy)))
    assert third.key != first.key and path.is_file()


def test_rebuilt_reasoner_weights_at_the_same_path_invalidate_the_context(tiny_models, tmp_path):
    import shutil

    from common.hub import weights_fingerprint

    folder = tmp_path / "vlm"
    shutil.copytree(tiny_models["vlm"], folder)
    first = TransformersVLM(str(folder), device="cpu", dtype="float32")
    key = _pig(first, tmp_path).context_key(load_user("demo"))
    assert first.model_id.startswith(f"{folder}@local-")
    # stable while nothing changes: what the folder fingerprints to now is what the judge recorded when it loaded it
    # (loading read every file; a fingerprint of access times or of the clock would differ)
    assert first.model_id == f"{folder}@{weights_fingerprint(str(folder))}"
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # "rebuilt": same path, new file
    second = TransformersVLM(str(folder), device="cpu", dtype="float32")
    assert second.model_id != first.model_id
    assert _pig(second, tmp_path).context_key(load_user("demo")) != key
    assert weights_fingerprint("no-org/not-cached-model") == "hub"


def test_corrupt_cache_is_rebuilt(backend, tmp_path):
    pig = _pig(backend, tmp_path)
    user = load_user("demo")
    path = ctx.context_path(tmp_path / "runs", "demo", pig.context_key(user))
    path.parent.mkdir(parents=True)
    path.write_text("{truncated")
    context = pig.build_context(user)
    assert json.loads(path.read_text())["user_id"] == "demo" and context.rationales


def test_atomic_writes_under_concurrency(tmp_path):
    path = tmp_path / "c.json"
    payloads = [{"i": i, "blob": "x" * 20000} for i in range(8)]
    threads = [threading.Thread(target=atomic_write_json, args=(path, p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(path.read_text()) in payloads  # some complete payload, never a torn mix
    assert not list(tmp_path.glob(".c.json.*"))  # no temporary files left behind


def test_compare_judges_both_orders_and_counts_statuses(backend, tmp_path):
    pig = _pig(backend, tmp_path)
    user = load_user("demo")
    refs = user.references[:3]
    results = pig.compare(
        [r.prompt for r in refs], [r.chosen for r in refs], [r.rejected for r in refs], ["likes warm"]
    )
    assert len(results) == 3
    for r in results:
        assert r.backward is not None
        assert r.forward.template_id == "pigreward-judge-cot-v1"
        # the preference is the mean of the decided orders, whatever the random tiny model answered
        pref_ab, pref_ba = r.forward.preference_for_1, swap(r.backward.preference_for_1)
        assert r.preference == preference_from_orders(pref_ab, pref_ba)
        assert r.consistent == position_consistent(pref_ab, pref_ba)
    metrics = pig.metrics.pop()
    assert metrics["judge/verdicts"] == 6  # 3 pairs x 2 orders (a retry replaces its verdict, not adds one)
    assert sum(metrics[f"judge/status/{s}"] for s in STATUSES) == pytest.approx(1.0)

    # one token holds no verdict: every order is undecided, and an undecided pair is None (counted), never a win
    mute = PIGReward(
        backend,
        backend,
        settings=JudgeSettings(generation=GenerationSettings(max_new_tokens=1), retry_failed=False),
        cache_dir=tmp_path / "runs",
    )
    undecided = mute.compare([refs[0].prompt], [refs[0].chosen], [refs[0].rejected], ["likes warm"])
    assert [(r.forward.winner, r.backward.winner, r.preference, r.consistent) for r in undecided] == [
        (None, None, None, None)
    ]
    assert mute.metrics.pop()["judge/verdicts"] == 2


def test_score_mode_gives_probabilities(backend, tmp_path):
    pig = _pig(backend, tmp_path, mode="score")
    user = load_user("demo")
    ref = user.references[0]
    (result,) = pig.compare([ref.prompt], [ref.chosen], [ref.rejected], [])
    assert 0.0 <= result.preference <= 1.0
    assert result.forward.p_1 + result.forward.p_2 == pytest.approx(1.0)


def test_batched_generation_matches_single(backend):
    from reward.templates import build_messages, format_context, load_template

    user = load_user("demo")
    t = load_template("judge-cot-v1")
    convs = [build_messages(t, r.prompt, (r.chosen, r.rejected), format_context([])) for r in user.references[:4]]
    settings = GenerationSettings(max_new_tokens=10)
    batched = backend.generate(convs, settings)
    single = [backend.generate([c], settings)[0] for c in convs]
    assert batched == single
