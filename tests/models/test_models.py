import functools

import pytest
import torch
from torch import nn

from rl_v2v_gan.data.dataset import to_float, to_uint8
from rl_v2v_gan.models.generator import LOWPASS_RADIUS, RESIDUAL_MARGIN, lowpass, residual_output
from rl_v2v_gan.models import (
    ConvLSTM,
    Generator,
    Predictor,
    QNetwork,
    ResidualBlock,
    build_networks,
)

# (T, H, W, C): square, single-channel non-square, and wide frames.
SHAPES = [(4, 32, 32, 3), (3, 16, 24, 1), (5, 24, 40, 3)]
P = 2  # context frames
ALL_NAMES = ("gen_ab", "gen_ba", "pred_a", "pred_b", "disc_a", "disc_b", "vdisc_a", "vdisc_b", "q_a", "q_b")
TARGETED = ("gen_ab", "gen_ba", "pred_a", "pred_b", "q_a", "q_b")


def _rand(*shape, seed=0) -> torch.Tensor:
    """Uniform in [-1, 1], like normalised frames."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@functools.lru_cache(maxsize=None)
def _nets(shape, method="rl_v2v_gan", norm="instance"):
    torch.manual_seed(0)
    return build_networks(method, shape, context_frames=P, ngf=4, ndf=4, n_res_blocks=1, norm=norm).eval()


def _trained_head(net: Generator) -> Generator:
    """A non-zero head, as after training: the residual start makes an untrained network the
    identity, which would hide what the tests below look at (memory, causality, context)."""
    nn.init.normal_(net.head.weight, std=0.1)
    return net


def _gen(norm="instance", channels=3, residual=True) -> Generator:
    torch.manual_seed(0)
    return _trained_head(Generator(channels, ngf=4, n_res_blocks=1, norm=norm, residual=residual).eval())


def _pred(frames=3, residual=True, frame_size=(16, 16)) -> Predictor:
    torch.manual_seed(0)
    return _trained_head(Predictor(frames, channels=3, ngf=4, n_res_blocks=1, residual=residual,
                                   frame_size=frame_size).eval())


def _frames(*shape, seed=0) -> torch.Tensor:
    """Normalised uint8 frames: the values +-1 included, where atanh is infinite."""
    u8 = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    u8.view(-1)[:2] = torch.tensor([0, 255], dtype=torch.uint8)
    return u8.float() / 127.5 - 1


# ---------------------------------------------------------------- shapes and shape errors


@pytest.mark.parametrize("shape", SHAPES)
def test_generator_and_predictor_shapes(shape):
    t, h, w, c = shape
    nets = _nets(shape)
    with torch.no_grad():
        assert nets.gen_ab(_rand(2, t, c, h, w)).shape == (2, t, c, h, w)
        assert nets.pred_a(_rand(2, P, c, h, w)).shape == (2, c, h, w)


@pytest.mark.parametrize("shape", SHAPES)
def test_discriminator_and_q_shapes(shape):
    t, h, w, c = shape
    nets = _nets(shape)
    with torch.no_grad():
        assert nets.disc_a(_rand(2 * t, c, h, w)).shape == (2 * t,)
        assert nets.vdisc_a(_rand(2, t, c, h, w)).shape == (2,)
        assert nets.q_a(_rand(2, P, c, h, w), _rand(2, c, h, w, seed=1), torch.ones(2)).shape == (2,)


@pytest.mark.parametrize("size", [(18, 32), (32, 30)])
def test_sizes_not_divisible_by_4_are_rejected(size):
    h, w = size
    nets = _nets((4, 32, 32, 3))
    with pytest.raises(ValueError, match=r"Generator: expected \[B,T,3,H,W\] with H, W divisible by 4"):
        nets.gen_ab(_rand(2, 4, 3, h, w))
    with pytest.raises(ValueError, match=r"Predictor: expected \[B,2,3,H,W\] with H, W divisible by 4"):
        nets.pred_a(_rand(2, P, 3, h, w))
    with pytest.raises(ValueError, match=r"VideoDiscriminator: expected \[B,T,3,H,W\] with H, W divisible by 4"):
        nets.vdisc_a(_rand(2, 4, 3, h, w))


def test_wrong_channel_count_is_rejected():
    nets = _nets((4, 32, 32, 3))
    clip, frames = _rand(2, 4, 1, 32, 32), _rand(8, 1, 32, 32)
    with pytest.raises(ValueError, match=r"Generator: expected \[B,T,3,H,W\]"):
        nets.gen_ab(clip)
    with pytest.raises(ValueError, match=r"Predictor: expected \[B,2,3,H,W\]"):
        nets.pred_a(clip[:, :P])
    with pytest.raises(ValueError, match=r"FrameDiscriminator: expected \[N,3,H,W\]"):
        nets.disc_a(frames)
    with pytest.raises(ValueError, match=r"VideoDiscriminator: expected \[B,T,3,H,W\]"):
        nets.vdisc_a(clip)
    with pytest.raises(ValueError, match=r"QNetwork: expected state \[B,2,3,H,W\], action \[B,3,H,W\]"):
        nets.q_a(clip[:, :P], _rand(2, 3, 32, 32), torch.ones(2))
    with pytest.raises(ValueError, match=r"QNetwork: expected"):
        nets.q_a(_rand(2, P, 3, 32, 32), frames[:2], torch.ones(2))


def test_wrong_rank_and_frame_count_are_rejected():
    nets = _nets((4, 32, 32, 3))
    with pytest.raises(ValueError, match=r"Generator: expected"):
        nets.gen_ab(_rand(8, 3, 32, 32))  # frames, not a clip
    with pytest.raises(ValueError, match=r"Predictor: expected \[B,2,3,H,W\]"):
        nets.pred_a(_rand(2, 3, 3, 32, 32))  # p + 1 frames
    with pytest.raises(ValueError, match=r"FrameDiscriminator: expected"):
        nets.disc_a(_rand(2, 4, 3, 32, 32))
    with pytest.raises(ValueError, match=r"QNetwork: expected state"):
        nets.q_a(_rand(2, 3, 32, 32), _rand(2, 3, 32, 32), torch.ones(2))  # state without its time axis
    with pytest.raises(ValueError, match=r"QNetwork: expected state"):
        nets.q_a(_rand(2, P, 3, 32, 32), _rand(2, 3, 16, 16), torch.ones(2))  # action of another size


# ---------------------------------------------------------------- ResidualBlock


def _last_norm(block: ResidualBlock) -> nn.Module:
    return block.body[-1]


def _silence_body(block: ResidualBlock) -> None:
    """Zero the last norm's affine transform, so the block's output is its shortcut alone."""
    with torch.no_grad():
        _last_norm(block).weight.zero_()
        _last_norm(block).bias.zero_()


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("in_ch, out_ch, stride", [(4, 8, 2), (4, 8, 1), (4, 4, 2)])
def test_residual_block_projection_shortcut(dims, norm, in_ch, out_ch, stride):
    torch.manual_seed(0)
    block = ResidualBlock(in_ch, out_ch, stride=stride, dims=dims, norm=norm)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    assert isinstance(block.shortcut, conv)
    assert block.shortcut.kernel_size == (1,) * dims and block.shortcut.stride == (stride,) * dims
    x = _rand(2, in_ch, *(8,) * dims)  # [N,C,H,W] or [N,C,T,H,W]
    y = block(x)
    assert y.shape == (2, out_ch, *(8 // stride,) * dims)
    _silence_body(block)
    torch.testing.assert_close(block(x), block.shortcut(x), rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("dims, stride", [(2, 1), (3, 1), (3, (1, 1, 1))])
def test_residual_block_identity_shortcut(dims, stride, norm):
    torch.manual_seed(0)
    block = ResidualBlock(4, 4, stride=stride, dims=dims, norm=norm)
    assert isinstance(block.shortcut, nn.Identity)
    x = _rand(2, 4, *(8,) * dims)
    assert not torch.equal(block(x), x)
    _silence_body(block)
    assert torch.equal(block(x), x)


def test_residual_block_3d_anisotropic_stride():
    torch.manual_seed(0)
    block = ResidualBlock(4, 8, stride=(1, 2, 2), dims=3)
    assert isinstance(block.shortcut, nn.Conv3d) and block.shortcut.stride == (1, 2, 2)
    assert block(_rand(2, 4, 3, 8, 8)).shape == (2, 8, 3, 4, 4)  # [N,C,T,H,W]: time kept


@pytest.mark.parametrize("dims", [2, 3])
def test_residual_block_norms_differ_in_batch_dependence(dims):
    """Instance norm treats samples independently; batch norm (training) mixes them and tracks stats."""
    x = _rand(4, 4, *(8,) * dims)
    torch.manual_seed(0)
    inst = ResidualBlock(4, 4, dims=dims, norm="instance")
    torch.testing.assert_close(inst(x)[:1], inst(x[:1]))
    assert type(_last_norm(inst)).__name__ == f"InstanceNorm{dims}d"
    torch.manual_seed(0)
    batch = ResidualBlock(4, 4, dims=dims, norm="batch")
    assert type(_last_norm(batch)).__name__ == f"BatchNorm{dims}d"
    assert not torch.allclose(batch(x)[:1], batch(x[:1]))
    assert _last_norm(batch).num_batches_tracked.item() == 2
    assert _last_norm(batch).running_mean.abs().sum() > 0


def test_unknown_norm_is_rejected():
    with pytest.raises(ValueError, match="unknown norm 'group'.*valid: instance, batch"):
        ResidualBlock(4, 4, norm="group")


# ---------------------------------------------------------------- ConvLSTM


def test_conv_lstm_zero_state_default_and_state_shape():
    torch.manual_seed(0)
    lstm = ConvLSTM(3, 5)
    x = _rand(2, 4, 3, 8, 12)  # [B,T,C,H,W]
    out, (h, c) = lstm(x)
    assert out.shape == (2, 4, 5, 8, 12)
    assert h.shape == c.shape == (2, 5, 8, 12)
    assert torch.equal(out[:, -1], h)
    zeros = torch.zeros(2, 5, 8, 12)
    out_z, (h_z, c_z) = lstm(x, (zeros, zeros))
    assert torch.equal(out, out_z) and torch.equal(h, h_z) and torch.equal(c, c_z)
    ones = torch.ones(2, 5, 8, 12)
    assert not torch.allclose(lstm(x, (ones, ones))[0], out)  # the state is actually used


def test_conv_lstm_chunks_equal_one_pass():
    torch.manual_seed(0)
    lstm = ConvLSTM(3, 5)
    x = _rand(2, 5, 3, 8, 8)
    out, (h, c) = lstm(x)
    first, state = lstm(x[:, :2])
    second, (h2, c2) = lstm(x[:, 2:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), out, rtol=0, atol=1e-6)
    torch.testing.assert_close(h2, h, rtol=0, atol=1e-6)
    torch.testing.assert_close(c2, c, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- Generator and Predictor


@pytest.mark.parametrize("t", [0, 2, 4])
def test_generator_is_causal(t):
    gen = _gen()
    x = _rand(2, 5, 3, 16, 24)
    changed = x.clone()
    # A random new frame: a constant offset would be cancelled exactly by the per-frame instance norm.
    changed[:, t] = _rand(2, 3, 16, 24, seed=1)
    with torch.no_grad():
        y, y_changed = gen(x), gen(changed)
    assert torch.equal(y[:, :t], y_changed[:, :t])
    assert (y[:, t] - y_changed[:, t]).abs().max() > 1e-2


def test_generator_memory_carries_forward():
    """Later frames see an earlier change through the ConvLSTM (it is not a per-frame network)."""
    gen = _gen()
    x = _rand(2, 5, 3, 16, 16)
    changed = x.clone()
    changed[:, 1] = _rand(2, 3, 16, 16, seed=1)
    with torch.no_grad():
        diff = (gen(x) - gen(changed))[:, 2:].abs().amax(dim=(0, 2, 3, 4))
    assert (diff > 1e-3).all()


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_generator_chunked_run_equals_one_pass(k, norm):
    gen = _gen(norm)
    x = _rand(2, 5, 3, 16, 24)
    with torch.no_grad():
        whole = gen(x)
        first, state = gen.run(x[:, :k])
        second, _ = gen.run(x[:, k:], state)
    assert (torch.cat([first, second], 1) - whole).abs().max() <= 1e-5


@pytest.mark.parametrize("residual", [True, False])
def test_generator_output_is_bounded(residual):
    with torch.no_grad():
        gen = _gen(residual=residual)
        nn.init.normal_(gen.head.weight, std=10.0)  # saturate
        y = gen(_rand(2, 4, 3, 16, 16))
    # Strictly inside (-1, 1), where real frames live: out of range must not be a cue for a discriminator.
    assert y.abs().max() <= 1.0


def test_residual_output_stays_in_the_frame_range_and_is_the_identity_on_the_uint8_wire():
    """Before the fix, outputs reached 1/(1 - margin) > 1 while real frames stop at 1."""
    u8 = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 16, 16)
    base = to_float(u8)
    for delta in (10.0, -10.0):
        y = residual_output(torch.full_like(base, delta), base)
        assert y.abs().max() <= 1.0
    assert torch.equal(to_uint8(residual_output(torch.zeros_like(base), base)), u8)
    assert (residual_output(torch.zeros_like(base), base) - base).abs().max() <= RESIDUAL_MARGIN + 1e-6


def test_linear_residual_passes_a_brightened_frames_noise_at_gain_one_where_tanh_amplifies_it():
    """--residual_space: brightening a dark frame (-0.8 -> 0) in tanh space scales a change of the
    input by (1 - 0^2) / (1 - 0.8^2) = 2.8 (the noise of a dark frame, brightened); added linearly
    it passes at gain 1."""
    base = torch.full((1, 1, 3, 8, 8), -0.8)
    eps = 1e-3 * torch.randn(base.shape, generator=torch.Generator().manual_seed(0))
    gains = {}
    for space, delta in (("tanh", torch.atanh(torch.tensor(0.8))), ("linear", torch.tensor(0.8))):
        out, moved = residual_output(delta.expand_as(base), base, space), residual_output(delta.expand_as(base),
                                                                                          base + eps, space)
        assert out.abs().max() < 1e-5  # brightened to 0 either way
        gains[space] = ((moved - out) / eps).mean().item()
    assert abs(gains["tanh"] - 1 / (1 - 0.8**2)) < 0.05 and abs(gains["linear"] - 1.0) < 1e-3
    assert torch.equal(residual_output(torch.zeros_like(base), base + eps, "linear"), base + eps)
    with pytest.raises(ValueError, match="tanh, linear, split, split_capped"):
        residual_output(base, base, "log")


def test_split_residuals_map_brightness_as_tanh_and_pass_pixel_noise_near_gain_one():
    """--residual_space split: on a flat frame (its blur is itself) it is tanh exactly; pixel-
    independent noise on a dark frame being brightened passes at ~1.3x (the 5x5 blur keeps ~7 % of
    its power, which tanh amplifies 2.8x), against tanh's 2.8x."""
    base = torch.full((1, 2, 3, 32, 32), -0.8)
    delta = torch.atanh(torch.tensor(0.8)).expand_as(base)
    torch.testing.assert_close(residual_output(delta, base, "split"), residual_output(delta, base, "tanh"))
    eps = 1e-3 * torch.randn(base.shape, generator=torch.Generator().manual_seed(0))
    gain = {space: ((residual_output(delta, base + eps, space) - residual_output(delta, base, space)).std()
                    / eps.std()).item() for space in ("tanh", "split")}
    assert gain["tanh"] > 2.7 and 1.2 < gain["split"] < 1.45
    # split_capped: the detail at min(1, tanh's gain): brightening is split's, darkening tanh's.
    torch.testing.assert_close(residual_output(delta, base + eps, "split_capped"),
                               residual_output(delta, base + eps, "split"))
    bright = torch.zeros_like(base)  # 0 -> -0.8: tanh's gain 0.36
    gain = {space: ((residual_output(-delta, bright + eps, space) - residual_output(-delta, bright, space)).std()
                    / eps.std()).item() for space in ("tanh", "split", "split_capped")}
    assert abs(gain["split_capped"] - gain["tanh"]) < 0.02 and gain["tanh"] < 0.4 and gain["split"] > 0.8
    x = torch.rand(2, 3, 3, 16, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    low = lowpass(x)
    assert low.shape == x.shape and low.std() < 0.5 * x.std()  # a blur
    torch.testing.assert_close(lowpass(torch.full_like(x, 0.3)), torch.full_like(x, 0.3))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 under --amp: bf16 would round it to ~1/256
        assert torch.equal(lowpass(x), low)
    # Its reach is LOWPASS_RADIUS: a crop's blur equals the whole frame's that far inside the crop.
    r = LOWPASS_RADIUS
    torch.testing.assert_close(lowpass(x[..., 2:14, 3:20])[..., r:-r, r:-r], low[..., 2 + r:14 - r, 3 + r:20 - r])
    assert (lowpass(x[..., 2:14, 3:20])[..., :r, :] - low[..., 2:2 + r, 3:20]).abs().max() > 1e-3


@pytest.mark.parametrize("space", ["tanh", "linear", "split", "split_capped"])
def test_untrained_generator_and_predictor_return_their_input_in_either_residual_space(space):
    torch.manual_seed(0)
    gen = Generator(3, ngf=4, n_res_blocks=1, residual_space=space)
    pred = Predictor(2, channels=3, ngf=4, n_res_blocks=1, frame_size=(16, 16), residual_space=space)
    x = _frames(2, 3, 3, 16, 16)
    with torch.no_grad():
        y, nxt = gen(x), pred(x[:, :2])
    margin = 1e-6 if space == "linear" else RESIDUAL_MARGIN + 1e-6
    assert (y - x).abs().max() <= margin and (nxt - x[:, 1]).abs().max() <= margin
    assert pred.residual_space == space
    with pytest.raises(ValueError, match="residual_space"):
        Generator(3, ngf=4, residual_space="log")


# ---------------------------------------------------------------- start from the identity (DESIGN §3)


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("shape", SHAPES)
def test_untrained_generator_returns_its_input(shape, norm):
    t, h, w, c = shape
    torch.manual_seed(0)
    gen = Generator(c, ngf=4, n_res_blocks=1, norm=norm)
    x = _frames(2, t, c, h, w)
    with torch.no_grad():
        y = gen(x)
    assert (y - x).abs().max() <= RESIDUAL_MARGIN + 1e-6  # only +-1 move, by the margin
    assert torch.equal(to_uint8(y), to_uint8(x))  # exact on the uint8 wire


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("frame_size", [(16, 24), (32, 32)])
def test_untrained_predictor_copies_the_last_frame(p, frame_size):
    torch.manual_seed(0)
    pred = Predictor(p, channels=3, ngf=4, n_res_blocks=1, frame_size=frame_size)
    x = _frames(2, p, 3, *frame_size)
    with torch.no_grad():
        y = pred(x)
    assert (y - x[:, -1]).abs().max() <= RESIDUAL_MARGIN + 1e-6
    assert torch.equal(to_uint8(y), to_uint8(x[:, -1]))


def test_outputs_fed_back_as_inputs_keep_finite_gradients():
    """A saturated output (up to +-1) is a valid input: a translation goes into a
    predictor, a prediction into a generator. atanh of it must not give inf or NaN gradients."""
    torch.manual_seed(0)
    gen, pred = Generator(3, ngf=4, n_res_blocks=1), Predictor(2, channels=3, ngf=4, n_res_blocks=1)
    x = torch.full((1, 2, 3, 16, 16), 1.0)
    x[:, :, 0] *= -1
    x.requires_grad_()
    out = gen(pred(gen(x))[:, None])
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in [*gen.parameters(), *pred.parameters()] if p.grad is not None)


