r"""Interleaved CPU step time: the published Recycle-GAN against this project's ``recycle_gan``.

Same input for both: a 3-frame clip per domain, batch 1, ngf = ndf = 64, LSGAN, lambda 10, 2 threads.
The reference is aayushbansal/Recycle-GAN as published (resnet_6blocks generators, unet_256 predictors at
256x256 / unet_128 at 128x128, the basic PatchGAN, no identity loss, no pool), with the one-line port to
current torch::

    git clone https://github.com/aayushbansal/Recycle-GAN /path/Recycle-GAN
    sed -i 's/\.data\[0\]/.item()/g' /path/Recycle-GAN/models/*.py
    .venv/bin/python benchmarks/bench_reference.py --ref_dir /path/Recycle-GAN --size 256

Steps alternate between the implementations (reference, ours with the defaults, ours without R1, ours
with lazy R1; with ``--bf16`` also ours in ``--amp bf16``, oneDNN's bf16 convolutions), so a shared
machine's load falls on all of them alike; means (lazy R1 is dearer one step in four: give --steps in
multiples of 4) and their ratio to the reference are printed, medians beside them.
"""
import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

import torch

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--ref_dir", required=True, help="checkout of aayushbansal/Recycle-GAN with the .item() port")
p.add_argument("--size", type=int, default=256, choices=(128, 256), help="frame side")
p.add_argument("--steps", type=int, default=4, help="timed steps per implementation")
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--bf16", action="store_true", help="also time ours with --amp bf16 (defaults, and lazy R1)")
a = p.parse_args()
torch.set_num_threads(2)
S = a.size
if not (Path(a.ref_dir) / "models" / "recycle_gan_model.py").is_file():
    sys.exit(f"bench_reference.py: {a.ref_dir} is not a Recycle-GAN checkout (no models/recycle_gan_model.py)")
sys.path.insert(0, str(Path(a.ref_dir).resolve()))
sys.argv = ["x", "--dataroot", str(Path(a.ref_dir) / "none"), "--model", "recycle_gan",
            "--which_model_netG", "resnet_6blocks",
            "--which_model_netP", "unet_256" if S >= 256 else "unet_128", "--dataset_mode", "unaligned_triplet",
            "--no_dropout", "--gpu_ids", "-1", "--identity", "0", "--pool_size", "0", "--fineSize", str(S),
            "--checkpoints_dir", str(Path(a.ref_dir) / "checkpoints"), "--display_id", "0"]
from models.models import create_model  # noqa: E402  (the reference's packages, from --ref_dir)
from options.train_options import TrainOptions  # noqa: E402

with contextlib.redirect_stdout(io.StringIO()):
    opt = TrainOptions().parse()
    ref = create_model(opt)
g = torch.Generator().manual_seed(0)
inp = {f"{d}{i}": torch.rand(1, 3, S, S, generator=g) * 2 - 1 for d in "AB" for i in range(3)}
inp["A_paths"] = inp["B_paths"] = ["x"]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rl_v2v_gan.config import make_config  # noqa: E402
from rl_v2v_gan.train.distributed import DistInfo  # noqa: E402
from rl_v2v_gan.train.loop import build_trainer  # noqa: E402


def ref_step():
    ref.set_input(inp)
    ref.optimize_parameters()


def ours(**kw):
    cfg = make_config(method="recycle_gan", input_shape=(3, S, S, 3), batch_size=1, ngf=64, ndf=64, gan_mode="lsgan",
                      lambda_rr=10.0, lambda_rc=10.0, device="cpu", **kw)
    tr = build_trainer(cfg, torch.device("cpu"), DistInfo())
    batch = {d: torch.randint(0, 256, (1, 3, 3, S, S), dtype=torch.uint8, generator=g) for d in "ab"}
    return lambda: tr.train_step(batch)


impls = {"reference": ref_step, "ours (defaults: R1, DiffAugment, EMA)": ours(), "ours, r1_gamma 0": ours(r1_gamma=0.0),
         "ours, r1_every 4 (lazy R1)": ours(r1_every=4)}
if a.bf16:
    impls.update({"ours, --amp bf16": ours(amp="bf16"), "ours, --amp bf16, r1_every 4": ours(amp="bf16", r1_every=4)})
ref_nets = ("netG_A", "netG_B", "netP_A", "netP_B", "netD_A", "netD_B")
params = sum(p.numel() for n in ref_nets for p in getattr(ref, n).parameters())
times = {k: [] for k in impls}
for i in range(a.warmup + a.steps):
    for k, step in impls.items():
        start = time.perf_counter()
        step()
        if i >= a.warmup:
            times[k].append(time.perf_counter() - start)
print(f"{S}x{S}, 3 frames, batch 1, ngf 64, LSGAN, lambda 10, {torch.get_num_threads()} threads, {a.steps} interleaved "
      f"steps after {a.warmup} warm-up; reference: {params / 1e6:.1f} M parameters")
# Means: lazy R1 makes one step in four dearer, which a median would hide (use --steps in multiples of 4).
r = statistics.fmean(times["reference"])
for k, v in times.items():
    m = statistics.fmean(v)
    print(f"{k:40s} mean {m:7.3f} s  median {statistics.median(v):7.3f} (min {min(v):.3f}, max {max(v):.3f})  "
          f"x reference {m / r:.2f}")
