"""`pig dashboard`: the panels come from the keys a run logged (a real offline W&B run written here); the W&B report
is built without network; offline, the command says how to sync and exits 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# The keys of a real default run (runs/demo/final-s0, W&B's names), as `logged_keys` reads them.
LOGGED = [
    "train/loss",
    "train/reward",
    "train/reward_std",
    "train/rewards/preference/mean",
    "train/rewards/preference/std",
    "train/rewards/fidelity/mean",
    "train/rewards/fidelity/std",
    "train/reward/ground_truth",
    "train/reward/win_rate_vs_original",
    "train/judge/status/ok",
    "train/judge/status/unparseable",
    "train/judge/status/verdict_contradicts_totals",
    "train/judge/position_consistency",
    "train/judge/ground_truth_agreement",
    "train/render/images_per_s",
    "train/policy/distinct_rewrites",
    "train/completions/mean_length",
    "train/entropy",
    "train/step_time",
    "train/time/judge_s",
    "train/time/render_s",
    "profiling/Time taken: GRPOTrainer.preference",
    "train/global_step",
    "train/epoch",
]
MEDIA = {
    "samples/grid": "image",
    "samples/original_vs_rewrite": "image",
    "samples/table": "table",
    "samples/dimensions": "table",
}


def test_panel_spec_groups_every_logged_key_once():
    from reports.dashboard import panel_spec

    spec = panel_spec(LOGGED, MEDIA)
    titles = [s["title"] for s in spec]
    assert titles == ["Reward terms", "Judge health", "Render", "Policy", "Time", "Image grids", "Rewrite tables"]
    panels = {p["title"]: p for s in spec for p in s["panels"]}
    statuses = panels["judge/status (fraction of verdicts)"]
    assert statuses["kind"] == "stacked" and len(statuses["keys"]) == 3
    assert panels["reward"]["keys"] == ["train/reward", "train/reward_std"]  # the batch's spread beside its mean
    assert spec[0]["panels"][1]["title"] == "reward/ground_truth"  # the truth right after the trained reward
    time_keys = {k for p in spec[4]["panels"] for k in p["keys"]}
    assert time_keys == {"train/step_time", "train/time/judge_s", "train/time/render_s"} | {
        "profiling/Time taken: GRPOTrainer.preference"
    }
    assert [p["kind"] for p in spec[5]["panels"]] == ["media", "media"]
    assert [p["keys"] for p in spec[6]["panels"]] == [["samples/table"], ["samples/dimensions"]]
    shown = [k for s in spec for p in s["panels"] for k in p["keys"]]
    assert sorted(shown) == sorted([k for k in LOGGED if k not in ("train/global_step", "train/epoch")] + list(MEDIA))
    assert panel_spec([], {}) == []


def test_keys_outside_the_namespaces_are_listed():
    from reports.report import ungrouped

    outside = ungrouped(LOGGED)
    assert "train/reward/ground_truth" not in outside and "train/time/judge_s" not in outside
    assert {"train/loss", "train/reward", "train/step_time", "profiling/Time taken: GRPOTrainer.preference"} <= set(
        outside
    )


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory) -> Path:
    """A run folder holding a real offline W&B run with scalars, an image and a table logged as training logs them,
    and the log_history.json training writes."""
    import wandb
    from PIL import Image

    run_dir = tmp_path_factory.mktemp("dash") / "runs" / "demo" / "r1"
    run_dir.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_DATA_DIR", str(run_dir.parent / "wandb-data"))
        run = wandb.init(project="pig-rl", name="r1", dir=str(run_dir))
        run.define_metric("train/global_step")
        run.define_metric("*", step_metric="train/global_step", step_sync=True)
        for step in range(2):
            table = wandb.Table(columns=["original", "rewrite"], data=[["a sun", f"a sun, warm {step}"]])
            run.log(
                {"samples/grid": wandb.Image(Image.new("RGB", (8, 8))), "samples/table": table},
                commit=False,
            )
            run.log(
                {
                    "train/reward": 0.5 + step / 10,
                    "train/judge/status/ok": 1.0,
                    "train/time/judge_s": 0.2,
                    "train/global_step": step,
                }
            )
        run.finish()
        # finish() can return before W&B's service has written the run's records (seen under load): its teardown
        # waits for them, so the reader below sees the whole run.
        wandb.teardown()
    history = [{"reward": 0.5, "step": 0}, {"reward": 0.6, "step": 1}]
    (run_dir / "log_history.json").write_text(json.dumps(history))
    return run_dir


def test_logged_keys_read_the_offline_run(offline_run):
    from reports.dashboard import logged_keys, offline_run_info

    scalars, media = logged_keys(offline_run)
    assert {"train/reward", "train/judge/status/ok", "train/time/judge_s", "train/global_step"} <= set(scalars)
    assert not [k for k in scalars if k.startswith("samples/")]  # a media value's fields are not metrics
    assert media == {"samples/grid": "image", "samples/table": "table"}
    info = offline_run_info(offline_run)
    assert info["project"] == "pig-rl" and info["name"] == "r1" and info["folder"].name.endswith(info["run_id"])


def test_wandb_report_is_built_offline(offline_run):
    wr = pytest.importorskip("wandb_workspaces.reports.v2", reason='pip install "wandb[workspaces]"')
    from reports.dashboard import STEP, build_wandb_report, logged_keys, panel_spec

    spec = panel_spec(*logged_keys(offline_run))
    report = build_wandb_report(spec, "me", "pig-rl", "abc123", "title")
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert [b.text for b in report.blocks if isinstance(b, wr.H2)] == [s["title"] for s in spec]
    assert all(g.runsets[0].filters == "ID = 'abc123'" and g.runsets[0].project == "pig-rl" for g in grids)
    panels = [p for g in grids for p in g.panels]
    lines = [p for p in panels if isinstance(p, wr.LinePlot)]
    assert {tuple(p.y) for p in lines} == {("train/reward",), ("train/judge/status/ok",), ("train/time/judge_s",)}
    assert all(p.x == STEP for p in lines)
    assert next(p for p in lines if p.y == ["train/judge/status/ok"]).plot_type == "stacked-area"
    assert [p.media_keys for p in panels if isinstance(p, wr.MediaBrowser)] == [["samples/grid"]]
    assert [p.table_name for p in panels if isinstance(p, wr.WeavePanelSummaryTable)] == ["samples/table"]


def test_offline_says_how_to_sync_and_exits_2(offline_run, tmp_path, pig_cli):
    folder = next((offline_run / "wandb").glob("offline-run-*"))
    proc = pig_cli("dashboard", offline_run, env={"WANDB_MODE": "offline"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"wandb sync {folder}" in proc.stderr and f"pig dashboard {offline_run}" in proc.stderr
    assert "WANDB_MODE=offline" in proc.stderr
    # online mode but no key anywhere (empty HOME, no WANDB_API_KEY): the same instructions. A process of its own:
    # W&B reads its settings and key once per process.
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"), NETRC=str(tmp_path / "netrc"))
    proc = subprocess.run(
        [sys.executable, "-m", "pig.cli", "dashboard", str(offline_run)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no W&B API key" in proc.stderr and f"wandb sync {folder}" in proc.stderr


def test_dry_run_prints_the_panels_without_network(offline_run, pig_cli):
    proc = pig_cli("dashboard", offline_run, "--dry_run", env={"WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert [s["title"] for s in out["sections"]][:2] == ["Reward terms", "Judge health"]
    assert "train/reward" in out["outside_namespaces"]
