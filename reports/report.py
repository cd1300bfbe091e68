"""One self-contained HTML page per training run: what was learned, for whom, and how well.

    pig report runs/demo/final-s0            # a run folder (runs/<user>/<run>)
    pig report demo                          # a user id: the run that runs/demo/LATEST points at
    pig report demo --out /tmp/demo.html     # somewhere else than <run>/report.html

`rl/train_policy.py` writes `<run>/report.html` when training ends; `pig report` rewrites it later, e.g. after
`pig evaluate` has scored the adapter. Everything comes from the run's own files, nothing is recomputed:

- learning curves from `log_history.json`, grouped like the W&B dashboard (`group_metrics`): reward terms (with the
  ground truth of a sandbox user), judge health (statuses, position consistency), render, policy, time;
- the user's context (the rationales PIGReward judged with) from `runs/<user>/context/`;
- image grids: the evaluation's held-out grids (original | base | adapter) when `pig evaluate` ran for this adapter,
  and the first and last training sample grids (`samples/step_*.png`);
- rewrites: the evaluation's base and adapter rewrites of the same prompts, else the rewrites logged during
  training (the offline W&B run's sample tables), earliest and latest logged step of each prompt;
- the evaluation's table (`runs/<user>/eval/<run>/results.json`) when there is one.

Images and plots are embedded as base64 PNG, so the page can be mailed or attached as it is; no script, no network.
Every text that comes from the user or a model (prompts, rewrites, rationales) is HTML-escaped.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from reports.runs import latest_evaluation, resolve_run, run_config, run_context

REPORT_NAME = "report.html"
NAMESPACES = ("reward/", "judge/", "render/", "policy/", "time/")
"""The project's metric namespaces (docs/SERVING.md); `ungrouped` lists logged metrics outside them."""
NOT_METRICS = {"step", "epoch", "total_flos", "train/global_step", "train/epoch", "train/total_flos"}
NOT_METRICS |= {"_step", "_runtime", "_timestamp"}
"""Counters and W&B bookkeeping: logged beside every metric, never plotted."""

# ----------------------------------------------------------------------------------------- metric grouping (pure)
SECTIONS = (
    ("reward", "Reward terms", ("reward", "reward_std", "rewards/", "reward/", "frac_reward_zero_std")),
    ("judge", "Judge health", ("judge/",)),
    ("render", "Render", ("render/",)),
    (
        "policy",
        "Policy",
        (
            "policy/",
            "completions/",
            "entropy",
            "loss",
            "grad_norm",
            "learning_rate",
            "kl",
            "clip_ratio/",
            "num_tokens",
        ),
    ),
    ("time", "Time", ("time/", "step_time", "profiling/")),
    ("other", "Other trainer metrics", ("",)),
)
"""(id, title, key prefixes): a bare key belongs to the first section with a prefix that equals it or, ending in
`/`, starts it. TRL's own keys (`reward`, `rewards/<func>/mean`, `entropy`, ...) are sorted in beside ours."""

_COMBINED = (
    ("judge/status/", "judge/status (fraction of verdicts)"),
    ("judge/retr", "judge/retries"),
    ("completions/m", "completions (tokens)"),
    ("clip_ratio/", "clip_ratio"),
    ("profiling/", "profiling (seconds, TRL)"),
)
"""Keys that share one panel: one curve each (statuses add up to 1, lengths share a unit)."""
FIRST = (
    "reward",
    "reward/ground_truth",
    "rewards/preference/mean",
    "reward/win_rate_vs_original",
    "rewards/fidelity/mean",
    "judge/status/ok",
    "judge/position_consistency",
    "judge/ground_truth_agreement",
    "policy/distinct_rewrites",
    "time/step_s",
    "time/rollouts_per_s",
)
"""Panels shown first in their section, in this order (the rest follow in logged order)."""
_PHASES = ("time/generate_s", "time/render_s", "time/judge_s", "time/reward_s", "time/log_s", "time/update_s")


