"""QNetwork (q_a, q_b): expected discounted cost of taking an action frame in a state."""

from __future__ import annotations

import torch
from torch import nn

from .discriminator import FrameDiscriminator

INITIAL_BIAS = 1.0


class QNetwork(nn.Module):
    """``(state [B,p,C,H,W], action [B,C,H,W]) -> [B]``, non-negative.

    The FrameDiscriminator architecture on state and action frames stacked on channels. Costs are
    non-negative, so the head ends in a ReLU (seed); its last bias starts positive so the ReLU is
    not dead (zero gradient) at initialisation.
    """

    def __init__(self, channels: int = 3, context_frames: int = 2, frame_size: tuple[int, int] = (64, 64),
                 ndf: int = 64, norm: str = "instance"):
        super().__init__()
        self.channels, self.context_frames = channels, context_frames
        self.body = FrameDiscriminator((context_frames + 1) * channels, frame_size, ndf, norm)
        nn.init.constant_(self.body.head[-1].bias, INITIAL_BIAS)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if state.dim() != 5 or state.shape[1:3] != (self.context_frames, self.channels) \
                or action.shape != (state.shape[0], self.channels, *state.shape[3:]):
            raise ValueError(f"QNetwork: expected state [B,{self.context_frames},{self.channels},H,W] and action "
                             f"[B,{self.channels},H,W], got {list(state.shape)} and {list(action.shape)}")
        x = torch.cat([state.flatten(1, 2), action], 1)  # [B,(p+1)C,H,W]
        return torch.relu(self.body(x))  # [B]
