"""A W&B dashboard for one run: a saved W&B Report with the panels a user needs, built from the keys the run logged.

    pig dashboard runs/demo/final-s0                          # entity: your W&B default; project: the run's own
    pig dashboard demo --entity my-team --project pig-rl      # a user id: the run runs/demo/LATEST points at
    pig dashboard runs/demo/final-s0 --dry_run                # print the panels; no account, no network

Sections, in order: reward terms, judge health (statuses stacked, position consistency, agreement with the truth),
render, policy, time, the sample image grids, the rewrite tables (`samples/table`: original, rewrite, both images,
scores, judge statuses; `samples/dimensions`: the judge's per-dimension scores). Scalar panels are grouped exactly
as the run's `report.html` groups its curves (`reports.report.group_metrics`); only keys the run logged get a panel.

Online only: runs are logged offline by default (no account needed to train). To get a dashboard, log in
(`wandb login`), upload the run (`wandb sync runs/<user>/<run>/wandb/offline-run-*`), then run this command.
The report is made with W&B's Report API (`wandb_workspaces`: `pip install "wandb[workspaces]"`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from reports.report import group_metrics, ungrouped
from reports.runs import resolve_run

STEP = "train/global_step"
"""The x axis: transformers' W&B callback logs every trainer metric against it."""
MEDIA_TYPES = {"image-file": "image", "images/separated": "image", "table-file": "table"}
"""W&B's `_type` of a logged media value -> the panel that shows it."""


def offline_run_files(run_dir: str | Path) -> list[Path]:
    """The run's offline W&B run files (`wandb/offline-run-*/run-*.wandb`), oldest first."""
    from reports.wandb_offline import find_run_files

    folder = Path(run_dir) / "wandb"
    return find_run_files(folder) if folder.is_dir() else []


def logged_keys(run_dir: str | Path) -> tuple[list[str], dict[str, str]]:
    """(scalar keys, {media key: "image" | "table"}) as W&B received them.

    From the offline W&B run when the folder has one (the keys W&B stores: trainer metrics under `train/`, our media
    under `samples/`); else from `log_history.json` with the `train/` prefix the W&B callback adds, and no media.
    """
    from reports.wandb_offline import read_history

    files = offline_run_files(run_dir)
    if not files:
        history_path = Path(run_dir) / "log_history.json"
        if not history_path.is_file():
            raise FileNotFoundError(f"{run_dir} holds neither an offline W&B run (wandb/) nor log_history.json.")
        history = json.loads(history_path.read_text(encoding="utf-8"))
        return [f"train/{k}" for row in history for k in row if isinstance(row[k], (int, float))], {}
    rows = read_history(files[-1])
    media = {
        key.removesuffix("/_type"): MEDIA_TYPES[value]
        for row in rows
        for key, value in row.items()
        if key.endswith("/_type") and value in MEDIA_TYPES
    }
    scalars = [
        key
        for row in rows
        for key, value in row.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not key.startswith("_")
        and not any(key.startswith(m + "/") for m in media)
    ]
    return list(dict.fromkeys(scalars)), media


def panel_spec(scalar_keys, media: dict[str, str] | None = None) -> list[dict]:
    """The dashboard as plain data: sections `{"title", "panels"}`, each panel `{"kind": "line" | "stacked" |
    "media" | "table", "title", "keys"}`. Every scalar key but the counters is on exactly one panel. Pure: the
    logged keys in, the panels out."""
    sections = []
    for section in group_metrics(scalar_keys):
        panels = [
            {
                "kind": "stacked" if p.title.startswith("judge/status") else "line",
                "title": p.title,
                "keys": [*p.keys, *p.bands.values()],  # no shaded bands in W&B: the spread is a line beside
            }
            for p in section.panels
        ]
        sections.append({"title": section.title, "panels": panels})
    media = media or {}
    images = [k for k, kind in media.items() if kind == "image"]
    tables = [k for k, kind in media.items() if kind == "table"]
    if images:
        sections.append(
            {"title": "Image grids", "panels": [{"kind": "media", "title": k, "keys": [k]} for k in images]}
        )
    if tables:
        sections.append(
            {"title": "Rewrite tables", "panels": [{"kind": "table", "title": k, "keys": [k]} for k in tables]}
        )
    return sections


