"""Is each adapter personal? Every sandbox user's adapter scored under every sandbox user's true taste.

    pig matrix --users demo nightowl crowd                     # each user's latest adapter (runs/<user>/LATEST)
    pig matrix --users demo nightowl crowd --adapters A B C --judge false --out runs/matrix/x

Each user's adapter (row i) and the generic rewriter (the shared base model with the adapters disabled) rewrite the
held-out prompts (`rl.ground_truth.HELDOUT_PROMPTS`, or `--eval_prompts`) the way `pig evaluate` samples them:
`--eval_samples` rewrites per prompt at the adapters' training temperature, seeded. The original prompts and every
rewrite are rendered once with the same `--eval_images` seeds per prompt: an image does not depend on who scores it.
Then, for every (adapter i, user j), the ground truth of user j (their hidden taste measured on the images) gives
adapter i's preference over the original prompt's images and over the generic rewriter's; with `--judge` (default),
PIGReward with user j's context judges the same pairs. Cells are (prompt, sample) with their image seeds averaged, as
in `pig evaluate`; each entry has a 95% bootstrap interval over cells.

The floor a personal adapter has to clear (both on the ground truth):

- specificity: in adapter i's row of the vs-original matrix, its own user's cell is at least `FLOOR_MARGIN` (0.20)
  above the mean of the other users' cells (an adapter that pleases everyone alike learned a generic style);
- personalization: adapter i beats the generic rewriter under its own user's taste, preference > 0.5 with the
  interval's lower bound above 0.5 (an adapter no better than its starting point learned nothing for its user).

The population model (issue 21), `--population_model ADAPTER` (`latest`: runs/population/LATEST) instead of
`--adapters`: row i is that one context-conditioned adapter given user i's context (the configured reasoner's, as the
judge reads it), column j is scored by user j's taste (and, with the judge, under user j's context), with the same
floor: a model that reads the context rewrites best for the user whose context it was given. The generic rewriter is
the base with the adapter disabled and the plain chat.

    pig matrix --population_model latest --users demo nightowl crowd frost held000 held001 \
        --users_dir runs/users/population --judge false

Writes `matrix.json` and a heatmap `matrix.png` to `--out` (default `runs/matrix/<timestamp>`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import AdapterError, ConfigError
from policies.suffix import apply_suffix
from policy_eval.evaluate_policy import (
    SamplingArguments,
    check_models_for,
    comparison_summary,
    free_accelerator_memory,
    image_pairs,
    image_seeds,
    judge_preferences,
    parse_dataclasses,
    population_adapter,
    render_once,
    rewrite_prompts,
    truth_preferences,
)
from rl import ground_truth
from rl.config import PigArguments

FLOOR_MARGIN = 0.20
"""How far above the mean of its row's other cells an adapter's own-user cell must be (ground truth, vs original)."""
VIEWS = ("vs_original", "vs_generic")
SUFFIX_VIEWS = ("vs_suffix", "suffix_vs_original")
"""With every user's fixed-suffix baseline (`pig suffix`): adapter i vs user i's suffix, and user i's suffix vs the
original, each under every user's taste."""


