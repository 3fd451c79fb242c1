"""Experience replay (DESIGN §5): a uint8 ring buffer of transitions, and sigma1 mixing.

A transition is ``(state, action, cost, next_state, done, t)``. The next state is always
``(state[1:], action)`` (the rollout continues on its own frames), so it is derived on sampling
rather than stored twice. One buffer per domain: the domain is the buffer's key in the trainer.

Where it lives (``--replay_device``): on the GPU when it fits comfortably, else in pinned host
memory, from which only the sampled minibatch is copied (uint8, asynchronously) to the GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from ..data.dataset import to_float, to_uint8
from ..errors import UserError


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


AUTO_DEVICE_SHARE = 0.25
"""``--replay_device auto`` keeps the buffer on the GPU while it takes at most this share of the
GPU's free memory (the rest is for activations, which grow with batch and frame size)."""

_FIELDS = ("states", "actions", "costs", "dones", "ts")
LOAD_CHUNK_BYTES = 64 << 20


def replay_nbytes(capacity: int, state_shape: tuple[int, int, int, int]) -> int:
    """Bytes of a buffer of ``capacity`` transitions: uint8 frames plus cost, done and t."""
    p, c, h, w = state_shape
    return capacity * ((p + 1) * c * h * w + 4 + 1 + 2)


def replay_placement(choice: str, nbytes: int, device: torch.device,
                     free_bytes: int | None = None) -> tuple[torch.device, bool]:
    """``(buffer device, pinned)`` for ``--replay_device`` with a buffer of ``nbytes`` and training
    on ``device``. ``free_bytes`` (for tests) stands in for the GPU's free memory."""
    cpu = torch.device("cpu")
    if device.type != "cuda":
        if choice == "cuda":
            raise UserError("--replay_device cuda needs training on a CUDA device (use auto or cpu)")
        return cpu, False
    if choice == "cuda":
        return device, False
    if choice == "auto":
        free = torch.cuda.mem_get_info(device)[0] if free_bytes is None else free_bytes
        if nbytes <= AUTO_DEVICE_SHARE * free:
            return device, False
    return cpu, True


