"""Differentiable augmentation of what the discriminators see (``--diff_augment``; DiffAugment,
Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

With a tiny target set (a few dozen clips) a discriminator can memorise its real clips; the
generators are then pushed toward whatever separates a memorised clip from everything else, and
paint noise. DiffAugment applies the same random, differentiable transforms to real and generated
inputs, in the discriminator step and in the generators' adversarial terms, so the discriminator
must judge content it cannot memorise pixel for pixel while the generators still get gradients.

Only geometric transforms are offered: the field's colour transforms (brightness, saturation,
contrast) would hide exactly the signal a colour change (day/night, hue) is made of.

- ``translation``: shift by up to 1/8 of the frame side in each axis, zero (mid-grey) filled;
- ``cutout``: zero a square of half the frame side at a random centre (clipped at the border).

Inputs are ``[N, ..., C, H, W]``: one random draw per leading index, shared by the middle axes, so
a clip ``[B,T,C,H,W]`` keeps its motion (every frame shifted alike) and a batch of frames
``[B*T,C,H,W]`` gets one draw per frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DIFF_AUGMENTS = ("translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ``("translation", "cutout")``; ``""`` -> ``()``. Unknown names raise."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in DIFF_AUGMENTS]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)} (valid: {', '.join(DIFF_AUGMENTS)})")
    return names


def translate(x: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each sample of ``x [N,...,C,H,W]`` by a random integer offset, zero filled."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if sy == 0 and sx == 0:
        return x
    flat = x.reshape(n, -1, h, w)  # [N,M,H,W]
    dy = torch.randint(-sy, sy + 1, (n, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1), device=x.device)
    padded = F.pad(flat, (sx, sx, sy, sy))  # zeros: mid-grey in [-1, 1]
    rows = torch.arange(h, device=x.device)[None] + sy - dy  # [N,H]: output row r reads row r - dy
    cols = torch.arange(w, device=x.device)[None] + sx - dx  # [N,W]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(flat.shape[1], device=x.device)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return out.reshape(x.shape)


def cutout(x: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero a random ``ratio``-sided square of each sample of ``x [N,...,C,H,W]``."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (n, 1, 1), device=x.device) - ch // 2  # a random centre, clipped at the border
    left = torch.randint(0, w, (n, 1, 1), device=x.device) - cw // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)  # [N,H,W]
    keep = (~inside).to(x.dtype).reshape(n, *([1] * (x.dim() - 3)), h, w)
    return x * keep


_OPS = {"translation": translate, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """Apply ``policy``'s transforms in order (each with fresh random draws); ``()`` returns ``x``."""
    for name in policy:
        x = _OPS[name](x)
    return x
