"""Ground truth for sandbox users, the sandbox user format, and the prompt language shared by the renderer and the
warm-start rewriter: pure logic, literal expectations."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from localmodels import world
from localmodels.demo_user import SHIPPED_USERS, TRAINING_PROMPTS, parse_taste_spec
from rl import ground_truth


def test_preference_and_tie_tolerance():
    assert ground_truth.preference(1.0, 0.5) == 1.0
    assert ground_truth.preference(0.5, 1.0) == 0.0
    assert ground_truth.preference(0.70, 0.69) == 0.5  # within 0.02: no preference
    assert ground_truth.preference(0.70, 0.67) == 1.0
    assert ground_truth.preference(0.3, 0.3, tol=0.0) == 0.5


def test_utility_and_preferences_on_drawn_scenes():
    taste = ground_truth.parse_taste({"prefs": {"palette": "warm"}, "weights": {"palette": 1.0}})
    warm = world.draw_scene(world.Scene("sun", "warm", "bright", "sparse", 1))
    cool = world.draw_scene(world.Scene("sun", "cool", "bright", "sparse", 1))
    assert ground_truth.utility(taste, warm) > 0.9 and ground_truth.utility(taste, cool) < 0.1
    assert ground_truth.preferences(taste, [warm, cool, warm], [cool, warm, warm]) == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="as many"):
        ground_truth.preferences(taste, [warm], [])


def test_agreement_counts_only_pairs_both_decide():
    # judge: 0.75 (A), 0.25 (B), None, 0.5 (tie), 1.0 (A); truth: A, A, A, B, tie
    assert ground_truth.agreement([0.75, 0.25, None, 0.5, 1.0], [1.0, 1.0, 1.0, 0.0, 0.5]) == 0.5
    assert ground_truth.agreement([None, 0.5], [1.0, 0.0]) is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"prefs": {"palette": "warm"}}, "expected the keys 'prefs' and 'weights'"),
        ({"prefs": {"colour": "warm"}, "weights": {"colour": 1}}, "not an axis and pole"),
        ({"prefs": {"palette": "hot"}, "weights": {"palette": 1}}, "not an axis and pole"),
        ({"prefs": {"palette": "warm"}, "weights": {"palette": 0}}, "positive number"),
        ({"prefs": {"palette": "warm"}, "weights": {"light": 1}}, "exactly the axes"),
        ({"prefs": {}, "weights": {}}, "at least one"),
    ],
)
def test_bad_tastes_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        ground_truth.parse_taste(spec)


def test_taste_spec_of_the_command_line():
    taste = parse_taste_spec("palette=cool:1.0, light=dark")
    assert taste.prefs == {"palette": "cool", "light": "dark"} and taste.weights == {"palette": 1.0, "light": 1.0}
    with pytest.raises(ValueError, match="not a number"):
        parse_taste_spec("palette=cool:x")


def test_a_new_sandbox_user_has_as_many_choices_as_asked(tmp_path):
    """`--references N` (a subject-dependent user's nearest rationales need several choices per kind of subject); a
    user with none is refused with the flag named."""
    import subprocess
    import sys

    from reward.users import load_user

    command = [sys.executable, "-m", "localmodels.demo_user", "--taste", "palette=warm/cool", "--seed", "3"]
    subprocess.run([*command, "--references", "12", "--out", str(tmp_path / "u")], check=True, capture_output=True)
    user = load_user(str(tmp_path / "u"))
    assert len(user.references) == 12 and len(user.heldout) == 8
    bad = subprocess.run([*command, "--references", "0", "--out", str(tmp_path / "v")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--references 0" in bad.stderr and not (tmp_path / "v").exists()


def test_shipped_users_record_their_taste_and_differ(tmp_path):
    from reward.users import UserDataError, load_user
    from tests.conftest import REPO

    tastes = {}
    for user_id, (taste, _, _) in SHIPPED_USERS.items():
        user = load_user(user_id, REPO / "users")
        assert ground_truth.taste_of(user) == taste
        assert user.training_prompts == TRAINING_PROMPTS
        tastes[user_id] = tuple(sorted(taste.prefs.items()))
    assert len(set(tastes.values())) == len(tastes)
    assert ("palette", "cool") in tastes["nightowl"]  # one user against the warm lean of small chat models
    data = json.loads((REPO / "users" / "demo" / "user.json").read_text())
    data["sandbox"] = "warm please"
    folder = tmp_path / "bad"
    (folder / "images").mkdir(parents=True)
    for ref in data["references"] + data["heldout"]:
        for key in ("chosen", "rejected", "image_1", "image_2"):
            if key in ref:
                Image.open(REPO / "users" / "demo" / ref[key]).save(folder / ref[key])
    (folder / "user.json").write_text(json.dumps(data))
    with pytest.raises(UserDataError, match="'sandbox' must be an object"):
        load_user(str(folder))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_heldout_prompts_are_never_trained_on_and_carry_no_style():
    style = {w for words in world.STYLE_WORDS.values() for w in words}
    trained = {p.lower() for p in TRAINING_PROMPTS}
    for prompt in ground_truth.HELDOUT_PROMPTS:
        assert prompt.lower() not in trained
        assert not _words(prompt) & style, prompt
        assert world.parse_caption(prompt)["subject"] in world.SUBJECTS, prompt
    # every subject is asked for equally often (12 wordings each), and by its own word only
    subjects = [world.parse_caption(p)["subject"] for p in ground_truth.HELDOUT_PROMPTS]
    assert {s: subjects.count(s) for s in world.SUBJECTS} == {s: 12 for s in world.SUBJECTS}
    nouns = set(world.SUBJECTS) | {s + "s" for s in world.SUBJECTS}
    for prompt in ground_truth.HELDOUT_PROMPTS:
        assert len([w for w in re.findall(r"[a-z]+", prompt.lower()) if w in nouns]) == 1, prompt
    assert len(set(ground_truth.HELDOUT_PROMPTS)) == len(ground_truth.HELDOUT_PROMPTS)


def test_heldout_prompts_are_no_warm_start_form_so_the_set_leaves_the_rewriter_unchanged():
    """The warm-start corpus skips held-out prompts; none of them is a form it writes, so adding held-out prompts
    changes no corpus row (the shipped rewriter stays the same build)."""
    from localmodels.rewriter_sft import _PROMPT_FORMS, OTHER_SUBJECTS, _article

    forms = {f.format(a=_article(s), s=s) for f in _PROMPT_FORMS for s in [*world.SUBJECTS, *OTHER_SUBJECTS]}
    assert not {p.lower() for p in ground_truth.HELDOUT_PROMPTS} & forms


def test_filler_phrases_carry_no_cue_and_rich_captions_name_what_they_show():
    style = {w for words in world.STYLE_WORDS.values() for w in words}
    subjects = set(world.SUBJECTS) | {s + "s" for s in world.SUBJECTS}
    for phrase in world.FILLER_PHRASES:
        assert not _words(phrase) & (style | subjects), phrase
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = world.sample_scene(rng)
        parsed = world.parse_caption(world.rich_caption(scene, rng, distractors=["harbour", "velvet"]))
        assert parsed["subject"] == scene.subject
        for axis in world.AXES:
            assert parsed[axis] in (None, getattr(scene, axis))  # a named pole is always the scene's pole


def test_warm_start_corpus_is_balanced_and_excludes_eval_prompts():
    from localmodels.rewriter_sft import sft_corpus

    rows = sft_corpus(600, seed=0, exclude={*TRAINING_PROMPTS, *ground_truth.HELDOUT_PROMPTS})
    sources = {r["prompt"][-1]["content"].lower() for r in rows}
    assert not sources & {p.lower() for p in (*TRAINING_PROMPTS, *ground_truth.HELDOUT_PROMPTS)}
    counts = {key: 0 for key in world.STYLE_WORDS}
    for r in rows:
        target = r["completion"][0]["content"]
        assert target.startswith(r["prompt"][-1]["content"])  # the prompt is kept, style follows
        parsed = world.parse_caption(target)
        for axis in world.AXES:
            if parsed[axis]:
                counts[(axis, parsed[axis])] += 1
    for axis, (a, b) in world.AXES.items():  # generic: neither pole of any axis is favoured
        assert abs(counts[(axis, a)] - counts[(axis, b)]) < 0.15 * (counts[(axis, a)] + counts[(axis, b)])


def test_diagnosis_sources_and_sample_report():
    from policy_eval.diagnose import sample_report, taste_rewrite

    taste = ground_truth.parse_taste(
        {"prefs": {"palette": "warm", "layout": "sparse"}, "weights": {"palette": 1, "layout": 1}}
    )
    assert taste_rewrite("a sun", taste) == "a sun, warm, minimal"
    assert taste_rewrite("a sun", taste, against=True) == "a sun, cool, busy"
    report = sample_report(
        ["a sun", "a kite", "a box", "a box"], ["a sun, icy", "a kite", "a ball, dark", "a box, dark"]
    )
    assert report["subject_kept"] == 0.75 and report["names_a_style_cue"] == 0.75
    assert report["mean_words"] == 11 / 4 and report["distinct"] == 1.0


def test_a_subject_dependent_taste_scores_an_image_for_what_its_prompt_asked():
    from localmodels import world

    taste = ground_truth.parse_taste(
        {"prefs": {}, "weights": {"palette": 1.0}, "by_subject": {"palette": {"round": "warm", "angular": "cool"}}}
    )
    warm = world.draw_scene(world.Scene("sun", "warm", "bright", "sparse", 1))
    cool = world.draw_scene(world.Scene("sun", "cool", "bright", "sparse", 1))
    assert ground_truth.preferences(taste, [warm, warm], [cool, cool], prompts=["a sun at dawn", "a tall house"]) == [
        1.0,
        0.0,
    ]
    with pytest.raises(ValueError, match="names none"):
        ground_truth.utility(taste, warm, "a lighthouse")
    with pytest.raises(ValueError, match="and prompts"):
        ground_truth.preferences(taste, [warm], [cool], prompts=[])
    shares = ground_truth.pole_shares(["a sun, golden", "a box, icy blue", "a box, warm"], ["a sun", "a box", "a box"])
    assert shares["round"]["warm"] == 1.0 and shares["angular"]["cool"] == 0.5 and shares["angular"]["warm"] == 0.5
