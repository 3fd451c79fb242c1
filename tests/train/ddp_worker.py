"""Launched by torchrun from test_distributed.py: 3 DDP steps, then compare parameters across ranks.

On step 2 only rank 1 sees a poisoned (NaN) batch: every rank must skip the same updates, or the
gradient synchronisations of different networks would pair up (a hang or mixed gradients).
"""

import json
import math
import sys

import torch
import torch.distributed as dist

from rl_v2v_gan.config import make_config
from rl_v2v_gan.data.dataset import StepSampler, UnpairedClips
from rl_v2v_gan.data.factory import prepare_data
from rl_v2v_gan.train.distributed import cleanup, init_distributed, released
from rl_v2v_gan.train import trainer as trainer_mod
from rl_v2v_gan.train.loop import build_trainer

out, data_root = sys.argv[1], sys.argv[2]
cfg = make_config(config="tiny", data_root=data_root, device="cpu")
info, device = init_distributed("cpu")
trainer = build_trainer(cfg, device, info)
if info.rank == 0:  # as the CLI does: one rank writes the clip store, the others then read it
    prepare_data(cfg, log=lambda *a: None)
dist.barrier()
store = prepare_data(cfg, log=lambda *a: None)
dataset = UnpairedClips(store, cfg.clip_length)
losses = []
clean = trainer_mod.to_float
for step, keys in enumerate(StepSampler(dataset, cfg.batch_size, cfg.seed, info.rank, 0, 3)):
    items = [dataset[k] for k in keys]
    batch = {d: torch.stack([it[d] for it in items]) for d in ("a", "b")}
    poisoned = step == 1 and info.rank == 1
    trainer_mod.to_float = (lambda x: clean(x) * math.nan) if poisoned else clean
    logs = trainer.train_step(batch)
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
              "nonfinite_steps": [float(v) for v in skipped]}
    with open(out, "w") as f:
        json.dump(result, f)
cleanup(info)
