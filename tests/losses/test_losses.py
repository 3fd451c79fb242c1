"""losses/: the GAN terms of DESIGN §4 and the RL terms of §5 against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from rl_v2v_gan.losses import gan_losses as G
from rl_v2v_gan.losses.rl_losses import actor_loss, critic_loss, final_cost, per_sample_l1, step_cost, td_target


def _clip(b=2, t=5, c=1, h=2, w=3) -> torch.Tensor:
    """Every element distinct, so a wrong index shows."""
    return torch.arange(b * t * c * h * w, dtype=torch.float32).view(b, t, c, h, w)


# --- windows -------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [1, 2, 3])
def test_windows_rows_are_each_clips_windows_and_next_frames(p):
    x = _clip()
    b, t = x.shape[:2]
    w, nxt = G.windows(x, p)
    assert w.shape == (b * (t - p), p, *x.shape[2:]) and nxt.shape == (b * (t - p), *x.shape[2:])
    for bi in range(b):
        for k in range(t - p):
            row = bi * (t - p) + k
            assert torch.equal(w[row], x[bi, k:k + p])
            assert torch.equal(nxt[row], x[bi, k + p])


def test_windows_need_more_frames_than_context():
    with pytest.raises(ValueError, match="T=2"):
        G.windows(_clip(t=2), 2)


# --- adversarial losses ----------------------------------------------------------------------------

LOGITS = torch.tensor([-2.0, -0.5, 0.0, 1.5, 3.0])
FAKE = torch.tensor([0.7, -1.2, 2.2])


def _bce(x: float, target: float) -> float:
    s = 1 / (1 + math.exp(-x))
    return -(target * math.log(s) + (1 - target) * math.log(1 - s))


def test_generator_adv_loss_vanilla_is_bce_toward_real():
    expected = sum(_bce(v, 1.0) for v in LOGITS.tolist()) / len(LOGITS)
    assert G.generator_adv_loss(LOGITS).item() == pytest.approx(expected, rel=1e-6)


def test_generator_adv_loss_lsgan_is_squared_distance_to_one():
    expected = sum((v - 1) ** 2 for v in LOGITS.tolist()) / len(LOGITS)
    assert G.generator_adv_loss(LOGITS, "lsgan").item() == pytest.approx(expected, rel=1e-6)


def test_discriminator_loss_vanilla_and_lsgan():
    real_bce = sum(_bce(v, 1.0) for v in LOGITS.tolist()) / len(LOGITS)
    fake_bce = sum(_bce(v, 0.0) for v in FAKE.tolist()) / len(FAKE)
    assert G.discriminator_loss(LOGITS, FAKE).item() == pytest.approx(0.5 * (real_bce + fake_bce), rel=1e-6)
    real_ls = sum((v - 1) ** 2 for v in LOGITS.tolist()) / len(LOGITS)
    fake_ls = sum(v**2 for v in FAKE.tolist()) / len(FAKE)
    assert G.discriminator_loss(LOGITS, FAKE, "lsgan").item() == pytest.approx(0.5 * (real_ls + fake_ls), rel=1e-6)


def test_vanilla_loss_is_stable_for_large_logits():
    big = torch.tensor([-200.0, 200.0])
    assert torch.isfinite(G.discriminator_loss(big, -big))
    assert G.generator_adv_loss(torch.tensor([200.0])).item() == pytest.approx(0.0, abs=1e-6)
    assert G.generator_adv_loss(torch.tensor([-200.0])).item() == pytest.approx(200.0)


def test_unknown_gan_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="vanilla, lsgan"):
        G.generator_adv_loss(LOGITS, "wgan")


def test_l1_terms():
    a, b = torch.tensor([[0.0, 1.0], [2.0, -1.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    for fn in (G.recurrent_loss, G.recycle_loss, G.cycle_loss):  # hand-computed, not via the shared helper
        assert fn(a, b).item() == pytest.approx((1 + 0 + 2 + 2) / 4)
    assert per_sample_l1(a, b).tolist() == [0.5, 2.0]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)  # [N,C,H,W] frames
    assert G.recurrent_loss(x, y).item() == pytest.approx(float(np.abs(x.numpy() - y.numpy()).mean()), rel=1e-6)


# --- RL terms --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["vanilla", "lsgan"])
def test_costs_are_non_negative(mode):
    g = torch.Generator().manual_seed(0)
    n = 64
    logits = torch.randn(n, generator=g) * 5
    frames = [torch.rand(n, 3, 4, 4, generator=g) * 2 - 1 for _ in range(4)]
    cost = step_cost(logits, *frames, lambda_rr=0.1, lambda_rc=0.1, gan_mode=mode)
    assert cost.shape == (n,) and (cost >= 0).all()
    final = final_cost(logits, 1.0, mode)
    assert final.shape == (n,) and (final >= 0).all()
    assert (final_cost(logits, 0.0, mode) == 0).all()


def test_step_cost_matches_its_formula():
    logits = torch.tensor([0.3, -1.0])
    action = torch.tensor([[0.5, 0.5], [0.0, -1.0]])
    real_next = torch.tensor([[0.0, 0.5], [1.0, 1.0]])
    a1 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    a2 = torch.tensor([[0.0, 0.0], [0.0, 0.5]])
    expected = [_bce(0.3, 1.0) + 0.2 * 0.25 + 0.4 * 0.5, _bce(-1.0, 1.0) + 0.2 * 1.5 + 0.4 * 0.25]
    got = step_cost(logits, action, real_next, a1, a2, 0.2, 0.4)
    torch.testing.assert_close(got, torch.tensor(expected))
    assert final_cost(torch.tensor([0.3]), 2.0).item() == pytest.approx(2 * _bce(0.3, 1.0), rel=1e-6)


def test_td_target_hand_computed():
    cost = torch.tensor([1.0, 2.0, 0.5])
    done = torch.tensor([False, True, False])
    next_q = torch.tensor([3.0, 4.0, 10.0])
    y = td_target(cost, done, next_q, 0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 3.0, 2.0, 0.5 + 0.9 * 10.0]))


def test_critic_loss_is_huber_and_does_not_differentiate_the_target():
    q = torch.tensor([1.0, 5.0, -1.0], requires_grad=True)
    y = torch.tensor([1.5, 2.0, -1.0], requires_grad=True)
    loss = critic_loss(q, y)
    # |d| = 0.5 -> 0.5 d^2 = 0.125; |d| = 3 -> |d| - 0.5 = 2.5; 0 -> 0.
    assert loss.item() == pytest.approx((0.125 + 2.5 + 0.0) / 3)
    loss.backward()
    assert y.grad is None
    torch.testing.assert_close(q.grad, torch.tensor([-0.5, 1.0, 0.0]) / 3)


def test_actor_loss_gradient_is_the_mean_q_gradient_over_its_own_size():
    q = torch.tensor([1.0, 3.0], requires_grad=True)
    actor_loss(q).backward()
    # d/dq_i mean(q) = 1/N = 0.5, divided by the detached mean |q| = 2.
    torch.testing.assert_close(q.grad, torch.tensor([0.25, 0.25]))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 100.0])
def test_actor_weight_is_unchanged_when_q_is_scaled(scale):
    """TD3+BC's normalisation: the policy's gradient does not grow with the costs' scale."""
    theta = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    (actor_loss(torch.relu(theta + 3) * scale)).backward()
    # q = theta + 3 = [3.5, 2, 5], mean 3.5: dL/dtheta_i = (1/3) / 3.5 whatever the scale.
    torch.testing.assert_close(theta.grad, torch.full((3,), 1 / 3 / 3.5))


