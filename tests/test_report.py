"""The per-run report: metric grouping (pure), then a real tiny run (training writes report.html; `pig evaluate`, then
`pig report` adds the evaluation) checked by parsing the HTML and, where Chromium is installed, in a real browser
(slow lane: `make test-slow` installs Debian's Chromium where it runs as root, as CI does)."""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

# ------------------------------------------------------------------------------------------------ pure grouping


def test_metrics_are_grouped_into_sections_with_bands_and_shared_panels():
    from reports.report import group_metrics, ungrouped

    keys = [
        "loss",
        "reward",
        "reward_std",
        "rewards/preference/mean",
        "rewards/preference/std",
        "reward/ground_truth",
        "judge/status/ok",
        "judge/status/unparseable",
        "judge/position_consistency",
        "render/images_per_s",
        "policy/distinct_rewrites",
        "completions/mean_length",
        "completions/max_length",
        "time/step_s",
        "step_time",
        "my_new_metric",
        "step",
        "epoch",
        "train_runtime",
    ]
    sections = {s.id: s for s in group_metrics(keys)}
    assert list(sections) == ["reward", "judge", "render", "policy", "time", "other"]
    reward = sections["reward"].panels
    assert [p.title for p in reward] == ["reward", "reward/ground_truth", "rewards/preference/mean"]
    assert reward[0].bands == {"reward": "reward_std"}
    assert reward[2].bands == {"rewards/preference/mean": "rewards/preference/std"}
    judge = sections["judge"].panels
    assert judge[0].title.startswith("judge/status") and judge[0].keys == [
        "judge/status/ok",
        "judge/status/unparseable",
    ]
    assert [p.keys for p in sections["policy"].panels] == [
        ["policy/distinct_rewrites"],  # FIRST's panels lead their section
        ["loss"],
        ["completions/mean_length", "completions/max_length"],
    ]
    assert [p.keys for p in sections["other"].panels] == [["my_new_metric"]]
    plotted = {k for s in sections.values() for p in s.panels for k in [*p.keys, *p.bands.values()]}
    assert plotted == set(keys) - {"step", "epoch", "train_runtime"}
    # W&B's names (train/ prefix) group the same way
    assert [s.id for s in group_metrics(["train/reward", "train/judge/status/ok"])] == ["reward", "judge"]
    assert ungrouped(keys) == sorted(
        ["loss", "reward", "reward_std", "rewards/preference/mean", "rewards/preference/std"]
        + ["completions/mean_length", "completions/max_length", "step_time", "my_new_metric"]
    )


def test_term_summary_matches_the_training_summary():
    from reports.report import term_summary

    history = [{"step": s, "reward": float(s)} for s in range(1, 9)] + [{"step": 9, "loss": 0.1}]
    s = term_summary(history, "reward")
    assert (s["first"], s["last"], s["k"], s["first_mean"], s["last_mean"]) == (1.0, 8.0, 2, 1.5, 7.5)
    assert (s["first_step"], s["last_step"], s["logged"]) == (1, 8, 8)
    assert term_summary(history, "reward/ground_truth") is None


def test_a_folder_that_is_not_a_run_is_refused_with_the_fix(tmp_path):
    from reports.report import read_run
    from reports.runs import resolve_run

    with pytest.raises(FileNotFoundError, match="not a run folder"):
        resolve_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="pig train --user nobody"):
        resolve_run("nobody", tmp_path)
    (tmp_path / "adapter").mkdir()
    with pytest.raises(FileNotFoundError, match="log_history.json is missing"):
        read_run(tmp_path)


# --------------------------------------------------------------------------------------------- a real tiny run
@pytest.fixture(scope="module")
def evaluated_run(trained_run):
    """The shared tiny run (`trained_run` in conftest): GRPO logged to an offline W&B run (training wrote
    report.html), then `pig evaluate` on two prompts (ground truth only). Returns (run folder, the report training
    wrote)."""
    return trained_run["run"], trained_run["report"]


