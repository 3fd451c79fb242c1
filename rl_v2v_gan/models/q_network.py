"""QNetwork (q_a, q_b): expected discounted cost of taking an action frame in a state."""

from __future__ import annotations

import torch
from torch import nn

from .discriminator import FrameDiscriminator

INITIAL_BIAS = 1.0


class QNetwork(nn.Module):
    """``(state [B,p,C,H,W], action [B,C,H,W], steps_left [B]) -> [B]``, non-negative.

    The FrameDiscriminator architecture on state and action frames stacked on channels, plus one
    constant plane holding ``steps_left`` (DESIGN §5 "Time": the fraction of the episode's steps
    still to come, in (0, 1]; an episode has a fixed length, so a state's value depends on it).
    No normalisation layers: instance norm would remove the magnitudes Q must regress. Costs are
    non-negative, so the head ends in a ReLU (seed); its last bias starts positive so the ReLU is
    not dead (zero gradient) at initialisation.
    """

    def __init__(self, channels: int = 3, context_frames: int = 2, frame_size: tuple[int, int] = (64, 64),
                 ndf: int = 64):
        super().__init__()
        self.channels, self.context_frames = channels, context_frames
        self.body = FrameDiscriminator((context_frames + 1) * channels + 1, frame_size, ndf, norm="none")
        nn.init.constant_(self.body.head[-1].bias, INITIAL_BIAS)

    def forward(self, state: torch.Tensor, action: torch.Tensor, steps_left: torch.Tensor) -> torch.Tensor:
        b = state.shape[0]
        if state.dim() != 5 or state.shape[1:3] != (self.context_frames, self.channels) \
                or action.shape != (b, self.channels, *state.shape[3:]) or steps_left.shape != (b,):
            raise ValueError(f"QNetwork: expected state [B,{self.context_frames},{self.channels},H,W], action "
                             f"[B,{self.channels},H,W] and steps_left [B], got {list(state.shape)}, "
                             f"{list(action.shape)} and {list(steps_left.shape)}")
        left = steps_left.to(action.dtype).view(b, 1, 1, 1).expand(b, 1, *action.shape[-2:])
        x = torch.cat([state.flatten(1, 2), action, left], 1)  # [B,(p+1)C+1,H,W]
        return torch.relu(self.body(x))  # [B]
