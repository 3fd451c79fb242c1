"""Experience replay (DESIGN §5): a uint8 ring buffer of transitions, and sigma1 mixing.

A transition is ``(state, action, cost, next_state, done, t)``. The next state is always
``(state[1:], action)`` (the rollout continues on its own frames), so it is derived on sampling
rather than stored twice. One buffer per domain: the domain is the buffer's key in the trainer.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..data.dataset import to_float, to_uint8


class Transitions(NamedTuple):
    """A batch of N transitions; frames float in [-1, 1]."""

    state: torch.Tensor  # [N,p,C,H,W]
    action: torch.Tensor  # [N,C,H,W]
    cost: torch.Tensor  # [N]
    done: torch.Tensor  # [N] bool
    t: torch.Tensor  # [N] index of the state's last frame in the episode

    @property
    def next_state(self) -> torch.Tensor:  # [N,p,C,H,W]
        return torch.cat([self.state[:, 1:], self.action[:, None]], 1)

    def __len__(self) -> int:
        return self.state.shape[0]


class ReplayBuffer:
    """Fixed-capacity ring buffer; frames stored as uint8 on ``device``."""

    def __init__(self, capacity: int, state_shape: tuple[int, int, int, int], device: torch.device | str = "cpu"):
        p, c, h, w = state_shape
        self.capacity = capacity
        self.states = torch.zeros(capacity, p, c, h, w, dtype=torch.uint8, device=device)
        self.actions = torch.zeros(capacity, c, h, w, dtype=torch.uint8, device=device)
        self.costs = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.dones = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.ts = torch.zeros(capacity, dtype=torch.int16, device=device)
        self.pos = 0  # next slot to write
        self.size = 0

    @property
    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in (self.states, self.actions, self.costs, self.dones, self.ts))

    def __len__(self) -> int:
        return self.size

    def push(self, tr: Transitions) -> None:
        n = len(tr)
        if n > self.capacity:  # only the newest ``capacity`` survive a wrap anyway
            tr = Transitions(*(x[-self.capacity:] for x in tr))
            n = self.capacity
        idx = (self.pos + torch.arange(n, device=self.states.device)) % self.capacity
        self.states[idx] = to_uint8(tr.state)
        self.actions[idx] = to_uint8(tr.action)
        self.costs[idx] = tr.cost.detach().float()
        self.dones[idx] = tr.done
        self.ts[idx] = tr.t.to(torch.int16)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def get(self, idx: torch.Tensor) -> Transitions:
        return Transitions(to_float(self.states[idx]), to_float(self.actions[idx]), self.costs[idx],
                           self.dones[idx], self.ts[idx].long())

    def state_dict(self) -> dict[str, torch.Tensor]:
        n = self.size
        return {"states": self.states[:n].cpu(), "actions": self.actions[:n].cpu(), "costs": self.costs[:n].cpu(),
                "dones": self.dones[:n].cpu(), "ts": self.ts[:n].cpu(),
                "pos_size": torch.tensor([self.pos, self.size, self.capacity])}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a saved buffer. With the same capacity the layout is kept as it was (exact
        resume); with another ``--buffer_size``, the newest transitions are kept, oldest first."""
        pos, size, capacity = (int(v) for v in state["pos_size"])
        if state["states"].shape[1:] != self.states.shape[1:]:
            raise ValueError(f"replay buffer frames {list(state['states'].shape[1:])} do not fit "
                             f"{list(self.states.shape[1:])}")
        names = ("states", "actions", "costs", "dones", "ts")
        rows = {name: state[name] for name in names}
        if capacity != self.capacity:
            wrapped = size == capacity
            order = torch.cat([torch.arange(pos, size), torch.arange(0, pos)]) if wrapped else torch.arange(size)
            order = order[-self.capacity:]
            rows = {name: v[order] for name, v in rows.items()}
            size = len(order)
            pos = size % self.capacity
        for name in names:
            getattr(self, name)[:size] = rows[name].to(getattr(self, name).device)
        self.pos, self.size = pos, size

def mix(fresh: Transitions, buffer: ReplayBuffer, sigma1: float) -> tuple[Transitions, float]:
    """The critic's minibatch: element i is a uniform draw from ``buffer`` with probability sigma1
    (once the buffer holds a full minibatch), else the fresh transition i. Returns the minibatch
    and the share drawn from the buffer."""
    n = len(fresh)
    device = fresh.state.device
    if len(buffer) < n or sigma1 == 0.0:
        return fresh, 0.0
    use_buffer = torch.rand(n, device=device) < sigma1  # [N]
    old = buffer.get(torch.randint(len(buffer), (n,), device=buffer.states.device))
    mixed = Transitions(*(torch.where(use_buffer.view(-1, *[1] * (f.dim() - 1)), o.to(device), f)
                          for f, o in zip(fresh, old)))
    return mixed, float(use_buffer.float().mean())