@dataclass
class Panel:
    """One plot: `keys` drawn against the step; `bands[k]` is the key of k's standard deviation, shaded around it."""

    title: str
    keys: list[str]
    bands: dict[str, str] = field(default_factory=dict)


@dataclass
class Section:
    id: str
    title: str
    panels: list[Panel]


def bare(key: str) -> str:
    """A W&B key without the `train/` prefix that transformers' W&B callback adds to every trainer metric."""
    return key.removeprefix("train/")


def section_of(key: str) -> str:
    name = bare(key)
    for section, _title, prefixes in SECTIONS:
        if any(name == p or (p.endswith("/") and name.startswith(p)) or p == "" for p in prefixes):
            return section
    raise AssertionError("unreachable: the last section takes every key")


def group_metrics(keys) -> list[Section]:
    """The logged scalar `keys` (bare, or W&B's `train/...`) as sections of panels, in `SECTIONS` order.

    A `.../std` or `*_std` key shades its mean's panel instead of getting its own; the keys of `_COMBINED` and the
    step-time phases share one panel each. Counters (`NOT_METRICS`) and run totals (`train_runtime`, ...) are left out.
    """
    keys = [k for k in dict.fromkeys(keys) if k not in NOT_METRICS and not bare(k).startswith("train_")]
    if not keys:
        return []
    names = {bare(k): k for k in keys}
    std_of = {}
    for name, key in names.items():
        if name.endswith("/mean") and name[: -len("mean")] + "std" in names:
            std_of[key] = names[name[: -len("mean")] + "std"]
        elif name + "_std" in names:
            std_of[key] = names[name + "_std"]
    shaded = set(std_of.values())
    sections = []
    for section, title, _prefixes in SECTIONS:
        panels: list[Panel] = []
        by_title: dict[str, Panel] = {}
        for key in keys:
            if key in shaded or section_of(key) != section:
                continue
            name = bare(key)
            combined = next((t for p, t in _COMBINED if name.startswith(p)), None)
            if combined is None and name in _PHASES:
                combined = "time/ phases (seconds per step)"
            if combined is None:
                panels.append(Panel(name, [key], {key: std_of[key]} if key in std_of else {}))
            elif combined in by_title:
                by_title[combined].keys.append(key)
            else:
                by_title[combined] = Panel(combined, [key])
                panels.append(by_title[combined])
        if panels:
            rank = {name: i for i, name in enumerate(FIRST)}
            panels.sort(key=lambda p: min(rank.get(bare(k), len(rank)) for k in p.keys))  # stable: logged order
            sections.append(Section(section, title, panels))
    return sections


def ungrouped(keys) -> list[str]:
    """Logged metrics outside the project's namespaces (`NAMESPACES`): TRL's own keys, mostly."""
    return sorted(
        k
        for k in dict.fromkeys(keys)
        if k not in NOT_METRICS and not bare(k).startswith("train_") and not bare(k).startswith(NAMESPACES)
    )


