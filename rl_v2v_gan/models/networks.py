"""Every network of DESIGN §3 in one typed container, built by method."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..rl.targets import soft_update
from .discriminator import FrameDiscriminator, VideoDiscriminator, spectral_normed
from .generator import Generator, Predictor
from .q_network import QNetwork

# Which networks each method trains (DESIGN §6), by role: each role has its own optimizer.
ROLES = {
    "cycle_gan": {"G": ("gen_ab", "gen_ba"), "D": ("disc_a", "disc_b"), "Q": ()},
    "recycle_gan": {"G": ("gen_ab", "gen_ba", "pred_a", "pred_b"), "D": ("disc_a", "disc_b"), "Q": ()},
    "rl_v2v_gan": {"G": ("gen_ab", "gen_ba", "pred_a", "pred_b"),
                   "D": ("disc_a", "disc_b", "vdisc_a", "vdisc_b"), "Q": ("q_a", "q_b")},
}
# Networks with a slowly-following target copy (DDPG); only the RL method has them.
TARGETED = ("gen_ab", "gen_ba", "pred_a", "pred_b", "q_a", "q_b")
# Networks with an exponential moving average (--ema_decay), used to evaluate and translate.
AVERAGED = ("gen_ab", "gen_ba")
# The EMA's decay ramps up from 0.1 (t = 0) as min(decay, (1 + t) / (10 + t)), so the average does
# not sit at the identity start for the first 1 / (1 - decay) steps.
EMA_WARMUP = 10


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay applied after ``step`` updates (ramped, capped at ``decay``)."""
    return min(decay, (1.0 + step) / (EMA_WARMUP + step))


def translator(nets, name: str) -> nn.Module:
    """The generator to translate with: its EMA (``<name>_ema``) where the run keeps one, else ``name``.

    Works on any object with generator attributes (a baseline without EMA copies too)."""
    ema = getattr(nets, f"{name}_ema", None)
    return getattr(nets, name) if ema is None else ema


class Networks(nn.Module):
    """gen_ab, gen_ba, pred_a, pred_b, disc_a, disc_b, vdisc_a, vdisc_b, q_a, q_b and ``<name>_target``.

    A network the method does not use is None. Targets are deep copies with
    ``requires_grad_(False)``, always in eval mode, and changed only by ``soft_update``.
    """

    gen_ab: Generator
    gen_ba: Generator
    disc_a: FrameDiscriminator
    disc_b: FrameDiscriminator
    pred_a: Predictor | None
    pred_b: Predictor | None
    vdisc_a: VideoDiscriminator | None
    vdisc_b: VideoDiscriminator | None
    q_a: QNetwork | None
    q_b: QNetwork | None

    def __init__(self, method: str, nets: dict[str, nn.Module], ema_decay: float = 0.0):
        super().__init__()
        self.method = method
        self.roles = ROLES[method]
        names = self.online_names()
        for name in ("gen_ab", "gen_ba", "pred_a", "pred_b", "disc_a", "disc_b", "vdisc_a", "vdisc_b", "q_a", "q_b"):
            setattr(self, name, nets[name] if name in names else None)
        self.target_names = tuple(n for n in TARGETED if n in names) if method == "rl_v2v_gan" else ()
        for name in self.target_names:
            target = copy.deepcopy(getattr(self, name)).requires_grad_(False).eval()
            setattr(self, f"{name}_target", target)
        self.ema_decay = ema_decay
        self.ema_names = AVERAGED if ema_decay > 0 else ()
        for name in self.ema_names:
            setattr(self, f"{name}_ema", copy.deepcopy(getattr(self, name)).requires_grad_(False).eval())

    def role(self, role: str) -> list[nn.Module]:
        """The online networks of one role: "G" (generators, predictors), "D" or "Q"."""
        return [getattr(self, n) for n in self.roles[role]]

    def online_names(self) -> list[str]:
        return [n for role in self.roles.values() for n in role]

    def target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(target, online) for every target network."""
        return [(getattr(self, f"{n}_target"), getattr(self, n)) for n in self.target_names]

    @torch.no_grad()
    def ema_update(self, step: int, applied: torch.Tensor | None = None) -> None:
        """Fold the online generators into their EMA after optimizer step ``step`` (0-based).

        ``applied`` (a 0-d bool tensor) is whether that step was taken: the average follows the
        generators' updates, not skipped steps, decided on the device."""
        tau = 1.0 - ema_decay_at(step, self.ema_decay)
        if applied is not None:
            tau = applied.float() * tau
        for name in self.ema_names:
            soft_update(getattr(self, f"{name}_ema"), getattr(self, name), tau)

    def train(self, mode: bool = True) -> "Networks":
        super().train(mode)
        for target, _ in self.target_pairs():
            target.eval()
        for name in self.ema_names:
            getattr(self, f"{name}_ema").eval()
        return self

    @torch.no_grad()
    def to_channels_last(self) -> "Networks":
        """Every 4-D weight in ``channels_last`` layout (``--channels_last``); a 2-D convolution with
        such a weight returns that layout, so the activations follow. 5-D (Conv3d) weights keep theirs."""
        for p in self.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
        return self

    def set_checkpointing(self, mode: str) -> None:
        """Activation checkpointing (``--activation_checkpointing``: "off", "on" or "selective") in the
        networks that are trained through long graphs: the generators and predictors (targets and
        EMA copies run without gradients, where it changes nothing)."""
        for name in self.roles["G"]:
            getattr(self, name).checkpointing = mode

    def summary(self) -> str:
        lines = [f"networks ({self.method}):"]
        total = 0
        for name in self.online_names():
            n = sum(p.numel() for p in getattr(self, name).parameters())
            total += n
            lines.append(f"  {name:<8} {type(getattr(self, name)).__name__:<19} {n / 1e6:8.3f} M parameters")
        lines.append(f"  trainable total {total / 1e6:.3f} M; target copies: {', '.join(self.target_names) or 'none'}"
                     + (f"; EMA ({self.ema_decay}): {', '.join(self.ema_names)}" if self.ema_names else ""))
        return "\n".join(lines)


