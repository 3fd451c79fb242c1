"""Target networks and freezing: one ``soft_update`` for every target, one ``frozen`` context,
and ``running_stats_frozen`` for passes whose batches must not shape the running statistics."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float | torch.Tensor) -> None:
    """Polyak update ``theta' <- tau theta + (1 - tau) theta'`` (tau=1 copies, tau=0 keeps).

    Buffers (batch-norm statistics) are copied: they are running averages already. ``tau`` may be
    a 0-d tensor on the networks' device (e.g. 0 where an update was skipped): the decision is
    then taken there, without reading it back to the host.
    """
    t_params, s_params = list(target.parameters()), list(source.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("soft_update: target and source have different parameter lists")
    # A tensor tau goes in as one weight per tensor: the single-scalar form would read it back.
    torch._foreach_lerp_(t_params, s_params, [tau] * len(t_params) if isinstance(tau, torch.Tensor) else tau)
    for t_buf, s_buf in zip(target.buffers(), source.buffers()):
        t_buf.copy_(torch.where(tau > 0, s_buf, t_buf) if isinstance(tau, torch.Tensor) else s_buf)


def batch_norms(*nets: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``nets`` that keep running statistics (what
    :func:`running_stats_frozen` pauses); a trainer collects them once, not every step."""
    return [m for net in nets for m in net.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def frozen(*nets: nn.Module):
    """Stop gradients into ``nets``' parameters (they still pass gradients to their inputs)."""
    return params_frozen([p for net in nets for p in net.parameters()])


@contextlib.contextmanager
def params_frozen(params: list[nn.Parameter]) -> Iterator[None]:
    """:func:`frozen` on a list of parameters collected once."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


@contextlib.contextmanager
def running_stats_frozen(norms: list[nn.modules.batchnorm._BatchNorm]) -> Iterator[None]:
    """Batch norm keeps normalising with each batch's own statistics (as in training) but stops
    updating its running statistics: the no-grad rollouts feed generated frames, which must not
    become what the networks use at evaluation time. Instance norm has nothing to freeze.

    ``norms`` come from :func:`batch_norms`, collected once; layers already paused by an
    enclosing context are left to it."""
    norms = [m for m in norms if m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True
