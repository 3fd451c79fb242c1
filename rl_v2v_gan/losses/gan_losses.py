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


TC_ALPHA = 50.0  # Lai et al. 2018's visibility-mask sharpness, on frames in [0, 1]


def temporal_consistency_loss(out: torch.Tensor, inp: torch.Tensor, alpha: float = TC_ALPHA) -> torch.Tensor:
    """L_tc: consecutive output frames differ only where consecutive input frames do.

    The short-term temporal loss of blind video temporal consistency (Lai et al. 2018, "Learning
    Blind Video Temporal Consistency"; Chen et al. 2017) without optical flow, which needs weights
    that cannot be downloaded here: the warp is the identity and the mask
    ``M_t = exp(-alpha |inp_t - inp_{t-1}|^2)`` (frames in [0, 1], mean over channels, no gradient)
    is ~1 where the input holds still -- sensor noise included, ~0.85 for per-frame noise of std
    0.04 -- and ~0 where it moves. ``L_tc = mean_t M_t |out_t - out_{t-1}|_1`` on clips
    ``[B,T,C,H,W]`` in [-1, 1].
    """
    if out.shape != inp.shape or out.dim() != 5:
        raise ValueError(f"temporal_consistency_loss: clips [B,T,C,H,W] of one shape, got {list(out.shape)} "
                         f"and {list(inp.shape)}")
    return (stillness_mask(inp, alpha) * (out[:, 1:] - out[:, :-1]).abs()).mean()


def stillness_mask(clip: torch.Tensor, alpha: float = TC_ALPHA) -> torch.Tensor:
    """``M_t = exp(-alpha |clip_t - clip_{t-1}|^2)`` (frames in [0, 1], mean over channels, no
    gradient): ``[B,T,C,H,W]`` in [-1, 1] -> ``[B,T-1,1,H,W]``, ~1 where the clip holds still."""
    with torch.no_grad():
        d = (clip[:, 1:] - clip[:, :-1]).float() * 0.5  # [B,T-1,C,H,W] in [0, 1] units
        return torch.exp(-alpha * d.square().mean(2, keepdim=True))


def still_flicker(clip: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How much ``clip [B,T,C,H,W]`` changes between frames where ``mask [B,T-1,1,H,W]`` says the
    scene holds still: the mask-weighted mean of ``|clip_t - clip_{t-1}|``, ``[B]``."""
    diff = (clip[:, 1:] - clip[:, :-1]).abs().float().mean(2, keepdim=True)  # [B,T-1,1,H,W]
    return (mask * diff).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1e-6)


def relative_temporal_consistency_loss(out: torch.Tensor, inp: torch.Tensor, target: torch.Tensor,
                                       alpha: float = TC_ALPHA) -> torch.Tensor:
    """L_tc measured against the target domain's own flicker (``--tc_relative``).

    A translated clip may change between frames, where its input holds still, as much as real
    clips of the target domain do where they hold still, and no more: per clip
    ``relu(still_flicker(out, M(inp)) - mean_b still_flicker(target_b, M(target_b)))``, averaged.
    A clean target domain (level ~0) gets the plain term's pull; a target domain with sensor
    noise of its own leaves the generator free to paint that noise, which the plain term forbids
    (the level reads about 10 % low: the target's own mask down-weights its largest changes).
    ``target`` is a batch of real clips of the output's domain ``[B',T,C,H,W]`` (no gradient).
    """
    if out.shape != inp.shape or out.dim() != 5 or target.dim() != 5 or target.shape[1:] != out.shape[1:]:
        raise ValueError(f"relative_temporal_consistency_loss: clips [B,T,C,H,W] of one shape, got "
                         f"{list(out.shape)}, {list(inp.shape)} and target {list(target.shape)}")
    with torch.no_grad():
        level = still_flicker(target, stillness_mask(target, alpha)).mean()
    return torch.relu(still_flicker(out, stillness_mask(inp, alpha)) - level).mean()
