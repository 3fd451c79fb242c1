"""rl/: target networks, the replay buffer and sigma1 mixing, the policy's choice and rollouts."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rl_v2v_gan.losses.rl_losses import step_cost
from rl_v2v_gan.rl.agent import Policy, choose, greedy_action, rollout, steps_left
from rl_v2v_gan.rl.replay_buffer import ReplayBuffer, Transitions, mix
from rl_v2v_gan.rl.targets import frozen, soft_update


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net(torch.randn(8, 3))  # train-mode forward: batch-norm running statistics move off their defaults
    return net


def _params(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


# --- soft_update ---------------------------------------------------------------------------------

def test_soft_update_tau_one_copies_exactly():
    target, source = _net(0), _net(1)
    soft_update(target, source, 1.0)
    for t, s in zip(target.state_dict().values(), source.state_dict().values()):
        assert torch.equal(t, s)


def test_soft_update_tau_zero_keeps_parameters_and_copies_buffers():
    target, source = _net(0), _net(1)
    before = _params(target)
    soft_update(target, source, 0.0)
    for t, b in zip(target.parameters(), before):
        assert torch.equal(t, b)
    for t, s in zip(target.buffers(), source.buffers()):
        assert torch.equal(t, s)
    assert not torch.equal(before[0], source[0].weight)  # the nets did differ: the test can fail


def test_soft_update_half_is_the_midpoint():
    target, source = _net(0), _net(1)
    before = _params(target)
    soft_update(target, source, 0.5)
    for t, b, s in zip(target.parameters(), before, source.parameters()):
        torch.testing.assert_close(t, (b + s) / 2)
    assert not torch.equal(target[0].weight, before[0])


def test_soft_update_small_tau_moves_toward_source():
    target, source = _net(0), _net(1)
    before = _params(target)
    soft_update(target, source, 0.01)
    for t, b, s in zip(target.parameters(), before, source.parameters()):
        torch.testing.assert_close(t, b + 0.01 * (s - b))


def test_soft_update_refuses_different_architectures():
    with pytest.raises(ValueError, match="different parameter lists"):
        soft_update(nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)), 0.5)


# --- frozen --------------------------------------------------------------------------------------

def test_frozen_stops_parameter_gradients_but_not_input_gradients():
    a, b = nn.Linear(3, 3), nn.Linear(3, 1)
    b.bias.requires_grad_(False)  # an already-frozen parameter stays frozen afterwards
    x = torch.randn(5, 3, requires_grad=True)
    with frozen(a, b):
        assert not any(p.requires_grad for p in [*a.parameters(), *b.parameters()])
        b(a(x)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in [*a.parameters(), *b.parameters()])
    assert a.weight.requires_grad and a.bias.requires_grad and b.weight.requires_grad
    assert not b.bias.requires_grad


def test_frozen_restores_flags_after_an_exception():
    a = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="boom"):
        with frozen(a):
            raise RuntimeError("boom")
    assert all(p.requires_grad for p in a.parameters())


# --- replay buffer -------------------------------------------------------------------------------

P, C, H, W = 2, 1, 4, 4


def _transitions(costs, seed=0, fill=None) -> Transitions:
    """Transitions with the given costs; frames random in [-1, 1] (or all ``fill``)."""
    n = len(costs)
    g = torch.Generator().manual_seed(seed)
    state = torch.rand(n, P, C, H, W, generator=g) * 2 - 1
    action = torch.rand(n, C, H, W, generator=g) * 2 - 1
    if fill is not None:
        state = torch.as_tensor(fill, dtype=torch.float32).view(-1, 1, 1, 1, 1).expand(n, P, C, H, W).clone()
        action = state[:, 0].clone()
    cost = torch.as_tensor(costs, dtype=torch.float32)
    done = torch.arange(n) % 3 == 2
    return Transitions(state, action, cost, done, torch.arange(n) % 3 + P - 1)


def test_buffer_wraps_around_and_overwrites_the_oldest():
    buf = ReplayBuffer(5, (P, C, H, W))
    buf.push(_transitions([0, 1, 2]))
    assert (len(buf), buf.pos) == (3, 3)
    buf.push(_transitions([3, 4, 5, 6], seed=1))
    assert (len(buf), buf.pos) == (5, 2)
    assert buf.costs.tolist() == [5, 6, 2, 3, 4]
    buf.push(_transitions([7, 8, 9, 10, 11, 12, 13], seed=2))  # more than the capacity at once
    # Only the newest 5 survive, written from pos 2 on and wrapping.
    assert (len(buf), buf.pos) == (5, 2)
    assert buf.costs.tolist() == [12, 13, 9, 10, 11]


def test_buffer_oversized_push_keeps_the_newest_in_order():
    buf = ReplayBuffer(4, (P, C, H, W))
    buf.push(_transitions([0]))
    buf.push(_transitions(list(range(10, 16)), seed=3))
    assert (len(buf), buf.pos) == (4, (1 + 4) % 4)
    # Written from slot 1 on: 12, 13, 14, 15, wrapping into slot 0.
    assert buf.costs.tolist() == [15, 12, 13, 14]


def test_buffer_uint8_round_trip_error_is_below_one_level():
    tr = _transitions([0.5] * 6, seed=4)
    buf = ReplayBuffer(8, (P, C, H, W))
    buf.push(tr)
    got = buf.get(torch.arange(6))
    assert buf.states.dtype == torch.uint8 and buf.actions.dtype == torch.uint8
    assert (got.state - tr.state).abs().max() <= 1 / 127.5
    assert (got.action - tr.action).abs().max() <= 1 / 127.5
    assert torch.equal(got.cost, tr.cost) and torch.equal(got.done, tr.done) and torch.equal(got.t, tr.t)
    ends = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1).expand(2, P, C, H, W)
    buf.push(Transitions(ends, ends[:, 0], torch.zeros(2), torch.zeros(2, dtype=torch.bool), torch.zeros(2)))
    assert torch.equal(buf.get(torch.tensor([6, 7])).state, ends)  # the range ends survive exactly


def test_next_state_is_state_shifted_with_the_action():
    tr = _transitions([1, 2, 3], seed=5)
    nxt = tr.next_state
    assert nxt.shape == tr.state.shape
    assert torch.equal(nxt[:, :-1], tr.state[:, 1:])
    assert torch.equal(nxt[:, -1], tr.action)
    assert len(tr) == 3


def test_buffer_state_dict_round_trip():
    buf = ReplayBuffer(5, (P, C, H, W))
    buf.push(_transitions([0, 1, 2, 3, 4, 5, 6], seed=6))
    state = buf.state_dict()
    other = ReplayBuffer(5, (P, C, H, W))
    other.load_state_dict(state)
    assert (len(other), other.pos) == (len(buf), buf.pos)
    idx = torch.arange(len(buf))
    for x, y in zip(buf.get(idx), other.get(idx)):
        assert torch.equal(x, y)
    # Both continue writing into the same slot.
    buf.push(_transitions([99]))
    other.push(_transitions([99]))
    assert torch.equal(buf.costs, other.costs)
    with pytest.raises(ValueError, match="do not fit"):
        ReplayBuffer(5, (P + 1, C, H, W)).load_state_dict(state)


# --- sigma1 mixing -------------------------------------------------------------------------------

N = 16


def _buffer_of(n: int) -> ReplayBuffer:
    """A buffer of n transitions with distinctive costs 100 + i and frames filled with a matching value."""
    buf = ReplayBuffer(64, (P, C, H, W))
    values = torch.linspace(-1, 1, n) if n > 1 else torch.zeros(1)
    buf.push(_transitions([100 + i for i in range(n)], fill=values))
    return buf


def test_mix_sigma1_zero_takes_only_fresh():
    fresh = _transitions([0] * N)
    batch, share = mix(fresh, _buffer_of(32), 0.0)
    assert share == 0.0
    assert torch.equal(batch.cost, fresh.cost) and torch.equal(batch.state, fresh.state)


def test_mix_sigma1_one_takes_only_buffered_once_the_buffer_is_full_enough():
    torch.manual_seed(0)
    fresh = _transitions([0] * N)
    batch, share = mix(fresh, _buffer_of(N), 1.0)  # exactly a full minibatch
    assert share == 1.0
    assert (batch.cost >= 100).all()
    # Rows stay whole: each state and action came from the same buffered transition as its cost.
    idx = (batch.cost - 100).long()
    buf = _buffer_of(N)
    assert torch.equal(batch.state, buf.get(idx).state) and torch.equal(batch.action, buf.get(idx).action)
    assert torch.equal(batch.done, buf.get(idx).done) and torch.equal(batch.t, buf.get(idx).t)


def test_mix_takes_nothing_from_a_buffer_smaller_than_a_minibatch():
    fresh = _transitions([0] * N)
    batch, share = mix(fresh, _buffer_of(N - 1), 1.0)
    assert share == 0.0
    assert torch.equal(batch.cost, fresh.cost)


def test_mix_half_draws_roughly_half():
    torch.manual_seed(0)
    fresh = _transitions([0] * 2000, seed=7)
    buf = ReplayBuffer(2000, (P, C, H, W))
    buf.push(_transitions([100] * 2000, seed=8))
    batch, share = mix(fresh, buf, 0.5)
    from_buffer = (batch.cost == 100).float().mean().item()
    assert share == pytest.approx(from_buffer)
    assert 0.45 < share < 0.55


# --- choice between candidates ----------------------------------------------------------------------

def test_choose_sigma2_zero_is_greedy_on_the_lower_q_with_ties_to_a1():
    torch.manual_seed(0)
    q1 = torch.tensor([0.1, 0.5, 0.3, 0.3, 2.0])
    q2 = torch.tensor([0.2, 0.4, 0.3, 0.0, 2.5])
    pick_a1, explored = choose(q1, q2, 0.0)
    assert pick_a1.tolist() == [True, False, True, False, True]
    assert not explored.any()


def test_choose_sigma2_one_picks_both_about_equally():
    torch.manual_seed(0)
    n = 20000
    q1, q2 = torch.zeros(n), torch.ones(n)  # greedy would always take a1
    pick_a1, explored = choose(q1, q2, 1.0)
    assert explored.all()
    assert 0.45 < pick_a1.float().mean().item() < 0.55
    # Ties under exploration are random too.
    pick_tie, _ = choose(torch.ones(n), torch.ones(n), 1.0)
    assert 0.45 < pick_tie.float().mean().item() < 0.55


def test_choose_intermediate_sigma2_explores_that_share():
    torch.manual_seed(0)
    n = 20000
    pick_a1, explored = choose(torch.zeros(n), torch.ones(n), 0.3)
    assert 0.27 < explored.float().mean().item() < 0.33
    assert pick_a1[~explored].all()  # every greedy choice took the lower Q


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *x):
        return self.fn(*x)

    def run(self, x, state=None):  # the generator's interface: a stateless per-frame map carries nothing
        return self.fn(x), None


def _stub_policy(weight: torch.Tensor | None = None) -> Policy:
    """A policy of closed-form networks: a1 = 0.5 * last frame, a2 = -last frame; q = mean |a - w|."""
    w = weight if weight is not None else torch.zeros(())
    return Policy(pred_d=_Fn(lambda s: 0.5 * s[:, -1]), gen_dn=_Fn(lambda x: -x), pred_n=_Fn(lambda s: s[:, -1]),
                  gen_nd=_Fn(lambda x: x), q_d=_Fn(lambda s, a, left: (a - w).abs().flatten(1).mean(1)))


def test_greedy_action_takes_the_lower_q_and_differentiates_through_the_action():
    state = torch.stack([torch.full((P, C, H, W), v) for v in (0.8, -0.4)])  # [2,P,C,H,W]
    target = torch.tensor(-0.6)  # q measures distance to -0.6
    a1 = (0.5 * state[:, -1]).requires_grad_(True)
    a2 = (-state[:, -1]).requires_grad_(True)
    left = torch.ones(2)
    action, q = greedy_action(_stub_policy(target), state, left, a1, a2)
    # Clip 0: a1 = 0.4 (q 1.0), a2 = -0.8 (q 0.2) -> a2; clip 1: a1 = -0.2 (q 0.4), a2 = 0.4 (q 1.0) -> a1.
    torch.testing.assert_close(q, torch.tensor([0.2, 0.4]))
    assert torch.equal(action[0], a2[0].detach()) and torch.equal(action[1], a1[1].detach())
    q.sum().backward()
    assert a1.grad[0].abs().sum() == 0 and a1.grad[1].abs().sum() > 0
    assert a2.grad[0].abs().sum() > 0 and a2.grad[1].abs().sum() == 0
    # Without candidates passed in, they are built from the policy: the same answer.
    _, q_built = greedy_action(_stub_policy(target), state, left)
    torch.testing.assert_close(q_built, q.detach())


# --- rollout ---------------------------------------------------------------------------------------

def test_rollout_transitions_are_a_chained_episode_per_clip():
    torch.manual_seed(0)
    b, t_len, p = 3, 6, 2
    real = torch.rand(b, t_len, C, H, W) * 2 - 1
    disc = _Fn(lambda x: x.flatten(1).mean(1))  # [N,C,H,W] -> [N]
    vdisc = _Fn(lambda x: 3 * x.flatten(1).mean(1))  # [B,T,C,H,W] -> [B]
    lam_rr, lam_rc, lam_v = 0.3, 0.2, 1.5
    tr, stats = rollout(_stub_policy(torch.tensor(0.1)), disc, vdisc, real, p, 0.0, lam_rr, lam_rc, lam_v)
    steps = t_len - p
    assert len(tr) == b * steps
    assert tr.state.shape == (b * steps, p, C, H, W) and tr.action.shape == (b * steps, C, H, W)
    done = tr.done.view(b, steps)
    assert done[:, -1].all() and not done[:, :-1].any()
    assert tr.t.view(b, steps).tolist() == [list(range(p - 1, t_len - 1))] * b
    states, actions, nexts = (x.unflatten(0, (b, steps)) for x in (tr.state, tr.action, tr.next_state))
    assert torch.equal(states[:, 0], real[:, :p])  # starts from the real context frames
    assert torch.equal(states[:, 1:], nexts[:, :-1])  # continues on its own actions
    # sigma2 = 0: each action is the greedy candidate of its state.
    policy = _stub_policy(torch.tensor(0.1))
    flat_state = tr.state
    a1, a2 = 0.5 * flat_state[:, -1], -flat_state[:, -1]
    left = steps_left(tr.t, t_len, p)
    greedy = torch.where((policy.q_d(flat_state, a1, left) <= policy.q_d(flat_state, a2, left)).view(-1, 1, 1, 1),
                         a1, a2)
    assert torch.equal(tr.action, greedy)
    # Costs: per-step terms against the real next frame; the last step the video loss of the rollout.
    cost = tr.cost.view(b, steps)
    mid = actions[:, :-1].flatten(0, 1)
    expected_mid = step_cost(disc(mid), mid, real[:, p:t_len - 1].flatten(0, 1), a1.view(b, steps, C, H, W)[:, :-1]
                             .flatten(0, 1), a2.view(b, steps, C, H, W)[:, :-1].flatten(0, 1), lam_rr, lam_rc)
    torch.testing.assert_close(cost[:, :-1].flatten(), expected_mid)
    generated = torch.cat([real[:, :p], actions], 1)
    torch.testing.assert_close(cost[:, -1], lam_v * F.softplus(-vdisc(generated)))
    assert (tr.cost >= 0).all()
    assert stats.mean_cost == pytest.approx(tr.cost.mean().item(), rel=1e-6)
    picked_a1 = torch.isclose(tr.action, a1).flatten(1).all(1) & ~torch.isclose(tr.action, a2).flatten(1).all(1)
    assert stats.greedy_a1_share == pytest.approx(picked_a1.float().mean().item())


def test_rollout_with_full_exploration_still_chains_and_explores():
    torch.manual_seed(0)
    b, t_len, p = 64, 5, 2
    real = torch.rand(b, t_len, C, H, W) * 2 - 1
    disc = _Fn(lambda x: x.flatten(1).mean(1))
    tr, _ = rollout(_stub_policy(), disc, disc, real, p, 1.0, 0.1, 0.1, 1.0)
    steps = t_len - p
    states, nexts = tr.state.unflatten(0, (b, steps)), tr.next_state.unflatten(0, (b, steps))
    assert torch.equal(states[:, 0], real[:, :p])
    assert torch.equal(states[:, 1:], nexts[:, :-1])
    # Random choices: both candidates appear although q (distance to 0) always prefers a1 = last / 2.
    took_a1 = torch.isclose(tr.action, 0.5 * tr.state[:, -1]).flatten(1).all(1)
    assert 0.3 < took_a1.float().mean().item() < 0.7


def test_rollout_a2_uses_the_translation_the_clip_has_built_up():
    """DESIGN §5: a2 = gen_nd(pred_n(gen_dn(.))) with gen_dn carrying its ConvLSTM state along the
    episode, as L_rc sees gen_dn of a whole clip; not gen_dn restarted on the state's p frames."""
    from rl_v2v_gan.models.generator import Generator, Predictor

    torch.manual_seed(0)
    b, t_len, p, c, hw = 2, 6, 2, 3, 16

    def gen(cls, **kw):
        net = cls(channels=c, ngf=4, n_res_blocks=1, **kw).eval()
        nn.init.normal_(net.head.weight, std=0.3)  # off the identity start, so the memory shows
        return net

    policy = Policy(pred_d=gen(Predictor, frame_size=(hw, hw)), gen_dn=gen(Generator),
                    pred_n=gen(Predictor, frame_size=(hw, hw)), gen_nd=gen(Generator),
                    q_d=_Fn(lambda s, a, left: a.flatten(1).mean(1)))
    real = torch.rand(b, t_len, c, hw, hw) * 2 - 1
    zero = _Fn(lambda x: torch.zeros(len(x)))
    tr, _ = rollout(policy, zero, zero, real, p, 0.0, 0.0, 1.0, 1.0)  # cost = log 2 + |a1 - a2|
    steps = t_len - p
    states, actions = tr.state.unflatten(0, (b, steps)), tr.action.unflatten(0, (b, steps))
    generated = torch.cat([real[:, :p], actions], 1)
    with torch.no_grad():
        carried = policy.gen_dn(generated)  # causal: frame t sees frames 0..t
        for k in range(steps - 1):
            a1 = policy.pred_d(states[:, k])
            a2 = policy.gen_nd(policy.pred_n(carried[:, k:k + p])[:, None])[:, 0]
            expected = math.log(2) + (a1 - a2).abs().flatten(1).mean(1)
            torch.testing.assert_close(tr.cost.view(b, steps)[:, k], expected)
            if k > 0:  # the old way (gen_dn restarted on the p frames) gives another a2
                restarted = policy.gen_nd(policy.pred_n(policy.gen_dn(states[:, k]))[:, None])[:, 0]
                assert not torch.allclose(restarted, a2, atol=1e-4)


