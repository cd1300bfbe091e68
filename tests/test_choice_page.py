"""The choice page in a real browser (Debian's Chromium driven by playwright): `pig choose` serves it on 127.0.0.1 on
the tiny real models; ten clicks (one of them a double click) write exactly ten choices to the user folder, which
`pig users` then loads; a server killed (SIGKILL) in the middle of writing a choice leaves a folder that loads, and
the logged choice is finished by the next writer."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from reward.choices import STOP_AT_ENV, finish_pending, read_log
from reward.users import load_user
from tests.conftest import REPO

# The browser lane: `make test-slow` installs Debian's Chromium where it runs as root (as CI does), `make test` not.
pytestmark = pytest.mark.slow

CLICKS = ["left", "right", "left", "skip", "right", "left", "double-left", "right", "skip", "left"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tiny_models, users: Path, runs: Path, log: Path, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`pig choose` on the tiny models, in its own process; returns it and the page's address once it answers."""
    port = _free_port()
    command = [sys.executable, "-m", "pig.cli", "choose", "--user", "demo", "--users_dir", str(users)]
    command += ["--runs_dir", str(runs), "--base_model", tiny_models["policy"], "--judge_model", tiny_models["vlm"]]
    command += ["--renderer_model", tiny_models["sd"], "--fidelity_model", tiny_models["minilm"]]
    command += ["--render_steps", "4", "--page_seed", "0", "--port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while True:
        assert proc.poll() is None, f"pig choose exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return proc, url
        except OSError:
            pass
        assert time.time() < deadline, f"pig choose did not answer within 240 s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def _counts_shown(page) -> str:
    return page.inner_text("#header")


def _wait_for_pair(page, previous_src: str | None) -> str:
    """The next pair is on the page (both images loaded, the left one new); returns the left image's address."""
    page.wait_for_function(
        """prev => {
            const imgs = [...document.querySelectorAll('#left-image img, #right-image img')];
            return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0) && imgs[0].src !== prev;
        }""",
        arg=previous_src or "",
        timeout=120_000,
    )
    return page.get_attribute("#left-image img", "src")


def _pixels(page, src: str) -> bytes:
    from PIL import Image

    return Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB").tobytes()


@pytest.fixture()
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; `make test-slow` does it as root).")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    pytest.importorskip("gradio", reason='the choice page needs Gradio: pip install -e ".[ui]"')
    return path


def test_ten_clicks_in_chromium_write_ten_choices(chromium, tiny_models, demo_user_copy, tmp_path):
    from playwright.sync_api import sync_playwright

    users, runs, log = demo_user_copy.parent, tmp_path / "runs", tmp_path / "page.log"
    started = time.time()
    proc, url = _start(tiny_models, users, runs, log)
    shown_chosen = []  # (chosen side's pixels as the browser showed them) per left/right click
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(url)
                src = _wait_for_pair(page, None)
                assert "0 choices made here, 0 skips" in _counts_shown(page)
                assert "1. " in page.input_value("#context textarea")  # the user's rationales are shown
                made = skipped = 0
                for click in CLICKS:
                    side = click.removeprefix("double-")
                    if side != "skip":
                        shown_chosen.append(_pixels(page, page.get_attribute(f"#{side}-image img", "src")))
                    button = page.locator(f"#choose-{side}")
                    button.dblclick() if click.startswith("double") else button.click()
                    made, skipped = made + (side != "skip"), skipped + (side == "skip")
                    page.wait_for_function(
                        "t => document.querySelector('#header').innerText.includes(t)",
                        arg=f"{made} choices made here, {skipped} skips",
                        timeout=120_000,
                    )
                    src = _wait_for_pair(page, src)
                status = page.inner_text("#status")
                context = page.input_value("#context textarea")
                requests = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
            finally:
                browser.close()
    finally:
        _stop(proc)
    seconds = time.time() - started

    entries = read_log(demo_user_copy)
    choices = [e for e in entries if e["event"] == "choice"]
    assert [e["choice"] for e in choices] == [c.removeprefix("double-") for c in CLICKS]  # the double click: once
    assert len({e["pair_id"] for e in choices}) == 10
    assert sum(e["event"] == "committed" for e in entries) == 8
    user = load_user(str(demo_user_copy))
    assert len(user.references) == 8 + 8
    for reference, pixels, entry in zip(
        user.references[8:], shown_chosen, [e for e in choices if e["choice"] != "skip"]
    ):
        assert reference.chosen.tobytes() == pixels  # the image the person chose is the one saved as chosen
        assert reference.prompt == entry["prompt"] and {entry["shown"]["left"]["policy"]} == {"base"}
    assert "Recorded: reference 16 of 16" in status and "You chose the base policy's rewrite" in status
    assert len(context.splitlines()) == 8  # the context shown: the 8 most recent references (context_references)
    assert all(r.startswith("http://127.0.0.1:") for r in requests)  # nothing fetched from elsewhere
    proc = subprocess.run(
        [sys.executable, "-m", "pig.cli", "users", "--users_dir", str(users), "--runs_dir", str(runs), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (entry,) = json.loads(proc.stdout)
    assert entry["error"] is None and entry["references"] == 16
    assert entry["page_choices"] == {"choices": 8, "skips": 2, "pending": 0, "refused": 0}
    print(f"[choice page] 10 clicks in chromium, server start included: {seconds:.1f} s")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_killing_the_server_mid_write_leaves_a_loadable_folder(chromium, tiny_models, demo_user_copy, tmp_path):
    """The server stops itself right after logging a choice (before user.json has it), is SIGKILLed there, and the
    folder still loads; the next writer finishes the logged choice."""
    from playwright.sync_api import sync_playwright

    users, runs, log = demo_user_copy.parent, tmp_path / "runs", tmp_path / "page.log"
    proc, url = _start(tiny_models, users, runs, log, env={STOP_AT_ENV: "logged"})
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(url)
                _wait_for_pair(page, None)
                page.click("#choose-left")
                deadline = time.time() + 120
                while Path(f"/proc/{proc.pid}/stat").read_text().split(")")[1].split()[0] != "T":
                    assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                    time.sleep(0.05)
                os.kill(proc.pid, signal.SIGKILL)
                assert proc.wait(timeout=30) == -signal.SIGKILL
            finally:
                browser.close()
    finally:
        _stop(proc)
    assert len(load_user(str(demo_user_copy)).references) == 8  # whole and valid, without the unfinished choice
    users_out = subprocess.run(
        [sys.executable, "-m", "pig.cli", "users", "--users_dir", str(users), "--runs_dir", str(runs), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert users_out.returncode == 0, users_out.stderr[-2000:]
    (entry,) = json.loads(users_out.stdout)
    assert entry["error"] is None and entry["page_choices"]["pending"] == 1
    assert finish_pending(demo_user_copy) == 1  # what the next choice or `pig update` does first
    user = load_user(str(demo_user_copy))
    (logged,) = [e for e in read_log(demo_user_copy) if e["event"] == "choice"]
    assert len(user.references) == 9 and user.references[8].prompt == logged["prompt"]
