"""Process group setup from torchrun's environment (DESIGN §9); a no-op for a single process."""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


_CPU_GROUP: dist.ProcessGroup | None = None  # gloo beside NCCL, for CPU tensors (see cpu_group)


def init_distributed(device_flag: str, timeout_s: float | None = None) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU.

    ``timeout_s`` (``--ddp_timeout_s``) bounds every wait of one rank for the others -- e.g. the
    other ranks' wait while rank 0 evaluates and saves -- before the run fails; None keeps
    PyTorch's default (10 minutes for NCCL, 30 for gloo).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_flag)
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_flag, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=timeout_s)}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **timeout)
        if device.type == "cuda":
            global _CPU_GROUP
            _CPU_GROUP = dist.new_group(backend="gloo", **timeout)
    return info, device


def cpu_group() -> dist.ProcessGroup | None:
    """The group for collectives on CPU tensors (the checkpoint's replay buffers and RNG states):
    the default group under gloo (None), a gloo group of all ranks beside NCCL."""
    global _CPU_GROUP
    if _CPU_GROUP is None and dist.get_backend() != "gloo":  # a group set up by someone else
        _CPU_GROUP = dist.new_group(backend="gloo")
    return _CPU_GROUP


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def released(*tensors: torch.Tensor, timeout_s: float = 10.0, group: dist.ProcessGroup | None = None) -> None:
    """Return once no gloo worker thread holds ``tensors`` (those of a finished collective).

    A gloo worker frees a collective's tensors after the caller has moved on, and freeing a
    tensor that Python has seen takes the GIL. The workers outlive ``destroy_process_group``
    (DDP's reducer keeps the group alive to the end of the process), so one still waiting for the
    GIL when the interpreter shuts down is killed inside C++ and the rank aborts ("terminate
    called without an active exception", SIGABRT). Every collective on Python tensors therefore
    waits here, without the GIL, until the worker has let go. NCCL frees its work on its own
    watchdog, which ``destroy_process_group`` stops.
    """
    if not dist.is_initialized() or dist.get_backend(group) != "gloo" or not hasattr(torch.Tensor, "_use_count"):
        return
    deadline = time.monotonic() + timeout_s
    for t in tensors:
        while t._use_count() > 1 and time.monotonic() < deadline:  # 1: only the Python object
            time.sleep(0.0005)


def all_reduce_flag(flag: bool, op: dist.ReduceOp) -> bool:
    """``flag`` reduced over all ranks with ``op`` (MAX: any rank, MIN: every rank).

    A host flag travels as a CPU tensor over the CPU group (gloo), so asking does not wait for
    the GPU's queued work."""
    t = torch.tensor([1.0 if flag else 0.0])
    group = cpu_group()
    dist.all_reduce(t, op=op, group=group)
    released(t, group=group)
    return bool(t.item())


def all_reduce_min(flag: torch.Tensor) -> torch.Tensor:
    """A 0-d bool tensor that is true where ``flag`` is true on every rank, left on the device
    (no read-back: on NCCL the reduction is queued like any kernel)."""
    t = flag.float().reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    released(t)
    return t[0] > 0


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any rank (a stop request must stop all ranks)."""
    if not info.enabled:
        return flag
    return all_reduce_flag(flag, dist.ReduceOp.MAX)


def cleanup(info: DistInfo) -> None:
    global _CPU_GROUP
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
    _CPU_GROUP = None
