"""Shared fixtures: a tiny configuration, uint8 batches and a seeded trainer, all CPU-sized.

Every test that builds networks uses the same tiny shapes (B=2, T=4, 16x16x3, ngf=ndf=4) unless
it needs others: on CPU the first call of each convolution shape is slow, so few shapes keep
the suite fast.
"""

from __future__ import annotations

import pytest
import torch

from rl_v2v_gan.config import make_config
from rl_v2v_gan.models.networks import networks_from_config
from rl_v2v_gan.train.trainer import Trainer

# actor_start_step=0: the actor term (which waits for the critic in real runs) is on from step 0;
# rl_episodes=2: the rollouts cover the whole tiny batch.
TINY = dict(input_shape=(4, 16, 16, 3), ngf=4, ndf=4, n_res_blocks=1, batch_size=2, buffer_size=64,
            synthetic_train_clips=8, synthetic_test_clips=2, steps_per_epoch=2, device="cpu", actor_start_step=0,
            rl_episodes=2)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a longer learning run (tens of seconds); still runs by default")
    # Tiny tensors gain nothing from intra-op threads, and on a busy machine their spin-waits
    # make the suite several times slower; subprocesses a test starts are not affected.
    torch.set_num_threads(1)


@pytest.fixture
def tiny_config(tmp_path):
    """``tiny_config(**flags)``: a validated Config at test sizes; data and checkpoints under tmp_path."""

    def make(**flags):
        values = {**TINY, "data_root": str(tmp_path / "data"), "checkpoint_dir": str(tmp_path / "checkpoints"),
                  **flags}
        return make_config(**values)

    return make


def uint8_batch(b: int = 2, t: int = 4, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Unpaired uint8 clips ``{"a": [B,T,C,H,W], "b": [B,T,C,H,W]}`` from their own generator."""
    g = torch.Generator().manual_seed(seed)
    return {d: torch.randint(0, 256, (b, t, c, h, w), dtype=torch.uint8, generator=g) for d in ("a", "b")}


@pytest.fixture
def make_batch():
    """``make_batch(b, t, c, h, w, seed)``: see :func:`uint8_batch`."""
    return uint8_batch


def build_trainer(cfg, seed: int = 0) -> Trainer:
    """Networks initialised under ``torch.manual_seed(seed)`` and their Trainer on CPU."""
    torch.manual_seed(seed)
    return Trainer(cfg, networks_from_config(cfg), torch.device("cpu"))


@pytest.fixture
def make_trainer():
    """``make_trainer(cfg, seed=0)``: see :func:`build_trainer`."""
    return build_trainer


def write_rotated_video(path, rotation: int = 90, frames: int = 6):
    """A phone-style mp4: an upright portrait clip (top half red, bottom half blue, 32 high x 16
    wide) stored turned into landscape, with a display matrix saying how to turn it back.
    Returns the upright frame ``[32, 16, 3]`` it shows."""
    import av
    import numpy as np

    upright = np.zeros((32, 16, 3), np.uint8)
    upright[:16, :, 0] = 255
    upright[16:, :, 2] = 255
    stored = np.ascontiguousarray(np.rot90(upright, k=-rotation // 90))  # undone by the display rotation
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = stored.shape[1], stored.shape[0], "yuv420p"
        stream.set_display_rotation(rotation)
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return upright


@pytest.fixture
def rotated_video():
    """``rotated_video(path, rotation=90, frames=6)``: see :func:`write_rotated_video`."""
    return write_rotated_video
