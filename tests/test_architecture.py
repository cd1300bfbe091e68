"""The import rules of ARCHITECTURE.md, checked on every import of every file (module level and inside functions).

Parsed with `ast`, nothing is imported: a rule broken inside a function that no test calls is still caught. Two
checks: each import follows the layering table (`ALLOWED`), and the graph of all imports between the project's
modules has no circle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# The layers, bottom up; a package may import only the packages named in its row (never `tests` nor `benchmarks`).
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "reward": {"common"},
    "policies": {"common"},
    "localmodels": {"common", "reward", "policies"},
    "reports": {"common", "policies"},
    "rl": {"common", "reward", "policies", "reports", "localmodels"},
    "policy_eval": {"common", "reward", "policies", "reports", "rl", "localmodels"},
    "feedback": {"common", "reward", "policies", "reports", "rl", "policy_eval"},
    "pig": {"common", "reward", "policies", "reports", "rl", "policy_eval", "feedback"},
    "benchmarks": {"common", "reward", "policies", "localmodels", "reports", "rl", "policy_eval", "feedback"},
}
PACKAGES = (*ALLOWED, "tests")
# The training path and the policy evaluation reach the toy world (`localmodels`) only here: the sandbox ground truth
# (a sandbox user's hidden taste, which training logs beside the reward) and the local renderer's diagnostics.
TO_LOCALMODELS = {"rl/ground_truth.py", "policy_eval/diagnose.py"}
# Pure logic: at module level nothing but the standard library, numpy, torch and other pure modules.
PURE = {"reward/parsing.py", "reward/reduction.py", "reward/eval/metrics.py", "common/devices.py", "rl/groups.py"}
PURE_THIRD_PARTY = {"numpy", "torch"}
MAX_RL_MODULES = 16
"""`rl/` holds the training path and its script only (issue 23)."""


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
            elif target == "localmodels" and package in ("rl", "policy_eval") and rel not in TO_LOCALMODELS:
                problems.append(f"{where}: {package}/ reaches localmodels/ only in {sorted(TO_LOCALMODELS)}")
        if rel in PURE and module_level and target != "__future__":
            pure_module = module.replace(".", "/") + ".py"
            light = target in sys.stdlib_module_names or target in PURE_THIRD_PARTY or pure_module in PURE
            if not light:
                problems.append(f"{where} at module level: a pure module imports only stdlib, numpy, torch")
    return problems


def module_of(name: str) -> str | None:
    """The project file (relative path) that importing the dotted `name` runs last: `a/b/c.py`, `a/b/c/__init__.py`,
    or the same for the longest prefix that is a module (`from a.b import f` names `a.b.f`, a function of `a/b.py`)."""
    parts = name.split(".")
    while parts and parts[0] in PACKAGES:
        for rel in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
            if (REPO / rel).is_file():
                return rel
        parts = parts[:-1]
    return None


def import_edges(path: Path) -> set[str]:
    """The project modules `path` imports, at module level or inside functions, each with the `__init__.py` of its
    packages (importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` first)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(list(package[: len(package) - node.level + 1]) + [node.module or ""]).strip(".")
            base = base if node.level else node.module or ""
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    edges = set()
    for name in names:
        target = module_of(name)
        if target is not None:
            edges.add(target)
            edges |= {"/".join(target.split("/")[:k]) + "/__init__.py" for k in range(1, target.count("/") + 1)}
    return {e for e in edges if (REPO / e).is_file()} - {path.relative_to(REPO).as_posix()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan): each is a set of modules that import each
    other, directly or around a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))
    return {p.relative_to(REPO).as_posix(): import_edges(p) for p in files}


def test_every_import_follows_the_layering():
    problems = [p for path in source_files() for p in violations(path)]
    assert not problems, "Imports that break ARCHITECTURE.md's rules:\n" + "\n".join(problems)


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert len(graph) > 100 and sum(map(len, graph.values())) > 200, "the graph lost its edges: the parser is broken"
    found = circles(graph)
    assert not found, "Modules that import each other (module level or inside functions):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_the_layers_have_no_circle():
    layers = {package: {f"{dep}/__init__.py" for dep in deps} for package, deps in ALLOWED.items()}
    assert not circles({f"{p}/__init__.py": deps for p, deps in layers.items()}), ALLOWED


def test_rl_holds_the_training_path_only():
    modules = sorted(p.name for p in (REPO / "rl").rglob("*.py"))
    assert len(modules) <= MAX_RL_MODULES, f"rl/ holds {len(modules)} modules (at most {MAX_RL_MODULES}): {modules}"
    assert not [p for p in (REPO / "rl").iterdir() if p.is_dir() and p.name != "__pycache__"], "rl/ has no subpackage"


def test_the_circle_check_catches_a_circle_inside_functions(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    for rel, code in {
        "rl/__init__.py": "",
        "rl/a.py": "def f():\n    from rl.b import g\n",
        "rl/b.py": "from rl import c\n",
        "rl/c.py": "def h():\n    from . import a\n",
        "rl/d.py": "import rl.a\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(code)
    assert circles(import_graph()) == [["rl/a.py", "rl/b.py", "rl/c.py"]]


def test_configs_hold_no_python():
    assert not list((REPO / "configs").rglob("*.py")), "configs/ holds YAML only"


@pytest.mark.parametrize(
    "rel, code, expected",
    [
        ("common/x.py", "import reward.users\n", "common/x.py:1 imports reward.users: common/ may import only itself"),
        ("reward/x.py", "import rl.config\n", "reward/x.py:1 imports rl.config: reward/ may import only ['common']"),
        ("reward/eval/x.py", "def f():\n    from localmodels.clip import note\n", "imports localmodels.clip"),
        ("policies/x.py", "from ..rl import config\n", "imports rl: policies/ may import only ['common']"),
        ("policies/x.py", "def f():\n    from reward.hub import load_kwargs\n", "policies/ may import only"),
        ("reports/x.py", "def f():\n    from policy_eval import cross_user\n", "reports/ may import only"),
        ("rl/x.py", "def f():\n    from pig.cli import COMMANDS\n", "rl/ may import only"),
        ("policy_eval/cross_user.py", "from localmodels import world\n", "policy_eval/ reaches localmodels/ only in"),
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
        ("policy_eval/diagnose.py", "from localmodels import world\nfrom rl.render import Renderer\n"),
        ("pig/x.py", "from policy_eval.evaluate_policy import main\nfrom reports.runs import resolve_run\n"),
        ("rl/train_policy.py", "def f():\n    from reports.report import report_after_training\n"),
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
