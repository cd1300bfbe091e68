"""Choices recorded into a user folder (reward/choices.py): appended in the user format, logged, and safe against
two writers, a double submit, a torn log line and a writer killed between any two steps (SIGKILL at the exact step:
the writer stops itself there with PIG_CHOICE_STOP_AT, the test kills it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from reward.choices import (
    CHOICE_LOG,
    STOP_AT_ENV,
    count_choices,
    finish_pending,
    read_log,
    record_choice,
)
from reward.users import UserDataError, load_user
from tests.conftest import REPO


def _images(i: int) -> tuple[Image.Image, Image.Image]:
    """Two different pictures, different for every i."""
    return Image.new("RGB", (16, 16), (i % 256, 10, 200)), Image.new("RGB", (16, 16), (i % 256, 200, 10))


def _refs(user_dir: Path) -> list[dict]:
    return json.loads((user_dir / "user.json").read_text())["references"]


def test_left_right_and_skip(demo_user_copy):
    before = json.loads((demo_user_copy / "user.json").read_text())
    left, right = _images(1)
    shown = {"left": {"policy": "adapter", "text": "a warm sun"}, "right": {"policy": "base", "text": "a sun"}}
    first = record_choice(demo_user_copy, "demo", "pair000001", "a sun", "left", left, right, shown)
    second = record_choice(demo_user_copy, "demo", "pair000002", "a tree", "right", *_images(2))
    skipped = record_choice(demo_user_copy, "demo", "pair000003", "a box", "skip", *_images(3))

    assert (first.reference, second.reference, skipped.reference) == (8, 9, None)
    assert skipped.references == 10 and not any(r.duplicate for r in (first, second, skipped))
    data = json.loads((demo_user_copy / "user.json").read_text())
    assert data["references"][:8] == before["references"]  # appended, nothing else touched
    assert {k: v for k, v in data.items() if k != "references"} == {
        k: v for k, v in before.items() if k != "references"
    }
    assert data["references"][8] == {
        "prompt": "a sun",
        "chosen": "images/choices/pair000001-chosen.png",
        "rejected": "images/choices/pair000001-rejected.png",
    }
    user = load_user(str(demo_user_copy))
    assert len(user.references) == 10
    # "left" chose the left image, "right" the right one
    assert user.references[8].chosen.getpixel((0, 0)) == left.getpixel((0, 0))
    assert user.references[9].chosen.getpixel((0, 0)) == _images(2)[1].getpixel((0, 0))
    log = read_log(demo_user_copy)
    assert [(e["event"], e["pair_id"]) for e in log] == [
        ("choice", "pair000001"),
        ("committed", "pair000001"),
        ("choice", "pair000002"),
        ("committed", "pair000002"),
        ("choice", "pair000003"),
    ]
    assert log[0]["shown"] == shown and log[0]["choice"] == "left" and log[4]["choice"] == "skip"
    counts = count_choices(demo_user_copy)
    assert (counts.choices, counts.skips, counts.pending, counts.refused) == (2, 1, 0, 0)


def test_a_new_user_starts_with_the_first_choice(tmp_path):
    folder = tmp_path / "users" / "alice"
    record_choice(folder, "alice", "skip000001", "a sun", "skip", *_images(1))
    assert not (folder / "user.json").exists()  # a skip makes no reference, so no user yet
    record_choice(folder, "alice", "pair000001", "a sun", "right", *_images(2))
    user = load_user("alice", tmp_path / "users")
    assert user.user_id == "alice" and [r.prompt for r in user.references] == ["a sun"]
    assert user.training_prompts == ["a sun"]


def test_a_double_submit_records_once(demo_user_copy):
    first = record_choice(demo_user_copy, "demo", "pair000001", "a sun", "left", *_images(1))
    again = record_choice(demo_user_copy, "demo", "pair000001", "a sun", "right", *_images(1))
    assert not first.duplicate and again.duplicate
    assert (again.choice, again.reference, again.references) == ("left", 8, 9)  # the first record, unchanged
    assert len(_refs(demo_user_copy)) == 9
    assert [e["event"] for e in read_log(demo_user_copy)] == ["choice", "committed"]


def test_many_threads_submitting_one_pair_record_it_once(demo_user_copy):
    results, images = [], _images(7)

    def submit(choice):
        results.append(record_choice(demo_user_copy, "demo", "pair000007", "a gem", choice, *images))

    threads = [threading.Thread(target=submit, args=("left" if i % 2 else "right",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(not r.duplicate for r in results) == 1 and len(results) == 8
    assert len(_refs(demo_user_copy)) == 9 and len(load_user(str(demo_user_copy)).references) == 9


_WRITER = """
import sys, time
from pathlib import Path
from PIL import Image
from reward.choices import record_choice
folder, name, n, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
while not start.exists():  # both writers begin together
    time.sleep(0.01)
for i in range(n):
    left = Image.new("RGB", (16, 16), (i, 10 + (name == "b") * 100, 200))
    right = Image.new("RGB", (16, 16), (i, 200, 10 + (name == "b") * 40))
    record_choice(folder, "demo", f"{name}-pair-{i:04d}", f"prompt {name} {i}", "skip" if i % 5 == 4 else "left",
                  left, right, {"writer": name})
