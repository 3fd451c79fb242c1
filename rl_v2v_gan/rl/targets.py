"""Target networks and freezing: one ``soft_update`` for every target, one ``frozen`` context,
and ``norm_stats_frozen`` for passes whose batches must not shape the running statistics."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak update ``theta' <- tau theta + (1 - tau) theta'`` (tau=1 copies, tau=0 keeps).

    Buffers (batch-norm statistics) are copied: they are running averages already.
    """
    t_params, s_params = list(target.parameters()), list(source.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("soft_update: target and source have different parameter lists")
    torch._foreach_lerp_(t_params, s_params, tau)
    for t_buf, s_buf in zip(target.buffers(), source.buffers()):
        t_buf.copy_(s_buf)


@contextlib.contextmanager
def frozen(*nets: nn.Module) -> Iterator[None]:
    """Stop gradients into ``nets``' parameters (they still pass gradients to their inputs)."""
    params = [p for net in nets for p in net.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


@contextlib.contextmanager
def norm_stats_frozen(*nets: nn.Module) -> Iterator[None]:
    """Batch norm keeps normalising with each batch's own statistics (as in training) but stops
    updating its running statistics: the no-grad rollouts feed generated frames, which must not
    become what the networks use at evaluation time. Instance norm has nothing to freeze."""
    norms = [m for net in nets for m in net.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True