def build_wandb_report(spec: list[dict], entity: str, project: str, run_id: str, title: str, description: str = ""):
    """A `wandb_workspaces` Report of `spec` over the one run `run_id` (not saved: call `.save()`)."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError as err:
        raise SystemExit(
            'error: the W&B Report API is not installed: pip install "wandb[workspaces]" (wandb_workspaces).'
        ) from err

    def panel(p: dict):
        if p["kind"] in ("line", "stacked"):
            return wr.LinePlot(
                title=p["title"],
                x=STEP,
                y=p["keys"],
                plot_type="stacked-area" if p["kind"] == "stacked" else "line",
                smoothing_factor=0.6,
                smoothing_show_original=True,
                layout=wr.Layout(w=8, h=6),
            )
        if p["kind"] == "media":
            return wr.MediaBrowser(
                title=p["title"],
                media_keys=p["keys"],
                num_columns=1,
                gallery_axis="step",
                layout=wr.Layout(w=24, h=12),
            )
        if p["kind"] == "table":
            return wr.WeavePanelSummaryTable(table_name=p["keys"][0], layout=wr.Layout(w=24, h=12))
        raise ValueError(f"unknown panel kind {p['kind']!r}")

    blocks = []
    for section in spec:
        runset = wr.Runset(entity=entity, project=project, name=run_id, filters=f"ID = '{run_id}'")
        blocks += [
            wr.H2(section["title"]),
            wr.PanelGrid(runsets=[runset], panels=[panel(p) for p in section["panels"]], hide_run_sets=True),
        ]
    return wr.Report(entity=entity, project=project, title=title[:128], description=description, blocks=blocks)


def offline_run_info(run_dir: str | Path) -> dict:
    """`run_id`, `project`, `name` and the `folder` of the run's offline W&B run (its run record)."""
    from wandb.proto import wandb_internal_pb2

    from reports.wandb_offline import iter_records

    files = offline_run_files(run_dir)
    if not files:
        raise FileNotFoundError(
            f"{run_dir} has no offline W&B run (wandb/offline-run-*): it was trained with --report_to none, so there "
            "is nothing in W&B to build a dashboard from. Its report.html (pig report) shows the curves."
        )
    for raw in iter_records(files[-1]):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            run = record.run
            return {"run_id": run.run_id, "project": run.project, "name": run.display_name, "folder": files[-1].parent}
    raise ValueError(f"{files[-1]} holds no run record: the W&B run file is incomplete.")


def offline_instructions(run_dir: Path, folder: Path | None, why: str) -> str:
    sync = f"wandb sync {folder}" if folder else f"wandb sync {run_dir}/wandb/offline-run-*"
    return (
        f"error: pig dashboard creates a W&B report online, and {why}.\n"
        "This run was logged offline; to get its dashboard:\n"
        "  1. wandb login                 (or export WANDB_API_KEY=...; and unset WANDB_MODE=offline)\n"
        f"  2. {sync}\n"
        f"  3. pig dashboard {run_dir} [--entity E --project P]\n"
        f"Without W&B: pig report {run_dir} writes the same curves, images and tables to {run_dir}/report.html; "
        "--dry_run prints the dashboard's panels."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pig dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder (runs/<user>/<run>), an adapter folder, or a user id (its LATEST)")
    parser.add_argument("--entity", help="W&B entity (default: your default entity)")
    parser.add_argument("--project", help="W&B project (default: the run's own, e.g. pig-rl)")
    parser.add_argument("--runs_dir", default="runs", help="where user ids are looked up (default: runs)")
    parser.add_argument("--dry_run", action="store_true", help="print the panels as JSON; no account, no network")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    run_dir = resolve_run(args.run, args.runs_dir).run_dir
    scalars, media = logged_keys(run_dir)
    spec = panel_spec(scalars, media)
    if args.dry_run:
        print(json.dumps({"sections": spec, "outside_namespaces": ungrouped(scalars)}, indent=1))
        return 0
    info = offline_run_info(run_dir)
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        print(offline_instructions(run_dir, info["folder"], f"WANDB_MODE={mode} is set"), file=sys.stderr)
        return 2
    import wandb

    try:
        api = wandb.Api()
    except wandb.errors.UsageError:
        print(offline_instructions(run_dir, info["folder"], "no W&B API key is configured"), file=sys.stderr)
        return 2
    entity = args.entity or api.default_entity
    project = args.project or info["project"] or "pig-rl"
    try:
        api.run(f"{entity}/{project}/{info['run_id']}")
    except wandb.errors.CommError:
        why = f"run {info['run_id']} is not in {entity}/{project} (not synced yet, or another --entity/--project)"
        print(offline_instructions(run_dir, info["folder"], why), file=sys.stderr)
        return 2
    title = f"pig-rl: {run_dir.parent.name} / {info['name'] or run_dir.name}"
    description = f"Panels built by `pig dashboard` from the keys run {info['run_id']} logged ({run_dir})."
    report = build_wandb_report(spec, entity, project, info["run_id"], title, description)
    report.save()
    print(f"dashboard: {report.url}")
    return 0


if __name__ == "__main__":
    from common.errors import run_command

    sys.exit(run_command(main))
