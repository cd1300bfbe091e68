"""The context cache is incremental (issue 22): a user who adds references gets a new context in which only the new
references went through the reasoner (a tiny real Qwen2-VL), each rationale cached under its own reference's key."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from reward import context as ctx
from reward.backends import GenerationSettings, TransformersVLM
from reward.choices import record_choice
from reward.pigreward import PIGReward
from reward.users import load_user


class CountingReasoner:
    """The real backend, with a count of the conversations each `generate` call was given (a spy, not a mock)."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []
        self.model_id = backend.model_id

    def generate(self, conversations, settings):
        self.calls.append(len(conversations))
        return self.backend.generate(conversations, settings)


@pytest.fixture(scope="module")
def backend(tiny_models):
    return TransformersVLM(tiny_models["vlm"], device="cpu", dtype="float32", batch_size=4)


def _pig(reasoner, tmp_path, max_new_tokens=12):
    return PIGReward(
        reasoner.backend,
        reasoner,
        reasoner_generation=GenerationSettings(max_new_tokens=max_new_tokens),
        cache_dir=tmp_path / "runs",
    )


def _add_choice(user_dir, i: int) -> None:
    left = Image.new("RGB", (32, 32), (200, 40 + i, 10))
    right = Image.new("RGB", (32, 32), (10, 40 + i, 200))
    record_choice(user_dir, "demo", f"pair{i:06d}", f"a lantern {i}", "left", left, right)


def test_only_new_references_go_through_the_reasoner(backend, tmp_path, demo_user_copy):
    reasoner = CountingReasoner(backend)
    pig = _pig(reasoner, tmp_path)
    first = pig.build_context(load_user(str(demo_user_copy)))
    assert reasoner.calls == [8]
    _add_choice(demo_user_copy, 1)
    _add_choice(demo_user_copy, 2)
    second = pig.build_context(load_user(str(demo_user_copy)))
    assert reasoner.calls == [8, 2]  # the two new references only
    assert second.key != first.key and len(second.rationales) == 10
    assert second.texts[:8] == first.texts  # the unchanged references keep their rationales
    assert [r.prompt for r in second.rationales[8:]] == ["a lantern 1", "a lantern 2"]
    assert pig.build_context(load_user(str(demo_user_copy))).to_dict() == second.to_dict()
    assert reasoner.calls == [8, 2]  # the whole context is cached too


def test_every_key_part_makes_a_new_rationale(backend, tmp_path, demo_user_copy):
    """The per-reference key is honest: another generation setting, a changed image or a rebuild runs the reasoner
    again; the whole-context file is untouched by the rationale files beside it."""
    reasoner = CountingReasoner(backend)
    _pig(reasoner, tmp_path).build_context(load_user(str(demo_user_copy)))
    _pig(reasoner, tmp_path, max_new_tokens=13).build_context(load_user(str(demo_user_copy)))
    assert reasoner.calls == [8, 8]
    image = demo_user_copy / "images" / "ref03_rejected.png"
    with Image.open(image) as im:
        changed = im.convert("RGB")
    changed.putpixel((1, 1), tuple(255 - c for c in changed.getpixel((1, 1))))
    changed.save(image)
    pig = _pig(reasoner, tmp_path)
    context = pig.build_context(load_user(str(demo_user_copy)))
    assert reasoner.calls == [8, 8, 1]  # the changed reference only
    pig.build_context(load_user(str(demo_user_copy)), rebuild=True)
    assert reasoner.calls == [8, 8, 1, 8]
    folder = tmp_path / "runs" / "demo" / "context"
    assert len(list(folder.glob("*.json"))) == 3  # whole contexts: three keys (rebuild overwrote its own)
    assert json.loads(ctx.context_path(tmp_path / "runs", "demo", context.key).read_text())["user_id"] == "demo"


def test_a_corrupt_rationale_is_rebuilt_with_a_warning(backend, tmp_path, demo_user_copy, caplog):
    reasoner = CountingReasoner(backend)
    pig = _pig(reasoner, tmp_path)
    first = pig.build_context(load_user(str(demo_user_copy)))
    rationale = sorted((tmp_path / "runs" / "demo" / "context" / "rationales").glob("*.json"))[0]
    rationale.write_text('{"key": "other", "text": "forged"}')
    _add_choice(demo_user_copy, 3)  # a new whole-context key, so the rationale files are read
    second = pig.build_context(load_user(str(demo_user_copy)))
    assert reasoner.calls == [8, 2] and "forged" not in second.texts
    assert "Rationale cache" in caplog.text and second.texts[:8] == first.texts


def test_rationale_keys_are_literal_and_depend_on_each_part():
    base = ("m@x", "pigreward-reasoner-v1", {"max_new_tokens": 96}, "d" * 64)
    key = ctx.rationale_key(*base)
    assert key == ctx.rationale_key(*base) and len(key) == 24
    variants = [
        ("m@y", *base[1:]),
        (base[0], "other-template", *base[2:]),
        (*base[:2], {"max_new_tokens": 97}, base[3]),
        (*base[:3], "e" * 64),
    ]
    assert len({key, *(ctx.rationale_key(*v) for v in variants)}) == 5


