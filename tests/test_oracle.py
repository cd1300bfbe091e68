"""The toy-world teacher that the tiny PIGReward is distilled from: its answers must be what the parser and the
judge's reader expect, and its rationales must carry the user's taste."""

from __future__ import annotations

import numpy as np

from localmodels import oracle, world
from reward.parsing import parse_verdict


def test_teacher_verdicts_parse_ok_with_the_same_winner():
    rng = np.random.default_rng(0)
    for _ in range(40):
        user = oracle.SyntheticUser.sample(rng)
        _, a, b, *_ = oracle.make_reference(user, rng)
        context = [oracle.teacher_rationale(*oracle.make_reference(user, rng)[1:3], rng) for _ in range(4)]
        text, winner = oracle.teacher_verdict(context, a, b)
        verdict = parse_verdict(text)
        assert verdict.status == "ok", text
        assert verdict.winner == winner
        assert len(verdict.dimensions) == 3


def test_context_of_a_user_reveals_their_taste():
    """Across references, the axes a user cares about dominate the rationales (read back by majority)."""
    rng = np.random.default_rng(1)
    user = oracle.SyntheticUser({"palette": "warm", "layout": "sparse"}, {"palette": 1.0, "layout": 0.8})
    rationales = [oracle.teacher_rationale(*oracle.make_reference(user, rng)[1:3], rng) for _ in range(12)]
    prefs = oracle.read_context(rationales)
    assert prefs.get("palette") == "warm" and prefs.get("layout") == "sparse"


def test_read_context_takes_the_first_cue_of_a_sentence():
    bright = "The user likes bright, well lit images rather than dark ones."
    dark = "This user likes dim, night-like images rather than bright ones."
    assert oracle.read_context([bright]) == {"light": "bright"}
    assert oracle.read_context([dark]) == {"light": "dark"}
    assert oracle.read_context([]) == {}


def test_personal_dimension_follows_the_context_direction():
    warm = world.draw_scene(world.Scene("sun", "warm", "bright", "sparse", 1))
    cool = world.draw_scene(world.Scene("sun", "cool", "bright", "sparse", 1))
    likes_cool = ["The user prefers cool colours: they chose the blue and teal image over the warmer one."]
    assert oracle.teacher_verdict(likes_cool, warm, cool)[1] == 2
    likes_warm = ["This user favours a warm palette of orange and red over cool blues."]
    assert oracle.teacher_verdict(likes_warm, warm, cool)[1] == 1
    palette = parse_verdict(oracle.teacher_verdict([], warm, cool)[0]).dimensions[0]
    assert palette.name == "Colour palette" and palette.score_1 == palette.score_2  # no context, no palette prior


def test_examples_are_deterministic():
    from localmodels.judge_model import make_examples

    a, b = make_examples(12, seed=3), make_examples(12, seed=3)
    assert [e["answer"] for e in a] == [e["answer"] for e in b]
    assert {e["task"] for e in make_examples(60, seed=4)} == {"judge_cot", "judge_score", "reasoner"}


def test_toy_dataset_is_a_valid_bench_dataset_whose_labels_follow_the_hidden_taste(tmp_path):
    import json

    from PIL import Image

    from localmodels.demo_user import write_toy_dataset
    from reward.eval.dataset import list_users, read_manifest

    out = write_toy_dataset(tmp_path / "toy", n_users=3, n_references=2, n_heldout=6, size=32, seed=5)
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["counts"]["users"] == 3 and manifest["counts"]["heldout"] == 18
    users = list_users(out)
    assert [(u.user_id, u.n_references, u.n_heldout) for u in users] == [(f"toy00{i}", 2, 6) for i in range(3)]
    # The generator draws the first user's taste first; its held-out labels must be what that taste prefers.
    taste = oracle.SyntheticUser.sample(np.random.default_rng(5))
    data = json.loads((users[0].folder / "user.json").read_text())
    assert all(f"{pole} {axis}" in data["description"] for axis, pole in taste.prefs.items())
    for pair in data["heldout"]:
        utilities = [
            taste.utility(world.image_attributes(Image.open(users[0].folder / pair[k]).convert("RGB")))
            for k in ("image_1", "image_2")
        ]
        assert pair["label"] == (1 if utilities[0] > utilities[1] else 2)


def test_read_context_needs_a_lead_of_two_from_three_rationales():
    warm = "This user favours a warm palette of orange and red over cool blues."
    cool = "This user favours a cool palette of blue and purple over warm oranges."
    bright = "The user likes bright, well lit images rather than dark ones."
    dark = "The user favours dark, moody lighting over bright scenes."
    assert oracle.read_context([warm, cool]) == {}  # a tie is no taste
    assert oracle.read_context([warm, bright]) == {"palette": "warm", "light": "bright"}  # two choices: a lead of one
    # from three rationales on, a lead of one is what chance differences between references produce
    assert oracle.read_context([warm, warm, bright, bright, dark]) == {"palette": "warm"}
    assert oracle.read_context([warm, warm, cool, bright, bright, bright, dark]) == {"light": "bright"}


def test_shipped_users_references_read_back_as_their_hidden_taste():
    """The teacher's reading of each shipped sandbox user's own references names exactly the axes of their taste."""
    from pathlib import Path

    from reward.users import load_user

    users_dir = Path(__file__).resolve().parents[1] / "users"
    rng = np.random.default_rng(0)
    for user_id in ("demo", "nightowl", "crowd"):
        user = load_user(user_id, users_dir)
        rationales = [
            oracle.teacher_rationale(r.chosen.resize((32, 32)), r.rejected.resize((32, 32)), rng)
            for r in user.references
        ]
        assert oracle.read_context(rationales) == user.sandbox["prefs"], user_id
