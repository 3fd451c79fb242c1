"""Launched by torchrun from test_distributed.py: ``ddp_worker.py MODE OUT DATA_ROOT [CONFIG_JSON]``.

sync     3 DDP steps with the actor on from step 0 (the most DDP-wrapped forwards per backward),
         then compare parameters across ranks. On step 2 only rank 1 sees a poisoned (NaN) batch:
         every rank must skip the same updates, or the gradient synchronisations of different
         networks would pair up (a hang or mixed gradients).
resume   resume CONFIG_JSON's run from its single-process checkpoint, train 2 steps, save, and
         restore into fresh trainers; each rank reports digests of its replay buffers and RNG
         states at each stage.
timeout  rank 1 saves a checkpoint while rank 0 stays away: its wait must fail after
         --ddp_timeout_s, not PyTorch's default 30 minutes.
"""

import hashlib
import json
import math
import os
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from rl_v2v_gan.config import make_config
from rl_v2v_gan.data.dataset import StepSampler, UnpairedClips
from rl_v2v_gan.data.factory import prepare_data
from rl_v2v_gan.models.networks import networks_from_config
from rl_v2v_gan.train import trainer as trainer_mod
from rl_v2v_gan.train.checkpoint import restore, save_checkpoint
from rl_v2v_gan.train.distributed import cleanup, init_distributed, released
from rl_v2v_gan.train.loop import build_trainer

NO_R1 = {"r1_gamma": 0.0}  # the R1 penalty needs a double backward, which DDP lacks


def replay_digest(trainer) -> str:
    h = hashlib.sha256()
    for d, buf in sorted(trainer.replay.items()):
        for k, v in sorted(buf.state_dict().items()):
            h.update(f"{d}.{k}".encode() + v.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def rng_digest() -> str:
    return hashlib.sha256(pickle.dumps((torch.get_rng_state().numpy().tobytes(), np.random.get_state(),
                                        random.getstate()))).hexdigest()


def load_data(cfg, info):
    if info.rank == 0:  # as the CLI does: one rank writes the clip store, the others then read it
        prepare_data(cfg, log=lambda *a: None)
    dist.barrier()
    return UnpairedClips(prepare_data(cfg, log=lambda *a: None), cfg.clip_length)


def batch_of(dataset, keys):
    items = [dataset[k] for k in keys]
    return {d: torch.stack([it[d] for it in items]) for d in ("a", "b")}


def sync(out, data_root):
    cfg = make_config(config="tiny", data_root=data_root, device="cpu", actor_start_step=0, **NO_R1)
    info, device = init_distributed("cpu", cfg.ddp_timeout_s)
    trainer = build_trainer(cfg, device, info)
    dataset = load_data(cfg, info)
    losses = []
    clean = trainer_mod.to_float
    for step, keys in enumerate(StepSampler(dataset, cfg.batch_size, cfg.seed, info.rank, 0, 3)):
        poisoned = step == 1 and info.rank == 1
        trainer_mod.to_float = (lambda x: clean(x) * math.nan) if poisoned else clean
        logs = trainer.train_step(batch_of(dataset, keys))
        if not poisoned:
            losses.append(logs)
    state = trainer.nets.state_dict()
    flat = torch.cat([v.float().flatten() for v in state.values()])
    gathered = [torch.zeros_like(flat) for _ in range(info.world_size)]
    dist.all_gather(gathered, flat)
    released(flat, *gathered)
    skipped = [torch.zeros(1) for _ in range(info.world_size)]
    mine = torch.tensor([float(trainer.nonfinite_total)])
    dist.all_gather(skipped, mine)
    released(mine, *skipped)  # before exit: a gloo thread still freeing them would abort the rank
    if info.rank == 0:
        result = {"max_param_diff": max(float((g - flat).abs().max()) for g in gathered),
                  "finite": all(torch.isfinite(torch.tensor(v)).item() for step in losses for v in step.values()),
                  "world_size": info.world_size, "steps": len(losses),
                  "actor_steps": sum("rl/actor_q_a" in step for step in losses),
                  "nonfinite_steps": [float(v) for v in skipped]}
        Path(out).write_text(json.dumps(result))
    cleanup(info)


def resume(out, data_root, config_json):
    cfg = make_config(**json.loads(Path(config_json).read_text()))
    info, device = init_distributed("cpu", cfg.ddp_timeout_s)
    dataset = load_data(cfg, info)
    trainer = build_trainer(cfg, device, info)
    lines = []
    restore(cfg, trainer.nets, trainer, None, lines.append, info)  # saved by one process
    result = {"rank": info.rank, "fallback_replay": replay_digest(trainer), "fallback_rng": rng_digest(),
              "fallback_warning": [line for line in lines if "saved by" in line]}
    for keys in StepSampler(dataset, cfg.batch_size, cfg.seed, info.rank, trainer.step, 2):
        trainer.train_step(batch_of(dataset, keys))
    result.update(saved_replay=replay_digest(trainer), saved_rng=rng_digest(), saved_step=trainer.step)
    save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), cfg.steps_per_epoch, info=info)
    dist.barrier()
    torch.rand(10), np.random.rand(), random.random()  # move on: only the restore can bring them back
    fresh = build_trainer(cfg, device, info)
    lines.clear()
    restore(cfg, fresh.nets, fresh, None, lines.append, info)
    result.update(restored_replay=replay_digest(fresh), restored_rng=rng_digest(), restored_step=fresh.step,
                  restored_warning=[line for line in lines if "saved by" in line])
    Path(f"{out}.rank{info.rank}").write_text(json.dumps(result))
    dist.barrier()
    cleanup(info)


def timeout(out, data_root):
    cfg = make_config(config="tiny", data_root=data_root, device="cpu", ddp_timeout_s=3, **NO_R1)
    rank = int(os.environ["RANK"])
    trainer = trainer_mod.Trainer(cfg, networks_from_config(cfg), torch.device("cpu"))
    # Start together (through files), so start-up skew does not eat into the short timeout.
    Path(f"{out}.ready{rank}").touch()
    while not all(Path(f"{out}.ready{r}").exists() for r in (0, 1)):
        time.sleep(0.01)
    info, device = init_distributed("cpu", cfg.ddp_timeout_s)
    if rank == 1:
        start = time.monotonic()
        try:
            save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), cfg.steps_per_epoch, info=info)
            dist.barrier()  # as the loop does after a save
            error = None
        except RuntimeError as e:
            error = str(e).strip().splitlines()[0]
        result = {"waited_s": time.monotonic() - start, "error": error}
        Path(f"{out}.rank1").write_text(json.dumps(result))
    else:
        deadline = time.monotonic() + 120  # rank 0 stays away until rank 1 gave up (or long past its timeout)
        while not Path(f"{out}.rank1").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    os._exit(0)  # past a failed collective: leave without tearing the broken process group down


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"sync": sync, "resume": resume, "timeout": timeout}[mode](*args)