class _Page(HTMLParser):
    """The parts of a report a test reads: image sources, cells marked with data-key/data-block, all text."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.cells: dict[tuple[str, str], str] = {}
        self.text: list[str] = []
        self._open: tuple[str, str] | None = None
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "td" and "data-key" in attrs:
            self._open = (attrs["data-key"], attrs["data-stat"])
        if tag == "td" and "data-block" in attrs:
            self._open = (attrs["data-block"], attrs["data-comparison"])

    def handle_endtag(self, tag):
        if tag == "td":
            self._open = None

    def handle_data(self, data):
        self.text.append(data)
        if self._open:
            self.cells[self._open] = self.cells.get(self._open, "") + data


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _decoded_sizes(sources: list[str]) -> list[tuple[int, int]]:
    from PIL import Image

    sizes = []
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:60]
        sizes.append(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size)
    return sizes


def _expected_last_reward(run_dir: Path) -> float:
    history = json.loads((run_dir / "log_history.json").read_text())
    return [h["reward"] for h in history if "reward" in h][-1]


def test_training_writes_a_report_with_the_runs_numbers(evaluated_run):
    run_dir, text = evaluated_run
    page = _parse(text)
    assert page.images and all(w > 0 and h > 0 for w, h in _decoded_sizes(page.images))
    assert page.cells["reward", "last"] == f"{_expected_last_reward(run_dir):.3f}"
    assert "No evaluation of this adapter" in text  # training ends before any evaluation
    assert "Rewrites logged during training" in text  # read from the offline W&B run's sample tables
    assert "<th>compare_to</th><td>both</td>" in text  # the run's settings, from the offline W&B run's config
    context = json.loads(next((run_dir.parent / "context").glob("*.json")).read_text())
    assert html.escape(context["rationales"][0]["text"]) in text


def test_pig_report_adds_the_evaluation(evaluated_run, pig_cli, tmp_path):
    from reports.runs import format_summary

    run_dir, _ = evaluated_run
    out = tmp_path / "report.html"
    proc = pig_cli("report", run_dir.parent.name, "--runs_dir", run_dir.parents[1], "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text(encoding="utf-8")
    page = _parse(text)
    results = json.loads((run_dir.parent / "eval" / run_dir.name / "results.json").read_text())
    block = results["blocks"][0]
    assert page.cells["given-greedy", "adapter_vs_base"] == format_summary(
        block["summary"]["adapter_vs_base"]["ground_truth"]
    )
    for cell in block["cells"]:  # the base policy's and the adapter's rewrites, side by side
        assert html.escape(cell["base"]) in text and html.escape(cell["adapter"]) in text
    # the held-out grid of the evaluation, the training sample grids and the curves, all decodable
    sizes = _decoded_sizes(page.images)
    assert len(sizes) >= 3 and all(w > 0 and h > 0 for w, h in sizes)
    assert page.cells["reward", "last"] == f"{_expected_last_reward(run_dir):.3f}"


def test_untrusted_text_is_escaped(evaluated_run, tmp_path):
    """A rationale (model output) holding markup is shown as text, never as markup."""
    from reports.report import write_report

    run_dir, _ = evaluated_run
    copy = tmp_path / "runs" / "demo"
    shutil.copytree(run_dir.parent, copy)
    path = next((copy / "context").glob("*.json"))
    context = json.loads(path.read_text())
    context["rationales"][0]["text"] = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    path.write_text(json.dumps(context))
    text = write_report(copy / run_dir.name).read_text(encoding="utf-8")
    page = _parse(text)
    assert "script" not in page.tags
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text


@pytest.mark.slow
def test_report_in_a_real_browser(evaluated_run, tmp_path):
    """Opened headless in Chromium: every image loaded, the numbers shown are the run's."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium); the HTML tests above still ran.")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    from reports.report import write_report
    from reports.runs import format_summary

    run_dir, _ = evaluated_run
    path = write_report(run_dir, tmp_path / "report.html")
    results = json.loads((run_dir.parent / "eval" / run_dir.name / "results.json").read_text())
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            shown = page.inner_text('td[data-key="reward"][data-stat="last"]')
            truth = page.inner_text('td[data-block="given-greedy"][data-comparison="adapter_vs_base"]')
            requests = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        finally:
            browser.close()
    assert len(widths) == len(_parse(path.read_text(encoding="utf-8")).images) >= 3
    assert all(w > 0 for w in widths), widths
    assert shown == f"{_expected_last_reward(run_dir):.3f}"
    assert truth == format_summary(results["blocks"][0]["summary"]["adapter_vs_base"]["ground_truth"])
    assert not [r for r in requests if not r.startswith("data:")]  # self-contained: nothing fetched
