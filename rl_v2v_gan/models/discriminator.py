"""FrameDiscriminator (disc_a, disc_b) and VideoDiscriminator (vdisc_a, vdisc_b).

A strided stem (x2 down at once, as a PatchGAN does) -> strided residual blocks -> global
average pool -> fully connected layers -> one logit. No convolution runs at full resolution,
which keeps a 256x256 frame at about 6 GFLOP (DESIGN §3, cost budget).

Stabilisers (DESIGN §4, "Training converges"): ``patch=True`` (``--disc_patch``) replaces the
pool and head of the frame discriminator by a 3x3 convolution to a map of logits, one per
receptive field (PatchGAN); :func:`spectral_normed` (``--spectral_norm``) puts spectral norm on
every convolution and linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from ..utils.precision import conv3d_fp32_where_unsafe
from .blocks import ResidualBlock
from .generator import check_clip

MAX_DOWNSAMPLES = 4


def n_downsamples(size: int) -> int:
    """Strided blocks for a side of ``size``: down to about 4 pixels, at most MAX_DOWNSAMPLES.

    Instance norm needs more than one spatial element, so the last map stays at least 2x2.
    """
    n = 0
    while size > 4 and n < MAX_DOWNSAMPLES:
        size, n = (size + 1) // 2, n + 1
    return max(n, 1)


def _head(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, channels), nn.LeakyReLU(0.2, inplace=True), nn.Linear(channels, 1))


def spectral_normed(net: nn.Module) -> nn.Module:
    """``net`` with spectral normalisation on every convolution and linear layer (in place)."""
    for module in list(net.modules()):
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(module)
    return net


class FrameDiscriminator(nn.Module):
    """``[N,C,H,W] -> [N]`` logits, one per frame; with ``patch``, ``[N,h,w]`` logits, one per patch."""

    def __init__(self, in_channels: int = 3, frame_size: tuple[int, int] = (64, 64), ndf: int = 64,
                 norm: str = "instance", patch: bool = False):
        super().__init__()
        self.in_channels, self.patch = in_channels, patch
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        ch = ndf
        for i in range(n_downsamples(min(frame_size) // 2)):
            out = min(ndf * 2 ** (i + 1), ndf * 8)
            layers.append(ResidualBlock(ch, out, stride=2, norm=norm))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(ch, 1, 3, padding=1) if patch else _head(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected [N,{self.in_channels},H,W], got {list(x.shape)}")
        if self.patch:
            return self.head(self.features(x))[:, 0]  # [N,h,w]
        return self.head(self.features(x).mean(dim=(2, 3)))[:, 0]  # [N]


class VideoDiscriminator(nn.Module):
    """``[B,T,C,H,W] -> [B]`` logits, one per clip (3-D residual blocks over the clip)."""

    def __init__(self, channels: int = 3, clip_shape: tuple[int, int, int] = (16, 64, 64), ndf: int = 64,
                 norm: str = "instance"):
        super().__init__()
        self.channels = channels
        t, h, w = clip_shape
        layers: list[nn.Module] = [nn.Conv3d(channels, ndf, (3, 4, 4), stride=(1, 2, 2), padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        ch = ndf
        for i in range(n_downsamples(min(h, w) // 2)):
            out = min(ndf * 2 ** (i + 1), ndf * 8)
            t_stride = 2 if t > 2 else 1  # keep >= 2 steps in time for the norm
            layers.append(ResidualBlock(ch, out, stride=(t_stride, 2, 2), dims=3, norm=norm))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            t, ch = (t + t_stride - 1) // t_stride, out
        self.features = nn.Sequential(*layers)
        self.head = _head(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_clip(x, self.channels, type(self).__name__)
        # CPU bf16 autocast computes some Conv3d weight gradients wrongly (utils/precision.py).
        feat = conv3d_fp32_where_unsafe(self.features, x.transpose(1, 2))  # [B,C,T,H,W] -> [B,ch,t,h,w]
        return self.head(feat.mean(dim=(2, 3, 4)))[:, 0]  # [B]
