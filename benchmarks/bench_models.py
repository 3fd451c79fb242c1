"""Parameters and forward+backward time of each network type of DESIGN §3.

    .venv/bin/python benchmarks/bench_models.py [--quick] [--repeats N] [--warmup N] [--device cpu|cuda]

Each network runs on its share of one training batch of ``B`` clips of ``T`` frames, as the
trainer feeds it: Generator on ``[B,T,C,H,W]``, Predictor on the ``B*(T-p)`` windows of ``p``
frames, FrameDiscriminator on the ``B*T`` frames, VideoDiscriminator on the ``B`` clips, QNetwork
on the ``B*(T-p)`` (state, action) transitions. A figure is the median over ``--repeats`` timed
forward+backward passes (``out.sum().backward()``), after ``--warmup`` untimed ones: oneDNN and
cuDNN pick their kernels on the first call per shape, which is several times slower.
frames/s is ``B*T`` (the clip frames of the batch) over the median time.

The float32 table uses the seed default (16x64x64x3, batch 4, ngf=ndf=64) and 4x32x32x3, batch 2.
With CUDA, a second table times bf16 autocast at 16x256x256x3; without it, that table is skipped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

# Run from a checkout, the package is importable without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_v2v_gan.models import build_networks  # noqa: E402

CONTEXT_FRAMES = 2  # p, the seed's default


@dataclass(frozen=True)
class Case:
    """One batch geometry: clips of ``input_shape = (T, H, W, C)``, ``batch`` of them, ngf = ndf = ``width``."""

    input_shape: tuple[int, int, int, int]
    batch: int
    width: int = 64

    @property
    def label(self) -> str:
        return "x".join(map(str, self.input_shape)) + f" b{self.batch}"


FLOAT32_CASES = (Case((16, 64, 64, 3), 4), Case((4, 32, 32, 3), 2))
BF16_CASE = Case((16, 256, 256, 3), 4)


@dataclass
class Workload:
    name: str
    net: nn.Module
    inputs: tuple[torch.Tensor, ...]

    def shape(self) -> str:
        return " ".join("x".join(map(str, x.shape)) for x in self.inputs)


def workloads(case: Case, device: torch.device) -> list[Workload]:
    """One network of each type with inputs shaped as the trainer feeds it, on ``device``."""
    t, h, w, c = case.input_shape
    b, p = case.batch, CONTEXT_FRAMES
    torch.manual_seed(0)
    nets = build_networks("rl_v2v_gan", case.input_shape, p, ngf=case.width, ndf=case.width)
    gen = torch.Generator().manual_seed(0)

    def frames(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=gen) * 2 - 1).to(device)  # in [-1, 1]

    n = b * (t - p)  # windows / transitions per batch
    specs = [
        ("Generator", nets.gen_ab, (frames(b, t, c, h, w),)),
        ("Predictor", nets.pred_a, (frames(n, p, c, h, w),)),
        ("FrameDiscriminator", nets.disc_a, (frames(b * t, c, h, w),)),
        ("VideoDiscriminator", nets.vdisc_a, (frames(b, t, c, h, w),)),
        ("QNetwork", nets.q_a, (frames(n, p, c, h, w), frames(n, c, h, w))),
    ]
    return [Workload(name, net.to(device).train(), inputs) for name, net, inputs in specs]


def median_ms(step: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def forward_backward(work: Workload, dtype: torch.dtype | None, device: torch.device) -> Callable[[], None]:
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def step() -> None:
        work.net.zero_grad(set_to_none=True)
        with autocast:
            out = work.net(*work.inputs)
        out.float().sum().backward()  # backward outside autocast, as in training

    return step


def float32_table(device: torch.device, warmup: int, repeats: int) -> None:
    header = f"{'case':<16} {'network':<19} {'input':<26} {'params M':>9} {'fwd+bwd ms':>11} {'frames/s':>9}"
    print(header)
    print("-" * len(header))
    for case in FLOAT32_CASES:
        frames = case.batch * case.input_shape[0]
        for work in workloads(case, device):
            ms = median_ms(forward_backward(work, None, device), device, warmup, repeats)
            params = sum(p.numel() for p in work.net.parameters()) / 1e6
            print(f"{case.label:<16} {work.name:<19} {work.shape():<26} {params:>9.3f} {ms:>11.1f} "
                  f"{1000 * frames / ms:>9.0f}", flush=True)


def bf16_table(warmup: int, repeats: int) -> None:
    if not torch.cuda.is_available():
        print(f"bf16 autocast at {BF16_CASE.label}: skipped, CUDA is not available")
        return
    device = torch.device("cuda")
    case = BF16_CASE
    frames = case.batch * case.input_shape[0]
    print(f"bf16 autocast on {torch.cuda.get_device_name(device)}, {case.label}, ngf=ndf={case.width}")
    header = f"{'network':<19} {'input':<30} {'fwd+bwd ms':>11} {'frames/s':>9} {'peak GiB':>9}"
    print(header)
    print("-" * len(header))
    for work in workloads(case, device):
        torch.cuda.reset_peak_memory_stats(device)
        ms = median_ms(forward_backward(work, torch.bfloat16, device), device, warmup, repeats)
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"{work.name:<19} {work.shape():<30} {ms:>11.2f} {1000 * frames / ms:>9.0f} {peak:>9.2f}", flush=True)
        work.net.zero_grad(set_to_none=True)  # so the next network's peak is its own


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per figure; the median is kept")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes first, per network and shape")
    parser.add_argument("--quick", action="store_true", help="3 repeats and 1 warm-up pass")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device of the float32 table")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, float32 on {device}, "
          f"p={CONTEXT_FRAMES}, median of {args.repeats} after {args.warmup} warm-up")
    float32_table(device, args.warmup, args.repeats)
    print()
    bf16_table(args.warmup, args.repeats)


if __name__ == "__main__":
    main()
