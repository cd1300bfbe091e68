"""The project's error base class: expected failures that the command line reports as one line, not a traceback.

A `PigError` is a failure the user can fix (a missing model, bad user data, a config key that does not exist, a
judge server that does not answer); its message names the problem and the fix. `run_command` (below: every
command and script runs through it) prints it as one line on stderr and exits with status 2; `--debug` or
`PIG_DEBUG=1` shows the traceback. Anything else is a bug and keeps its traceback. Each subclass also derives from
the builtin type it replaced (`ValueError`, `RuntimeError`), so code that caught the builtin still catches it.

This module imports nothing of the project, so that every package can raise these.
"""

from __future__ import annotations


class PigError(Exception):
    """An expected failure with a message that names the problem and the fix."""


class ConfigError(PigError, ValueError):
    """A configuration (YAML file or flags) names an unknown key, gives a value of the wrong type, or is
    inconsistent."""


class AdapterError(PigError, ValueError):
    """A LoRA adapter folder cannot be used: not ours, incomplete, unsafe format, or trained on another base model."""


DEBUG_FLAG = "--debug"
DEBUG_ENV = "PIG_DEBUG"


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types a command line reports as one line: ours, plus the foreign ones that mean bad input or a
    missing file rather than a bug (`OSError`: a missing, unreadable or unwritable file, also from `from_pretrained`
    on an incomplete model folder; `yaml.YAMLError`: a config file that is not YAML)."""
    import yaml

    return PigError, OSError, yaml.YAMLError


def run_command(command, argv: list[str] | None = None) -> int:
    """Run `command(argv)` the way every entry point does: an expected failure (`expected_errors`) becomes
    `error: <message>` on stderr and exit status 2, without a traceback; anything else is a bug and keeps its
    traceback. `--debug` anywhere in `argv` (removed before the command sees it) or the env var `PIG_DEBUG=1` prints
    the traceback of an expected failure too.

    Returns:
        The exit status: the command's own when it returns an int, 0 when it returns anything else, 2 on an expected
        failure.
    """
    import os
    import sys
    import traceback

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        status = command(argv)
    except expected_errors() as err:
        if debug:
            traceback.print_exc()
        message = str(err).strip() or type(err).__name__
        hint = "" if debug else f" (traceback: add {DEBUG_FLAG} or set {DEBUG_ENV}=1)"
        print(f"error: {message}{hint}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) and not isinstance(status, bool) else 0
