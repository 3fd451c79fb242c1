"""Evidence that the RL part learns (DESIGN §5 "Evidence"): on a fixed buffer the critic's TD
error falls, and with a fixed critic actor steps lower q(s, mu(s))."""

import torch

from rl_v2v_gan.losses.rl_losses import actor_loss
from rl_v2v_gan.rl.agent import greedy_action, policy_for, steps_left
from rl_v2v_gan.rl.targets import frozen
from rl_v2v_gan.data.dataset import to_float


def test_steps_left_runs_from_one_to_the_last_step():
    t = torch.arange(1, 6)  # p = 2, T = 6: states end at frames 1..4; t = 5 is past the end
    assert steps_left(t, 6, 2).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_td_error_falls_on_a_fixed_buffer(tiny_config, make_trainer, make_batch):
    trainer = make_trainer(tiny_config(method="rl_v2v_gan", learning_rate=1e-2))
    trainer.nets.train()
    real = {d: to_float(make_batch()[d]) for d in "ab"}
    logs = {}
    fixed = trainer._minibatch(trainer._collect(real, logs), logs)  # the same transitions every step
    errors = []
    for _ in range(40):
        trainer._critic_phase(fixed, logs)
        errors.append(logs["rl/td_error_a"] + logs["rl/td_error_b"])
    assert max(errors[-10:]) < 0.1 * errors[0], errors


def test_actor_steps_lower_q_with_a_fixed_critic(tiny_config, make_trainer, make_batch):
    trainer = make_trainer(tiny_config(method="rl_v2v_gan", learning_rate=1e-2))
    nets = trainer.nets
    nets.train()
    real = {d: to_float(make_batch()[d]) for d in "ab"}
    logs = {}
    fixed = trainer._minibatch(trainer._collect(real, logs), logs)
    for _ in range(30):  # a critic that has learned something about the actions, then fixed
        trainer._critic_phase(fixed, logs)
    states = fixed["a"]
    left = steps_left(states.t, trainer.cfg.clip_length, trainer.p)
    policy = policy_for(nets, "a")
    params = [p for net in nets.role("G") for p in net.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    critic_before = [p.clone() for p in nets.q_a.parameters()]

    def q_now():
        with torch.no_grad():
            return float(greedy_action(policy, states.state, left)[1].mean())

    start = q_now()
    with frozen(nets.q_a):
        for _ in range(15):
            opt.zero_grad()
            actor_loss(greedy_action(policy, states.state, left)[1]).backward()
            opt.step()
    assert q_now() < 0.9 * start, (start, q_now())
    assert all(torch.equal(a, b) for a, b in zip(critic_before, nets.q_a.parameters()))
