"""The `pig` command: one entry point for the project's tools.

pig context --user demo                          build or show a user's PIGReward context
pig judge --user demo --prompt P A.png B.png     judge two images for a user (both orders)
pig rewrite --user demo "a sun"                  rewrite prompts with the user's trained adapter
pig rewrite --user demo --file prompts.txt       rewrite a file of prompts in batches (JSONL out)
pig train --user demo [...]                      accelerate launch rl/train_policy.py --user demo [...], in-process
pig train-all --users_dir users [-- ...]         train every untrained user of a folder, one after another
pig users                                        users with their context, adapters and latest evaluation
pig export demo --out exports/demo [--merge]     a user's adapter as a package to ship (model card, serving recipes)
pig evaluate --user demo                         the user's adapter vs the base policy, judged for the user
pig matrix --users demo nightowl crowd           every sandbox user's adapter under every user's true taste
pig diagnose --user demo                         the reward chain, link by link, against a sandbox user's truth
pig report runs/demo/final-s0                    a run's report.html (curves, context, images, rewrites, evaluation)
pig dashboard runs/demo/final-s0                 a W&B report of a synced run's logged panels (online)
pig bench --dataset users --out runs/bench/x     accuracy table of PIGReward and the baselines (PIGBench-style)
pig import pickapic|pigbench|folder ...          convert a preference dataset to the per-user folder format
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from policies.cli import cmd_rewrite
    from reward.cli import cmd_context, cmd_judge
    from reward.eval.cli import cmd_bench, cmd_import

    commands = {
        "context": cmd_context,
        "judge": cmd_judge,
        "rewrite": cmd_rewrite,
        "train": _train,
        "train-all": _train_all,
        "users": _users,
        "export": _export,
        "evaluate": _evaluate,
        "matrix": _matrix,
        "diagnose": _diagnose,
        "report": _report,
        "dashboard": _dashboard,
        "bench": cmd_bench,
        "import": cmd_import,
    }
    from rl.console import quiet_libraries

    quiet_libraries()  # no loading bars or library deprecation notices in any command (PIG_VERBOSE=1 keeps them)
    if not argv or argv[0] not in commands:
        print(__doc__.strip())
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    return run(commands[argv[0]], argv[1:])


def run(command, argv: list[str] | None = None) -> int:
    """Run a command's `main(argv)`; the expected failures (`reward.errors.PigError`: missing model, bad user data,
    bad config, failing judge server; missing or unreadable files; YAML that does not parse) become one line on stderr
    and exit status 2, anything else keeps its traceback. `--debug` or `PIG_DEBUG=1` shows the traceback. Shared by
    `pig` and every script's `__main__` (`reward.errors.run_command`, which `reward` can import without `rl`)."""
    from reward.errors import run_command

    return run_command(command, argv)


def _evaluate(argv: list[str]) -> int:
    from rl.evaluate_policy import main as evaluate

    return evaluate(argv)


def _report(argv: list[str]) -> int:
    from rl.report import main as report

    return report(argv)


def _dashboard(argv: list[str]) -> int:
    from rl.dashboard import main as dashboard

    return dashboard(argv)


def _diagnose(argv: list[str]) -> int:
    from rl.diagnose import main as diagnose

    return diagnose(argv)


def _matrix(argv: list[str]) -> int:
    from rl.cross_user import main as matrix

    return matrix(argv)


def _train_all(argv: list[str]) -> int:
    from rl.users_cmd import train_all

    return train_all(argv)


def _users(argv: list[str]) -> int:
    from rl.users_cmd import list_users

    return list_users(argv)


def _export(argv: list[str]) -> int:
    from rl.export import main as export

    return export(argv)


def _train(argv: list[str]) -> int:
    from rl.train_policy import main as train

    train(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
