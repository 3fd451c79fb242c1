"""Mixed-precision choices in one place: what ``--amp`` means on a device, and where bf16 is unsafe.

CPU bf16 Conv3d: oneDNN's bf16 weight-gradient kernel (oneDNN 3.x, as shipped in the torch wheels)
returns garbage -- NaN, inf or values like 1e34, different on every call -- for a 3x3x3 convolution
with padding 1 and temporal stride 1 over an input only 2 frames deep. The forward pass and the
input gradient are right; fp32, and bf16 with oneDNN disabled, agree to 0.3 %. The
VideoDiscriminator has exactly such layers once its strided blocks bring T down to 2, so on CPU it
runs in fp32 (``benchmarks/repro_bf16_conv3d.py`` shows the kernel fault on its own). CUDA
(cuDNN) is not affected by this and keeps bf16; ``benchmarks/gpu_check.py`` checks it there.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

AMP_CHOICES = ("none", "auto", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

T = TypeVar("T")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on ``device``: ``auto`` is bf16 on CUDA and none on CPU
    (DESIGN §9). On CPU only an explicit ``bf16`` turns autocast on (oneDNN's bf16 convolutions,
    fast where the CPU has AVX-512 BF16 or AMX; the 3-D stack stays fp32, above); fp16 resolves to
    None there."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "none" or (device.type != "cuda" and amp != "bf16"):
        return None
    return _DTYPES["bf16" if amp == "auto" else amp]


def bf16_conv3d_unsafe(device_type: str) -> bool:
    """True where autocast is on in bf16 for ``device_type`` and its Conv3d backward is the faulty
    oneDNN kernel (CPU)."""
    return (device_type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def conv3d_fp32_where_unsafe(fn: Callable[[torch.Tensor], T], x: torch.Tensor) -> T:
    """``fn(x)`` with autocast off and ``x`` in fp32 where bf16 Conv3d is unsafe (CPU), else
    ``fn(x)`` unchanged. Gradients flow through either way. For the VideoDiscriminator's 3-D
    feature stack: ``feat = conv3d_fp32_where_unsafe(self.features, x.transpose(1, 2))``."""
    if bf16_conv3d_unsafe(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return fn(x.float())
    return fn(x)
