"""Networks of DESIGN §3."""

from .blocks import ConvLSTM, ResidualBlock
from .discriminator import FrameDiscriminator, VideoDiscriminator
from .generator import Generator, Predictor
from .networks import Networks, build_networks, networks_from_config
from .q_network import QNetwork

__all__ = ["ConvLSTM", "ResidualBlock", "FrameDiscriminator", "VideoDiscriminator", "Generator", "Predictor",
           "Networks", "build_networks", "networks_from_config", "QNetwork"]
