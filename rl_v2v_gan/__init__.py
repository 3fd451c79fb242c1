"""RL-V2V-GAN: unpaired video-to-video translation with a Recycle-GAN-style spatio-temporal GAN
whose generators are also trained as a DDPG policy. See DESIGN.md for the system."""

__version__ = "0.1.0"
