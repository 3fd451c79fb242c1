"""RL losses (DESIGN §5): per-step cost, TD target, Huber critic loss, actor loss.

Costs are non-negative (reward = -cost), which is what the Q-network's ReLU head can represent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .gan_losses import adv_per_sample


def per_sample_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per sample: ``[N,...] -> [N]``."""
    return (a - b).abs().flatten(1).mean(1)


def step_cost(action_logits: torch.Tensor, action: torch.Tensor, real_next: torch.Tensor, cand_direct: torch.Tensor,
              cand_recycled: torch.Tensor, lambda_rr: float, lambda_rc: float, gan_mode: str = "vanilla"
              ) -> torch.Tensor:
    """Cost of every step but the last, ``[N]``:
    ``L_g(a_t) + lambda_rr |a_t - d[t+1]|_1 + lambda_rc |a1 - a2|_1``.

    ``action_logits`` are ``disc_d``'s logits on the chosen action ``a_t``: ``[N]``, or ``[N,h,w]``
    from a PatchGAN discriminator (averaged per sample).
    """
    adv = adv_per_sample(action_logits, True, gan_mode).reshape(len(action_logits), -1).mean(1)
    return (adv + lambda_rr * per_sample_l1(action, real_next)
            + lambda_rc * per_sample_l1(cand_direct, cand_recycled))


def final_cost(rollout_logits: torch.Tensor, lambda_v: float, gan_mode: str = "vanilla") -> torch.Tensor:
    """Cost of the last step (done = 1), ``[B]``: ``lambda_v L_v`` of the generated rollout under ``vdisc_d``."""
    return lambda_v * adv_per_sample(rollout_logits, True, gan_mode)


def td_target(cost: torch.Tensor, done: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """``y = cost + gamma (1 - done) q_target(s', mu_target(s'))``; all ``[N]``."""
    return cost + gamma * (1.0 - done.float()) * next_q


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Huber loss on ``q(s, a) - y`` (the target carries no gradient)."""
    return F.smooth_l1_loss(q, target.detach())


def actor_loss(q_of_policy: torch.Tensor) -> torch.Tensor:
    """Scale-free DDPG actor loss (TD3+BC): ``mean q_d(s, mu(s)) / mean |q_d(s, mu(s))|``.

    The divisor is detached, so the gradient is that of the expected cost, divided by its own
    size: the actor's pull stays ``lambda_pg`` however large the costs, and Q, grow.
    """
    scale = q_of_policy.detach().abs().mean().clamp_min(1e-8)
    return q_of_policy.mean() / scale
