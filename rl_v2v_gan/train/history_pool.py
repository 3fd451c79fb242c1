"""The history pool of generated clips (``--pool_size``; CycleGAN's ImagePool, Shrivastava et al. 2017).

The discriminators see, for each generated clip of a step, with probability 1/2 that clip, and
otherwise a clip generated at an earlier step (which the new one then replaces in the pool). A
discriminator that only ever sees the generators' latest output chases it; one that also
remembers their past output gives gradients that do not flip from step to step.

Clips are kept as uint8, as the data arrive (quarter the memory of float); while the pool is on,
the discriminators see every generated clip quantised the same way, so a clip's age cannot be
read off its precision.
"""

from __future__ import annotations

import torch

from ..data.dataset import to_float, to_uint8


class HistoryPool:
    """Up to ``capacity`` generated clips ``[T,C,H,W]`` (uint8) of one domain."""

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError(f"HistoryPool: capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.clips: torch.Tensor | None = None  # [n,T,C,H,W] uint8, n <= capacity

    def __len__(self) -> int:
        return 0 if self.clips is None else len(self.clips)

    @torch.no_grad()
    def query(self, fake: torch.Tensor) -> torch.Tensor:
        """Generated clips ``[B,T,C,H,W]`` (float, detached) -> the clips to show the discriminator.

        While the pool fills, clips go in and come back out as they are; once full, each clip is
        swapped for a random stored one with probability 1/2 (global torch RNG: seeded, resumable).
        """
        new = to_uint8(fake)
        if self.clips is None:
            self.clips = new.new_empty((0, *new.shape[1:]))
        if new.shape[1:] != self.clips.shape[1:]:
            raise ValueError(f"HistoryPool: clips of shape {list(new.shape[1:])}, the pool holds "
                             f"{list(self.clips.shape[1:])}")
        free = self.capacity - len(self.clips)
        out = new.clone()
        if free > 0:  # fill first
            self.clips = torch.cat([self.clips, new[:free]])
        rest = new[free:] if free > 0 else new
        m = min(len(rest), len(self.clips))  # distinct slots: at most one swap per stored clip
        if m:
            # Decided on the device (no read-back): every candidate gets its own slot, and where
            # the coin says "keep", the clip and the slot are left as they are.
            rest, at = rest[:m], len(new) - len(rest)
            swap = (torch.rand(m, device=new.device) < 0.5).view(-1, *[1] * (new.dim() - 1))
            slots = torch.randperm(len(self.clips), device=new.device)[:m]
            stored = self.clips[slots]
            out[at:at + m] = torch.where(swap, stored, rest)
            self.clips[slots] = torch.where(swap, rest, stored)
        return to_float(out)

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "clips": None if self.clips is None else self.clips.cpu()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.capacity = int(state["capacity"])
        self.clips = None if state["clips"] is None else state["clips"].to(device)
