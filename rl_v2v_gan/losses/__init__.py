"""Losses: GAN terms (DESIGN §4) and RL terms (DESIGN §5)."""