@dataclass
class MatrixArguments(SamplingArguments):
    users: list[str] = field(
        default_factory=list,
        metadata={"help": "Sandbox users (folders under --users_dir): one adapter row and one taste column each."},
    )
    adapters: list[str] | None = field(
        default=None,
        metadata={"help": "One adapter folder per user, in --users order (default: runs/<user>/LATEST for each)."},
    )
    population_model: str | None = field(
        default=None,
        metadata={
            "help": "Instead of --adapters: one context-conditioned adapter (the population model; `latest`: "
            "runs/population/LATEST), row i given user i's context. (--population is training's: the users.)"
        },
    )
    out: str | None = field(default=None, metadata={"help": "Output folder (default: runs/matrix/<timestamp>)."})
    suffix: str = field(
        default="auto",
        metadata={
            "help": "auto: add each user's fixed-suffix baseline (runs/<user>/suffix, `pig suffix`) when every user "
            "has one | none."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.users:
            raise ConfigError("--users is required: the sandbox users whose adapters and tastes make the matrix.")
        if len(set(self.users)) != len(self.users):
            raise ConfigError(f"--users lists a user twice: {self.users}.")
        if self.suffix not in ("auto", "none"):
            raise ConfigError(f"--suffix must be auto or none, got {self.suffix!r}.")
        if self.population_model is not None and self.adapters is not None:
            raise ConfigError(
                "--population_model and --adapters are two kinds of matrix: one context-conditioned adapter given "
                "each user's context, or one adapter per user. Pass one of them."
            )
        if self.adapters is not None and len(self.adapters) != len(self.users):
            raise ConfigError(
                f"--adapters needs one adapter per user in --users order: {len(self.users)} users, "
                f"{len(self.adapters)} adapters."
            )


def parse_args(argv: list[str] | None = None) -> tuple[PigArguments, MatrixArguments]:
    pig_args, matrix_args = parse_dataclasses((PigArguments, MatrixArguments), argv)
    if pig_args.population is not None:  # training's key, parsed with the recipe's: it would be ignored here
        raise ConfigError(
            f"pig matrix got --population {pig_args.population} (training's: the users a population model trains "
            "on). The matrix of the population model takes it as --population_model ADAPTER (or latest: "
            "runs/population/LATEST), and its users as --users."
        )
    return pig_args, matrix_args


# -------------------------------------------------------------------------------------------------- pure checks
def check_shared_base(adapters: list, infos: list) -> None:
    """All adapters must be LoRAs of one base model served with one chat: that base with the adapters disabled is the
    generic rewriter every row is compared with, and one base model holds all the adapters.

    Raises:
        AdapterError: naming the two adapters and the setting in which they differ.
    """
    first = infos[0]
    for path, info in zip(adapters[1:], infos[1:]):
        for key in ("base_model", "system_prompt", "few_shot", "max_new_tokens"):
            if getattr(info, key) != getattr(first, key):
                raise AdapterError(
                    f"The adapters {adapters[0]} and {path} differ in {key} ({getattr(first, key)!r} vs "
                    f"{getattr(info, key)!r}). A cross-user matrix needs adapters of one base model served the same "
                    "way: the base with the adapters disabled is the generic rewriter they are all compared with. "
                    "Pass --adapters trained from the same base model and settings."
                )


def matrix_floor(
    vs_original: list[list[float]],
    vs_generic_diagonal: list[tuple[float, float | None]],
    margin: float = FLOOR_MARGIN,
) -> dict:
    """Check the floor of a cross-user matrix (see the module docstring).

    Args:
        vs_original: `[i][j]` = ground-truth preference of adapter i's images over the original prompt's under user
            j's taste; square, row i is user i's adapter.
        vs_generic_diagonal: per user i, (preference, lower bound of its 95% interval or `None`) of adapter i's images
            over the generic rewriter's under user i's taste.
        margin: how far the diagonal must be above the mean of its row's off-diagonal cells.

    Returns:
        `{"rows": [...], "passed": bool}`; a row has `diagonal`, `off_diagonal_mean`, `gap`, `specific` (`None` for
        a 1x1 matrix: nothing to compare with), `vs_generic`, `vs_generic_ci_low` and `beats_generic`.
    """
    n = len(vs_original)
    if any(len(row) != n for row in vs_original) or len(vs_generic_diagonal) != n:
        raise ValueError(f"matrix_floor needs an n x n matrix and n diagonal entries, got {vs_original!r}.")
    rows = []
    for i, row in enumerate(vs_original):
        off = [v for j, v in enumerate(row) if j != i]
        off_mean = sum(off) / len(off) if off else None
        gap = None if off_mean is None else row[i] - off_mean
        preference, low = vs_generic_diagonal[i]
        rows.append(
            {
                "diagonal": row[i],
                "off_diagonal_mean": off_mean,
                "gap": gap,
                "specific": None if gap is None else gap >= margin - 1e-9,  # 0.7 - 0.5 is 0.19999999999999996
                "vs_generic": preference,
                "vs_generic_ci_low": low,
                "beats_generic": preference > 0.5 and low is not None and low > 0.5,
            }
        )
    passed = all(r["specific"] is not False and r["beats_generic"] for r in rows)
    return {"margin": margin, "rows": rows, "passed": passed}


# ----------------------------------------------------------------------------------------------------- the run
def cross_user_matrix(pig_args: PigArguments, args: MatrixArguments) -> dict:
    from common.devices import resolve_device
    from policies.rewriter import AdapterInfo, PromptRewriter, latest_adapter
    from reward.users import UserDataError, load_user
    from rl.render import Renderer
    from rl.reward_stack import build_pigreward

    users = [load_user(u, pig_args.users_dir) for u in args.users]
    tastes = [ground_truth.taste_of(u) for u in users]
    real = [u.user_id for u, t in zip(users, tastes) if t is None]
    if real:
        raise UserDataError(
            f"pig matrix needs sandbox users (a `sandbox` taste in user.json), and {', '.join(real)} have none: only "
            "a sandbox user has a ground truth to score every adapter with."
        )
    ids = [u.user_id for u in users]
    population = None
    if args.population_model is not None:
        population = (
            population_adapter(pig_args.runs_dir)
            if args.population_model == "latest" and not Path(args.population_model).is_dir()
            else Path(args.population_model)
        )
        if not AdapterInfo.load(population).needs_context:
            raise AdapterError(
                f"--population_model {population}: this adapter reads the prompt alone (no context_format in its "
                "pig_adapter.json), so every row would be the same rewrites. Pass the population model (trained with "
                "--population), or per-user adapters with --adapters."
            )
    adapters = (
        [population] * len(users)
        if population is not None
        else [Path(a) for a in args.adapters]
        if args.adapters
        else [latest_adapter(u, pig_args.runs_dir) for u in ids]
    )
    infos = [AdapterInfo.load(a) for a in adapters]
    check_shared_base(adapters, infos)
    prompts = list(dict.fromkeys(args.eval_prompts or ground_truth.HELDOUT_PROMPTS))
    device = resolve_device("auto")  # the rule of common/devices.py
    out = Path(args.out or Path(pig_args.runs_dir) / "matrix" / time.strftime("%Y%m%d-%H%M%S"))
    check_models_for(pig_args, args.judge or population is not None)
    n_users, k, samples, seed = len(users), args.eval_images, args.eval_samples, args.eval_seed
    rows = "the population model given each user's context" if population is not None else "adapters"
    print(f"[matrix] {n_users} users x {len(prompts)} prompts x {samples} samples x {k} images ({rows}); out {out}")

    # 0. Every user's context, built once by the configured reasoner and cached: the judge reads user j's for column
    # j, and the population model reads user i's for row i.
    embedder = None
    if population is not None and infos[0].context_nearest:  # picks each prompt's nearest rationales, as training did
        from reward.similarity import TextEmbedder

        embedder = TextEmbedder(pig_args.fidelity_model, device=device)
    pig = build_pigreward(pig_args, device, embedder) if args.judge or population is not None else None
    contexts = [pig.build_context(u, rebuild=pig_args.rebuild_context) for u in users] if pig is not None else None
    # What the population model reads for each prompt in row i: user i's rationales, or, for a model trained with
    # --context_nearest K, the K nearest each prompt (as in training, `pig evaluate` and `pig rewrite`).
    policy_contexts = None
    if population is not None:
        nearest = infos[0].context_nearest
        policy_contexts = [pig.rationales_for(prompts, c, nearest) if nearest else c.texts for c in contexts]
    if not args.judge:
        pig = None  # built only for the population model's contexts: nothing is judged
        free_accelerator_memory()

    # 1. Rewrite: one base model holding every adapter (or the one population model, given each user's context in
    # turn); the generic rewriter is that base with the adapters disabled and the plain chat.
    rewriter = PromptRewriter(adapters[0], device=device)  # its adapter is PEFT's "default"
    rewrites = []
    if population is not None:
        for context in policy_contexts:
            rewrites.append(rewrite_prompts(rewriter, prompts, "sampled", samples, seed, context=context))
    else:
        names = ["default", *(f"adapter_{i}" for i in range(1, n_users))]
        for name, path in zip(names[1:], adapters[1:]):
            rewriter.model.load_adapter(str(path), adapter_name=name)
        for name in names:
            rewriter.model.set_adapter(name)
            rewrites.append(rewrite_prompts(rewriter, prompts, "sampled", samples, seed))
    generic = rewrite_prompts(rewriter, prompts, "sampled", samples, seed, base=True)
    del rewriter
    free_accelerator_memory()

    # 2. Render once: the originals, the generic rewrites and every adapter's rewrites, with each prompt's seeds.
    seeds = image_seeds(seed, prompts, k)
    original = [[p] * samples for p in prompts]
    pairs = {("generic_vs_original", None): image_pairs(prompts, generic, original, seeds)}
    for i in range(n_users):
        pairs["vs_original", i] = image_pairs(prompts, rewrites[i], original, seeds)
        pairs["vs_generic", i] = image_pairs(prompts, rewrites[i], generic, seeds)
    suffixes = user_suffixes(args.suffix, ids, pig_args.runs_dir)
    views = VIEWS + (SUFFIX_VIEWS if suffixes else ())
    for i, suffix in enumerate(suffixes or []):
        fixed = [[apply_suffix(p, suffix)] * samples for p in prompts]
        pairs["vs_suffix", i] = image_pairs(prompts, rewrites[i], fixed, seeds)
        pairs["suffix_vs_original", i] = image_pairs(prompts, fixed, original, seeds)
    renderer = Renderer.from_args(pig_args, device)
    images = render_once(renderer, (key for ps in pairs.values() for _, *keys in ps for key in keys))
    del renderer
    free_accelerator_memory()

    # 3. Score every pair under every user's taste (and, with the judge, under every user's context).
    keys = list(pairs)
    scored: dict = {}  # (view, row, column) -> comparison_summary
    for j, taste in enumerate(tastes):
        utilities: dict = {}
        judge = None
        if pig is not None:
            flat = judge_preferences(pig, contexts[j], [p for key in keys for p in pairs[key]], images)
            judge, start = {}, 0
            for key in keys:
                judge[key], start = flat[start : start + len(pairs[key])], start + len(pairs[key])
        for key in keys:
            truth = truth_preferences(taste, pairs[key], images, utilities)
            scored[(*key, j)] = comparison_summary(truth, None if judge is None else judge[key], k, args.bootstrap)

    def grid(view: str, source: str, rows: list) -> list[list]:
        return [[scored[view, i, j].get(source) for j in range(n_users)] for i in rows]

    results: dict = {
        "users": ids,
        "adapters": [str(a) for a in adapters],
        "population": None if population is None else str(population),
        "context_keys": None if contexts is None else [c.key for c in contexts],
        "base_model": infos[0].base_model,
        "tastes": {u: t.to_json() for u, t in zip(ids, tastes)},
        "prompts": prompts,
        "settings": {
            "eval_samples": samples,
            "eval_images": k,
            "eval_seed": seed,
            "bootstrap": args.bootstrap,
            "judge_model": pig_args.judge_model if args.judge else None,
            "renderer_model": pig_args.renderer_model,
            "tie_tolerance": ground_truth.TIE_TOLERANCE,
            "floor_margin": FLOOR_MARGIN,
        },
        "rewrites": {"generic": generic, **dict(zip(ids, rewrites))},
        "suffixes": dict(zip(ids, suffixes)) if suffixes else None,
    }
    for source in ("ground_truth", "judge") if pig is not None else ("ground_truth",):
        results[source] = {view: grid(view, source, list(range(n_users))) for view in views}
        results[source]["generic_vs_original"] = grid("generic_vs_original", source, [None])[0]
    if pig is not None:
        results["agreement"] = {view: grid(view, "agreement", list(range(n_users))) for view in views}
        results["agreement"]["generic_vs_original"] = grid("generic_vs_original", "agreement", [None])[0]
        results["judge_metrics"] = pig.pop_metrics()
    truth = results["ground_truth"]
    results["floor"] = matrix_floor(
        [[cell["preference"] for cell in row] for row in truth["vs_original"]],
        [
            (truth["vs_generic"][i][i]["preference"], (truth["vs_generic"][i][i]["ci95"] or [None])[0])
            for i in range(n_users)
        ],
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_matrices(results, out / "matrix.png")
    results["out"] = str(out)
    return results


def user_suffixes(option: str, ids: list[str], runs_dir: str) -> list[str] | None:
    """Each user's fixed suffix (`runs/<user>/suffix`) when `option` is auto and every user has one, else `None`."""
    from policies.suffix import SUFFIX_FILE, load_suffix

    folders = [Path(runs_dir) / u / "suffix" for u in ids]
    if option == "none" or not all((f / SUFFIX_FILE).is_file() for f in folders):
        return None
    return [load_suffix(f) for f in folders]


def plot_matrices(results: dict, path: Path) -> None:
    """Heatmaps of the preference matrices (rows: adapters, columns: the user scoring), 0.5 = no better."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    sources = [s for s in ("ground_truth", "judge") if s in results]
    ids = results["users"]
    views = [v for v in (*VIEWS, *SUFFIX_VIEWS) if v in results["ground_truth"]]
    fig, axes = plt.subplots(
        len(sources),
        len(views),
        figsize=(1.2 + 1.6 * len(ids) * len(views) / 2, 0.9 + 1.2 * len(ids) * len(sources)),
        squeeze=False,
    )
    for r, source in enumerate(sources):
        for c, view in enumerate(views):
            ax = axes[r][c]
            values = [[cell["preference"] for cell in row] for row in results[source][view]]
            shown = [[float("nan") if v is None else v for v in row] for row in values]
            ax.imshow(shown, vmin=0, vmax=1, cmap="coolwarm")
            for i, row in enumerate(values):
                for j, v in enumerate(row):
                    ax.text(j, i, "-" if v is None else f"{v:.2f}", ha="center", va="center", fontsize=9)
                # the own-user cell, the one the floor is about
                ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
            ax.set_xticks(range(len(ids)), [f"user {u}" for u in ids], rotation=30, ha="right")
            ax.set_yticks(range(len(ids)), [f"{row_label(results)} {u}" for u in ids])
            rows = "population model" if results.get("population") else "adapter"
            ax.set_title(f"{source.replace('_', ' ')}: {rows} {view.replace('_', ' ')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------ report
def _cell(summary: dict | None) -> str:
    if summary is None or summary["preference"] is None:
        return "-"
    width = summary["half_width"]
    return f"{summary['preference']:.2f}" + ("" if width is None else f" +-{width:.2f}")


def row_label(results: dict) -> str:
    """What row i is: user i's adapter, or the population model given user i's context."""
    return "context of" if results.get("population") else "adapter of"


def print_table(title: str, results: dict, source: str, view: str) -> None:
    ids = results["users"]
    print(f"\n{title} (rows: {row_label(results)}; columns: scored by user; 0.5 = no better)")
    print(f"{'':14}" + "".join(f"{u[:13]:>14}" for u in ids))
    for uid, row in zip(ids, results[source][view]):
        print(f"{uid[:13]:14}" + "".join(f"{_cell(c):>14}" for c in row))
    if view == "vs_original":
        print(f"{'(generic)':14}" + "".join(f"{_cell(c):>14}" for c in results[source]["generic_vs_original"]))


def print_report(results: dict) -> None:
    settings = results["settings"]
    print(
        f"base model {results['base_model']}; {len(results['prompts'])} prompts x {settings['eval_samples']} samples "
        f"x {settings['eval_images']} images"
    )
    if results.get("population"):
        print(f"population model {results['population']}: row i is it given user i's context")
    for uid, adapter in zip(results["users"], results["adapters"]):
        row = "" if results.get("population") else f", adapter {adapter}"
        print(f"  {uid}: taste {results['tastes'][uid]['prefs']}{row}")
    print_table("ground truth: adapter vs original prompt", results, "ground_truth", "vs_original")
    print_table("ground truth: adapter vs generic rewriter", results, "ground_truth", "vs_generic")
    if results.get("suffixes"):
        print("\nfixed suffixes: " + "; ".join(f"{u}: {s!r}" for u, s in results["suffixes"].items()))
        print_table("ground truth: adapter vs its user's fixed suffix", results, "ground_truth", "vs_suffix")
        print_table(
            "ground truth: user's fixed suffix vs original prompt", results, "ground_truth", "suffix_vs_original"
        )
    if "judge" in results:
        print_table("judge: adapter vs original prompt", results, "judge", "vs_original")
        print_table("judge: adapter vs generic rewriter", results, "judge", "vs_generic")
        ids = results["users"]
        print(f"\njudge's agreement with the ground truth (vs original; rows: {row_label(results)}, columns: user)")
        for uid, row in zip(ids, results["agreement"]["vs_original"]):
            print(f"{uid[:13]:14}" + "".join(f"{'-' if a is None else f'{a:.2f}':>14}" for a in row))
    floor = results["floor"]
    print(
        f"\nfloor: own user >= other users' mean + {floor['margin']:.2f} (ground truth vs original), and beats the "
        "generic rewriter on its own user (preference > 0.5, 95% CI above 0.5)"
    )
    for uid, row in zip(results["users"], floor["rows"]):
        specific = "n/a" if row["specific"] is None else ("ok" if row["specific"] else "FAIL")
        gap = "" if row["gap"] is None else f" vs others {row['off_diagonal_mean']:.2f} ({row['gap']:+.2f})"
        low = "-" if row["vs_generic_ci_low"] is None else f"{row['vs_generic_ci_low']:.2f}"
        print(
            f"  {uid:13} own {row['diagonal']:.2f}{gap} {specific}; vs generic {row['vs_generic']:.2f} "
            f"(CI low {low}) {'ok' if row['beats_generic'] else 'FAIL'}"
        )
    print(f"floor {'PASSED' if floor['passed'] else 'FAILED'}")
    print(f"written: {results['out']}/matrix.json, matrix.png")


def main(argv: list[str] | None = None) -> int:
    pig_args, matrix_args = parse_args(argv)
    print_report(cross_user_matrix(pig_args, matrix_args))
    return 0


if __name__ == "__main__":
    from common.errors import run_command

    sys.exit(run_command(main))
