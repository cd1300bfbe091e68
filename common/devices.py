"""Where a model runs and in which precision: the one rule behind every `device: auto` and `dtype: auto`.

- device `"auto"`: `"cuda"` when a CUDA device is visible, else `"cpu"`. Anything else (`"cpu"`, `"cuda:1"`,
  `"mps"`...) is used as given.
- dtype `"auto"`: on CUDA, bfloat16 where the GPU supports it natively (Ampere and later), else float16 (bfloat16 is
  only emulated there, and slow); float32 everywhere else (CPU kernels in half precision are slow or missing).
  Anything else must name a torch dtype (`"float32"`, `"bfloat16"`, `"float16"`...).

bfloat16 is preferred over float16 on GPUs that have it: the same memory, and the range of float32, so neither the
judge's logits nor the renderer's activations overflow. `configs/gpu.yaml` names its dtypes explicitly.
"""

from __future__ import annotations


def resolve_device(device: str) -> str:
    """`"auto"` -> `"cuda"` if available else `"cpu"`; any other device string unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str):
    """The `torch.dtype` that `dtype` names on `device` (the rule of the module docstring for `"auto"`).

    Raises:
        ValueError: `dtype` is neither `"auto"` nor the name of a torch dtype.
    """
    import torch

    if dtype == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise ValueError(f"Unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16.")
    return getattr(torch, dtype)