def build_networks(method: str, input_shape: tuple[int, int, int, int], context_frames: int = 2, ngf: int = 64,
                   ndf: int = 64, n_res_blocks: int = 2, norm: str = "instance", residual: bool = True,
                   disc_patch: bool = False, spectral_norm: bool = False, ema_decay: float = 0.0,
                   temporal_memory: bool = True, residual_space: str = "tanh") -> Networks:
    """Build the networks ``method`` needs for clips of ``input_shape = (T, H, W, C)``."""
    t, h, w, c = input_shape
    gen = dict(channels=c, ngf=ngf, n_res_blocks=n_res_blocks, norm=norm, residual=residual,
               residual_space=residual_space)
    disc = spectral_normed if spectral_norm else (lambda net: net)
    nets = {
        "gen_ab": Generator(**gen, temporal=temporal_memory), "gen_ba": Generator(**gen, temporal=temporal_memory),
        "pred_a": Predictor(context_frames, frame_size=(h, w), **gen),
        "pred_b": Predictor(context_frames, frame_size=(h, w), **gen),
        **{f"disc_{d}": disc(FrameDiscriminator(c, (h, w), ndf, norm, patch=disc_patch)) for d in "ab"},
        **{f"vdisc_{d}": disc(VideoDiscriminator(c, (t, h, w), ndf, norm)) for d in "ab"},
        "q_a": QNetwork(c, context_frames, (h, w), ndf), "q_b": QNetwork(c, context_frames, (h, w), ndf),
    }
    return Networks(method, nets, ema_decay)


def networks_from_config(cfg) -> Networks:
    """``build_networks`` with the flags of a :class:`~rl_v2v_gan.config.Config`."""
    return build_networks(cfg.method, cfg.input_shape, cfg.context_frames, cfg.ngf, cfg.ndf, cfg.n_res_blocks,
                          cfg.norm, cfg.residual, cfg.disc_patch, cfg.spectral_norm, cfg.ema_decay,
                          cfg.temporal_memory, cfg.residual_space)
