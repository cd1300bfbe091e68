"""The `pig` command: one table of the project's tools, each a `main(argv)` found by its dotted path.

The table is the whole command line: `pig <name> ...` imports the target of `COMMANDS[name]` (only that one, so a
command pays only for its own imports) and runs it through `common.errors.run_command`, which turns the expected
failures into one line on stderr and exit status 2. A command module never imports this one: every script's
`__main__` calls `common.errors.run_command` itself.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module:function taking argv, example arguments, what it does)
    "context": ("reward.cli:cmd_context", "--user demo", "build or show a user's PIGReward context"),
    "judge": ("reward.cli:cmd_judge", "--user demo --prompt P A.png B.png", "judge two images (both orders)"),
    "rewrite": ("pig.rewrite:main", '--user demo "a sun"', "rewrite prompts with the user's or population adapter"),
    "train": ("rl.train_policy:main", "--user demo [...]", "accelerate launch rl/train_policy.py [...], in-process"),
    "train-all": ("pig.users:train_all", "--users_dir users [-- ...]", "train every untrained user of a folder"),
    "users": ("pig.users:list_users", "", "users with their context, adapters and latest evaluation"),
    "choose": ("feedback.page:main", "--user demo", "a page to choose between two images: the user's new references"),
    "update": ("feedback.update:main", "--user demo --steps 20", "continue the user's adapter on their new choices"),
    "export": ("pig.export:main", "demo --out exports/demo [--merge]", "a user's adapter as a package to ship"),
    "evaluate": ("policy_eval.evaluate_policy:main", "--user demo", "the user's adapter vs the base policy, judged"),
    "suffix": ("policy_eval.suffix:main", "--user demo", "the fixed-suffix baseline: the best single tail, judged"),
    "matrix": ("policy_eval.cross_user:main", "--users demo nightowl", "every sandbox adapter under every taste"),
    "diagnose": ("policy_eval.diagnose:main", "--user demo", "the reward chain, link by link, vs a sandbox truth"),
    "report": ("reports.report:main", "runs/demo/final-s0", "a run's report.html (curves, context, images, eval)"),
    "dashboard": ("reports.dashboard:main", "runs/demo/final-s0", "a W&B report of a synced run's panels (online)"),
    "bench": ("reward.eval.cli:cmd_bench", "--dataset users --out runs/bench/x", "PIGReward vs baselines"),
    "import": ("reward.eval.cli:cmd_import", "pickapic|pigbench|folder ...", "convert a preference dataset"),
}


def usage() -> str:
    lines = ["usage: pig <command> [arguments]  (pig <command> --help for its options)", ""]
    width = max(len(f"pig {name} {example}") for name, (_, example, _) in COMMANDS.items())
    lines += [f"{f'pig {name} {example}':{width}}   {what}" for name, (_, example, what) in COMMANDS.items()]
    return "\n".join(lines)


def command(name: str):
    """The function `COMMANDS[name]` names, imported."""
    module, function = COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    from common.errors import run_command
    from rl.console import quiet_libraries

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(usage())
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    quiet_libraries()  # no loading bars or library deprecation notices in any command (PIG_VERBOSE=1 keeps them)
    return run_command(command(argv[0]), argv[1:])


if __name__ == "__main__":
    sys.exit(main())
