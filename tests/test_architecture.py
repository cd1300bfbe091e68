"""The import rules of ARCHITECTURE.md, checked on every import of every file (module level and inside functions).

Parsed with `ast`, nothing is imported: a rule broken inside a function that no test calls is still caught.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("reward", "policies", "rl", "localmodels", "benchmarks", "tests")
ALLOWED: dict[str, set[str]] = {
    "reward": set(),
    "policies": {"reward"},
    "localmodels": {"reward", "policies"},
    "rl": {"reward", "policies", "localmodels"},
    "benchmarks": {"reward", "policies", "rl", "localmodels"},
}
# `rl` reaches the toy world only for the sandbox ground truth and the local renderer's diagnostics.
RL_TO_LOCALMODELS = {"rl/ground_truth.py", "rl/diagnose.py"}
# Pure logic: at module level nothing but the standard library, numpy, torch and other pure modules.
PURE = {"reward/parsing.py", "reward/reduction.py", "reward/eval/metrics.py", "reward/devices.py", "rl/groups.py"}
PURE_THIRD_PARTY = {"numpy", "torch"}


def source_files() -> list[Path]:
    return sorted(p for package in ALLOWED for p in (REPO / package).rglob("*.py"))


def imported_modules(path: Path) -> list[tuple[int, str, bool]]:
    """(line, absolute module name, at module level) of every import in the file; relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = {id(node) for node in tree.body}
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # `from . import x`, `from ..a import b`
                base = list(package[: len(package) - node.level + 1])
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
            found += [(node.lineno, name, id(node) in top_level) for name in names]
    return found


def violations(path: Path) -> list[str]:
    """Every import of `path` that breaks a rule, as `file:line imports module (why)`."""
    rel = path.relative_to(REPO).as_posix()
    package = rel.split("/")[0]
    problems = []
    for line, module, module_level in imported_modules(path):
        target = module.split(".")[0]
        where = f"{rel}:{line} imports {module}"
        if target in PACKAGES and target != package:
            if target in ("tests", "benchmarks"):
                problems.append(f"{where}: nothing may import {target}/")
            elif target not in ALLOWED[package]:
                problems.append(f"{where}: {package}/ may import only {sorted(ALLOWED[package]) or 'itself'}")
            elif package == "rl" and target == "localmodels" and rel not in RL_TO_LOCALMODELS:
                problems.append(f"{where}: rl/ reaches localmodels/ only in {sorted(RL_TO_LOCALMODELS)}")
        if rel in PURE and module_level and target != "__future__":
            pure_module = module.replace(".", "/") + ".py"
            light = target in sys.stdlib_module_names or target in PURE_THIRD_PARTY or pure_module in PURE
            if not light:
                problems.append(f"{where} at module level: a pure module imports only stdlib, numpy, torch")
    return problems


def test_every_import_follows_the_layering():
    problems = [p for path in source_files() for p in violations(path)]
    assert not problems, "Imports that break ARCHITECTURE.md's rules:\n" + "\n".join(problems)


def test_configs_hold_no_python():
    assert not list((REPO / "configs").rglob("*.py")), "configs/ holds YAML only"


@pytest.mark.parametrize(
    "rel, code, expected",
    [
        ("reward/x.py", "import rl.config\n", "reward/x.py:1 imports rl.config: reward/ may import only itself"),
        ("reward/eval/x.py", "def f():\n    from localmodels.clip import note\n", "imports localmodels.clip"),
        ("policies/x.py", "from ..rl import config\n", "imports rl: policies/ may import only ['reward']"),
        ("localmodels/x.py", "def f():\n    import rl.ground_truth\n", "localmodels/ may import only"),
        ("rl/environment.py", "from localmodels import world\n", "rl/ reaches localmodels/ only in"),
        ("rl/x.py", "from tests.conftest import REPO\n", "nothing may import tests/"),
        ("reward/reduction.py", "import transformers\n", "a pure module imports only stdlib, numpy, torch"),
    ],
)
def test_the_checker_catches_each_kind_of_violation(tmp_path, monkeypatch, rel, code, expected):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_text(code)
    problems = violations(path)
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize(
    "rel, code",
    [
        ("rl/ground_truth.py", "def f():\n    from localmodels import oracle\n"),
        ("localmodels/x.py", "from policies.rewriter import build_chat\nfrom reward.users import load_user\n"),
        ("reward/reduction.py", "import math\n\ndef f():\n    import transformers\n"),  # lazy: allowed
        ("benchmarks/x.py", "from rl.train_policy import parse_args\n"),
    ],
)
def test_the_checker_allows_what_the_rules_allow(tmp_path, monkeypatch, rel, code):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_text(code)
    assert violations(path) == []