def test_identity_start_still_learns():
    """The zero head passes gradients to itself at once and, one step later, to everything else."""
    torch.manual_seed(0)
    gen = Generator(3, ngf=4, n_res_blocks=1)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    x, target = _frames(2, 3, 3, 16, 16), _frames(2, 3, 3, 16, 16, seed=1)
    for _ in range(2):
        opt.zero_grad()
        (gen(x) - target).abs().mean().backward()
        opt.step()
    assert gen.head.weight.abs().sum() > 0
    assert gen.stem[0].weight.grad.abs().sum() > 0


def test_without_residual_the_output_is_not_the_input():
    torch.manual_seed(0)
    gen = Generator(3, ngf=4, n_res_blocks=1, residual=False)
    x = _frames(2, 3, 3, 16, 16)
    with torch.no_grad():
        assert (gen(x) - x).abs().max() > 0.1


def test_predictor_depends_on_every_context_frame():
    pred = _pred(frames=3)
    x = _rand(2, 3, 3, 16, 16)
    with torch.no_grad():
        base = pred(x)
        for i in range(3):
            changed = x.clone()
            changed[:, i] = _rand(2, 3, 16, 16, seed=10 + i)
            assert (pred(changed) - base).abs().max() > 1e-3, f"frame {i} ignored"


