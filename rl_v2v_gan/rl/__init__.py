"""Reinforcement learning (DESIGN §5): policy and rollouts, replay buffer, target networks."""
