"""TRL's grouped batch layout, with literal inputs."""

from __future__ import annotations

import pytest

from rl.groups import split_groups


def test_split_groups_accepts_whole_groups():
    groups = split_groups(["a", "a", "b", "b"], 2)
    assert [list(g) for g in groups] == [[0, 1], [2, 3]]


def test_split_groups_rejects_a_partial_group():
    with pytest.raises(ValueError, match="not a multiple of num_generations=4"):
        split_groups(["a"] * 6, 4)


def test_split_groups_rejects_mixed_group():
    with pytest.raises(ValueError, match="different prompts"):
        split_groups(["a", "b", "b", "b"], 2)
