"""`reward.parsing.parse_verdict` on literal judge outputs: the paper's format and every degenerate shape we know."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reward.parsing import STATUSES, find_loop, parse_verdict

PAPER = """Colour palette: Image 1 uses the warm orange tones this user favours (Score 1: 4, Score 2: 2)
Composition: Image 1 is sparse with one clear subject, Image 2 is cluttered (Score 1: 3, Score 2: 1)
Lighting: both are bright (Score 1: 3, Score 2: 3)
Score 1: 10
Score 2: 6
Image 1 is better"""


def test_paper_format():
    v = parse_verdict(PAPER)
    assert v.status == "ok"
    assert v.winner == 1 and v.stated_winner == 1
    assert [d.name for d in v.dimensions] == ["Colour palette", "Composition", "Lighting"]
    assert (v.dimensions[1].score_1, v.dimensions[1].score_2) == (3, 1)
    assert v.dimensions[0].reason.startswith("Image 1 uses the warm")
    assert (v.total_1, v.total_2, v.stated_total_1, v.stated_total_2) == (10, 6, 10, 6)
    assert v.preference_for_1 == 1.0


def test_sums_written_out_and_chatter_around():
    text = (
        "Sure! Let me evaluate both images for this user.\n\n"
        "**Mood**: calm and warm (Score 1: 3, Score 2: 4)\n"
        "- **Detail**: crisp (score 1: 4; score 2: 1)\n"
        "Score 1: 3+4=7\nScore 2: 4 + 1 = 5\n"
        "**Image 1 is better.**\nI hope this helps!"
    )
    v = parse_verdict(text)
    assert v.status == "ok"
    assert (v.total_1, v.total_2, v.stated_total_1, v.stated_total_2) == (7, 5, 7, 5)
    assert [d.name for d in v.dimensions] == ["Mood", "Detail"]


def test_stated_totals_disagree_with_dimension_lines():
    # The model miscounted; its verdict follows its own wrong totals. Recomputed totals decide (module docstring).
    text = "A: x (Score 1: 3, Score 2: 4)\nB: y (Score 1: 4, Score 2: 1)\nScore 1: 5\nScore 2: 9\nImage 2 is better"
    v = parse_verdict(text)
    assert v.status == "inconsistent_totals"
    assert (v.total_1, v.total_2) == (7, 5)
    assert (v.stated_total_1, v.stated_total_2) == (5, 9)
    assert v.stated_winner == 2
    assert v.winner == 1


def test_verdict_contradicts_totals():
    text = "A: x (Score 1: 3, Score 2: 4)\nB: y (Score 1: 4, Score 2: 1)\nScore 1: 7\nScore 2: 5\nImage 2 is better"
    v = parse_verdict(text)
    assert v.status == "verdict_contradicts_totals"
    assert v.winner == 1 and v.stated_winner == 2


def test_repetition_loop_cut_at_token_limit():
    text = "Colour: warm (Score 1: 3, Score 2: 2)\n" + "Score 1: 2 / Score 2: 2\n" * 60 + "Score 1: 2 / Sco"
    v = parse_verdict(text)
    assert v.status == "degenerate_loop"
    assert v.winner is None and v.preference_for_1 is None
    assert v.loop_at == text.index("Score 1: 2 /")


def test_loop_without_newlines():
    text = "Score 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1: 1"
    assert parse_verdict(text).status == "degenerate_loop"


def test_loop_after_a_complete_answer_is_ignored():
    text = PAPER + "\n" + "Image 1 is better\n" * 30
    v = parse_verdict(text)
    assert v.status == "ok" and v.winner == 1


def test_missing_verdict_decides_from_totals():
    v = parse_verdict("A: x (Score 1: 3, Score 2: 4)\nB: y (Score 1: 2, Score 2: 2)\nScore 1: 5\nScore 2: 6\n")
    assert v.status == "no_verdict"
    assert v.stated_winner is None and v.winner == 2


@pytest.mark.parametrize(
    "text", ["", "   ", "lorem ipsum dolor", "Score 1:", "(Score 1: , Score 2: )", "Image 3 is better"]
)
def test_unparseable(text):
    v = parse_verdict(text)
    assert v.status == "unparseable" and v.winner is None


@pytest.mark.parametrize(
    "line, winner",
    [
        ("Image 2 is better", 2),
        ("image 2 IS BETTER", 2),
        ("Final verdict: Image 1", 1),
        ("The better image is Image 2.", 2),
        ("Image 2 is better than Image 1.", 2),
        ("Both images are equally good.", 0),
        ("Tie", 0),
    ],
)
def test_verdict_line_variants(line, winner):
    v = parse_verdict(f"A: x (Score 1: 3, Score 2: 3)\nScore 1: 3\nScore 2: 3\n{line}")
    assert v.stated_winner == winner


def test_tie_is_zero_and_half_preference():
    v = parse_verdict("A: x (Score 1: 3, Score 2: 3)\nScore 1: 3\nScore 2: 3\nTie")
    assert v.status == "ok" and v.winner == 0 and v.preference_for_1 == 0.5


def test_full_width_and_non_ascii():
    text = (
        "色彩：暖色调 （Ｓｃｏｒｅ １：４， Ｓｃｏｒｅ ２：２）\n"
        "Éclairage : doux (Score 1: 3, Score 2: 3)\n"
        "Ｓｃｏｒｅ １：７\nＳｃｏｒｅ ２：５\nＩｍａｇｅ １ ｉｓ ｂｅｔｔｅｒ"
    )
    v = parse_verdict(text)
    assert v.status == "ok" and v.winner == 1
    assert [d.name for d in v.dimensions] == ["色彩", "Éclairage"]
    assert (v.total_1, v.total_2) == (7, 5)


def test_scores_out_of_five_and_decimals():
    v = parse_verdict("A: x (Score 1: 3.5/5, Score 2: 4/5)\nScore 1: 3.5\nScore 2: 4\nImage 2 is better")
    assert v.status == "ok" and v.total_1 == 3.5 and v.winner == 2


def test_verdict_only_answer():
    v = parse_verdict("After careful thought, Image 2 is better.")
    assert v.winner == 2 and v.dimensions == []


def test_find_loop_ignores_distinct_dimension_lines():
    assert find_loop(PAPER) is None


def test_to_dict_round_trip():
    from reward.parsing import Verdict

    v = parse_verdict(PAPER)
    assert Verdict.from_dict(v.to_dict()) == v


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_never_raises_on_arbitrary_text(text):
    v = parse_verdict(text)
    assert v.status in STATUSES
    assert v.winner in (None, 0, 1, 2)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Colour", "Mood", "Light", "光", "Detail", "Style"]), st.integers(0, 9), st.integers(0, 9)
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda dim: dim[0],
    ),
    st.sampled_from(["", "chatter\n", "**Answer**\n"]),
)
def test_recomputed_totals_always_match_dimension_lines(dims, preamble):
    text = preamble + "\n".join(f"{n}: r (Score 1: {a}, Score 2: {b})" for n, a, b in dims)
    t1, t2 = sum(a for _, a, _ in dims), sum(b for _, _, b in dims)
    winner = 0 if t1 == t2 else (1 if t1 > t2 else 2)
    text += f"\nScore 1: {t1}\nScore 2: {t2}\n" + ("Tie" if winner == 0 else f"Image {winner} is better")
    v = parse_verdict(text)
    assert (v.total_1, v.total_2) == (t1, t2)
    assert v.winner == winner
    assert v.status == "ok"


def test_chatter_after_the_verdict_does_not_flip_it():
    text = PAPER + "\n\nNote: Image 2 is better in lighting, but the user cares more about colour."
    v = parse_verdict(text)
    assert v.stated_winner == 1 and v.status == "ok"


def test_dimension_scores_without_parentheses_and_image_labels():
    text = (
        "Colour: warm tones. Score 1: 4, Score 2: 2\n"
        "Layout: sparse (Image 1: 3, Image 2: 1)\n"
        "Total: Score 1: 7, Score 2: 3\n"
        "Image 1 wins."
    )
    v = parse_verdict(text)
    assert [d.name for d in v.dimensions] == ["Colour", "Layout"]
    assert (v.total_1, v.total_2, v.stated_total_1, v.stated_total_2) == (7, 3, 7, 3)
    assert v.status == "ok" and v.winner == 1


@pytest.mark.parametrize(
    "line, winner",
    [
        ("**Final verdict:** Image 2 is better than Image 1.", 2),
        ("Image 1 is clearly more preferred", 1),
        ("Winner: Image 2", 2),
        ("Image 2 score: 9", None),  # a total, not a verdict
    ],
)
def test_more_verdict_shapes(line, winner):
    assert parse_verdict(line).stated_winner == winner


def test_image_n_score_total_form():
    v = parse_verdict("A: x (Score 1: 3, Score 2: 4)\nImage 1 score: 3\nImage 2 score: 4\nImage 2 is better")
    assert (v.stated_total_1, v.stated_total_2) == (3, 4) and v.status == "ok"