def test_predictor_equals_last_step_of_full_run():
    pred = _pred(frames=3)
    x = _rand(2, 3, 3, 16, 24)
    with torch.no_grad():
        full, _ = pred.run(x, last_only=False)
        assert (pred(x) - full[:, -1]).abs().max() <= 1e-5


# ---------------------------------------------------------------- QNetwork


def test_q_network_is_non_negative_and_alive_at_init():
    torch.manual_seed(0)
    q = QNetwork(3, P, (32, 32), ndf=4)
    state, action = _rand(4, P, 3, 32, 32), _rand(4, 3, 32, 32, seed=1).requires_grad_()
    left = torch.tensor([1.0, 0.75, 0.5, 0.25])
    value = q(state, action, left)
    assert (value > 0).all()  # positive last bias: the ReLU is not dead
    value.sum().backward()
    assert action.grad.abs().sum() > 0
    dead = [name for name, p in q.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead
    with torch.no_grad():
        q.body.head[-1].bias.fill_(-100.0)  # head output far below zero: clamped, never negative
        assert torch.equal(q(state, action, left), torch.zeros(4))


def test_q_network_reads_the_steps_left_and_keeps_magnitudes():
    """DESIGN §5 "Time": the same state and action are worth different costs-to-go at different
    steps; and no normalisation layer divides away the scale Q must regress."""
    torch.manual_seed(0)
    q = QNetwork(3, P, (32, 32), ndf=4)
    state, action = _rand(2, P, 3, 32, 32), _rand(2, 3, 32, 32, seed=1)
    with torch.no_grad():
        early, late = q(state, action, torch.ones(2)), q(state, action, torch.full((2,), 0.25))
    assert not torch.allclose(early, late)
    assert not any(isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d)) for m in q.modules())
    with pytest.raises(ValueError, match="steps_left"):
        q(state, action, torch.ones(3))


