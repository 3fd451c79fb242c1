"""The policy of DESIGN §5: candidate actions, sigma2 selection, and batched rollouts.

For an episode of domain d (the other domain is n), the state is the last p frames and each
step proposes two next frames of domain d:

    a1 = pred_d(s)                      direct prediction
    a2 = gen_nd(pred_n(gen_dn(s)))      recycled through the other domain

and picks the one with the lower ``q_d`` (or, with probability sigma2, one at random). Q also
reads how much of the episode is left (:func:`steps_left`). All episodes of a batch step
together; only the T-p steps of an episode are sequential.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..losses.rl_losses import final_cost, step_cost
from .replay_buffer import Transitions

DOMAINS = ("a", "b")
OTHER = {"a": "b", "b": "a"}


@dataclass
class Policy:
    """The networks that act for domain d (online or target copies)."""

    pred_d: nn.Module
    gen_dn: nn.Module
    pred_n: nn.Module
    gen_nd: nn.Module
    q_d: nn.Module


def policy_for(nets, domain: str, target: bool = False, get=None) -> Policy:
    """The policy of ``domain`` from a :class:`~rl_v2v_gan.models.Networks`.

    ``get(name)`` maps a network name to the module to call (the trainer passes its DDP
    wrappers this way); by default the plain modules, or their ``_target`` copies.
    """
    other = OTHER[domain]
    suffix = "_target" if target else ""
    get = get or (lambda name: getattr(nets, name + suffix))
    return Policy(get(f"pred_{domain}"), get(f"gen_{domain}{other}"), get(f"pred_{other}"),
                  get(f"gen_{other}{domain}"), get(f"q_{domain}"))


def candidates(policy: Policy, state: torch.Tensor, translated: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``state [N,p,C,H,W]`` -> (a1, a2), each ``[N,C,H,W]``.

    ``translated`` is ``gen_dn`` of the state's frames ``[N,p,C,H,W]`` when the caller has it with
    the state the clip has built up (the rollout carries it, as ``L_rc`` sees ``gen_dn`` of a clip);
    without it (replayed states: only their p frames exist) ``gen_dn`` runs on the p frames alone.
    """
    a1 = policy.pred_d(state)
    if translated is None:
        translated = policy.gen_dn(state)
    a2 = policy.gen_nd(policy.pred_n(translated)[:, None])[:, 0]
    return a1, a2