def series(history: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged row holding a finite number under `key`."""
    return [
        (int(row["step"]), float(row[key]))
        for row in history
        if "step" in row and isinstance(row.get(key), (int, float)) and math.isfinite(row[key])
    ]


def term_summary(history: list[dict], key: str) -> dict | None:
    """First and last logged value of `key` and the means of its first and last quarter of logged steps (as the
    training summary prints them); `None` when it was never logged."""
    points = series(history, key)
    if not points:
        return None
    from reports.runs import quarter_means

    values = [v for _, v in points]
    first_mean, last_mean, k = quarter_means(values)
    return {
        "first": values[0],
        "first_step": points[0][0],
        "last": values[-1],
        "last_step": points[-1][0],
        "first_mean": first_mean,
        "last_mean": last_mean,
        "k": k,
        "logged": len(values),
    }


# ------------------------------------------------------------------------------------------------ reading a run
@dataclass
class RunFiles:
    """What a run folder (and its user's folder beside it) holds, read once."""

    run_dir: Path
    user_id: str
    history: list[dict]
    adapter: dict | None
    context: dict | None
    context_note: str
    config: dict
    sample_grids: list[Path]
    sample_rows: list[dict]
    evaluation: dict | None
    eval_dir: Path | None


def read_run(run_dir: str | Path, eval_dir: str | Path | None = None) -> RunFiles:
    """Read a run folder through the run reader (`reports.runs`); `eval_dir` is the evaluation to show (default: the
    newest `pig evaluate` of this run's adapter that is not stale, `reports.runs.latest_evaluation`)."""
    run = resolve_run(run_dir)
    history_path = run.run_dir / "log_history.json"
    if not history_path.is_file():
        raise FileNotFoundError(
            f"{history_path} is missing: the run did not finish (rl/train_policy.py writes it with the adapter). "
            "Pass a finished run folder."
        )
    history = json.loads(history_path.read_text(encoding="utf-8"))
    context, context_note = run_context(run)
    if eval_dir is not None:
        path = Path(eval_dir) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: pass the --eval_out folder of a `pig evaluate` run.")
        evaluation, eval_path = json.loads(path.read_text(encoding="utf-8")), Path(eval_dir)
    else:
        latest = latest_evaluation(run)
        evaluation, eval_path = (latest.results, latest.path.parent) if latest else (None, None)
    if evaluation and evaluation.get("context_key"):
        keyed = run.user_runs / "context" / f"{evaluation['context_key']}.json"
        if keyed.is_file():
            context = json.loads(keyed.read_text(encoding="utf-8"))
            context_note = f"{keyed.name}: the context the evaluation judged with"
    return RunFiles(
        run_dir=run.run_dir,
        user_id=run.user_id,
        history=history,
        adapter=asdict(run.info) if run.info is not None else None,
        context=context,
        context_note=context_note,
        config=run_config(run) or {},
        sample_grids=sorted((run.run_dir / "samples").glob("step_*.png")),
        sample_rows=_sample_rows(run.run_dir),
        evaluation=evaluation,
        eval_dir=eval_path,
    )


def _offline_run(run_dir: Path) -> Path | None:
    from reports.wandb_offline import find_run_files

    files = find_run_files(run_dir / "wandb") if (run_dir / "wandb").is_dir() else []
    return files[-1] if files else None


def _sample_rows(run_dir: Path) -> list[dict]:
    """The rows of every `samples/table` the run logged (rl/tracking.py): original, rewrite, scores, statuses."""
    file = _offline_run(run_dir)
    if file is None:
        return []
    rows = []
    for path in sorted((file.parent / "files" / "media" / "table" / "samples").glob("table_*.table.json")):
        table = json.loads(path.read_text(encoding="utf-8"))
        rows += [dict(zip(table["columns"], row)) for row in table["data"]]
    return sorted(rows, key=lambda r: r.get("step", 0))


# ------------------------------------------------------------------------------------------------------ the page
def _png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(data: bytes, alt: str) -> str:
    return f'<img src="{_png(data)}" alt="{html.escape(alt)}">'


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float) and not math.isfinite(value):
        return html.escape(str(value))
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _plot_section(history: list[dict], section: Section, window: int = 5) -> bytes | None:
    """One figure of small multiples: raw points faint, a moving average of `window` logged steps over them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [p for p in section.panels if any(series(history, k) for k in p.keys)]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.7 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        common = _common_prefix([bare(k) for k in panel.keys]) if len(panel.keys) > 1 else ""
        for key in panel.keys:
            points = np.asarray(series(history, key), dtype=float)
            if not len(points):
                continue
            steps, values = points[:, 0], points[:, 1]
            (line,) = ax.plot(steps, values, alpha=0.3, lw=1, marker="." if len(points) < 20 else None)
            k = min(window, len(values))
            smooth = np.convolve(values, np.ones(k) / k, mode="valid")
            label = bare(key)[len(common) :] or bare(key)
            ax.plot(steps[k - 1 :], smooth, color=line.get_color(), lw=1.6, label=label)
            if key in panel.bands:
                std = dict(series(history, panel.bands[key]))
                spread = np.asarray([std.get(int(s), 0.0) for s in steps])
                ax.fill_between(steps, values - spread, values + spread, color=line.get_color(), alpha=0.08)
        ax.set_title(panel.title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
        if len(panel.keys) > 1:
            ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.supxlabel("training step", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _common_prefix(names: list[str]) -> str:
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[: prefix.rfind("/", 0, len(prefix) - 1) + 1] if "/" in prefix[:-1] else ""
    return prefix


SUMMARY_TERMS = (
    ("reward", "reward (the trained total)"),
    ("rewards/preference/mean", "preference term"),
    ("rewards/fidelity/mean", "fidelity term"),
    ("reward/win_rate_vs_original", "judge: win rate vs the original"),
    ("reward/ground_truth", "ground truth (sandbox user's true preference over the original)"),
    ("reward/similarity", "similarity to the prompt"),
    ("judge/position_consistency", "judge: position consistency"),
    ("judge/ground_truth_agreement", "judge: agreement with the ground truth"),
    ("judge/status/ok", "judge: verdicts with status ok"),
)


def _summary_table(history: list[dict]) -> str:
    rows = []
    for key, label in SUMMARY_TERMS:
        s = term_summary(history, key)
        if s is None:
            continue
        cells = "".join(
            f'<td data-key="{key}" data-stat="{stat}" data-value="{s[stat]!r}">{_num(s[stat])}</td>'
            for stat in ("first", "last", "first_mean", "last_mean")
        )
        rows.append(
            f"<tr><th>{html.escape(label)}<br><code>{html.escape(key)}</code></th>{cells}"
            f"<td>{s['first_step']}&ndash;{s['last_step']} ({s['logged']} rows, k={s['k']})</td></tr>"
        )
    if not rows:
        return "<p>No reward term was logged.</p>"
    head = (
        "<tr><th>term</th><th>first logged</th><th>last logged</th><th>mean of first k</th>"
        "<th>mean of last k</th><th>steps</th></tr>"
    )
    return f'<table class="numbers" id="summary">{head}{"".join(rows)}</table>'


def _settings_table(run: RunFiles) -> str:
    pig, policy = run.config.get("pig") or {}, run.config.get("policy") or {}
    rows = []
    if run.adapter:
        for key in ("base_model", "trainer", "trained_steps", "temperature", "max_new_tokens"):
            rows.append((key, run.adapter.get(key)))
    for key in (
        "compare_to",
        "fidelity_weight",
        "fidelity_floor",
        "repetition_weight",
        "images_per_prompt",
        "judge_model",
        "judge_mode",
        "renderer_model",
        "init_adapter",
    ):
        if key in pig:
            rows.append((key, pig[key]))
    for key in ("lora_r", "lora_alpha"):
        if key in policy:
            rows.append((key, policy[key]))
    trainer = run.config.get("trainer") or {}
    for key in ("learning_rate", "num_generations", "per_device_train_batch_size", "num_iterations", "beta", "seed"):
        if key in trainer:
            rows.append((key, trainer[key]))
    runtime = next((h["train_runtime"] for h in reversed(run.history) if "train_runtime" in h), None)
    if runtime is not None:
        rows.append(("train_runtime (s)", f"{runtime:.0f}"))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    note = "" if run.config else "<p class='note'>No offline W&amp;B run in this folder: settings of the adapter.</p>"
    return f'<table class="kv">{body}</table>{note}' if rows else note


def _context_section(run: RunFiles) -> str:
    if run.context is None:
        return f"<p>No context to show: {html.escape(run.context_note)}.</p>"
    c = run.context
    rows = "".join(
        f"<tr><td>{r['reference_index']}</td><td>{html.escape(r['prompt'])}</td><td>{html.escape(r['text'])}</td></tr>"
        for r in c["rationales"]
    )
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.get("created_at", 0)))
    return (
        f"<p>{len(c['rationales'])} rationales written by <code>{html.escape(c['model_id'])}</code> "
        f"(template <code>{html.escape(c['template_id'])}</code>, built {built}; "
        f"{html.escape(run.context_note)}). PIGReward reads them before every verdict.</p>"
        '<table class="text" id="context"><tr><th>#</th><th>reference prompt</th><th>rationale</th></tr>'
        f"{rows}</table>"
    )


def _eval_table(results: dict) -> str:
    from reports.runs import COMPARISONS, format_summary

    taste = results.get("taste")
    parts = [
        f"<p>Adapter <code>{html.escape(str(results['adapter']))}</code>; "
        + (
            f"hidden taste (sandbox user): <code>{html.escape(json.dumps(taste['prefs']))}</code>, weights "
            f"<code>{html.escape(json.dumps(taste['weights']))}</code>."
            if taste
            else "a real user: judge only."
        )
        + " 0.5 means no better; intervals are 95% bootstrap over (prompt, sample) cells."
        + (" Run with --judge false: no judge column." if not results.get("settings", {}).get("judge_model") else "")
        + "</p>"
    ]
    for block in results["blocks"]:
        summary = block["summary"]
        rows = "".join(
            f"<tr><th>{a} vs {b}</th><td>{html.escape(format_summary(summary[f'{a}_vs_{b}'].get('judge')))}</td>"
            f'<td data-block="{block["prompt_set"]}-{block["decoding"]}" data-comparison="{a}_vs_{b}">'
            f"{html.escape(format_summary(summary[f'{a}_vs_{b}'].get('ground_truth')))}</td>"
            f"<td>{_num(summary[f'{a}_vs_{b}'].get('agreement'), 2)}</td></tr>"
            for a, b in COMPARISONS
        )
        warnings = "".join(f"<li>{html.escape(w)}</li>" for w in block.get("warnings", []))
        parts.append(
            f"<h3>{html.escape(block['prompt_set'])} prompts &times; {html.escape(block['decoding'])} decoding</h3>"
            f"<p>{block['prompts']} prompts &times; {block['samples']} sample{'s' * (block['samples'] != 1)}; "
            "fidelity to the prompt: base "
            f"{_num(summary.get('fidelity_base'))}, adapter {_num(summary.get('fidelity_adapter'))}; rewrites with a "
            f"repeated or stacked cue: base {_num(summary.get('repeats_base'), 2)}, adapter "
            f"{_num(summary.get('repeats_adapter'), 2)}.</p>"
            '<table class="numbers"><tr><th>comparison</th><th>judge (95% CI)</th><th>ground truth (95% CI)</th>'
            f"<th>agreement</th></tr>{rows}</table>" + (f"<ul class='warn'>{warnings}</ul>" if warnings else "")
        )
    return "".join(parts)


def _eval_rewrites(results: dict) -> str:
    parts = []
    for i, block in enumerate(results["blocks"]):
        firsts = [c for c in block["cells"] if c["sample"] == 0]
        rows = "".join(
            f"<tr><td>{html.escape(c['prompt'])}</td><td>{html.escape(c['base'])}</td>"
            f"<td>{html.escape(c['adapter'])}</td>"
            f"<td>{_num(c.get('adapter_vs_base', {}).get('ground_truth'), 2)}</td>"
            f"<td>{_num(c.get('adapter_vs_base', {}).get('judge'), 2)}</td></tr>"
            for c in firsts
        )
        parts.append(
            f"<details{' open' if i == 0 else ''}><summary>{html.escape(block['prompt_set'])} prompts, "
            f"{html.escape(block['decoding'])} decoding ({len(firsts)} prompts, first sample each)</summary>"
            '<table class="text rewrites"><tr><th>prompt</th><th>base policy</th><th>adapter</th>'
            f"<th>truth: adapter vs base</th><th>judge: adapter vs base</th></tr>{rows}</table></details>"
        )
    return "".join(parts)


def _training_rewrites(rows: list[dict]) -> str:
    """Each logged prompt's rewrites at its earliest and latest logged step (step 0 is the starting policy)."""
    by_prompt: dict[str, dict[int, list[dict]]] = {}
    for row in rows:
        by_prompt.setdefault(row["original"], {}).setdefault(row["step"], []).append(row)

    def cell(group: list[dict], step: int) -> str:
        items = "".join(
            f"<li>{html.escape(r['rewrite'])} <span class='score'>pref {_num(r.get('preference'), 2)}"
            + (f", truth {_num(r['ground_truth'], 2)}" if r.get("ground_truth") is not None else "")
            + "</span></li>"
            for r in group
        )
        return f"<td><b>step {step}</b><ul>{items}</ul></td>"

    body = []
    for prompt, steps in by_prompt.items():
        first, last = min(steps), max(steps)
        later = cell(steps[last], last) if last != first else "<td>logged once</td>"
        body.append(f"<tr><td>{html.escape(prompt)}</td>{cell(steps[first], first)}{later}</tr>")
    return (
        '<table class="text rewrites"><tr><th>training prompt</th><th>earliest logged step</th>'
        f"<th>latest logged step</th></tr>{''.join(body)}</table>"
    )


CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2330;margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff;box-shadow:0 0 12px #0001}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:34px 0 8px;border-bottom:2px solid #e3e6eb;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}nav{margin:10px 0 0;font-size:13px}nav a{margin-right:14px;color:#2a5db0}
.sub{color:#5b6474}.note{color:#6b7280;font-size:13px}code{font-size:12.5px;background:#f1f3f6;padding:0 3px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #e3e6eb;padding:4px 8px;
vertical-align:top;text-align:left}tr:nth-child(even) td{background:#fafbfc}table.numbers td{text-align:right;
font-variant-numeric:tabular-nums}table.text{width:100%}table.kv th{background:#f6f7f9;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #e3e6eb;margin:4px 0}figure{margin:10px 0}
figcaption{font-size:12.5px;color:#5b6474}ul{margin:2px 0;padding-left:18px}.score{color:#6b7280;font-size:12px}
.warn li{color:#9a5b00}.pair{display:flex;gap:16px;align-items:flex-start}.pair figure{flex:1;min-width:0}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
"""


def render_report(run: RunFiles) -> str:
    """The report page of `run` as one HTML string."""
    history, esc = run.history, html.escape
    keys = [k for row in history for k in row]
    sections = group_metrics(keys)
    truth = term_summary(history, "reward/ground_truth") is not None
    parts = [
        f"<h1>Run {esc(run.run_dir.name)} &middot; user {esc(run.user_id)}</h1>",
        f"<p class='sub'>{esc(str(run.run_dir))} &middot; report written "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
        + (" &middot; sandbox user: the ground truth is the user's hidden taste" if truth else "")
        + "</p>",
        "<nav><a href='#summary-h'>summary</a><a href='#curves'>learning curves</a><a href='#context-h'>context</a>"
        "<a href='#images'>images</a><a href='#rewrites'>rewrites</a><a href='#evaluation'>evaluation</a></nav>",
        "<h2 id='summary-h'>Summary</h2>",
        _summary_table(history),
        "<p class='note'>k = a quarter of the logged rows, as the training summary prints it.</p>",
        _settings_table(run),
        "<h2 id='curves'>Learning curves</h2>",
        "<p class='note'>Faint: each logged step; solid: mean of 5 logged steps; shaded: &plusmn; the term's "
        "standard deviation within the batch. GRPO with num_iterations 2 judges every other step.</p>",
    ]
    for section in sections:
        png = _plot_section(history, section)
        if png is not None:
            parts += [f"<h3>{esc(section.title)}</h3>", f"<figure>{_img(png, section.title + ' curves')}</figure>"]
    if not sections:
        parts.append("<p>No metric was logged.</p>")
    outside = ungrouped(keys)
    if outside:
        parts.append(
            "<p class='note'>Logged outside the reward/, judge/, render/, policy/, time/ namespaces (TRL's own "
            f"names): {esc(', '.join(outside))}.</p>"
        )
    parts += ["<h2 id='context-h'>The user's context</h2>", _context_section(run), "<h2 id='images'>Images</h2>"]
    if run.evaluation:
        seeds = min(2, run.evaluation.get("settings", {}).get("eval_images", 1))
        columns = "original | base policy | adapter" + (", for two image seeds" if seeds == 2 else "")
        opened = False
        for block in run.evaluation["blocks"]:
            grid = run.eval_dir / block["grid"]
            if not grid.is_file():
                continue
            caption = f"{block['prompt_set']} prompts, {block['decoding']} decoding: {columns} (shared seeds)"
            show = " open" if not opened and block["prompt_set"] in ("heldout", "given") else ""
            opened = opened or bool(show)
            parts.append(
                f"<details{show}><summary>{esc(caption)}</summary><figure>{_img(grid.read_bytes(), caption)}"
                "</figure></details>"
            )
    else:
        parts.append(
            "<p>No evaluation of this adapter, so no held-out grids: run <code>pig evaluate --user "
            f"{esc(run.user_id)} --adapter {esc(str(run.run_dir / 'adapter'))}</code>, then "
            f"<code>pig report {esc(str(run.run_dir))}</code>.</p>"
        )
    if run.sample_grids:
        first, last = run.sample_grids[0], run.sample_grids[-1]
        parts.append(
            "<h3>Training samples (training prompts): first and last logged step</h3><p class='note'>Per group: "
            "the original prompt's images, then each rewrite's, labelled with its scores.</p><div class='pair'>"
        )
        for path in dict.fromkeys([first, last]):
            parts.append(
                f"<figure>{_img(path.read_bytes(), path.stem)}<figcaption>{esc(path.stem)}</figcaption></figure>"
            )
        parts.append("</div>")
    else:
        parts.append("<p>No training sample grids in this run (log_images_every was 0).</p>")
    parts.append("<h2 id='rewrites'>Rewrites</h2>")
    if run.evaluation:
        parts.append("<p>The evaluation's rewrites of the same prompts by the base policy and by the adapter.</p>")
        parts.append(_eval_rewrites(run.evaluation))
    else:
        parts.append(
            "<p>No evaluation in this folder, so no base-vs-adapter rewrites of the same prompts (run <code>pig "
            "evaluate</code> for those).</p>"
        )
    if run.sample_rows:
        parts.append(
            "<h3>Rewrites logged during training</h3><p class='note'>From the offline W&amp;B run's sample tables: "
            "each logged training prompt at the earliest and latest step it was logged (step 0 is the starting "
            "policy; pref = the judge's preference, truth = the hidden taste's).</p>"
        )
        parts.append(_training_rewrites(run.sample_rows))
    elif not run.evaluation:
        parts.append("<p>No sample tables either (no offline W&amp;B run in this folder).</p>")
    parts.append("<h2 id='evaluation'>Evaluation</h2>")
    if run.evaluation:
        parts.append(f"<p class='note'>{esc(str(run.eval_dir / 'results.json'))}</p>")
        parts.append(_eval_table(run.evaluation))
    else:
        parts.append("<p>Not evaluated yet (see Images).</p>")
    title = f"pig-rl report: {run.user_id} / {run.run_dir.name}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None, eval_dir: str | Path | None = None) -> Path:
    """Write the report of the run in `run_dir` to `out` (default `<run_dir>/report.html`); returns its path."""
    from common.files import atomic_write_text

    run = read_run(run_dir, eval_dir)
    path = Path(out) if out else Path(run_dir) / REPORT_NAME
    atomic_write_text(path, render_report(run))
    return path


def report_after_training(run_dir: str | Path) -> Path | None:
    """`write_report` from the main process only (rl/train_policy.py calls it once the adapter is saved)."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return None
    path = write_report(run_dir)
    print(f"[done] report: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pig report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder (runs/<user>/<run>), an adapter folder, or a user id (its LATEST)")
    parser.add_argument("--out", help="output file (default: <run>/report.html)")
    parser.add_argument(
        "--eval", dest="eval_dir", help="a `pig evaluate` output folder (default: runs/<user>/eval/<run>)"
    )
    parser.add_argument("--runs_dir", default="runs", help="where user ids are looked up (default: runs)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    path = write_report(resolve_run(args.run, args.runs_dir).run_dir, args.out, args.eval_dir)
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    from common.errors import run_command

    sys.exit(run_command(main))