def test_a_context_window_reads_the_most_recent_references(backend, tmp_path, demo_user_copy):
    """`context_references: N` builds the context from the user's N most recent references: a choice made on the page
    pushes the oldest reference out (a taste that moves is followed), and only the new reference is reasoned about."""
    from reward.pigreward import JudgeSettings

    reasoner = CountingReasoner(backend)
    pig = PIGReward(
        backend,
        reasoner,
        settings=JudgeSettings(context_references=6),
        reasoner_generation=GenerationSettings(max_new_tokens=12),
        cache_dir=tmp_path / "runs",
    )
    user = load_user(str(demo_user_copy))
    first = pig.build_context(user)
    assert [r.prompt for r in first.rationales] == [r.prompt for r in user.references[-6:]]
    _add_choice(demo_user_copy, 4)
    second = pig.build_context(load_user(str(demo_user_copy)))
    assert [r.prompt for r in second.rationales] == [r.prompt for r in user.references[-5:]] + ["a lantern 4"]
    assert reasoner.calls == [6, 1] and second.texts[:5] == first.texts[1:]
    assert second.key == pig.context_key(load_user(str(demo_user_copy))) != first.key
    with pytest.raises(ValueError, match="context_references"):
        JudgeSettings(context_references=-1)


def test_the_console_says_when_a_window_leaves_choices_out():
    from rl.reward_stack import context_heading

    context = _split_context()
    assert context_heading(context, 4) == "[context] 4 rationales for u (m):"
    assert context_heading(context, 24) == (
        "[context] 4 rationales for u (m), from the most recent of 24 choices (--context_references 0 reads all):"
    )


class RecordingJudge:
    """Wraps the tiny judge backend, keeping the conversations it was asked to judge."""

    def __init__(self, backend):
        self.backend, self.conversations = backend, []
        self.model_id = backend.model_id

    def generate(self, conversations, settings):
        self.conversations.extend(conversations)
        return self.backend.generate(conversations, settings)


def _split_context() -> ctx.UserContext:
    """A context whose taste depends on the subject: warm for the sun and the moon, cool for the box and the house."""
    rationales = [
        ctx.Rationale(0, "a sun over the hills", "warm for the sun"),
        ctx.Rationale(1, "a cardboard box", "cool for the box"),
        ctx.Rationale(2, "a full moon at night", "warm for the moon"),
        ctx.Rationale(3, "a wooden house", "cool for the house"),
    ]
    return ctx.UserContext("u", rationales, "m", "t", "h")


def test_context_nearest_judges_each_prompt_under_the_rationales_of_its_nearest_choices(backend, tiny_models):
    """`context_nearest: K` gives each judged prompt the K rationales whose choices' prompts are nearest to it (real
    MiniLM embeddings), in the context's order, so a taste that depends on the subject reaches the judge as one."""
    from reward.pigreward import JudgeSettings
    from reward.similarity import TextEmbedder

    context = _split_context()
    judge = RecordingJudge(backend)
    settings = JudgeSettings(context_nearest=2, generation=GenerationSettings(max_new_tokens=8))
    pig = PIGReward(judge, backend, settings=settings, prompt_embedder=TextEmbedder(tiny_models["minilm"]))
    assert pig.nearest_rationales(["the sun and the moon", "an old house", "a box"], context.rationales, 2) == [
        [0, 2],
        [1, 3],
        [1, 3],
    ]
    image = Image.new("RGB", (32, 32), (200, 90, 40))
    pig.judge_pairs(["the sun and the moon", "an old house"], [image] * 2, [image] * 2, context)
    texts = [str(c) for c in judge.conversations]
    assert "warm for the sun" in texts[0] and "warm for the moon" in texts[0] and "cool for" not in texts[0]
    assert "cool for the box" in texts[1] and "cool for the house" in texts[1] and "warm for" not in texts[1]
    # a plain list of rationales carries no prompts: used whole; a context no longer than K is used whole
    assert pig.contexts_for(["a box"], ["one", "two", "three"])[0].count("\n") == 2
    whole = PIGReward(judge, backend, settings=JudgeSettings(context_nearest=4), prompt_embedder=pig.prompt_embedder)
    assert whole.contexts_for(["a box"], context)[0].count("\n") == 3
    with pytest.raises(ValueError, match="prompt_embedder"):
        PIGReward(judge, backend, settings=JudgeSettings(context_nearest=2))
    with pytest.raises(ValueError, match="context_nearest"):
        JudgeSettings(context_nearest=-1)


def test_a_policy_reading_the_nearest_rationales_is_served_the_ones_it_was_trained_on(tiny_models, tmp_path):
    """`pig rewrite` for an adapter trained with `--context_nearest 2` gives each prompt the rationales of its two
    nearest choices (by the embedder the run recorded); a shared context stays shared; a per-prompt list must have
    one entry per prompt."""
    from pig.rewrite import nearest_reader
    from policies.rewriter import AdapterInfo, build_chat, per_prompt_contexts

    context = _split_context()
    info = AdapterInfo("u", "base", "Rewrite.", 8, context_format="rationales-v1", context_nearest=2)
    info.context_source = {"prompt_embedder": tiny_models["minilm"]}
    read = nearest_reader(context, info)(["the sun and the moon", "an old house"])
    assert read == [["warm for the sun", "warm for the moon"], ["cool for the box", "cool for the house"]]
    chats = [build_chat(p, context=c)[0]["content"] for p, c in zip(["x", "y"], per_prompt_contexts(read, 2))]
    assert "warm for the moon" in chats[0] and "cool" not in chats[0] and "warm" not in chats[1]
    assert per_prompt_contexts(["one", "two"], 3) == [["one", "two"]] * 3
    assert per_prompt_contexts([], 2) == [[], []]
    with pytest.raises(ValueError, match="3 entries for 2 prompts"):
        per_prompt_contexts([["a"], ["b"], ["c"]], 2)
