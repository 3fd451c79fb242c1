"""Every network of DESIGN §3 in one typed container, built by method."""

from __future__ import annotations

import copy

from torch import nn

from .discriminator import FrameDiscriminator, VideoDiscriminator
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

    def __init__(self, method: str, nets: dict[str, nn.Module]):
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

    def role(self, role: str) -> list[nn.Module]:
        """The online networks of one role: "G" (generators, predictors), "D" or "Q"."""
        return [getattr(self, n) for n in self.roles[role]]

    def online_names(self) -> list[str]:
        return [n for role in self.roles.values() for n in role]

    def target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(target, online) for every target network."""
        return [(getattr(self, f"{n}_target"), getattr(self, n)) for n in self.target_names]

    def train(self, mode: bool = True) -> "Networks":
        super().train(mode)
        for target, _ in self.target_pairs():
            target.eval()
        return self

    def summary(self) -> str:
        lines = [f"networks ({self.method}):"]
        total = 0
        for name in self.online_names():
            n = sum(p.numel() for p in getattr(self, name).parameters())
            total += n
            lines.append(f"  {name:<8} {type(getattr(self, name)).__name__:<19} {n / 1e6:8.3f} M parameters")
        lines.append(f"  trainable total {total / 1e6:.3f} M; target copies: {', '.join(self.target_names) or 'none'}")
        return "\n".join(lines)


def build_networks(method: str, input_shape: tuple[int, int, int, int], context_frames: int = 2, ngf: int = 64,
                   ndf: int = 64, n_res_blocks: int = 2, norm: str = "instance", residual: bool = True) -> Networks:
    """Build the networks ``method`` needs for clips of ``input_shape = (T, H, W, C)``."""
    t, h, w, c = input_shape
    gen = dict(channels=c, ngf=ngf, n_res_blocks=n_res_blocks, norm=norm, residual=residual)
    nets = {
        "gen_ab": Generator(**gen), "gen_ba": Generator(**gen),
        "pred_a": Predictor(context_frames, frame_size=(h, w), **gen),
        "pred_b": Predictor(context_frames, frame_size=(h, w), **gen),
        "disc_a": FrameDiscriminator(c, (h, w), ndf, norm), "disc_b": FrameDiscriminator(c, (h, w), ndf, norm),
        "vdisc_a": VideoDiscriminator(c, (t, h, w), ndf, norm), "vdisc_b": VideoDiscriminator(c, (t, h, w), ndf, norm),
        "q_a": QNetwork(c, context_frames, (h, w), ndf, norm), "q_b": QNetwork(c, context_frames, (h, w), ndf, norm),
    }
    return Networks(method, nets)


def networks_from_config(cfg) -> Networks:
    """``build_networks`` with the flags of a :class:`~rl_v2v_gan.config.Config`."""
    return build_networks(cfg.method, cfg.input_shape, cfg.context_frames, cfg.ngf, cfg.ndf, cfg.n_res_blocks,
                          cfg.norm, cfg.residual)
