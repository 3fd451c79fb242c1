"""Generator (gen_ab, gen_ba) and Predictor (pred_a, pred_b): a U-Net with a ConvLSTM bottleneck.

Per frame: stem -> two strided residual blocks (x4 down) -> residual blocks; over time: a
ConvLSTM at the bottleneck; per frame again: upsample + residual blocks with U-Net skips -> tanh.
Everything but the ConvLSTM is per frame, so the network is causal in time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvLSTM, ResidualBlock, make_norm

State = tuple[torch.Tensor, torch.Tensor]


def check_clip(x: torch.Tensor, channels: int, name: str, frames: int | None = None) -> None:
    """Shape assert at a module boundary: ``[B,T,C,H,W]`` with H, W divisible by 4."""
    if x.dim() != 5 or x.shape[2] != channels or x.shape[-1] % 4 or x.shape[-2] % 4 \
            or (frames is not None and x.shape[1] != frames):
        want = f"[B,{frames if frames is not None else 'T'},{channels},H,W] with H, W divisible by 4"
        raise ValueError(f"{name}: expected {want}, got {list(x.shape)}")


class Generator(nn.Module):
    """``[B,T,C,H,W] -> [B,T,C,H,W]`` in [-1, 1]; optional carried ConvLSTM state."""

    def __init__(self, channels: int = 3, ngf: int = 64, n_res_blocks: int = 2, norm: str = "instance"):
        super().__init__()
        self.channels = channels
        c1, c2, c3 = ngf, 2 * ngf, 4 * ngf
        self.stem = nn.Sequential(nn.Conv2d(channels, c1, 7, padding=3, padding_mode="reflect", bias=False),
                                  make_norm(norm, 2, c1), nn.ReLU(inplace=True))
        self.down1 = ResidualBlock(c1, c2, stride=2, norm=norm)  # H/2
        self.down2 = ResidualBlock(c2, c3, stride=2, norm=norm)  # H/4
        self.bottleneck = nn.Sequential(*[ResidualBlock(c3, c3, norm=norm) for _ in range(n_res_blocks)])
        self.lstm = ConvLSTM(c3, c3)
        self.up1 = ResidualBlock(c3 + c2, c2, norm=norm)
        self.up2 = ResidualBlock(c2 + c1, c1, norm=norm)
        self.head = nn.Conv2d(c1, channels, 7, padding=3, padding_mode="reflect")

    def run(self, x: torch.Tensor, state: State | None = None, last_only: bool = False):
        """Frames ``[B,T,C,H,W]`` -> (output ``[B,T',C,H,W]``, final ConvLSTM state).

        With ``last_only`` the decoder runs on the last step alone (T' = 1): what a predictor needs.
        """
        check_clip(x, self.channels, type(self).__name__)
        b, t = x.shape[:2]
        s1 = self.stem(x.flatten(0, 1))  # [BT,c1,H,W]
        s2 = self.down1(s1)  # [BT,c2,H/2,W/2]
        feat = self.bottleneck(self.down2(s2))  # [BT,c3,H/4,W/4]
        hidden, state = self.lstm(feat.unflatten(0, (b, t)), state)  # [B,T,c3,H/4,W/4]
        # The residual keeps a per-frame path open while the recurrent memory is learned.
        feat = feat.unflatten(0, (b, t)) + hidden
        if last_only:
            feat, s1, s2, t = feat[:, -1:], s1.unflatten(0, (b, t))[:, -1], s2.unflatten(0, (b, t))[:, -1], 1
        feat = feat.flatten(0, 1)
        y = self.up1(torch.cat([F.interpolate(feat, size=s2.shape[-2:], mode="nearest"), s2], 1))
        y = self.up2(torch.cat([F.interpolate(y, size=s1.shape[-2:], mode="nearest"), s1], 1))
        y = torch.tanh(self.head(y)).unflatten(0, (b, t))  # [B,T',C,H,W]
        return y, state

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        return self.run(x, state)[0]


class Predictor(Generator):
    """Reads p frames ``[B,p,C,H,W]`` and returns the next frame ``[B,C,H,W]`` (the last step's output)."""

    def __init__(self, context_frames: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.context_frames = context_frames

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        check_clip(x, self.channels, "Predictor", frames=self.context_frames)
        return self.run(x, state, last_only=True)[0][:, 0]
