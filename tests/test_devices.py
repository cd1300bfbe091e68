"""The one rule behind `device: auto` and `dtype: auto` (common/devices.py)."""

from __future__ import annotations

import pytest
import torch

from common.devices import resolve_device, resolve_dtype


def test_auto_device_is_cuda_when_visible_else_cpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("native_bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_dtype_is_bf16_on_capable_gpus_fp16_on_older_ones_fp32_elsewhere(monkeypatch, native_bf16, expected):
    calls = []

    def is_bf16_supported(including_emulation=True):
        calls.append(including_emulation)
        return native_bf16 or including_emulation  # pre-Ampere GPUs emulate bf16: that must not count

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert resolve_dtype("auto", "cuda") == expected and resolve_dtype("auto", "cuda:1") == expected
    assert calls == [False, False]
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "mps") == torch.float32


def test_named_dtypes_and_a_clear_error():
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16 and resolve_dtype("float16", "cuda") == torch.float16
    for bad in ("fp16", "cuda", "Tensor"):
        with pytest.raises(ValueError, match="use auto, float32, bfloat16 or float16"):
            resolve_dtype(bad, "cpu")
