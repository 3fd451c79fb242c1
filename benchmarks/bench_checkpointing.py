"""Activation memory and time with ``--activation_checkpointing`` off, on and selective, on any device.

    .venv/bin/python benchmarks/bench_checkpointing.py                      # 16x256x256x3, batch 1, ngf 64
    .venv/bin/python benchmarks/bench_checkpointing.py --input_shape 4 128 128 3 --repeats 5
    .venv/bin/python benchmarks/bench_checkpointing.py --step --input_shape 6 64 64 3 --batch_size 2

Per network (the default): for the generator (one clip) and the predictor (one window of p frames)
it counts the bytes of the tensors autograd keeps for the backward pass (``saved_tensors_hooks``,
each storage once: exact, independent of the allocator and of other jobs on the machine) and times
forward + backward in each mode, interleaved, and checks that every mode gives the same gradients.

``--step``: a whole training step of ``--method`` (one trainer, the modes interleaved): the median
step time, and the peak bytes of the tensors the step allocates and holds at once (a dispatch-mode
count of live storages, in one extra untimed step per mode): activations, gradients, temporaries --
what checkpointing changes -- on top of the weights and optimizer state, which it does not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_v2v_gan.models.generator import CHECKPOINTING, Generator, Predictor  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(net: torch.nn.Module, x: torch.Tensor, mode: str) -> tuple[int, float, list[torch.Tensor]]:
    """(saved bytes, seconds, gradients) of one forward + backward."""
    net.checkpointing = mode
    net.zero_grad(set_to_none=True)
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()  # a storage kept twice counts once
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = net(x)
    y.float().square().mean().backward()
    sync(x.device)
    return sum(saved.values()), time.perf_counter() - start, [p.grad.clone() for p in net.parameters()]


class LiveBytes(TorchDispatchMode):
    """The peak, over a region, of the bytes of the storages created in it that are still alive."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        # An output on an input's storage (in-place, out=, views: an optimizer's update, a replay buffer's
        # write) allocates nothing; only storages first seen as an op's fresh output are counted.
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in self.live \
                    and t.untyped_storage()._cdata not in inputs:
                storage = t.untyped_storage()
                self.live[storage._cdata] = (StorageWeakRef(storage), storage.nbytes())
                self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def networks(args, device: torch.device) -> None:
    t, h, w, c = args.input_shape
    torch.manual_seed(0)
    nets = {"generator": (Generator(c, args.ngf), t),
            "predictor": (Predictor(args.context_frames, c, args.ngf, frame_size=(h, w)), args.context_frames)}
    print(f"{'network':<10} {'mode':<10} {'saved MiB':>10} {'x off':>6} {'fwd+bwd s':>10} {'x off':>6}  same gradients")
    for name, (net, frames) in nets.items():
        net.to(device)
        torch.nn.init.normal_(net.head.weight, std=0.02)  # a trained-like head: gradients reach every layer
        x = torch.rand(args.batch_size, frames, c, h, w, device=device) * 2 - 1
        saved, secs, grads = {}, {m: [] for m in CHECKPOINTING}, {}
        for r in range(args.repeats + 1):  # the first round warms oneDNN up and is not timed
            for mode in CHECKPOINTING:
                saved[mode], s, grads[mode] = measure(net, x, mode)
                if r:
                    secs[mode].append(s)
        off_s = statistics.median(secs["off"])
        for mode in CHECKPOINTING:
            same = all(torch.equal(a, b) for a, b in zip(grads[mode], grads["off"]))
            s = statistics.median(secs[mode])
            print(f"{name:<10} {mode:<10} {saved[mode] / 2**20:>10.1f} {saved[mode] / saved['off']:>6.3f} "
                  f"{s:>10.3f} {s / off_s:>6.2f}  {same}")


def step(args, device: torch.device) -> None:
    from rl_v2v_gan.config import make_config
    from rl_v2v_gan.train.distributed import DistInfo
    from rl_v2v_gan.train.loop import build_trainer

    t, h, w, c = args.input_shape
    cfg = make_config(method=args.method, input_shape=(t, h, w, c), batch_size=args.batch_size, ngf=args.ngf,
                      ndf=args.ngf, actor_start_step=0, activation_checkpointing="off", device=str(device),
                      amp=args.amp)
    trainer = build_trainer(cfg, device, DistInfo())
    g = torch.Generator().manual_seed(0)
    batch = {d: torch.randint(0, 256, (cfg.batch_size, t, c, h, w), dtype=torch.uint8, generator=g) for d in "ab"}
    trainer.train_step(batch)  # warm-up; the optimizers' state exists from here on
    peak, secs = {}, {m: [] for m in CHECKPOINTING}
    for mode in CHECKPOINTING:
        trainer.nets.set_checkpointing(mode)
        with LiveBytes() as live:
            trainer.train_step(batch)
        peak[mode] = live.peak
    for _ in range(args.repeats):
        for mode in CHECKPOINTING:
            trainer.nets.set_checkpointing(mode)
            sync(device)
            start = time.perf_counter()
            trainer.train_step(batch)
            sync(device)
            secs[mode].append(time.perf_counter() - start)
    off_s = statistics.median(secs["off"])
    print(f"{args.method}, ngf = ndf = {args.ngf}, amp {args.amp}, median of {args.repeats} interleaved steps")
    print(f"{'mode':<10} {'peak MiB':>9} {'x off':>6} {'step s':>8} {'x off':>6}")
    for mode in CHECKPOINTING:
        s = statistics.median(secs[mode])
        print(f"{mode:<10} {peak[mode] / 2**20:>9.1f} {peak[mode] / peak['off']:>6.3f} {s:>8.3f} {s / off_s:>6.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_shape", nargs=4, type=int, default=[16, 256, 256, 3])
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--ngf", type=int, default=64, help="with --step, ndf too")
    p.add_argument("--context_frames", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--step", action="store_true", help="a whole training step instead of each network")
    p.add_argument("--method", default="rl_v2v_gan", choices=("rl_v2v_gan", "recycle_gan"))
    p.add_argument("--amp", default="none", choices=("none", "bf16"))
    args = p.parse_args()
    device = torch.device(args.device)
    t, h, w, c = args.input_shape
    print(f"{t}x{h}x{w}x{c}, batch {args.batch_size}, ngf {args.ngf}, {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    step(args, device) if args.step else networks(args, device)


if __name__ == "__main__":
    main()