# ---------------------------------------------------------------- Networks and targets


def _params_and_buffers(net: nn.Module) -> dict[str, torch.Tensor]:
    return dict(net.state_dict(keep_vars=True))


@pytest.mark.parametrize("method, online, targets", [
    ("cycle_gan", {"gen_ab", "gen_ba", "disc_a", "disc_b"}, set()),
    ("recycle_gan", {"gen_ab", "gen_ba", "pred_a", "pred_b", "disc_a", "disc_b"}, set()),
    ("rl_v2v_gan", set(ALL_NAMES), set(TARGETED)),
])
def test_methods_build_exactly_their_networks(method, online, targets):
    nets = _nets((4, 32, 32, 3), method)
    assert {name for name in ALL_NAMES if getattr(nets, name) is not None} == online
    assert set(nets.online_names()) == online
    assert {name[:-len("_target")] for name, _ in nets.named_children() if name.endswith("_target")} == targets
    assert set(nets.target_names) == targets


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_targets_are_frozen_deep_copies(norm):
    torch.manual_seed(0)
    nets = build_networks("rl_v2v_gan", (4, 32, 32, 3), context_frames=P, ngf=4, ndf=4, n_res_blocks=1, norm=norm)
    nets.eval().train()
    for name in TARGETED:
        online, target = getattr(nets, name), getattr(nets, f"{name}_target")
        assert type(target) is type(online) and target is not online
        assert online.training and not any(m.training for m in target.modules())
        assert not any(p.requires_grad for p in target.parameters())
        assert all(p.requires_grad for p in online.parameters())
        on, tg = _params_and_buffers(online), _params_and_buffers(target)
        assert on.keys() == tg.keys()
        assert all(torch.equal(on[k], tg[k]) for k in on)
        on_storage = {t.untyped_storage().data_ptr() for t in on.values()}
        assert on_storage.isdisjoint(t.untyped_storage().data_ptr() for t in tg.values())
        before = {k: v.detach().clone() for k, v in tg.items()}
        with torch.no_grad():
            for p in online.parameters():
                p.add_(1.0)
        assert all(torch.equal(before[k], tg[k]) for k in tg)


