"""Stand-alone check of bf16 Conv3d gradients against fp32 (the cause of the CPU bf16 blow-up).

    .venv/bin/python benchmarks/repro_bf16_conv3d.py [--device cpu|cuda]

For 3x3x3 convolutions (padding 1) at the VideoDiscriminator's shapes, prints the relative error
of the bf16-autocast output, input gradient and weight gradient against fp32, and on CPU the same
with oneDNN disabled. bf16 rounding alone gives about 0.3 %. Exit status 1 when a weight gradient
is off by more than 5 % (a faulty kernel, not rounding).

Found on torch 2.14.1 CPU (oneDNN 3.12, AVX-512): the weight gradient is garbage -- NaN, inf or
1e30-scale values, different on each call -- whenever the input is 2 frames deep and the temporal
stride is 1; 1, 3 or more frames, stride 2, a 1x1x1 kernel or oneDNN disabled are all right.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

TOLERANCE = 0.05
# (channels, temporal stride, T, H=W): the VideoDiscriminator's deep blocks at 8x64x64 reach T = 2.
CASES = [(16, 1, 4, 16), (16, 1, 2, 16), (64, 2, 2, 8), (64, 1, 2, 8), (128, 1, 2, 8), (128, 1, 3, 8),
         (128, 1, 1, 8)]


def compare(channels: int, t_stride: int, t: int, hw: int, device: str, onednn: bool = True, seed: int = 0) -> dict:
    """Relative errors of bf16 autocast against fp32 for one Conv3d; ``onednn`` only matters on CPU."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, channels, t, hw, hw, generator=g).to(device)
    conv = torch.nn.Conv3d(channels, channels, 3, stride=(t_stride, 2, 2), padding=1).to(device)
    grad_out = None
    got = {}
    for bf16 in (False, True):
        xx = x.clone().requires_grad_(True)
        conv.zero_grad()
        with torch.backends.mkldnn.flags(enabled=onednn), \
                torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            y = conv(xx).float()
        if grad_out is None:
            grad_out = torch.randn(y.shape, generator=g).to(device)
        with torch.backends.mkldnn.flags(enabled=onednn):
            y.backward(grad_out)
        got[bf16] = (y.detach(), xx.grad, conv.weight.grad.clone())

    def rel(i: int) -> float:
        ref = got[False][i]
        return float((got[True][i] - ref).norm() / ref.norm())

    return {"channels": channels, "t_stride": t_stride, "T": t, "HW": hw, "onednn": onednn,
            "out": rel(0), "grad_in": rel(1), "grad_w": rel(2),
            "max_grad_w_bf16": float(got[True][2].abs().max()), "max_grad_w_fp32": float(got[False][2].abs().max())}


def run(device: str) -> list[dict]:
    rows = [compare(*case, device) for case in CASES]
    if device == "cpu":
        rows += [compare(*case, device, onednn=False) for case in CASES if case[2] == 2]
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    args = p.parse_args()
    warnings.filterwarnings("ignore", message="TF32 acceleration")  # printed by mkldnn.flags
    print(f"torch {torch.__version__}, device {args.device}; relative error of bf16 autocast vs fp32")
    print(f"{'C':>4}{'t-stride':>9}{'T':>3}{'HW':>4}{'oneDNN':>7}{'out':>9}{'grad_in':>9}{'grad_w':>10}"
          f"{'max|gw| bf16':>14}{'fp32':>9}")
    bad = False
    for r in run(args.device):
        wrong = not r["grad_w"] < TOLERANCE  # NaN counts as wrong
        bad |= wrong
        print(f"{r['channels']:>4}{r['t_stride']:>9}{r['T']:>3}{r['HW']:>4}{str(r['onednn']):>7}{r['out']:>9.2g}"
              f"{r['grad_in']:>9.2g}{r['grad_w']:>10.2g}{r['max_grad_w_bf16']:>14.3g}{r['max_grad_w_fp32']:>9.3g}"
              f"{'  <- wrong' if wrong else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
