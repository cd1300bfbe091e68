"""Fuzzing under hypothesis, each target for a fixed budget (`max_examples`, derandomized so CI sees the same cases):
the verdict parser, the importers and the config loader. Zero crashes: only the documented error types are allowed.
Each test prints its budget and the number of cases it ran."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from common.errors import ConfigError
from reward.eval.importers import PIGBENCH_COLUMNS, import_pigbench, pickapic_label, read_ranking_table
from reward.parsing import STATUSES, find_loop, parse_verdict

BUDGET = {"parser": 400, "importer": 60, "config": 120}
# The ways each target's cases must end, each at least once within its budget: a target whose cases all end one way
# (every table refused before the import runs, every config refused before the parse) tests less than it claims.
OUTCOMES = {
    "parser_never_raises": {"ok", "no_verdict", "other status"},
    "importer_pigbench_tables": {"refused", "imported"},
    "importer_pickapic_labels": {"label None", "label 0", "label 1", "label 2"},
    "importer_raw_table_text": {"read", "refused"},
    "config_mappings": {"ConfigError", "parsed"},  # argparse's own refusal is allowed, not expected
    "config_raw_text": {"checked", "ConfigError"},
}


def _fuzz(name: str):
    """Hypothesis settings for one fuzz target: its budget, no deadline (a shared CPU), no example database."""
    return settings(
        max_examples=BUDGET[name],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


@pytest.fixture()
def tally(request, capsys):
    """Counts the cases a fuzz test ran and how each ended, prints `fuzz <target>: budget N, cases run M (outcome
    count, ...)`, and fails when fewer cases than the budget ran or an outcome of `OUTCOMES` never came."""
    counter = {"cases": 0}
    yield counter
    name = request.node.name.removeprefix("test_fuzz_")
    budget = BUDGET[name.split("_")[0]]
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(counter.items()) if k != "cases")
    with capsys.disabled():
        print(f"\nfuzz {name}: budget {budget}, cases run {counter['cases']} ({outcomes})")
    assert counter["cases"] >= budget, f"{counter['cases']} cases ran, fewer than the budget of {budget}"
    missing = OUTCOMES[name] - set(counter)
    assert not missing, f"no case of {counter['cases']} ended {sorted(missing)}: the fuzzer does not reach that path"


# ---------------------------------------------------------------------------------------------- verdict parser
_FRAGMENTS = st.sampled_from(
    [
        "Colour: warm (Score 1: 4, Score 2: 2)",
        "Composition: balanced (Score 1: 3.5, Score 2: 3)",
        "Score 1: 7",
        "Score 2: 3+4+1+1=9",
        "Score 1: ３",
        "**Image 1 is better**",
        "Image 2 is better",
        "Tie",
        "Score 1: 2 / Score 2: 2",
        "(Score 1: , Score 2: )",
        "Score 1: 1e400",
        "Score 2: nan",
        "Score 1: 9" * 40,
        "",
        "Image 3 is better",
        "Score 1: -0",
    ]
)
_TEXT = st.one_of(
    st.text(max_size=400),
    st.lists(st.one_of(_FRAGMENTS, st.text(max_size=40)), max_size=30).map("\n".join),
)


@_fuzz("parser")
@given(text=_TEXT)
def test_fuzz_parser_never_raises(text, tally):
    tally["cases"] += 1
    verdict = parse_verdict(text)
    assert verdict.status in STATUSES
    outcome = verdict.status if verdict.status in ("ok", "no_verdict") else "other status"
    tally[outcome] = tally.get(outcome, 0) + 1
    assert verdict.winner in (None, 0, 1, 2)
    assert verdict.preference_for_1 is None or 0.0 <= verdict.preference_for_1 <= 1.0
    loop = find_loop(text)
    assert loop is None or 0 <= loop <= len(text)


# --------------------------------------------------------------------------------------------------- importers
_CELL = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["a.png", "b.png", "c.png", "missing.png", "bad.png", "../a.png", "", "4", "1.0"]),
)
_ROW = st.fixed_dictionaries({c: _CELL for c in PIGBENCH_COLUMNS}, optional={"extra": _CELL})


def _images(folder: Path) -> None:
    for name, colour in (("a.png", (200, 10, 10)), ("b.png", (10, 10, 200)), ("c.png", (10, 200, 10))):
        Image.new("RGB", (8, 8), colour).save(folder / name)
    (folder / "bad.png").write_bytes(b"not an image")


@_fuzz("importer")
@given(
    rows=st.lists(_ROW, max_size=24),
    kind=st.sampled_from(["jsonl", "csv"]),
    drop=st.sampled_from([None, "rank", "image"]),
    junk_line=st.booleans(),
)
def test_fuzz_importer_pigbench_tables(rows, kind, drop, junk_line, tally):
    """Random ranking tables (wrong types, missing columns, missing or corrupt images, junk lines) through the whole
    PIGBench import: it writes a dataset or raises ValueError naming the table; every row it refuses is logged."""
    tally["cases"] += 1
    rows = [{k: v for k, v in r.items() if k != drop} for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _images(tmp)
        table = tmp / f"table.{kind}"
        if kind == "jsonl":
            lines = [json.dumps(r) for r in rows] + (["{not json"] if junk_line else [])
            table.write_text("\n".join(lines), encoding="utf-8")
        else:
            buffer = io.StringIO()
            columns = sorted({k for r in rows for k in r}) or list(PIGBENCH_COLUMNS)
            writer = csv.DictWriter(buffer, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
            table.write_text(buffer.getvalue() + ('"unclosed,\n' if junk_line else ""), encoding="utf-8")
        try:
            log = import_pigbench(table, tmp / "out", min_references=1, max_references=3, verbose=False)
        except ValueError as err:
            assert str(table) in str(err) or "table" in str(err)
            tally["refused"] = tally.get("refused", 0) + 1
            return
        tally["imported"] = tally.get("imported", 0) + 1
        manifest = json.loads((tmp / "out" / "manifest.json").read_text())
        assert manifest["counts"]["users"] == len(list((tmp / "out").glob("*/user.json")))
        assert log is not None


_LABEL = st.one_of(_CELL, st.sampled_from([0, 1, 0.5, 0.0, 1.0, "1", "0.5"]))  # Pick-a-Pic's own labels too


@_fuzz("importer")
@given(a=_LABEL, b=_LABEL)
def test_fuzz_importer_pickapic_labels(a, b, tally):
    tally["cases"] += 1
    label = pickapic_label(a, b)
    assert label in (None, 0, 1, 2)
    tally[f"label {label}"] = tally.get(f"label {label}", 0) + 1


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
_TABLE_TEXT = st.one_of(
    st.text(max_size=300),
    # JSON lines: table rows, and JSON values that are no rows
    st.lists(st.one_of(_ROW, _JSON).map(json.dumps), max_size=6).map("\n".join),
    # CSV under the table's header
    st.lists(st.lists(st.text(max_size=6), max_size=6).map(",".join), max_size=5).map(
        lambda lines: "\n".join([",".join(PIGBENCH_COLUMNS), *lines])
    ),
)


@_fuzz("importer")
@given(text=_TABLE_TEXT, kind=st.sampled_from(["jsonl", "csv", "txt"]))
def test_fuzz_importer_raw_table_text(text, kind, tally):
    tally["cases"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / f"t.{kind}"
        table.write_text(text, encoding="utf-8")
        try:
            read_ranking_table(table)
        except ValueError:
            tally["refused"] = tally.get("refused", 0) + 1
        else:
            tally["read"] = tally.get("read", 0) + 1


# ----------------------------------------------------------------------------------------------- config loader
_KNOWN_KEYS = ["render_steps", "judge_mode", "compare_to", "eval_samples", "learning_rate", "use_peft", "report_to"]
_KNOWN_KEYS += [
    "lora_target_modules",
    "image_size",
    "judge_model",
    "fidelity_floor",
    "eval_prompts",
    "env",
    "decoding",
]
_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 10**6),
        st.floats(allow_nan=True),
        st.text(max_size=10),
        st.sampled_from(["5e-4", "true", "no", "cot", "both", "greedy", "3", "-1", "nan"]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)
_KEY = st.one_of(*[st.sampled_from(_KNOWN_KEYS)] * 4, st.text(max_size=12))  # mostly known keys: reach the parse
_PLAUSIBLE = st.sampled_from([3, 0, "cot", "score", "both", "group", True, 0.5, 1e-3, ["q_proj"], None, "greedy", "x"])
_CONFIG = st.dictionaries(_KEY, st.one_of(_PLAUSIBLE, _PLAUSIBLE, _VALUE), max_size=3)


@_fuzz("config")
@given(config=_CONFIG)
def test_fuzz_config_mappings(config, tally):
    """Random YAML mappings of known and unknown keys through `pig evaluate`'s whole parse (the check, TrlParser and
    the dataclasses' own checks): a configuration or a ConfigError, or argparse's own refusal (SystemExit 2)."""
    from policy_eval.evaluate_policy import parse_args

    tally["cases"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        try:
            pig_args, eval_args = parse_args(["--user", "demo", "--config", str(path)])
        except ConfigError:
            tally["ConfigError"] = tally.get("ConfigError", 0) + 1
            return
        except SystemExit as exit_:
            assert exit_.code == 2
            tally["argparse"] = tally.get("argparse", 0) + 1
            return
        tally["parsed"] = tally.get("parsed", 0) + 1
        for key, value in config.items():
            if key == "render_steps":
                assert pig_args.render_steps == int(value)


@_fuzz("config")
@given(text=st.one_of(st.text(max_size=200), _CONFIG.map(yaml.safe_dump)))
def test_fuzz_config_raw_text(text, tally):
    from rl.config import PigArguments, check_config_file

    tally["cases"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            check_config_file(["--config", str(path)], (PigArguments,))
        except ConfigError:
            tally["ConfigError"] = tally.get("ConfigError", 0) + 1
        else:
            tally["checked"] = tally.get("checked", 0) + 1
