"""The `runs/<user>/LATEST` pointer: written and read in one place (policies/rewriter.py)."""

from __future__ import annotations

import pytest

from policies.rewriter import latest_adapter, write_latest


def test_write_latest_then_latest_adapter_round_trips_with_a_relative_pointer(tmp_path):
    adapter = tmp_path / "runs" / "anna" / "grpo-1" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    pointer = write_latest(tmp_path / "runs", "anna", adapter)
    assert pointer.read_text() == "grpo-1/adapter\n"  # relative: a moved runs folder keeps working
    moved = tmp_path / "moved"
    (tmp_path / "runs").rename(moved)
    assert latest_adapter("anna", moved).resolve() == (moved / "anna" / "grpo-1" / "adapter").resolve()


def test_latest_adapter_names_a_pointer_at_no_adapter(tmp_path):
    write_latest(tmp_path, "anna", tmp_path / "anna" / "gone" / "adapter")
    with pytest.raises(FileNotFoundError, match="holds no adapter_config.json"):
        latest_adapter("anna", tmp_path)
