"""Where a training step's CPU time goes, per operator and input shape (``torch.profiler``).

    .venv/bin/python benchmarks/profile_step.py --method recycle_gan --input_shape 3 256 256 3 --ngf 64
    .venv/bin/python benchmarks/profile_step.py ... --channels_last     # the same step in channels_last

Prints the operators with their input shapes, sorted by self CPU time (forward and backward
convolutions appear as ``aten::mkldnn_convolution`` / ``aten::convolution_backward``), each with its
share of the step and, for convolutions, the achieved GFLOP/s from the shapes. With
``--channels_last`` the networks' 4-D weights are converted to ``torch.channels_last`` (the 2-D
layers; 3-D ones keep their layout) before the step.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def conv_flops(name: str, shapes: list) -> float | None:
    """Multiply-adds x 2 of a 2-D convolution from the profiler's input shapes (forward or backward)."""
    if not shapes or len(shapes) < 2 or not shapes[0] or not shapes[1] or len(shapes[1]) != 4:
        return None
    if name == "aten::mkldnn_convolution" or name == "aten::convolution":
        x, w = shapes[0], shapes[1]
    elif name == "aten::convolution_backward":
        x, w = shapes[1], shapes[2] if len(shapes) > 2 else None  # (grad_out, input, weight, ...)
        if not w or len(w) != 4:
            return None
    else:
        return None
    if len(x) != 4:
        return None
    n, _, h, wd = x
    out_ch, in_ch, kh, kw = w
    factor = 2 if name == "aten::convolution_backward" else 1  # grad input + grad weight
    return 2.0 * n * out_ch * in_ch * kh * kw * h * wd * factor  # upper bound for strided layers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="recycle_gan")
    p.add_argument("--input_shape", nargs=4, type=int, default=[3, 256, 256, 3])
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--gan_mode", default="lsgan")
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()

    from rl_v2v_gan.config import make_config
    from rl_v2v_gan.train.distributed import DistInfo
    from rl_v2v_gan.train.loop import build_trainer

    cfg = make_config(method=args.method, input_shape=tuple(args.input_shape), batch_size=args.batch_size,
                      ngf=args.ngf, ndf=args.ndf, gan_mode=args.gan_mode, device="cpu", actor_start_step=0)
    trainer = build_trainer(cfg, torch.device("cpu"), DistInfo())
    if args.channels_last:
        trainer.nets.to_channels_last()
    t, h, w, c = cfg.input_shape
    g = torch.Generator().manual_seed(0)
    batch = {d: torch.randint(0, 256, (cfg.batch_size, t, c, h, w), dtype=torch.uint8, generator=g) for d in "ab"}
    for _ in range(args.warmup):
        trainer.train_step(batch)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        trainer.train_step(batch)
    step_s = time.perf_counter() - start
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.method} {t}x{h}x{w}x{c} b{args.batch_size} ngf {args.ngf} ndf {args.ndf} "
          f"channels_last {args.channels_last}, threads {torch.get_num_threads()}: step {step_s:.2f} s "
          f"(profiled; self CPU total {total / 1e6:.2f} s)")
    print(f"{'share':>6} {'ms':>9} {'calls':>5} {'GFLOP/s':>8}  operator  input shapes")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
        flops = conv_flops(e.key, e.input_shapes)
        rate = f"{flops * e.count / (e.self_cpu_time_total / 1e6) / 1e9:8.1f}" if flops and e.self_cpu_time_total else " " * 8
        print(f"{e.self_cpu_time_total / total:6.1%} {e.self_cpu_time_total / 1e3:9.1f} {e.count:5d} {rate}  "
              f"{e.key}  {str(e.input_shapes)[:110]}")
    by_op: dict[str, float] = {}
    for e in events:
        by_op[e.key] = by_op.get(e.key, 0.0) + e.self_cpu_time_total
    print("by operator: " + ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:8]
                                     if not math.isclose(v, 0.0)))


if __name__ == "__main__":
    main()
