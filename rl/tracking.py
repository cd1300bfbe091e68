"""What the reward saw, for people: W&B tables with both images and the judge's dimension table, and image grids.

TRL's completions table carries text only; images made inside a reward function are logged here, from the main
process only, every `every` steps.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from rl.environment import BatchResult


def image_grid(rows: list[list[Image.Image]], labels: list[str] | None = None, cell: int = 128) -> Image.Image:
    """Paste rows of images into one grid (each cell resized to `cell` pixels), with an optional label per row."""
    ncols = max(len(r) for r in rows)
    label_w = 260 if labels else 0
    grid = Image.new("RGB", (label_w + ncols * cell, len(rows) * cell), "white")
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid.paste(image.convert("RGB").resize((cell, cell), Image.NEAREST), (label_w + c * cell, r * cell))
        if labels:
            words, lines, line = labels[r].split(), [], ""
            for w in words:  # crude wrap at ~40 chars
                if len(line) + len(w) > 40:
                    lines.append(line)
                    line = ""
                line += w + " "
            lines.append(line)
            max_lines = max(1, (cell - 8) // 15)  # the default font's line pitch: never spill into the next row
            draw.multiline_text((4, r * cell + 4), "\n".join(lines[:max_lines]), fill="black")
    return grid


class SampleLogger:
    """Logs sampled groups of a reward batch: a W&B table, a W&B dimension table and a PNG grid on disk.

    Args:
        out_dir: where `samples/step_XXXXX.png` grids go.
        every: log on steps divisible by this (0 = never).
        max_groups: groups per logged step.
        fidelity_weight, repetition_weight: to show the total reward next to its terms.
    """

    def __init__(
        self,
        out_dir: str | Path,
        every: int = 5,
        max_groups: int = 2,
        fidelity_weight: float = 0.0,
        repetition_weight: float = 0.0,
    ):
        self.out_dir, self.every, self.max_groups = Path(out_dir), every, max_groups
        self.fidelity_weight, self.repetition_weight = fidelity_weight, repetition_weight
        self._logged_steps: set[int] = set()

    def __call__(self, batch: BatchResult) -> None:
        from accelerate import PartialState

        if not self.every or batch.step % self.every or batch.step in self._logged_steps:
            return
        if not PartialState().is_main_process:
            return
        self._logged_steps.add(batch.step)
        starts = sorted(batch.original_images)[: self.max_groups]
        group_size = len(batch.rewrites) // max(len(batch.original_images), 1)
        rows, labels, records, dims = [], [], [], []
        for start in starts:
            original = batch.original_images[start]
            rows.append(list(original))
            who = f"{batch.users[start]}: " if batch.users is not None else ""  # a population run: the user
            labels.append(f"{who}original: {batch.originals[start]}")
            for i in range(start, start + group_size):
                pref, fid = batch.preference[i], batch.fidelity[i]
                rep = batch.repetition[i]
                total = None if pref is None else pref + self.fidelity_weight * fid + self.repetition_weight * rep
                rows.append(list(batch.rewrite_images[i]))
                truth = f" truth={batch.ground_truth[i]:.2f}" if batch.ground_truth is not None else ""
                labels.append(f"pref={_fmt(pref)}{truth} fid={fid:.2f}: {batch.rewrites[i]}")
                if not batch.comparisons[i]:  # compare_to=group: no comparison with the original to show
                    continue
                comparison = batch.comparisons[i][0]
                records.append(
                    dict(
                        step=batch.step,
                        original=batch.originals[i],
                        rewrite=batch.rewrites[i],
                        original_image=original[0],
                        rewrite_image=batch.rewrite_images[i][0],
                        preference=pref,
                        fidelity=fid,
                        reward=total,
                        ground_truth=batch.ground_truth[i] if batch.ground_truth is not None else None,
                        status_forward=comparison.forward.status,
                        status_backward=comparison.backward.status if comparison.backward is not None else None,
                        consistent=comparison.consistent,
                        judge_forward=getattr(comparison.forward, "text", None),
                    )
                )
                for order, verdict in (
                    ("rewrite=Image 1", comparison.forward),
                    ("rewrite=Image 2", comparison.backward),
                ):
                    for d in getattr(verdict, "dimensions", None) or []:
                        dims.append([batch.step, i, order, d.name, d.reason, d.score_1, d.score_2])
        grid = image_grid(rows, labels)
        path = self.out_dir / "samples" / f"step_{batch.step:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        _log_wandb(records, dims, grid, batch.step)


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"


def _log_wandb(records: list[dict], dims: list[list], grid: Image.Image, step: int) -> None:
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is None:
        return
    columns = list(records[0]) if records else []
    table = wandb.Table(columns=columns)
    for r in records:
        table.add_data(*[wandb.Image(v) if isinstance(v, Image.Image) else v for v in r.values()])
    dim_table = wandb.Table(
        columns=["step", "completion", "order", "dimension", "reason", "score_1", "score_2"], data=dims
    )
    # commit=False: merged into TRL's next log call, so it lands on the same training step.
    # Table cells holding images are staged as artifacts (uploaded by `wandb sync`); the grid and the per-sample
    # images below also land in the run folder itself (files/media/images), readable offline.
    pairs = [
        wandb.Image(
            _side_by_side(r["original_image"], r["rewrite_image"]), caption=f"{r['original']} -> {r['rewrite']}"
        )
        for r in records
    ]
    wandb.log(
        {
            "samples/table": table,
            "samples/dimensions": dim_table,
            "samples/grid": wandb.Image(grid, caption=f"step {step}"),
            "samples/original_vs_rewrite": pairs,
        },
        commit=False,
    )


def _side_by_side(a: Image.Image, b: Image.Image, cell: int = 128) -> Image.Image:
    out = Image.new("RGB", (2 * cell, cell), "white")
    out.paste(a.convert("RGB").resize((cell, cell), Image.NEAREST), (0, 0))
    out.paste(b.convert("RGB").resize((cell, cell), Image.NEAREST), (cell, 0))
    return out


CURVES = (
    ("rewards/preference/mean", "judge reward (preference)"),
    ("reward/ground_truth", "ground truth: true preference over the original"),
    ("reward/win_rate_vs_original", "judge: win rate vs the original"),
    ("rewards/fidelity/mean", "fidelity gate (0 = faithful)"),
    ("rewards/repetition/mean", "repetition gate (0 = no repeats)"),
)


def learning_curve(history: list[dict], path: str | Path, title: str = "", window: int = 5) -> Path | None:
    """Plot the judge's reward, the ground truth (sandbox users), the fidelity and repetition gates against the
    step (a moving average of `window` logged steps over the raw points); `None` when the history holds none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    series = {}
    for key, label in CURVES:
        points = [(h["step"], h[key]) for h in history if h.get(key) is not None and "step" in h]
        if points:
            series[label] = np.asarray(points, dtype=float)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in series.items():
        (line,) = ax.plot(points[:, 0], points[:, 1], alpha=0.25)
        k = min(window, len(points))
        smooth = np.convolve(points[:, 1], np.ones(k) / k, mode="valid")
        ax.plot(points[k - 1 :, 0], smooth, color=line.get_color(), label=label)
    ax.axhline(0.5, color="grey", lw=0.5, ls="--")
    ax.set_xlabel("training step")
    ax.set_ylabel("reward")
    ax.set_title(f"learning curve {title}".strip())
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
