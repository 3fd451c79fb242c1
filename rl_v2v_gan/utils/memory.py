"""Device memory of a training step, and ``--activation_checkpointing auto``'s choice (DESIGN §9).

A step's peak memory is mostly activations, so it grows with batch x frames x pixels x width.
The table holds the peak per unit of ``B * T * H * W * ngf`` measured on one H200 at
16x256x256x3, batch 4, ngf = ndf = 64 (``benchmarks/gpu_check.py``; figures in
``benchmarks/README.md``). It is an estimate for other sizes (``ndf`` and the RL flags move it
too), used only to decide whether to trade compute for memory.
"""

from __future__ import annotations

import torch

GIB = 2 ** 30
_MEASURED_UNITS = 4 * 16 * 256 * 256 * 64
PEAK_GIB_MEASURED = {  # (method, bf16) -> peak GiB at the measured size, without checkpointing
    ("rl_v2v_gan", False): 99.1, ("rl_v2v_gan", True): 54.3,
    ("recycle_gan", False): 79.6, ("recycle_gan", True): 41.2,
    ("cycle_gan", False): 55.6, ("cycle_gan", True): 28.8,
}
HEADROOM = 0.85  # turn checkpointing on when the estimate exceeds this share of the device's memory
# What a step's peak keeps with each checkpointing mode, as a share of the peak without it: the peak bytes a
# training step allocates (activations, gradients, temporaries), counted per live storage on CPU by
# ``benchmarks/bench_checkpointing.py --step`` (rl_v2v_gan, 6x64x64, batch 2, ngf = ndf = 64). Not measured
# on a GPU; the weights, optimizer state and a replay buffer on the device, which no mode changes, are not
# scaled (at 256x256 they are a small part of the peak, so the estimate errs on the low side).
PEAK_SHARE = {"off": 1.0, "selective": 0.33, "on": 0.28}


def estimated_peak_bytes(method: str, batch: int, input_shape: tuple[int, int, int, int], ngf: int,
                         half_precision: bool) -> float:
    """The estimated peak device memory of one training step without checkpointing."""
    t, h, w, _ = input_shape
    per_unit = PEAK_GIB_MEASURED[(method, half_precision)] * GIB / _MEASURED_UNITS
    return per_unit * batch * t * h * w * ngf


def choose_checkpointing(need: float, budget: float) -> str:
    """The mode that keeps a step needing ``need`` bytes without checkpointing within ``budget``, preferring
    the least recomputation: off, then selective, then on (also when even "on" is estimated not to fit)."""
    for mode in ("off", "selective"):
        if need * PEAK_SHARE[mode] <= budget:
            return mode
    return "on"


def resolve_checkpointing(cfg, device: torch.device, amp_dtype: torch.dtype | None) -> tuple[str, str]:
    """This run's activation checkpointing ("off", "on" or "selective"), and why (one line for the log)."""
    flag = cfg.activation_checkpointing
    if flag != "auto":
        return flag, f"--activation_checkpointing {flag}"
    if device.type != "cuda":
        return "off", "auto: off on CPU (host memory)"
    if cfg.norm == "batch":
        return "off", "auto: off with --norm batch (recomputation would update its statistics twice)"
    need = estimated_peak_bytes(cfg.method, cfg.batch_size, cfg.input_shape, cfg.ngf, amp_dtype is not None)
    total = torch.cuda.get_device_properties(device).total_memory
    mode = choose_checkpointing(need, HEADROOM * total)
    return mode, (f"auto: {mode} (a step needs about {need / GIB:.1f} GiB without it; the device "
                  f"has {total / GIB:.1f} GiB)")
