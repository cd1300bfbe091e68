"""Tiny random models of the real classes, for tests and for a seconds-long wiring check of the whole loop.

    python -m localmodels.tiny --out .models/tiny-random     # policy/, vlm/, sd/ (also built by `make setup`)
    accelerate launch rl/train_policy.py --user demo --max_steps 2 \\
        --model_name_or_path .models/tiny-random/policy --judge_model .models/tiny-random/vlm \\
        --renderer_model .models/tiny-random/sd

Random weights: the judge answers nonsense (counted as undecided, never as a win) and the renderer paints noise, so
such a run shows that everything is connected, not that anything is learned.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def corpus() -> list[str]:
    """Text to train the tiny tokenizer on: the policy's chat prompt and the judge's task text."""
    from localmodels.judge_model import _texts_of, make_examples
    from policies.rewriter import FEW_SHOT, SYSTEM_PROMPT

    texts = [SYSTEM_PROMPT] + [t for pair in FEW_SHOT for t in pair]
    return texts + [t for e in make_examples(40, seed=0) for t in _texts_of(e)]


def build_tiny_models(out: str | Path, seed: int = 0) -> dict[str, str]:
    """Save a tiny `Qwen2ForCausalLM` policy, a tiny `Qwen2VLForConditionalGeneration` judge and a tiny
    `StableDiffusionPipeline` under `out` (`policy/`, `vlm/`, `sd/`); returns their paths."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from localmodels import judge_model
    from localmodels.renderer import build_tiny_pipeline

    out = Path(out)
    tokenizer = judge_model.train_tokenizer(corpus(), vocab_size=400)
    config = Qwen2Config(
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = Qwen2ForCausalLM(config)
    policy.save_pretrained(out / "policy")
    tokenizer.save_pretrained(out / "policy")
    vlm = judge_model.build_model(tokenizer, hidden=32, layers=1, vision_depth=1, seed=seed)
    judge_model.save_checkpoint(vlm, tokenizer, judge_model.build_image_processor(), out / "vlm")
    build_tiny_pipeline(seed=seed).save_pretrained(out / "sd")
    return {name: str(out / name) for name in ("policy", "vlm", "sd")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    print(build_tiny_models(parser.parse_args().out))
