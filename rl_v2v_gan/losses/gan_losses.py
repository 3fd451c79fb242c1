"""GAN losses of the Recycle-GAN family (DESIGN §4): pure functions of tensors.

Clips are ``[B,T,C,H,W]``. Windows ``w_t = x[t-p+1 .. t]`` for ``t = p-1 .. T-2`` are folded into
the batch by :func:`windows`, so no loss loops over time steps in Python.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GAN_MODES = ("vanilla", "lsgan")


def windows(x: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [B,T,C,H,W]`` -> (windows ``[B*(T-p),p,C,H,W]``, next frames ``[B*(T-p),C,H,W]``).

    Row ``b*(T-p) + k`` holds ``x[b, k:k+p]`` and its successor ``x[b, k+p]``.
    """
    b, t = x.shape[:2]
    if t <= p:
        raise ValueError(f"windows: need more than p={p} frames, got T={t}")
    w = x.unfold(1, p, 1)[:, : t - p]  # [B,T-p,C,H,W,p]
    w = w.permute(0, 1, 5, 2, 3, 4).flatten(0, 1)  # [B*(T-p),p,C,H,W]
    return w, x[:, p:].flatten(0, 1)


def adv_per_sample(logits: torch.Tensor, target_real: bool, mode: str = "vanilla") -> torch.Tensor:
    """Per-logit adversarial loss (>= 0): BCE on logits or least squares, toward real or fake."""
    if mode == "vanilla":
        # softplus(-x) = BCE(x, 1); softplus(x) = BCE(x, 0): numerically stable, no sigmoid.
        return F.softplus(-logits) if target_real else F.softplus(logits)
    if mode == "lsgan":
        return (logits - 1.0) ** 2 if target_real else logits**2
    raise ValueError(f"unknown gan_mode {mode!r} (valid: {', '.join(GAN_MODES)})")


def generator_adv_loss(fake_logits: torch.Tensor, mode: str = "vanilla") -> torch.Tensor:
    """L_g (or L_v on clip logits): the non-saturating generator loss, fakes toward real."""
    return adv_per_sample(fake_logits, True, mode).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, mode: str = "vanilla") -> torch.Tensor:
    """Real toward real, (detached) fakes toward fake; halved as in CycleGAN."""
    return 0.5 * (adv_per_sample(real_logits, True, mode).mean() + adv_per_sample(fake_logits, False, mode).mean())


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``mean over samples of |grad_x D(x)|^2`` at real ``x``.

    ``real`` must require grad and ``real_logits = D(real)``; the gradient is built with
    ``create_graph`` so the penalty trains D. The caller weighs it by ``gamma / 2``.
    """
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


def recurrent_loss(predicted: torch.Tensor, next_frames: torch.Tensor) -> torch.Tensor:
    """L_rr = |x[t+1] - pred_x(w_t)|_1."""
    return l1(predicted, next_frames)


def recycle_loss(recycled: torch.Tensor, next_frames: torch.Tensor) -> torch.Tensor:
    """L_rc = |x[t+1] - gen_yx(pred_y(gen_xy(w_t)))|_1."""
    return l1(recycled, next_frames)


def identity_loss(mapped: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L_idt = |gen_xy(y) - y|_1 (CycleGAN): a frame already in the target domain stays as it is."""
    return l1(mapped, real)


def cycle_loss(reconstructed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L_cyc = |gen_yx(gen_xy(x)) - x|_1."""
    return l1(reconstructed, real)
