"""User data: the shipped demo user loads; every kind of bad input gets an error that names it."""

from __future__ import annotations

import json

import pytest

from reward.users import UserDataError, load_user


def test_demo_user_loads():
    user = load_user("demo", "users")
    assert user.user_id == "demo"
    assert len(user.references) >= 4 and len(user.heldout) >= 1
    assert user.references[0].chosen.mode == "RGB"
    assert user.training_prompts and all(isinstance(p, str) for p in user.training_prompts)


def test_user_by_path(demo_user_copy):
    assert load_user(str(demo_user_copy)).user_id == "demo"


def test_unknown_user_lists_known_ones():
    with pytest.raises(UserDataError, match=r"Unknown user 'nobody'.*demo"):
        load_user("nobody", "users")


def _edit(folder, fn):
    path = folder / "user.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_missing_image(demo_user_copy):
    (demo_user_copy / "images" / "ref00_chosen.png").unlink()
    with pytest.raises(UserDataError, match=r"references\[0\]\.chosen: image .*ref00_chosen.png does not exist"):
        load_user(str(demo_user_copy))


def test_unreadable_image(demo_user_copy):
    (demo_user_copy / "images" / "ref01_rejected.png").write_bytes(b"not a png")
    with pytest.raises(UserDataError, match=r"references\[1\]\.rejected: .*cannot be read"):
        load_user(str(demo_user_copy))


def test_empty_references(demo_user_copy):
    _edit(demo_user_copy, lambda d: d.update(references=[]))
    with pytest.raises(UserDataError, match="'references' is empty"):
        load_user(str(demo_user_copy))


def test_typo_in_key(demo_user_copy):
    def typo(d):
        d["references"][0]["choosen"] = d["references"][0].pop("chosen")

    _edit(demo_user_copy, typo)
    with pytest.raises(UserDataError, match=r"unknown keys \['choosen'\]"):
        load_user(str(demo_user_copy))


def test_bad_label(demo_user_copy):
    _edit(demo_user_copy, lambda d: d["heldout"][0].update(label=3))
    with pytest.raises(UserDataError, match=r"heldout\[0\]: 'label' must be 1, 2 or 0"):
        load_user(str(demo_user_copy))


def test_invalid_json(demo_user_copy):
    (demo_user_copy / "user.json").write_text("{not json")
    with pytest.raises(UserDataError, match="not valid JSON"):
        load_user(str(demo_user_copy))


def test_references_hash_changes_with_an_image(demo_user_copy):
    before = load_user(str(demo_user_copy)).references_hash()
    src = demo_user_copy / "images" / "ref01_chosen.png"
    (demo_user_copy / "images" / "ref00_chosen.png").write_bytes(src.read_bytes())
    assert load_user(str(demo_user_copy)).references_hash() != before
