"""Building blocks: ResidualBlock (2-D or 3-D) and ConvLSTM (seed: "ConvLSTMBlock")."""

from __future__ import annotations

import torch
from torch import nn

NORMS = {
    ("instance", 2): lambda c: nn.InstanceNorm2d(c, affine=True),
    ("instance", 3): lambda c: nn.InstanceNorm3d(c, affine=True),
    ("batch", 2): nn.BatchNorm2d,
    ("batch", 3): nn.BatchNorm3d,
    ("none", 2): lambda c: nn.Identity(),
    ("none", 3): lambda c: nn.Identity(),
}


def make_norm(norm: str, dims: int, channels: int) -> nn.Module:
    try:
        return NORMS[(norm, dims)](channels)
    except KeyError:
        raise ValueError(f"unknown norm {norm!r} for {dims}-D (valid: instance, batch, none)") from None


class ResidualBlock(nn.Module):
    """conv-norm-ReLU-conv-norm plus a shortcut (a 1x1 conv when channels or stride change).

    ``dims`` is 2 for frames ``[N,C,H,W]`` or 3 for clips ``[N,C,T,H,W]``; ``stride`` is an int
    or, in 3-D, a ``(t, h, w)`` tuple.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int | tuple = 1, dims: int = 2, norm: str = "instance"):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.body = nn.Sequential(
            conv(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            make_norm(norm, dims, out_ch),
            nn.ReLU(inplace=True),
            conv(out_ch, out_ch, 3, padding=1, bias=False),
            make_norm(norm, dims, out_ch),
        )
        strided = stride != 1 and stride != (1,) * dims
        self.shortcut = conv(in_ch, out_ch, 1, stride=stride, bias=False) if strided or in_ch != out_ch \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step. The input half of the gates is computed outside for all steps at once."""

    def __init__(self, hidden: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        self.conv_h = nn.Conv2d(hidden, 4 * hidden, kernel, padding=kernel // 2, bias=False)

    def forward(self, x_gates: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state  # [N,hid,H,W] each
        i, f, g, o = (x_gates + self.conv_h(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """Convolutional LSTM over time: ``[B,T,C,H,W] -> [B,T,hid,H,W]`` plus the final ``(h, c)``.

    The state is passed in and returned, so a long video can be processed in chunks with the
    same result as one pass; ``None`` means the zero state.
    """

    def __init__(self, in_ch: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        self.conv_x = nn.Conv2d(in_ch, 4 * hidden, kernel, padding=kernel // 2)
        self.cell = ConvLSTMCell(hidden, kernel)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        b, t, _, h, w = x.shape
        # One conv over all B*T frames for the input gates; only the hidden path is sequential.
        x_gates = self.conv_x(x.flatten(0, 1)).unflatten(0, (b, t))  # [B,T,4hid,H,W]
        if state is None:
            zeros = x.new_zeros(b, self.hidden, h, w)
            state = (zeros, zeros)
        outputs = []
        for step in range(t):
            state = self.cell(x_gates[:, step], state)
            outputs.append(state[0])
        return torch.stack(outputs, 1), state  # [B,T,hid,H,W], ((h, c) each [B,hid,H,W])
