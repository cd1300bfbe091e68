"""TRL's grouped batch layout: every prompt's `num_generations` completions back to back (pure, no model code)."""

from __future__ import annotations

from collections.abc import Sequence


def split_groups(originals: Sequence[str], group_size: int, users: Sequence[str] | None = None) -> list[range]:
    """Check that a reward batch holds whole groups and return the index range of each group.

    TRL repeats every prompt `num_generations` times back to back, and each process scores its own slice of the
    generation batch; a slice that cut a group in two would compare rewrites against a partial group
    (see Pref-GRPO#18). We refuse that instead of computing a wrong reward.

    `users` (a population run: each sample's user, TRL's `user_id` column) must be one user per group too: two rows
    of different users may ask for the same prompt, and a block mixing them would be judged under one context.

    Raises:
        ValueError: if the batch length is not a multiple of `group_size` or a block mixes prompts or users.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}.")
    if len(originals) % group_size:
        raise ValueError(
            f"The reward function received {len(originals)} completions, not a multiple of num_generations="
            f"{group_size}: groups were split across processes. Make per_device_train_batch_size * "
            "steps_per_generation a multiple of num_generations."
        )
    groups = [range(i, i + group_size) for i in range(0, len(originals), group_size)]
    for group in groups:
        if len({originals[i] for i in group}) != 1:
            raise ValueError(
                f"Completions {group.start}..{group.stop - 1} should be {group_size} rewrites of one prompt but come "
                f"from {len({originals[i] for i in group})} different prompts; the sampler no longer groups "
                "generations. Check the TRL version and the sampler settings."
            )
    if users is not None:
        if len(users) != len(originals):
            raise ValueError(f"Got {len(users)} users for {len(originals)} completions: one user per completion.")
        for group in groups:
            if len({users[i] for i in group}) != 1:
                raise ValueError(
                    f"Completions {group.start}..{group.stop - 1} should be {group_size} rewrites of one user's "
                    f"prompt but come from users {sorted({users[i] for i in group})}; the sampler no longer groups "
                    "generations by dataset row. Check the TRL version and the sampler settings."
                )
    return groups