"""


def test_two_writers_at_once_lose_nothing(demo_user_copy, tmp_path):
    """Two processes (two pages on one user) record 12 choices each at the same time."""
    start = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(demo_user_copy), name, "12", str(start)], cwd=REPO)
        for name in ("a", "b")
    ]
    time.sleep(0.5)
    start.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    user = load_user(str(demo_user_copy))
    made = _refs(demo_user_copy)[8:]
    assert len(user.references) == 8 + 2 * 10  # 12 each, of which 2 skips each
    expected = [f"prompt {n} {i}" for n in "ab" for i in range(12) if i % 5 != 4]
    assert sorted(r["prompt"] for r in made) == sorted(expected)
    log = read_log(demo_user_copy)
    assert sum(e["event"] == "choice" for e in log) == 24 and sum(e["event"] == "committed" for e in log) == 20
    writers = [e["shown"]["writer"] for e in log if e["event"] == "choice"]
    assert writers.count("a") == writers.count("b") == 12 and writers != sorted(writers)  # they did interleave


_KILLED = """
import sys
from pathlib import Path
from PIL import Image
from reward.choices import record_choice
left, right = Image.new("RGB", (16, 16), (1, 2, 3)), Image.new("RGB", (16, 16), (200, 2, 3))
record_choice(Path(sys.argv[1]), "demo", "killed0001", "a lantern", "left", left, right)
print("not stopped")
"""


def _kill_at(step: str, folder: Path) -> None:
    """Run a writer that stops itself right after `step`, wait until it is stopped, SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(folder)], cwd=REPO, env={**os.environ, STOP_AT_ENV: step}
    )
    deadline = time.time() + 60
    while Path(f"/proc/{proc.pid}/stat").read_text().split(")")[1].split()[0] != "T":
        assert proc.poll() is None and time.time() < deadline, f"the writer never stopped at {step}"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
@pytest.mark.parametrize(
    ("step", "refs_after_kill", "finished"),
    [
        ("images", 8, 0),  # images written, nothing logged: the choice was never confirmed, user.json untouched
        ("logged", 8, 1),  # logged, not in user.json: the next writer (or pig update) adds it
        ("user_json", 9, 1),  # in user.json, not marked committed: only the mark is added, no second reference
    ],
)
def test_a_writer_killed_between_steps_leaves_a_loadable_folder(demo_user_copy, step, refs_after_kill, finished):
    _kill_at(step, demo_user_copy)
    assert len(load_user(str(demo_user_copy)).references) == refs_after_kill  # loads: whole user.json, valid images
    assert (demo_user_copy / "images/choices/killed0001-chosen.png").is_file()
    assert count_choices(demo_user_copy).pending == finished
    assert finish_pending(demo_user_copy) == finished
    expected = 8 if step == "images" else 9
    user = load_user(str(demo_user_copy))
    assert len(user.references) == expected
    if expected == 9:
        assert user.references[8].prompt == "a lantern" and count_choices(demo_user_copy).choices == 1
    # the folder keeps working: a next choice lands after it
    record_choice(demo_user_copy, "demo", "next000001", "a sun", "left", *_images(3))
    assert len(load_user(str(demo_user_copy)).references) == expected + 1


def test_a_torn_log_line_is_skipped_and_the_next_line_starts_clean(demo_user_copy, caplog):
    record_choice(demo_user_copy, "demo", "pair000001", "a sun", "left", *_images(1))
    with open(demo_user_copy / CHOICE_LOG, "a") as f:
        f.write('{"event": "choice", "pair_id": "torn00')  # a write cut short by a crash
    assert len(read_log(demo_user_copy)) == 2 and "not a log entry" in caplog.text
    record_choice(demo_user_copy, "demo", "pair000002", "a tree", "right", *_images(2))
    assert [e["pair_id"] for e in read_log(demo_user_copy)] == ["pair000001"] * 2 + ["pair000002"] * 2
    assert len(load_user(str(demo_user_copy)).references) == 10


def test_a_choice_that_cannot_be_a_reference_is_refused_and_changes_nothing(demo_user_copy):
    before = (demo_user_copy / "user.json").read_bytes()
    same = Image.new("RGB", (16, 16), (5, 5, 5))
    with pytest.raises(UserDataError, match="same picture"):
        record_choice(demo_user_copy, "demo", "pair000001", "a sun", "left", same, same.copy())
    record_choice(demo_user_copy, "demo", "pair000002", "a sun", "left", *_images(2))
    with pytest.raises(UserDataError, match="repeats references"):  # the same prompt and pictures again
        record_choice(demo_user_copy, "demo", "pair000003", "a sun", "left", *_images(2))
    assert len(_refs(demo_user_copy)) == 9 and (demo_user_copy / "user.json").read_bytes() != before
    counts = count_choices(demo_user_copy)
    assert (counts.choices, counts.refused, counts.pending) == (1, 2, 0)
    assert finish_pending(demo_user_copy) == 0  # refused choices are not retried


def test_a_broken_folder_is_never_written_to(demo_user_copy):
    (demo_user_copy / "images" / "ref03_chosen.png").write_bytes(b"")
    before = (demo_user_copy / "user.json").read_bytes()
    with pytest.raises(UserDataError, match="ref03_chosen.png"):
        record_choice(demo_user_copy, "demo", "pair000001", "a sun", "left", *_images(1))
    assert (demo_user_copy / "user.json").read_bytes() == before


@pytest.mark.parametrize(
    ("pair_id", "choice", "match"),
    [("../../x", "left", "pair id"), ("abc", "left", "pair id"), ("pair000001", "both", "one of left, right, skip")],
)
def test_bad_arguments_are_refused(demo_user_copy, pair_id, choice, match):
    with pytest.raises(UserDataError, match=match):
        record_choice(demo_user_copy, "demo", pair_id, "a sun", choice, *_images(1))
    assert not (demo_user_copy / CHOICE_LOG).exists()
