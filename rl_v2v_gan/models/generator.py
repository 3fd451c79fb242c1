"""Generator (gen_ab, gen_ba) and Predictor (pred_a, pred_b): a U-Net with a ConvLSTM bottleneck.

Per frame: stem -> strided convolutions (x4 down for the generator, x8 for the predictor) ->
residual blocks; over time: a ConvLSTM at the bottleneck; per frame again: upsample + additive
U-Net skips + a convolution per level -> a zero-initialised head. Everything but the ConvLSTM is
per frame, so the network is causal in time.

**Start from the identity** (DESIGN §3, ``residual=True``): the head's output is a residual on
the input frame (the generator) or on the last context frame (the predictor), added in tanh's
pre-activation space, so an untrained generator returns its input and an untrained predictor
copies the last frame, while the output stays bounded and smooth.

**Cost budget** (DESIGN §3): the full-resolution levels hold one 3x3 convolution each, the
heavy residual blocks sit at the bottleneck, the ConvLSTM's hidden state has half the bottleneck
width, and the predictor starts at half the width and downsamples once more. At 256x256 and
ngf = 64 this is about 51 GFLOP per generator frame and 12 GFLOP per predictor call (p = 2).

**Activation checkpointing** (DESIGN §9, ``--activation_checkpointing``; ``checkpointing``):
``"on"``: a call keeps only its input and output for the backward pass and runs its forward again
there, so the activations of one call live only while that call's gradient is taken, instead of
those of every generator and predictor call of a step until the step's backward (at 256x256 they
are most of its memory). One more forward per call; same values and gradients. Checkpointing the
whole call rather than its levels was measured to keep 0.006x instead of 0.41x of the bytes.
``"selective"`` (selective activation checkpointing): the same, except that the outputs of the
convolutions whose every output value costs at least ``SAVE_MACS_PER_VALUE`` multiply-adds (the
bottleneck's residual blocks and ConvLSTM, the head, at ngf = 64) are kept rather than recomputed:
the cheap-per-byte work (full-resolution convolutions, norms, activations) is what runs again.
Same values and gradients (``benchmarks/bench_checkpointing.py`` measures both modes).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .blocks import ConvLSTM, ResidualBlock, make_norm

State = tuple[torch.Tensor, torch.Tensor]

CHECKPOINTING = ("off", "on", "selective")  # what ``Generator.checkpointing`` may be
# "selective" keeps a convolution's output when each output value took at least this many multiply-adds
# (in_channels / groups x kernel area): at ngf = 64 the bottleneck's residual blocks (2304), the ConvLSTM
# (3456) and the head (3136); the full-resolution and strided levels (147-1152) are recomputed. Chosen on
# bench_checkpointing.py at 4x128x128, ngf 64: 0.12x the stored bytes at 1.15x the time (1000: 0.21x at
# 1.14x; "on": 0.003x at 1.32x).
SAVE_MACS_PER_VALUE = 2000


def _keep_dear_convolutions(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """The "selective" policy: save the outputs of convolutions that are dear to recompute per stored value."""
    if op is torch.ops.aten.convolution.default and args[1][0].numel() >= SAVE_MACS_PER_VALUE:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _selective_contexts():
    return create_selective_checkpoint_contexts(_keep_dear_convolutions)


# Where torch lets us (2.14+), the tensors a selective region keeps go through saved-tensor hooks like any
# other (so hooks such as save_on_cpu, or a count of stored bytes, see them); older versions bypass them.
_HOOKS = ({"respect_saved_tensors_hooks": True}
          if "respect_saved_tensors_hooks" in inspect.signature(checkpoint).parameters else {})

# The residual start maps frames from [-1, 1] into tanh's pre-activation space through
# atanh(clamp(x, -(1 - RESIDUAL_MARGIN), 1 - RESIDUAL_MARGIN)): the margin keeps atanh finite at
# +-1 and the gradient of a saturated pixel at 1 - (1 - margin)^2 (about 0.006) instead of 0. It is
# small enough that the identity stays exact on the uint8 wire: +-1 moves by 0.003, under half a
# grey level (1/255).
RESIDUAL_MARGIN = 3e-3


RESIDUAL_SPACES = ("tanh", "linear", "split", "split_capped")
LOWPASS_SPACES = ("split", "split_capped")  # the spaces whose residual reads lowpass(base)

# The low-pass of ``--residual_space split``: a 5x5 binomial filter (reflect padding). It passes
# ~7 % of the power of pixel-independent noise (its weights' sum of squares, 70^2 / 256^2).
_BINOMIAL5 = (1.0, 4.0, 6.0, 4.0, 1.0)
LOWPASS_RADIUS = 2


def lowpass(frames: torch.Tensor) -> torch.Tensor:
    """A 5x5 binomial blur of ``[..., H, W]`` frames, per channel, reflect-padded (float32).

    Separable: a horizontal then a vertical pass. A pixel's blur reads only pixels within
    LOWPASS_RADIUS of it, so a crop's blur equals the whole frame's at least that far inside it."""
    shape = frames.shape
    x = frames.float().reshape(-1, 1, *shape[-2:])
    k = torch.tensor(_BINOMIAL5, dtype=x.dtype, device=x.device) / 16.0
    r = LOWPASS_RADIUS
    with torch.autocast(x.device.type, enabled=False):  # float32 under --amp too, as residual_output
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, 5))
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, 5, 1))
    return x.reshape(shape)


def residual_output(delta: torch.Tensor, base: torch.Tensor, space: str = "tanh",
                    low: torch.Tensor | None = None) -> torch.Tensor:
    """The head's residual ``delta`` added to ``base``: exactly ``base`` at delta = 0 (to within
    RESIDUAL_MARGIN but for ``linear``). Computed in float32, under ``--amp`` too (atanh near +-1
    is not a bf16 operation).

    ``tanh`` (``--residual_space tanh``): ``tanh(atanh(clamp(base)) + delta)``. The output lies
    strictly inside (-1, 1), the range of real frames, so a generated pixel can never be told apart
    by being out of range; but a change of ``base`` reaches the output scaled by
    ``(1 - out^2) / (1 - base^2)``: brightening a dark frame amplifies its noise several times.
    ``linear``: ``base + delta``, the global residual of restoration networks: the input reaches the
    output at gain 1 whatever the brightness change, and the output is not bounded (frames are
    clamped where they are written and scored).
    ``split``: ``tanh(atanh(clamp(low)) + delta) + (base - low)`` with ``low = lowpass(base)``: the
    frame's coarse content (brightness, colour) is mapped in tanh space as by ``tanh``, its fine
    detail and pixel noise pass at gain 1 as by ``linear`` (nearly bounded: the detail is small).
    ``split_capped``: as ``split``, but the detail is scaled by tanh's own gain at the coarse
    content, ``min(1, (1 - o^2) / (1 - low^2))`` with ``o = tanh(atanh(low) + delta)``: darkening
    attenuates the detail as ``tanh`` does (a dark target has less contrast), brightening passes
    it at 1 (no amplified noise).
    ``low``: ``lowpass(base)`` when the caller computed it on a larger crop (tiled translation).
    """
    if space not in RESIDUAL_SPACES:
        raise ValueError(f"residual space must be one of {', '.join(RESIDUAL_SPACES)}, got {space!r}")
    if space == "linear":
        return base.float() + delta.float()
    bound = 1.0 - RESIDUAL_MARGIN
    if space == "tanh":
        return torch.tanh(torch.atanh(base.float().clamp(-bound, bound)) + delta.float())
    low = lowpass(base) if low is None else low.float()
    coarse = low.clamp(-bound, bound)
    out = torch.tanh(torch.atanh(coarse) + delta.float())
    detail = base.float() - low
    if space == "split_capped":
        detail = detail * ((1 - out * out) / (1 - coarse * coarse)).clamp(max=1.0)
    return out + detail


def check_clip(x: torch.Tensor, channels: int, name: str, frames: int | None = None) -> None:
    """Shape assert at a module boundary: ``[B,T,C,H,W]`` with H, W divisible by 4."""
    if x.dim() != 5 or x.shape[2] != channels or x.shape[-1] % 4 or x.shape[-2] % 4 \
            or (frames is not None and x.shape[1] != frames):
        want = f"[B,{frames if frames is not None else 'T'},{channels},H,W] with H, W divisible by 4"
        raise ValueError(f"{name}: expected {want}, got {list(x.shape)}")


def _conv_norm_relu(in_ch: int, out_ch: int, norm: str, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                         make_norm(norm, 2, out_ch), nn.ReLU(inplace=True))


class Generator(nn.Module):
    """``[B,T,C,H,W] -> [B,T,C,H,W]`` in [-1, 1]; optional carried ConvLSTM state.

    Widths ``ngf * 2**i`` (capped at ``4 ngf``) at each of ``downsamples`` halvings; the last
    level holds ``n_res_blocks`` residual blocks and the ConvLSTM.
    """

    def __init__(self, channels: int = 3, ngf: int = 64, n_res_blocks: int = 2, norm: str = "instance",
                 residual: bool = True, downsamples: int = 2, temporal: bool = True,
                 residual_space: str = "tanh"):
        super().__init__()
        if residual_space not in RESIDUAL_SPACES:
            raise ValueError(f"residual_space must be one of {', '.join(RESIDUAL_SPACES)}, got {residual_space!r}")
        self.residual_space = residual_space
        # temporal=False is the per-frame ablation (--temporal_memory false): the same network with
        # its ConvLSTM restarted from the zero state at every frame, so no frame sees another.
        self.channels, self.residual, self.temporal = channels, residual, temporal
        widths = [ngf * min(2 ** i, 4) for i in range(downsamples + 1)]  # per level, full resolution first
        self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 7, padding=3, padding_mode="reflect", bias=False),
                                  make_norm(norm, 2, widths[0]), nn.ReLU(inplace=True))
        self.down = nn.ModuleList(_conv_norm_relu(widths[i], widths[i + 1], norm, stride=2)
                                  for i in range(downsamples))
        bottom = widths[-1]
        self.bottleneck = nn.Sequential(*[ResidualBlock(bottom, bottom, norm=norm) for _ in range(n_res_blocks)])
        self.lstm = ConvLSTM(bottom, max(bottom // 2, 1))
        self.lstm_out = nn.Conv2d(max(bottom // 2, 1), bottom, 1)
        # Decoder, deepest level first: narrow at low resolution, upsample, add the skip, convolve.
        self.narrow = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in reversed(range(downsamples)))
        self.up = nn.ModuleList(_conv_norm_relu(widths[i], widths[i], norm) for i in reversed(range(downsamples)))
        self.head = nn.Conv2d(widths[0], channels, 7, padding=3, padding_mode="reflect")
        self.checkpointing = "off"  # one of CHECKPOINTING, set by Networks.set_checkpointing
        if residual:  # start from the identity: the residual is exactly 0 before training
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def run(self, x: torch.Tensor, state: State | None = None, last_only: bool = False):
        """Frames ``[B,T,C,H,W]`` -> (output ``[B,T',C,H,W]``, final ConvLSTM state).

        With ``last_only`` the decoder runs on the last step alone (T' = 1): what a predictor
        needs; with ``residual`` the output is a residual on the last input frame then.
        """
        check_clip(x, self.channels, type(self).__name__)
        if self.checkpointing != "off" and torch.is_grad_enabled():
            if self.checkpointing not in CHECKPOINTING:
                raise ValueError(f"checkpointing must be one of {CHECKPOINTING}, got {self.checkpointing!r}")
            if self.checkpointing == "selective":
                return checkpoint(self._run, x, state, last_only, use_reentrant=False,
                                  context_fn=_selective_contexts, **_HOOKS)
            return checkpoint(self._run, x, state, last_only, use_reentrant=False)
        return self._run(x, state, last_only)

    def _run(self, x: torch.Tensor, state: State | None, last_only: bool):
        b, t = x.shape[:2]
        skips = [self.stem(x.flatten(0, 1))]  # [BT,w0,H,W]
        for down in self.down:
            skips.append(down(skips[-1]))  # [BT,w_i,H/2^i,W/2^i]
        feat = self.bottleneck(skips.pop())  # [BT,wL,H/2^L,W/2^L]
        if self.temporal:
            hidden, state = self.lstm(feat.unflatten(0, (b, t)), state)  # [B,T,wL/2,h,w]
        else:  # every frame on its own: a sequence of length 1 from the zero state; nothing is carried
            hidden = self.lstm(feat[:, None])[0][:, 0].unflatten(0, (b, t))
        # The additive path keeps a per-frame route open while the recurrent memory is learned.
        feat = feat + self.lstm_out(hidden.flatten(0, 1))
        base = x
        if last_only:
            last = lambda y: y.unflatten(0, (b, t))[:, -1]  # noqa: E731
            feat, skips, base, t = last(feat), [last(s) for s in skips], x[:, -1:], 1
        for narrow, up, skip in zip(self.narrow, self.up, reversed(skips)):
            y = F.interpolate(narrow(feat), size=skip.shape[-2:], mode="nearest")
            feat = up(y + skip)
        delta = self.head(feat).unflatten(0, (b, t))  # [B,T',C,H,W]
        return self.output(delta, base).to(delta.dtype), state

    def output(self, delta: torch.Tensor, base: torch.Tensor, low: torch.Tensor | None = None) -> torch.Tensor:
        """The frame from the head's output ``delta`` and the frame it is a residual on (``low``:
        see residual_output)."""
        return residual_output(delta, base, self.residual_space, low) if self.residual else torch.tanh(delta)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        return self.run(x, state)[0]


def predictor_downsamples(frame_size: tuple[int, int]) -> int:
    """The predictor halves once more than the generator where the frame is large enough
    (at least 32 pixels a side keeps its bottleneck at 4x4 or more)."""
    return 3 if min(frame_size) >= 32 else 2


class Predictor(Generator):
    """Reads p frames ``[B,p,C,H,W]`` and returns the next frame ``[B,C,H,W]`` (the last step's output).

    Half the generator's width and one more downsampling (where the frame allows): it reads
    motion, a coarser job than translating texture.
    """

    def __init__(self, context_frames: int = 2, channels: int = 3, ngf: int = 64, n_res_blocks: int = 2,
                 norm: str = "instance", residual: bool = True, frame_size: tuple[int, int] = (64, 64),
                 residual_space: str = "tanh"):
        super().__init__(channels, max(ngf // 2, 1), n_res_blocks, norm, residual,
                         downsamples=predictor_downsamples(frame_size), residual_space=residual_space)
        self.context_frames = context_frames

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        check_clip(x, self.channels, "Predictor", frames=self.context_frames)
        return self.run(x, state, last_only=True)[0][:, 0]
