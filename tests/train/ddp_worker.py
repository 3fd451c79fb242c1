"""Launched by torchrun from test_distributed.py: 3 DDP steps, then compare parameters across ranks."""

import json
import sys

import torch
import torch.distributed as dist

from rl_v2v_gan.config import make_config
from rl_v2v_gan.data.dataset import StepSampler, UnpairedClips
from rl_v2v_gan.data.factory import prepare_data
from rl_v2v_gan.train.distributed import init_distributed
from rl_v2v_gan.train.loop import build_trainer

out, data_root = sys.argv[1], sys.argv[2]
cfg = make_config(config="tiny", data_root=data_root, device="cpu")
info, device = init_distributed("cpu")
trainer = build_trainer(cfg, device, info)
store = prepare_data(cfg, log=lambda *a: None)
dataset = UnpairedClips(store, cfg.clip_length)
losses = []
for keys in StepSampler(dataset, cfg.batch_size, cfg.seed, info.rank, 0, 3):
    items = [dataset[k] for k in keys]
    batch = {d: torch.stack([it[d] for it in items]) for d in ("a", "b")}
    losses.append(trainer.train_step(batch))
state = trainer.nets.state_dict()
flat = torch.cat([v.float().flatten() for v in state.values()])
gathered = [torch.zeros_like(flat) for _ in range(info.world_size)]
dist.all_gather(gathered, flat)
if info.rank == 0:
    result = {"max_param_diff": max(float((g - flat).abs().max()) for g in gathered),
              "finite": all(torch.isfinite(torch.tensor(v)).item() for step in losses for v in step.values()),
              "world_size": info.world_size, "steps": len(losses)}
    with open(out, "w") as f:
        json.dump(result, f)
dist.destroy_process_group()