def test_target_networks_stay_in_eval_mode():
    nets = _nets((4, 32, 32, 3))
    try:
        nets.train()
        assert nets.gen_ab.training and nets.disc_a.training and nets.q_a.training
        assert not any(getattr(nets, f"{name}_target").training for name in TARGETED)
    finally:
        nets.eval()


def test_build_networks_is_deterministic_under_seed():
    def weights(seed):
        torch.manual_seed(seed)
        nets = build_networks("rl_v2v_gan", (4, 16, 16, 3), context_frames=P, ngf=4, ndf=4, n_res_blocks=1)
        return nets.state_dict()

    first, second, other = weights(0), weights(0), weights(1)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


# ---------------------------------------------------------------- cost budget (DESIGN §3)


def _gflop(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def test_networks_fit_the_recycle_gan_reference_budget_at_256():
    """Forward GFLOP at 256x256, ngf = ndf = 64, against the Recycle-GAN reference's networks
    (resnet_6blocks 70 per frame, unet_256 predictor 12 per call, PatchGAN 6 per frame). Counted on
    the meta device: shapes only, no arithmetic."""
    with torch.device("meta"):
        nets = build_networks("recycle_gan", (3, 256, 256, 3), context_frames=2, ngf=64, ndf=64, n_res_blocks=2)
        frame, window = torch.empty(1, 1, 3, 256, 256), torch.empty(1, 2, 3, 256, 256)
        gen = _gflop(lambda: nets.gen_ab(frame))
        pred = _gflop(lambda: nets.pred_a(window))
        disc = _gflop(lambda: nets.disc_a(frame[:, 0]))
    assert gen <= 70 and pred <= 14 and disc <= 7, (gen, pred, disc)
    # A recycle_gan step on a 3-frame clip, forward: 2 x (3 translated frames + 1 recycled frame)
    # generator frames and 2 x 2 predictor calls; with backward (about 2x forward) and the
    # discriminators it stays within the reference's 1.8 TFLOP.
    forward = 8 * gen + 4 * pred
    assert 3 * forward + 3 * 18 * disc <= 1.8e3


# ---------------------------------------------------------------- per-frame ablation (--temporal_memory false)


def test_per_frame_generator_sees_each_frame_alone_and_the_temporal_one_does_not():
    torch.manual_seed(0)
    x = _frames(1, 4, 3, 16, 16)
    shuffled = x[:, [2, 0, 3, 1]]
    outs = {}
    for temporal in (True, False):
        torch.manual_seed(0)
        gen = Generator(3, ngf=4, n_res_blocks=1, temporal=temporal)
        nn.init.normal_(gen.head.weight, std=0.1)  # not the identity
        with torch.no_grad():
            outs[temporal] = (gen(x), gen(shuffled), gen(x[:, 3:]))
    y, y_shuffled, y_last = outs[False]
    assert torch.allclose(y_shuffled, y[:, [2, 0, 3, 1]], atol=1e-6)  # order does not matter
    assert torch.allclose(y_last[:, 0], y[:, 3], atol=1e-6)  # nor what came before
    t, t_shuffled, t_last = outs[True]
    assert not torch.allclose(t_last[:, 0], t[:, 3], atol=1e-4)  # the temporal one carries memory
    # Same parameters either way: a per-frame run is the same network, evaluated differently.
    assert [k for k, _ in Generator(3, ngf=4, temporal=False).named_parameters()] == \
        [k for k, _ in Generator(3, ngf=4).named_parameters()]