def test_temporal_consistency_penalises_flicker_where_the_input_holds_still_and_not_motion():
    g = torch.Generator().manual_seed(0)
    still = torch.rand(1, 1, 3, 16, 16, generator=g).mul(2).sub(1).expand(2, 4, 3, 16, 16).contiguous()
    noisy_in = still + 0.08 * torch.randn(still.shape, generator=g)  # per-frame sensor noise (std 0.04 in [0, 1])
    flicker = still + 0.2 * torch.randn(still.shape, generator=g)
    assert G.temporal_consistency_loss(still, noisy_in).item() == 0.0  # a steady output costs nothing
    flicker_cost = G.temporal_consistency_loss(flicker, noisy_in).item()
    assert flicker_cost > 0.1  # ~0.8 of the flicker's mean |difference| (the mask is ~0.85 on noise)
    # Where the input itself changes completely, the same output change is not penalised.
    moving = torch.stack([still[:, 0] * (-1) ** t for t in range(4)], 1)
    assert G.temporal_consistency_loss(flicker, moving).item() < 0.05 * flicker_cost
    out = flicker.clone().requires_grad_()
    inp = noisy_in.clone().requires_grad_()
    G.temporal_consistency_loss(out, inp).backward()
    assert out.grad.abs().sum() > 0 and inp.grad is None  # the mask carries no gradient
    with pytest.raises(ValueError, match="one shape"):
        G.temporal_consistency_loss(out[:, 1:], inp)


def test_relative_temporal_consistency_allows_the_target_domains_own_flicker_and_no_more():
    g = torch.Generator().manual_seed(0)
    still = torch.rand(1, 1, 3, 16, 16, generator=g).mul(2).sub(1).expand(2, 6, 3, 16, 16).contiguous()
    clean_in = still.clone()  # the input holds still: the mask is 1 everywhere
    noisy_target = still + 0.08 * torch.randn(still.shape, generator=g)  # the target domain has sensor noise
    as_noisy = still + 0.08 * torch.randn(still.shape, generator=g)  # painting that noise
    much_noisier = still + 0.3 * torch.randn(still.shape, generator=g)
    # Against a clean target (level 0) it is the plain term's per-clip still-region flicker.
    plain = G.relative_temporal_consistency_loss(as_noisy, clean_in, still)
    assert plain.item() == pytest.approx(G.temporal_consistency_loss(as_noisy, clean_in).item(), rel=1e-5)
    # Against a noisy target, painting noise of the same level costs little (the target's own mask
    # down-weights its largest changes, so its level reads ~10 % low); more noise costs.
    assert G.relative_temporal_consistency_loss(as_noisy, clean_in, noisy_target).item() < 0.1 * plain.item()
    excess = G.relative_temporal_consistency_loss(much_noisier, clean_in, noisy_target)
    # By hand: the input holds still (mask 1), so the output's flicker is its plain mean |difference|;
    # the target's level weighs each pixel's channel-mean |difference| by exp(-50 (d/2)^2 averaged over channels).
    d_t = noisy_target[:, 1:] - noisy_target[:, :-1]
    w = torch.exp(-50 * (d_t / 2).square().mean(2))
    level = ((w * d_t.abs().mean(2)).flatten(1).sum(1) / w.flatten(1).sum(1)).mean()
    flick = (much_noisier[:, 1:] - much_noisier[:, :-1]).abs().flatten(1).mean(1)
    torch.testing.assert_close(excess, torch.relu(flick - level).mean())
    assert excess.item() > 0.1
    out = much_noisier.clone().requires_grad_()
    target = noisy_target.clone().requires_grad_()
    G.relative_temporal_consistency_loss(out, clean_in, target).backward()
    assert out.grad.abs().sum() > 0 and target.grad is None  # the level is a statistic, not a path
    with pytest.raises(ValueError, match="one shape"):
        G.relative_temporal_consistency_loss(out, clean_in, target[:, 1:])