class ReplayBuffer:
    """Fixed-capacity ring buffer; frames stored as uint8 on ``device`` (page-locked host memory
    with ``pin_memory``, so a minibatch can be copied to the GPU asynchronously)."""

    def __init__(self, capacity: int, state_shape: tuple[int, int, int, int], device: torch.device | str = "cpu",
                 pin_memory: bool = False):
        p, c, h, w = state_shape
        self.capacity = capacity
        self.device = torch.device(device)
        self.pinned = pin_memory
        kw = {"device": self.device, "pin_memory": pin_memory}
        self.states = torch.zeros(capacity, p, c, h, w, dtype=torch.uint8, **kw)
        self.actions = torch.zeros(capacity, c, h, w, dtype=torch.uint8, **kw)
        self.costs = torch.zeros(capacity, dtype=torch.float32, **kw)
        self.dones = torch.zeros(capacity, dtype=torch.bool, **kw)
        self.ts = torch.zeros(capacity, dtype=torch.int16, **kw)
        self.pos = 0  # next slot to write
        self.size = 0
        self._staging: dict[str, torch.Tensor] = {}  # pinned minibatch rows, reused
        self._copied = None  # CUDA event: the last copy out of the staging rows has finished

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in _FIELDS)

    def __len__(self) -> int:
        return self.size

    def push(self, tr: Transitions) -> None:
        n = len(tr)
        if n > self.capacity:  # only the newest ``capacity`` survive a wrap anyway
            tr = Transitions(*(x[-self.capacity:] for x in tr))
            n = self.capacity
        idx = (self.pos + torch.arange(n, device=self.device)) % self.capacity
        # Converted to uint8 where the transitions are, so a host buffer receives bytes, not floats.
        self.states[idx] = to_uint8(tr.state).to(self.device)
        self.actions[idx] = to_uint8(tr.action).to(self.device)
        self.costs[idx] = tr.cost.detach().float().to(self.device)
        self.dones[idx] = tr.done.to(self.device)
        self.ts[idx] = tr.t.to(self.device, torch.int16)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def get(self, idx: torch.Tensor, device: torch.device | str | None = None) -> Transitions:
        """Transitions ``idx`` (on the buffer's device) as float frames on ``device`` (default: the
        buffer's). From a pinned buffer only these rows are copied, as uint8 and non-blocking."""
        device = self.device if device is None else torch.device(device)
        states, actions, costs, dones, ts = (self._rows(name, idx, device) for name in _FIELDS)
        return Transitions(to_float(states), to_float(actions), costs, dones, ts.long())

    def _rows(self, name: str, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        src = getattr(self, name)
        if device == self.device:
            return src[idx]
        if not (self.pinned and device.type == "cuda"):
            return src[idx].to(device)
        shape = (len(idx), *src.shape[1:])
        staging = self._staging.get(name)
        if staging is None or staging.shape != shape:
            staging = self._staging[name] = torch.empty(shape, dtype=src.dtype, pin_memory=True)
        elif self._copied is not None:
            self._copied.synchronize()  # the previous minibatch may still be on its way out of these rows
        torch.index_select(src, 0, idx, out=staging)
        out = staging.to(device, non_blocking=True)
        if name == _FIELDS[-1]:
            self._copied = torch.cuda.Event()
            self._copied.record(torch.cuda.current_stream(device))
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**{name: getattr(self, name)[:self.size].cpu() for name in _FIELDS},
                "pos_size": torch.tensor([self.pos, self.size, self.capacity])}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a saved buffer (see :meth:`load_rows`)."""
        self.load_rows(state["pos_size"], state["states"].shape[1:], lambda name, start, stop: state[name][start:stop])

    def load_rows(self, pos_size: torch.Tensor, frames_shape: Sequence[int],
                  read: Callable[[str, int, int], torch.Tensor]) -> None:
        """Restore a saved buffer from ``read(name, start, stop)``: rows ``start:stop`` of its field
        ``name``, asked for at most ``LOAD_CHUNK_BYTES`` at a time (a large buffer can be restored
        from a file without a second copy in memory). With the same capacity the layout is kept as
        it was (exact resume); with another ``--buffer_size``, the newest transitions are kept,
        oldest first."""
        pos, size, capacity = (int(v) for v in pos_size)
        if tuple(frames_shape) != tuple(self.states.shape[1:]):
            raise ValueError(f"replay buffer frames {list(frames_shape)} do not fit {list(self.states.shape[1:])}")
        spans = [(0, size)]  # saved rows to copy, in order, to rows 0, 1, ... here
        if capacity != self.capacity:
            if size == capacity:  # wrapped: the oldest row is at pos
                spans = [(pos, size), (0, pos)]
            skip = max(0, size - self.capacity)  # the oldest rows that do not fit
            kept = []
            for start, stop in spans:
                drop = min(skip, stop - start)
                skip -= drop
                if start + drop < stop:
                    kept.append((start + drop, stop))
            spans = kept
            size = min(size, self.capacity)
            pos = size % self.capacity
        for name in _FIELDS:
            dst = getattr(self, name)
            rows = max(1, LOAD_CHUNK_BYTES // max(1, dst[0].nbytes))
            at = 0
            for start, stop in spans:
                for i in range(start, stop, rows):
                    n = min(rows, stop - i)
                    dst[at:at + n] = read(name, i, i + n).to(self.device)
                    at += n
        self.pos, self.size = pos, size


def mix(fresh: Transitions, buffer: ReplayBuffer, sigma1: float) -> tuple[Transitions, torch.Tensor]:
    """The critic's minibatch: element i is a uniform draw from ``buffer`` with probability sigma1
    (once the buffer holds a full minibatch), else the fresh transition i. Returns the minibatch
    and the share drawn from the buffer (a 0-d tensor, not read back here)."""
    n = len(fresh)
    device = fresh.state.device
    if len(buffer) < n or sigma1 == 0.0:
        return fresh, torch.zeros((), device=device)
    use_buffer = torch.rand(n, device=device) < sigma1  # [N]
    old = buffer.get(torch.randint(len(buffer), (n,), device=buffer.device), device)
    mixed = Transitions(*(torch.where(use_buffer.view(-1, *[1] * (f.dim() - 1)), o, f)
                          for f, o in zip(fresh, old)))
    return mixed, use_buffer.float().mean()
