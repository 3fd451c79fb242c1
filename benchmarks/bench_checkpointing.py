"""Activation memory with and without ``--activation_checkpointing``, per network, on any device.

    .venv/bin/python benchmarks/bench_checkpointing.py                      # 16x256x256x3, batch 1, ngf 64
    .venv/bin/python benchmarks/bench_checkpointing.py --input_shape 8 64 64 3 --ngf 16

For the generator (one clip) and the predictor (one window of p frames) it counts the bytes of
the tensors autograd keeps for the backward pass (``saved_tensors_hooks``: exact, independent of
the allocator and of other jobs on the machine) and times forward + backward, each with
checkpointing off and on, interleaved. A training step calls the generators several times
(translation, cycle, recycle, actor candidates), so these bytes are most of its peak at 256x256.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_v2v_gan.models.generator import Generator, Predictor  # noqa: E402


def measure(net: torch.nn.Module, x: torch.Tensor, on: bool) -> tuple[int, float]:
    """(saved bytes, seconds) of one forward + backward."""
    net.checkpointing = on
    net.zero_grad(set_to_none=True)
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = net(x)
    y.float().square().mean().backward()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return saved, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_shape", nargs=4, type=int, default=[16, 256, 256, 3])
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--context_frames", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    t, h, w, c = args.input_shape
    device = torch.device(args.device)
    torch.manual_seed(0)
    nets = {"generator": (Generator(c, args.ngf), t),
            "predictor": (Predictor(args.context_frames, c, args.ngf, frame_size=(h, w)), args.context_frames)}
    print(f"{t}x{h}x{w}x{c}, batch {args.batch_size}, ngf {args.ngf}, {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'network':<10} {'frames':>6} {'saved MiB off':>14} {'on':>9} {'x':>6} {'fwd+bwd s off':>14} {'on':>7} {'x':>6}")
    for name, (net, frames) in nets.items():
        net.to(device)
        torch.nn.init.normal_(net.head.weight, std=0.02)  # a trained-like head: gradients reach every layer
        x = torch.rand(args.batch_size, frames, c, h, w, device=device) * 2 - 1
        saved, secs = {False: 0, True: 0}, {False: [], True: []}
        for _ in range(args.repeats):
            for on in (False, True):
                saved[on], s = measure(net, x, on)
                secs[on].append(s)
        off_s, on_s = statistics.median(secs[False]), statistics.median(secs[True])
        print(f"{name:<10} {frames:>6} {saved[False] / 2**20:>14.1f} {saved[True] / 2**20:>9.1f} "
              f"{saved[True] / saved[False]:>6.2f} {off_s:>14.2f} {on_s:>7.2f} {on_s / off_s:>6.2f}")


if __name__ == "__main__":
    main()