@pytest.mark.parametrize("new_capacity", [3, 8])
def test_replay_resume_with_another_capacity_keeps_the_newest_in_order(new_capacity):
    from rl_v2v_gan.rl.replay_buffer import ReplayBuffer, Transitions

    old = ReplayBuffer(5, (2, 1, 4, 4))
    for i in range(7):  # wraps: holds costs 2..6, the next slot to write is 2
        one = torch.full((1, 2, 1, 4, 4), 0.0)
        old.push(Transitions(one, one[:, 0], torch.tensor([float(i)]), torch.tensor([False]), torch.tensor([1])))
    new = ReplayBuffer(new_capacity, (2, 1, 4, 4))
    new.load_state_dict(old.state_dict())
    kept = [2.0, 3.0, 4.0, 5.0, 6.0][-new_capacity:]
    assert len(new) == len(kept) and new.costs[: len(kept)].tolist() == kept  # oldest first, nothing invented
    assert new.pos == len(kept) % new_capacity


def test_rollout_tells_q_the_steps_left():
    """Q's time input during a rollout is steps_left(t): 1 at the first state, 1/(T-p) at the last."""
    b, t_len, p = 2, 6, 2
    seen = []
    policy = _stub_policy()
    policy.q_d = _Fn(lambda s, a, left: seen.append(left.clone()) or (a.flatten(1).mean(1) * 0))
    disc = _Fn(lambda x: x.flatten(1).mean(1))
    tr, _ = rollout(policy, disc, disc, torch.zeros(b, t_len, C, H, W), p, 0.0, 0.1, 0.1, 1.0)
    got = torch.stack([x[:b] for x in seen], 1)  # [B,steps]: each q_pair call holds both candidates
    torch.testing.assert_close(got, steps_left(tr.t, t_len, p).view(b, -1))
    assert got[0].tolist() == [1.0, 0.75, 0.5, 0.25]
