"""What a benchmark run leaves for people: the results table, two plots and a self-contained HTML report.

- `table.md`: the paper's layout (methods as rows; accuracy with tie / without tie with 95% CIs) plus tie rate,
  undecided rate, position consistency, pairs and seconds per pair.
- `accuracy.png`: both accuracies per method as bars with 95% CI error bars, chance at 50%.
- `per_user.png`: histogram of the per-user accuracy (with tie), one panel per method.
- `report.html`: one file (images embedded as base64 PNG): the table and plots, then example pairs: both images, the
  label, every method's prediction, the judge's dimension table in both presentation orders, and the user's context
  (the reasoner's rationales beside the reference images they came from).
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
from pathlib import Path

from PIL import Image

from reward.eval.metrics import predicted_winner

PLOTS = ("accuracy.png", "per_user.png")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _with_ci(value: float | None, ci) -> str:
    if value is None:
        return "-"
    return f"{_pct(value)} [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else _pct(value)


TABLE_COLUMNS = (
    "method",
    "accuracy with tie (%)",
    "accuracy without tie (%)",
    "tie rate (%)",
    "undecided (%)",
    "position consistency (%)",
    "pairs (label ties)",
    "s / pair",
)


def table_rows(results: dict) -> list[tuple[str, ...]]:
    rows = []
    for name, m in results["methods"].items():
        seconds = m.get("seconds_per_pair")
        rows.append(
            (
                name,
                _with_ci(m["accuracy_with_tie"], m["accuracy_with_tie_ci"]),
                _with_ci(m["accuracy_without_tie"], m["accuracy_without_tie_ci"]),
                _pct(m["tie_rate"]),
                _pct(m["undecided_rate"]),
                _pct(m["position_consistency"]),
                f"{m['n_pairs']} ({m['n_label_ties']})",
                "-" if seconds is None else f"{seconds:.3g}",
            )
        )
    return rows


def _notes(results: dict) -> list[str]:
    config = results["config"]
    notes = [
        f"Dataset `{results['dataset']}`: {results['users']} users, {results['pairs']} held-out pairs. Labelled ties "
        "are excluded from both accuracies; a predicted tie or no decision counts 0.5 with tie and is excluded "
        "without tie (reward/eval/metrics.py).",
        f"95% CI: percentile bootstrap over {results['ci_unit']}, {config['bootstrap']} resamples, seed "
        f"{config['seed']}.",
    ]
    if results["users_without_heldout"]:
        notes.append(f"Users without held-out pairs (not evaluated): {len(results['users_without_heldout'])}.")
    for name, note in results.get("model_notes", {}).items():
        notes.append(f"Model `{name}`: {note.get('weights', '?')} weights ({note.get('note', '')}).")
    return notes


def table_markdown(results: dict) -> str:
    """The results as a Markdown table in the paper's layout, with notes on the definitions and the models."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines + [""] + [f"- {n}" for n in _notes(results)]) + "\n"