def choose(q1: torch.Tensor, q2: torch.Tensor, sigma2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick a1 (True) or a2 (False) per element: greedy on the lower Q, random with prob. sigma2.

    Returns (pick_a1, explored), both ``[N]`` bool.
    """
    explored = torch.rand(q1.shape, device=q1.device) < sigma2
    coin = torch.rand(q1.shape, device=q1.device) < 0.5
    return torch.where(explored, coin, q1 <= q2), explored


def steps_left(t: torch.Tensor, clip_length: int, p: int) -> torch.Tensor:
    """Q's time input for states ending at frame ``t`` ([N] int): the share of the episode's
    ``T - p`` actions still to take, this one included: 1 at the first state (t = p-1), 1/(T-p) at
    the last, 0 past the end (a terminal next state, whose value the TD target ignores)."""
    return (clip_length - 1 - t).clamp(min=0).float() / (clip_length - p)


def q_pair(q_d: nn.Module, state: torch.Tensor, a1: torch.Tensor, a2: torch.Tensor, left: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q_d(s, a1), q_d(s, a2))`` in one batched call (half the kernel launches)."""
    return q_d(torch.cat([state, state]), torch.cat([a1, a2]), torch.cat([left, left])).chunk(2)


def select(pick_a1: torch.Tensor, a1: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
    return torch.where(pick_a1.view(-1, *[1] * (a1.dim() - 1)), a1, a2)


def greedy_action(policy: Policy, state: torch.Tensor, left: torch.Tensor, a1: torch.Tensor | None = None,
                  a2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """mu(s): the candidate with the lower ``q_d`` and that Q value, ``[N]``.

    ``left`` is Q's time input (:func:`steps_left`). The choice is not differentiated; the Q value
    is, through the chosen action (DDPG actor). ``a1``/``a2`` may be passed in when already computed.
    """
    if a1 is None or a2 is None:
        a1, a2 = candidates(policy, state)
    q1, q2 = q_pair(policy.q_d, state, a1, a2, left)
    pick_a1 = (q1 <= q2).detach()
    return select(pick_a1, a1, a2), torch.where(pick_a1, q1, q2)


@dataclass
class RolloutStats:
    """0-d tensors on the rollout's device (read back with the step's other logs)."""

    greedy_a1_share: torch.Tensor  # among greedy choices, the share that took a1
    mean_cost: torch.Tensor


@torch.no_grad()
def rollout(policy: Policy, disc_d: nn.Module, vdisc_d: nn.Module, real: torch.Tensor, p: int, sigma2: float,
            lambda_rr: float, lambda_rc: float, lambda_v: float, gan_mode: str = "vanilla"
            ) -> tuple[Transitions, RolloutStats]:
    """Roll out one episode per clip of ``real [B,T,C,H,W]`` on the policy's own frames.

    Returns the ``B*(T-p)`` transitions ordered episode-major (row ``b*(T-p) + k`` is step k of
    episode b, whose state ends at frame ``t = p-1+k``) and summary statistics.
    """
    b, t_len = real.shape[:2]
    steps = t_len - p
    state = real[:, :p]  # [B,p,C,H,W]: starts from real frames d[0..p-1]
    # a2 is computed as L_rc trains it (DESIGN §5): gen_dn carries its ConvLSTM state along the
    # episode, so the translated window is gen_dn of the whole clip so far, one new frame a step.
    translated, memory = policy.gen_dn.run(state)
    states, actions, a1s, a2s, picks, explored_all = [], [], [], [], [], []
    for k in range(steps):  # sequential by nature: each state contains the previous action
        a1, a2 = candidates(policy, state, translated)
        left = torch.full((b,), (steps - k) / steps, device=real.device)  # = steps_left(p-1+k, T, p)
        pick_a1, explored = choose(*q_pair(policy.q_d, state, a1, a2, left), sigma2)
        action = select(pick_a1, a1, a2)
        states.append(state)
        actions.append(action)
        a1s.append(a1)
        a2s.append(a2)
        picks.append(pick_a1)
        explored_all.append(explored)
        state = torch.cat([state[:, 1:], action[:, None]], 1)
        if k + 1 < steps:  # the last action's translation is never used
            new, memory = policy.gen_dn.run(action[:, None], memory)
            translated = torch.cat([translated[:, 1:], new], 1)

    action = torch.stack(actions, 1)  # [B,steps,C,H,W]
    # Costs need no sequential loop: every step but the last in one batch, then the whole rollout.
    cost = torch.empty(b, steps, device=real.device)
    if steps > 1:
        mid = slice(0, steps - 1)
        frames = action[:, mid].flatten(0, 1)  # [B*(steps-1),C,H,W]
        cost[:, mid] = step_cost(disc_d(frames), frames, real[:, p:p + steps - 1].flatten(0, 1),
                                 torch.stack(a1s[:-1], 1).flatten(0, 1), torch.stack(a2s[:-1], 1).flatten(0, 1),
                                 lambda_rr, lambda_rc, gan_mode).view(b, steps - 1)
    generated = torch.cat([real[:, :p], action], 1)  # [B,T,C,H,W]: real context, then the actions
    cost[:, -1] = final_cost(vdisc_d(generated), lambda_v, gan_mode)

    done = torch.zeros(b, steps, dtype=torch.bool, device=real.device)
    done[:, -1] = True
    ts = (torch.arange(steps, device=real.device) + p - 1).expand(b, steps)
    tr = Transitions(torch.stack(states, 1).flatten(0, 1), action.flatten(0, 1), cost.flatten(), done.flatten(),
                     ts.flatten())
    pick, explored = torch.stack(picks, 1), torch.stack(explored_all, 1)
    greedy = ~explored
    share = (pick & greedy).sum() / greedy.sum().clamp(min=1)
    return tr, RolloutStats(share, cost.mean())


