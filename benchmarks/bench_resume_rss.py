"""Peak memory of saving and restoring a checkpoint with a large replay buffer.

    .venv/bin/python benchmarks/bench_resume_rss.py [--mib 300]

Builds a tiny-network RL trainer whose replay buffers (uint8 transitions at 4x64x64x3) hold about
``--mib`` MiB, fills them, and in fresh subprocesses (1) saves a checkpoint and (2) restores it.
Each subprocess first makes its buffers resident, then reports how far ``ru_maxrss`` (the peak
resident set: anonymous memory and mapped file pages alike) rose during the save or the restore:
the memory a save or resume needs beyond the buffers themselves.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# Run from a checkout, the package is importable without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_v2v_gan.config import make_config  # noqa: E402
from rl_v2v_gan.models.networks import networks_from_config  # noqa: E402
from rl_v2v_gan.rl.replay_buffer import replay_nbytes  # noqa: E402
from rl_v2v_gan.train import checkpoint as ckpt_io  # noqa: E402
from rl_v2v_gan.train.trainer import Trainer  # noqa: E402

SHAPE = (4, 64, 64, 3)  # T H W C; context_frames 2: a transition is 3 frames of 12 KiB


def config(workdir: Path, mib: int):
    per = replay_nbytes(1, (2, SHAPE[3], SHAPE[1], SHAPE[2]))
    size = 2 * max(1, int(mib * 2**20 / per / 2))  # split between the two domains
    return make_config(config="tiny", input_shape=SHAPE, buffer_size=size, device="cpu", replay_device="cpu",
                       data_root=str(workdir / "data"), checkpoint_dir=str(workdir / "ck"))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(mode: str, workdir: Path, mib: int) -> dict:
    cfg = config(workdir, mib)
    torch.manual_seed(0)
    trainer = Trainer(cfg, networks_from_config(cfg), torch.device("cpu"))
    for buf in trainer.replay.values():  # resident before the baseline: only the extra memory counts
        if mode == "save":
            for t in (buf.states, buf.actions):
                t.random_(0, 256)
            buf.costs.uniform_()
            buf.size, buf.pos = buf.capacity, 0
        else:
            for name in ("states", "actions", "costs", "dones", "ts"):
                getattr(buf, name).fill_(1)
    buffers = sum(b.nbytes for b in trainer.replay.values()) / 2**20
    base = peak_mib()
    start = time.perf_counter()
    if mode == "save":
        trainer.step = cfg.steps_per_epoch
        ckpt_io.save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), cfg.steps_per_epoch)
    else:
        ckpt_io.restore(cfg, trainer.nets, trainer, None, log=lambda *a: None)
        assert len(trainer.replay["a"]) == trainer.replay["a"].capacity
    seconds = time.perf_counter() - start
    return {"mode": mode, "buffers_mib": round(buffers, 1), "baseline_peak_mib": round(base, 1),
            "peak_mib": round(peak_mib(), 1), "rise_mib": round(peak_mib() - base, 1), "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=300, help="replay buffers' size in MiB")
    parser.add_argument("--child", choices=("save", "restore"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.workdir), args.mib)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("save", "restore"):
            proc = subprocess.run([sys.executable, __file__, "--child", mode, "--workdir", tmp, "--mib", str(args.mib)],
                                  capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            file_mib = (Path(tmp) / "ck" / "rl_v2v_gan" / "epoch_0001" / "replay.safetensors").stat().st_size / 2**20
            print(f"{mode:<8} buffers {r['buffers_mib']:7.1f} MiB  file {file_mib:7.1f} MiB  "
                  f"peak RSS {r['peak_mib']:7.1f} MiB  rise during {mode} {r['rise_mib']:7.1f} MiB  "
                  f"{r['seconds']:6.2f} s", flush=True)


if __name__ == "__main__":
    main()
