"""`pig context` and `pig judge`: build or show a user's context; judge two images for a user.

pig context --user demo                       # build (or read from cache) and print the rationales
pig judge --user demo --prompt "a sun" a.png b.png          # both orders, dimension tables, winner
pig judge --user demo --prompt "a sun" a.png b.png --json   # for machines
pig judge ... --backend openai --model jeongeunnn/pigreward --base_url http://localhost:8000/v1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MODEL = ".models/tiny-pigreward"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="User id under --users_dir, or a path to a user folder.")
    parser.add_argument("--users_dir", default="users", help="Folder of user folders (each with user.json).")
    parser.add_argument("--runs_dir", default="runs", help="Where user contexts are cached.")
    parser.add_argument("--backend", default="transformers", help="Backend name (reward.backends.BACKENDS).")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Judge model: hub id or folder.")
    parser.add_argument("--reasoner_model", default=None, help="Reasoner model (default: --model).")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1...")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch_size", type=int, default=8, help="Conversations per forward pass of the judge.")
    parser.add_argument("--base_url", default=None, help="openai backend: server URL, e.g. http://localhost:8000/v1.")
    parser.add_argument("--api_key_env", default="OPENAI_API_KEY", help="openai backend: env var holding the key.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")


def _pig(args, mode: str = "cot"):
    from common.hub import check_models
    from reward.pigreward import JudgeSettings, PIGReward

    if args.backend == "transformers":
        check_models({"judge": args.model, "reasoner": args.reasoner_model or args.model})
        kwargs = dict(device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    else:
        kwargs = dict(base_url=args.base_url, api_key_env=args.api_key_env)
    return PIGReward.from_names(
        judge=args.model,
        reasoner=args.reasoner_model,
        backend=args.backend,
        backend_kwargs=kwargs,
        settings=JudgeSettings(mode=mode),
        cache_dir=args.runs_dir,
    )


def cmd_context(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pig context", description="Build (or show the cached) user context.")
    add_model_arguments(parser)
    parser.add_argument("--rebuild", action="store_true", help="Ignore the cache and rebuild.")
    args = parser.parse_args(argv)
    from reward.users import load_user

    user = load_user(args.user, args.users_dir)
    pig = _pig(args)
    context = pig.build_context(user, rebuild=args.rebuild)
    if args.json:
        print(json.dumps(context.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(
        f"user {context.user_id}: {len(context.rationales)} rationales by {context.model_id} ({context.template_id})"
    )
    print(f"cache key {context.key}, built in {context.build_seconds:.1f} s")
    for r in context.rationales:
        print(f"  [{r.reference_index}] {r.prompt!r}: {r.text}")
    return 0


def cmd_judge(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pig judge", description="Which of two images would this user prefer?")
    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True, help="The prompt both images were made for.")
    parser.add_argument(
        "--mode",
        default="cot",
        choices=["cot", "score"],
        help="cot: dimension table and reasoning; score: verdict only.",
    )
    parser.add_argument("--no_context", action="store_true", help="Judge without the user context (baseline).")
    parser.add_argument("image_1")
    parser.add_argument("image_2")
    args = parser.parse_args(argv)
    from reward.users import load_image, load_user

    images = [load_image(Path.cwd(), path, f"image {i}")[0] for i, path in enumerate((args.image_1, args.image_2), 1)]
    user = load_user(args.user, args.users_dir)
    pig = _pig(args, args.mode)
    context = [] if args.no_context else pig.build_context(user)
    comparison = pig.compare([args.prompt], [images[0]], [images[1]], context)[0]
    orders = [("image_1 shown first", comparison.forward), ("image_2 shown first", comparison.backward)]
    if args.json:
        print(
            json.dumps(
                {
                    "preference_for_image_1": comparison.preference,
                    "position_consistent": comparison.consistent,
                    "orders": {name: _verdict_dict(v) for name, v in orders},
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    for name, verdict in orders:
        print(f"== {name} ({getattr(verdict, 'status', 'ok')})")
        print(_table(verdict))
    pref = comparison.preference
    verdict = "no decision" if pref is None else ("image_1" if pref > 0.5 else "image_2" if pref < 0.5 else "tie")
    print(f"preference for image_1 = {pref}, position-consistent = {comparison.consistent} -> {verdict}")
    return 0


def _verdict_dict(verdict) -> dict:
    data = verdict.to_dict() if hasattr(verdict, "to_dict") else dict(verdict.__dict__)
    data["preference_for_1"] = verdict.preference_for_1
    return data


def _table(verdict) -> str:
    if not hasattr(verdict, "dimensions"):
        return f"  P(Image 1) = {verdict.p_1:.3f}, P(Image 2) = {verdict.p_2:.3f}"
    rows = [("dimension", "score 1", "score 2", "reason")]
    rows += [(d.name, f"{d.score_1:g}", f"{d.score_2:g}", d.reason) for d in verdict.dimensions]
    rows += [
        ("total (recomputed)", _num(verdict.total_1), _num(verdict.total_2), ""),
        ("total (stated)", _num(verdict.stated_total_1), _num(verdict.stated_total_2), ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  " + "  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    lines.append(f"  winner: {verdict.winner} (stated: {verdict.stated_winner})")
    return "\n".join(lines)


def _num(x) -> str:
    return "-" if x is None else f"{x:g}"


COMMANDS = {"context": cmd_context, "judge": cmd_judge}

if __name__ == "__main__":
    from common.errors import run_command

    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m reward.cli {{{','.join(COMMANDS)}}} ...  (--help after a command)", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_command(COMMANDS[sys.argv[1]], sys.argv[2:]))
