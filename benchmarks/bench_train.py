"""Training step time, peak memory and FLOPs of the three methods at one config, in one process.

    .venv/bin/python benchmarks/bench_train.py                       # 16x64x64x3, batch 4, ngf=ndf=64
    .venv/bin/python benchmarks/bench_train.py --input_shape 4 32 32 3 --batch_size 2 --ngf 16 --ndf 16
    .venv/bin/python benchmarks/bench_train.py ... --phases          # and where each step's time goes

Prints per method: median step seconds, clips/s, ratio to recycle_gan, model FLOPs per step
(torch.utils.flop_counter, forward + backward of every network call), achieved FLOP/s and, on
CUDA, MFU against the device's peak (``--peak_tflops``). Peak memory: CUDA max allocated, or
process peak RSS on CPU (each method runs in its own subprocess so RSS peaks do not mix).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

METHODS = ("recycle_gan", "rl_v2v_gan", "cycle_gan")
# The Recycle-GAN reference (aayushbansal/Recycle-GAN as published: resnet_6blocks generator, unet_256
# predictor, PatchGAN), measured on this project's 2-core CPU with a 3-frame clip, batch 1, ngf 64,
# LSGAN, lambda 10, 2 threads: seconds and FLOPs per step, by frame side.
REFERENCE = {256: {"step_s": 6.2, "flops_per_step": 1.8e12}, 128: {"step_s": 3.2, "flops_per_step": None}}


# The trainer's phases in step order (DESIGN §6): D update, RL rollouts, critic update, G update.
PHASES = {"_d_phase": "D", "_collect": "rollout", "_minibatch": "minibatch", "_critic_phase": "critic",
          "_g_phase": "G"}


def time_phases(trainer, sync: bool = False) -> dict[str, list[float]]:
    """Wrap ``trainer``'s phase methods (this instance only) with wall-clock timers; returns the
    lists they append seconds to, by phase name (``--phases``). ``sync``: synchronise CUDA around
    each phase (added host syncs: use only for this breakdown)."""
    times: dict[str, list[float]] = {}

    def timed(name: str, fn):
        def call(*a, **k):
            if sync:
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = fn(*a, **k)
            if sync:
                torch.cuda.synchronize()
            times.setdefault(name, []).append(time.perf_counter() - start)
            return result
        return call

    for method, name in PHASES.items():
        setattr(trainer, method, timed(name, getattr(trainer, method)))
    return times


def measure(method: str, args, max_seconds: float | None = None, count_flops: bool = True,
            progress=lambda row: None) -> dict:
    """One method at ``args``' config: median step seconds, clips/s, FLOPs per step, peak memory.

    ``max_seconds`` caps the timed steps (at least one runs; ``steps_timed`` says how many);
    ``progress`` receives the partial row after the warm-up and after each timed step, so a caller
    that kills a slow run still has what was measured.
    """
    from rl_v2v_gan.config import make_config
    from rl_v2v_gan.train.distributed import DistInfo, resolve_device
    from rl_v2v_gan.train.loop import build_trainer

    device = resolve_device(args.device)
    # actor_start_step=0: the steady state, with the actor term on (it waits for the critic in real runs).
    cfg = make_config(method=method, input_shape=tuple(args.input_shape), batch_size=args.batch_size, ngf=args.ngf,
                      ndf=args.ndf, buffer_size=args.buffer_size, amp=args.amp, compile=args.compile,
                      device=args.device, actor_start_step=0,
                      activation_checkpointing=getattr(args, "activation_checkpointing", "auto"),
                      channels_last=getattr(args, "channels_last", False),
                      **{k: getattr(args, k) for k in ("gan_mode", "lambda_rr", "lambda_rc", "r1_every")
                         if hasattr(args, k)})
    trainer = build_trainer(cfg, device, DistInfo())
    phase_times = time_phases(trainer, sync=device.type == "cuda") if getattr(args, "phases", False) else None
    t, h, w, c = cfg.input_shape
    g = torch.Generator().manual_seed(0)
    batch = {d: torch.randint(0, 256, (cfg.batch_size, t, c, h, w), dtype=torch.uint8, generator=g) for d in "ab"}
    out = {"method": method, "amp": args.amp, "compile": bool(args.compile), "device": str(device)}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    for _ in range(args.warmup):  # oneDNN / cuDNN / compile warm-up per shape
        trainer.train_step(batch)
    sync()
    out["warmup_s"] = time.perf_counter() - start
    if device.type == "cuda":  # host-device syncs of a step between logging steps (logs read later)
        import warnings

        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                trainer.train_step(batch, read=False)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        trainer.read_logs()
        out["syncs_per_step"] = sum("synchroniz" in str(w.message) for w in caught)
    progress(out)
    if device.type == "cuda":  # the steady-state peak, warm-up (autotuning, compilation) aside
        torch.cuda.reset_peak_memory_stats()
    times = []
    deadline = time.perf_counter() + max_seconds if max_seconds else None
    if phase_times is not None:
        phase_times.clear()  # the timed steps' phases only
    for _ in range(args.steps):
        start = time.perf_counter()
        logs = trainer.train_step(batch)
        sync()
        times.append(time.perf_counter() - start)
        # Lazy R1 makes every r1_every-th step dearer: then the mean (over whole periods) is the cost.
        every = getattr(args, "r1_every", 1)
        out.update(step_s=statistics.median(times) if every == 1 else statistics.fmean(times), steps_timed=len(times),
                   skipped_updates=sum(v for k, v in logs.items() if k.startswith("skipped/")))
        out["clips_per_s"] = cfg.batch_size / out["step_s"]
        if phase_times is not None:
            out["phases_s"] = {k: statistics.median(v) for k, v in phase_times.items()}
        out["peak_mem_mib"] = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
        progress(out)
        if deadline and time.perf_counter() > deadline:
            break
    if count_flops:
        # FlopCounterMode's module hooks cannot run inside the R1 penalty's autograd.grad (torch raises
        # "A leaf node was passed to _will_engine_execute_node"): the FLOPs are counted without R1
        # (its double backward through the discriminators), the step time above includes it.
        r1, trainer.r1_gamma = trainer.r1_gamma, 0.0
        try:
            with FlopCounterMode(display=False) as counter:
                trainer.train_step(batch)
        finally:
            trainer.r1_gamma = r1
        out["flops_per_step"] = counter.get_total_flops()
        out["flops_exclude_r1"] = r1 > 0
        out["flops_per_s"] = out["flops_per_step"] / out["step_s"]
        progress(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_shape", nargs=4, type=int, default=[16, 64, 64, 3])
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--buffer_size", type=int, default=10000)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="none", choices=("none", "auto", "bf16", "fp16"))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--activation_checkpointing", default="auto", choices=("auto", "on", "selective", "off"))
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--gan_mode", default="vanilla", choices=("vanilla", "lsgan"))
    p.add_argument("--lambda_rr", type=float, default=10.0)
    p.add_argument("--lambda_rc", type=float, default=10.0)
    p.add_argument("--r1_every", type=int, default=1,
                   help="lazy R1 period; above 1 the step time is the mean of the timed steps (use a multiple)")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help="device peak for MFU (e.g. 989 for H100 SXM dense bf16)")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--phases", action="store_true",
                   help="also time the trainer's phases (D, rollout, critic, G; median seconds per step; "
                        "the rest of a step is the translation forward, target and EMA updates)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one method, print JSON
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    rows = []
    for method in args.methods:  # a subprocess each: clean peak-memory figures
        argv = [a for a in sys.argv[1:] if a != "--methods" and a not in args.methods]
        proc = subprocess.run([sys.executable, __file__, *argv, "--one", method], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["method"] == "recycle_gan"), rows[0])
    t, h, w, c = args.input_shape
    print(f"config: {t}x{h}x{w}x{c}, batch {args.batch_size}, ngf {args.ngf}, ndf {args.ndf}, amp {args.amp}, "
          f"compile {args.compile}, activation checkpointing {args.activation_checkpointing}, channels_last {args.channels_last}, device {rows[0].get('device_name', rows[0]['device'])}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'method':<12}{'step s':>9}{'clips/s':>9}{'x recycle':>11}{'GFLOP/step':>12}{'GFLOP/s':>10}"
          f"{'MFU':>7}{'peak MiB':>10}{'mem x':>7}")
    for r in rows:
        mfu = f"{r['flops_per_s'] / (args.peak_tflops * 1e12):.1%}" if args.peak_tflops else "n/a"
        print(f"{r['method']:<12}{r['step_s']:>9.3f}{r['clips_per_s']:>9.2f}{r['step_s'] / base['step_s']:>11.2f}"
              f"{r['flops_per_step'] / 1e9:>12.1f}{r['flops_per_s'] / 1e9:>10.1f}{mfu:>7}"
              f"{r['peak_mem_mib']:>10.0f}{r['peak_mem_mib'] / base['peak_mem_mib']:>7.2f}")
    if args.phases:
        names = [n for n in PHASES.values() if any(n in r.get("phases_s", {}) for r in rows)]
        print("phases, median s per step (rest = translation forward, target and EMA updates, logging):")
        print(f"{'method':<12}" + "".join(f"{n:>11}" for n in names) + f"{'rest':>9}")
        for r in rows:
            ph = r.get("phases_s", {})
            print(f"{r['method']:<12}" + "".join(f"{ph[n]:>11.3f}" if n in ph else f"{'-':>11}" for n in names)
                  + f"{r['step_s'] - sum(ph.values()):>9.3f}")
    ref = REFERENCE.get(h) if (t, h, w, args.batch_size, args.ngf) == (3, h, h, 1, 64) else None
    recycle = next((r for r in rows if r["method"] == "recycle_gan"), None)
    if ref and recycle:
        flops = (f"{recycle['flops_per_step'] / 1e12:.2f} TFLOP against {ref['flops_per_step'] / 1e12:.1f} "
                 f"({recycle['flops_per_step'] / ref['flops_per_step']:.2f}x)" if ref["flops_per_step"] else "")
        print(f"recycle_gan against the Recycle-GAN reference at {h}x{w}: step {recycle['step_s']:.2f} s against "
              f"{ref['step_s']} s ({recycle['step_s'] / ref['step_s']:.2f}x){'; ' + flops if flops else ''}")


if __name__ == "__main__":
    main()