# ----------------------------------------------------------------------------------------------------- plots
def plot_accuracy(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results["methods"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 3), 4))
    for offset, key, label in ((-0.2, "accuracy_with_tie", "with tie"), (0.2, "accuracy_without_tie", "without tie")):
        values = [results["methods"][n][key] for n in names]
        cis = [results["methods"][n][f"{key}_ci"] for n in names]
        heights = [100 * v if v is not None else 0.0 for v in values]
        err = np.array(
            [
                [100 * (v - c[0]), 100 * (c[1] - v)] if (v is not None and c) else [0.0, 0.0]
                for v, c in zip(values, cis)
            ]
        ).T
        bars = ax.bar(x + offset, heights, width=0.4, yerr=err, capsize=3, label=label, error_kw={"linewidth": 1})
        for bar, v in zip(bars, values):  # the value at the bar's foot; "n/a" where nothing was counted
            text = "n/a" if v is None else f"{100 * v:.1f}"
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                1,
                text,
                ha="center",
                va="bottom",
                fontsize=7,
                color="white" if v is not None and v > 0.05 else "black",
            )
    ax.axhline(50, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Pairwise accuracy with 95% CI ({results['users']} users, {results['pairs']} pairs)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_user(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results["methods"])
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False, sharex=True)
    bins = np.linspace(0, 1, 11)
    for ax, name in zip(axes.flat, names):
        values = [u["with_tie"] for u in results["methods"][name]["per_user"].values() if u["with_tie"] is not None]
        ax.hist(values, bins=bins, color="tab:blue", edgecolor="white")
        mean = results["methods"][name]["per_user_with_tie"]["mean"]
        if mean is not None:
            ax.axvline(mean, color="black", linewidth=1)
        ax.set_title(f"{name} (n={len(values)})", fontsize=9)
        ax.set_xlabel("per-user accuracy with tie", fontsize=8)
        ax.set_ylabel("users", fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("Per-user accuracy (line: mean over users)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------ HTML
def image_data_uri(source: Path | bytes, max_side: int = 192) -> str:
    """A PNG data URI of an image file (or PNG bytes), downscaled to at most `max_side` pixels."""
    if isinstance(source, bytes):
        return "data:image/png;base64," + base64.b64encode(source).decode("ascii")
    with Image.open(source) as image:
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(source: Path | bytes, side: int, alt: str) -> str:
    try:
        uri = image_data_uri(source, side)
    except OSError as err:  # a report must still render when an image went missing since the run
        return f"<span class='bad'>[{html.escape(alt)}: {html.escape(str(err))}]</span>"
    return f"<img src='{uri}' alt='{html.escape(alt)}' style='width:{side}px;image-rendering:pixelated'>"


def _winner_text(preference: float | None) -> str:
    return {None: "no decision", 0: "tie", 1: "image 1", 2: "image 2"}[predicted_winner(preference)]


def verdict_html(verdict: dict | None, shown_first: str) -> str:
    """One presentation order of a judge answer: its dimension table, totals, verdict and raw text."""
    if not verdict:
        return ""
    head = f"<h5>{html.escape(shown_first)} &middot; status <code>{html.escape(str(verdict.get('status')))}</code>"
    if "p_1" in verdict:
        return head + f" &middot; P(Image 1) = {verdict['p_1']:.3f}, P(Image 2) = {verdict['p_2']:.3f}</h5>"
    parts = [head + f" &middot; winner {verdict.get('winner')} (stated: {verdict.get('stated_winner')})</h5>"]
    dims = verdict.get("dimensions") or []
    if dims:
        parts.append("<table class='dims'><tr><th>dimension</th><th>Image 1</th><th>Image 2</th><th>reason</th></tr>")
        for d in dims:
            parts.append(
                f"<tr><td>{html.escape(d['name'])}</td><td>{d['score_1']:g}</td><td>{d['score_2']:g}</td>"
                f"<td>{html.escape(d['reason'])}</td></tr>"
            )
        parts.append(
            f"<tr><th>total (recomputed)</th><td>{verdict.get('total_1')}</td><td>{verdict.get('total_2')}</td>"
            f"<td>stated: {verdict.get('stated_total_1')} / {verdict.get('stated_total_2')}</td></tr></table>"
        )
    else:
        parts.append("<p class='muted'>no dimension lines could be read from this answer</p>")
    text = verdict.get("text") or ""
    parts.append(f"<details><summary>raw answer ({len(text)} chars)</summary><pre>{html.escape(text)}</pre></details>")
    return "\n".join(parts)


def _context_html(out: Path, user_id: str, key: str | None, user_folder: Path | None) -> str:
    """The user's rationales (from the cached context) beside the reference images they came from."""
    if key is None:
        return ""
    path = out / "contexts" / user_id / "context" / f"{key}.json"
    if not path.is_file():
        return f"<p class='muted'>context {html.escape(key)} not found under {html.escape(str(path.parent))}</p>"
    context = json.loads(path.read_text(encoding="utf-8"))
    references = []
    if user_folder is not None and (user_folder / "user.json").is_file():
        references = json.loads((user_folder / "user.json").read_text(encoding="utf-8")).get("references") or []
    rows = []
    for r in context["rationales"]:
        ref = references[r["reference_index"]] if r["reference_index"] < len(references) else None
        images = ""
        if ref is not None:
            images = (
                _img(user_folder / ref["chosen"], 56, "chosen")
                + " "
                + _img(user_folder / ref["rejected"], 56, "rejected")
            )
        rows.append(
            f"<tr><td>{r['reference_index']}</td><td>{images}</td><td>{html.escape(r['prompt'])}</td>"
            f"<td>{html.escape(r['text']) or '<span class=muted>(empty)</span>'}</td></tr>"
        )
    return (
        f"<details open><summary>user context: {len(rows)} rationales by "
        f"<code>{html.escape(context['model_id'])}</code> "
        f"({html.escape(context['template_id'])})</summary><table class='ctx'><tr><th>#</th><th>chosen / rejected</th>"
        f"<th>reference prompt</th><th>rationale</th></tr>{''.join(rows)}</table></details>"
    )


def example_keys(rows: list[dict], n: int, seed: int) -> list[tuple[str, int]]:
    """`n` (user, pair) keys for the report, a seeded sample, preferring pairs that PIGReward judged."""
    judged = sorted({(r["user_id"], r["pair"]) for r in rows if r["method"] == "pigreward"})
    keys = judged or sorted({(r["user_id"], r["pair"]) for r in rows})
    return sorted(random.Random(seed).sample(keys, min(n, len(keys))))


def report_html(
    results: dict, rows: list[dict], dataset: Path, out: Path, folders: dict[str, Path], n_examples: int
) -> str:
    """The whole report page as one string (see the module docstring)."""
    by_key: dict[tuple[str, int], dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["user_id"], r["pair"]), {})[r["method"]] = r
    table = "<table class='results'><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in TABLE_COLUMNS) + "</tr>"
    table += "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(results)
    )
    table += "</table>"
    descriptions = "".join(
        f"<li><b>{html.escape(n)}</b>: {html.escape(m['description'])}</li>" for n, m in results["methods"].items()
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in _notes(results))
    warning = ""
    if any(note.get("weights") == "random" for note in results.get("model_notes", {}).values()):
        warning = (
            "<p class='warn'>Some models have random weights (see the notes): their figures are chance-level.</p>"
        )
    plots = "".join(
        f"<img src='{image_data_uri((out / p).read_bytes())}' alt='{p}' style='max-width:100%'>"
        for p in PLOTS
        if (out / p).is_file()
    )
    sections = []
    seen_users = set()
    for user_id, pair in example_keys(rows, n_examples, results["config"]["seed"]):
        methods = by_key[(user_id, pair)]
        first = next(iter(methods.values()))
        label = first["label"]
        images = []
        for side in (1, 2):
            preferred = label == side
            caption = f"image {side}" + (" &#9733; preferred by the user" if preferred else "")
            images.append(
                f"<figure>{_img(dataset / first[f'image_{side}'], 192, f'image {side}')}"
                f"<figcaption>{caption}</figcaption></figure>"
            )
        pred_rows = []
        for name, r in methods.items():
            winner = predicted_winner(r["preference"])
            verdict = (
                "-"
                if label == 0
                else ("&#10003;" if winner == label else ("&frac12;" if winner in (0, None) else "&#10007;"))
            )
            pref = "-" if r["preference"] is None else f"{r['preference']:.4g}"
            pred_rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{pref}</td><td>{_winner_text(r['preference'])}</td>"
                f"<td>{verdict}</td></tr>"
            )
        judges = []
        for name, r in methods.items():
            details = r.get("details") or {}
            if details.get("forward") is None:
                continue
            body = verdict_html(details["forward"], "order 1: image 1 shown as Image 1") + verdict_html(
                details.get("backward"), "order 2: image 2 shown as Image 1 (scores refer to that order)"
            )
            consistent = details.get("consistent")
            judges.append(
                f"<details{' open' if name == 'pigreward' else ''}><summary>{html.escape(name)}: judge answers "
                f"(position-consistent: {consistent})</summary>{body}</details>"
            )
        context = ""
        pig = methods.get("pigreward")
        if pig is not None and user_id not in seen_users:
            seen_users.add(user_id)
            context = _context_html(out, user_id, (pig.get("details") or {}).get("context_key"), folders.get(user_id))
        label_text = {0: "tie (excluded from accuracy)", 1: "image 1", 2: "image 2"}[label]
        sections.append(
            f"<section><h3>user {html.escape(user_id)} &middot; pair {pair}</h3>"
            f"<p>prompt: <b>{html.escape(first['prompt'])}</b> &middot; the user preferred: <b>{label_text}</b></p>"
            f"<div class='pair'>{''.join(images)}</div>{context}"
            "<table class='preds'><tr><th>method</th><th>preference for image 1</th><th>predicted</th>"
            "<th>right?</th></tr>"
            f"{''.join(pred_rows)}</table>{''.join(judges)}</section>"
        )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top}figure{display:inline-block;"
        "margin:0 1em 0 0;text-align:center}section{border-top:2px solid #888;margin-top:1.5em}.muted{color:#888}"
        ".warn{background:#fff3cd;padding:.5em}.bad{color:#b00}pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em}"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>PIGBench report</title>"
        f"<style>{style}</style></head><body><h1>PIGBench report</h1>{warning}<h2>Results</h2>{table}"
        f"<ul>{descriptions}</ul><ul>{notes}</ul><h2>Plots</h2>{plots}"
        f"<h2>Examples ({len(sections)} pairs)</h2>{''.join(sections)}</body></html>"
    )


def write_all(out: Path, results: dict, rows: list[dict], dataset: Path, users, config) -> None:
    """Write `table.md`, the plots and `report.html` into `out`."""
    (out / "table.md").write_text(table_markdown(results), encoding="utf-8")
    plot_accuracy(results, out / "accuracy.png")
    plot_per_user(results, out / "per_user.png")
    folders = {u.user_id: u.folder for u in users}
    page = report_html(results, rows, dataset, out, folders, config.report_examples)
    (out / "report.html").write_text(page, encoding="utf-8")
