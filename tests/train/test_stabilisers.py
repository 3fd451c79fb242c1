"""The stabilisers of DESIGN §4 "Training converges", each behind its flag: lr decay and TTUR,
the generators' EMA, the history pool of fakes, R1, spectral norm and the PatchGAN frame
discriminator. Each test fails when its flag does nothing or does the wrong thing."""

import pytest
import torch
from torch import nn

from rl_v2v_gan.config import ConfigError, make_config
from rl_v2v_gan.data.dataset import to_float, to_uint8
from rl_v2v_gan.losses.gan_losses import r1_penalty
from rl_v2v_gan.losses.rl_losses import step_cost
from rl_v2v_gan.models.networks import ema_decay_at, networks_from_config, translator
from rl_v2v_gan.train.history_pool import HistoryPool
from rl_v2v_gan.train.trainer import lr_factor


# ---------------------------------------------------------------- learning rates: decay and TTUR


def test_lr_factor_is_flat_then_linear_to_zero():
    assert [lr_factor(s, 10, 0.0) for s in (0, 9)] == [1.0, 1.0]
    got = [lr_factor(s, 10, 0.5) for s in range(10)]
    assert got[:6] == [1.0] * 6 and got[6:] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert lr_factor(0, 4, 1.0) == 1.0 and lr_factor(3, 4, 1.0) == pytest.approx(0.25)


def test_the_optimizers_follow_the_schedule_and_the_discriminators_their_own_rate(tiny_config, make_trainer,
                                                                                      make_batch):
    cfg = tiny_config(method="recycle_gan", learning_rate=1e-3, learning_rate_d=4e-3, lr_decay=0.5, epochs=2,
                      steps_per_epoch=2)
    trainer = make_trainer(cfg)
    seen = []
    for _ in range(4):
        trainer.train_step(make_batch())
        seen.append({role: opt.param_groups[0]["lr"] for role, opt in trainer.optimizers.items()})
    assert [s["G"] for s in seen] == pytest.approx([1e-3, 1e-3, 1e-3, 0.5e-3])
    assert [s["D"] for s in seen] == pytest.approx([4e-3, 4e-3, 4e-3, 2e-3])


def test_resume_with_a_new_learning_rate_applies_it_and_says_so(tiny_config, make_trainer, make_batch):
    """Before: the optimizers' saved param_groups won and the new --learning_rate was silently ignored."""
    old = make_trainer(tiny_config(method="cycle_gan", learning_rate=1e-3))
    old.train_step(make_batch())
    state = old.state_dict()
    new = make_trainer(tiny_config(method="cycle_gan", learning_rate=2e-4))
    said = []
    new.load_state_dict(state, log=said.append)
    assert len(said) == 1 and "--learning_rate" in said[0] and "G 0.001 -> 0.0002" in said[0]
    new.train_step(make_batch())
    assert new.optimizers["G"].param_groups[0]["lr"] == pytest.approx(2e-4)
    assert new.optimizers["D"].param_groups[0]["lr"] == pytest.approx(2e-4)
    same = make_trainer(tiny_config(method="cycle_gan", learning_rate=1e-3))
    said.clear()
    same.load_state_dict(state, log=said.append)
    assert said == []



def test_resume_with_other_loss_weights_says_which(tiny_config, make_trainer, make_batch):
    """The objective's weights travel with the checkpoint: a resume under a changed flag or default says so."""
    old = make_trainer(tiny_config(method="recycle_gan", lambda_cyc=0.0))
    old.train_step(make_batch())
    state = old.state_dict()
    assert state["loss_weights"]["cyc"] == 0.0 and state["loss_weights"]["tc"] == old.cfg.tc_weight
    said = []
    make_trainer(tiny_config(method="recycle_gan", lambda_cyc=0.0)).load_state_dict(state, log=said.append)
    assert said == []
    make_trainer(tiny_config(method="recycle_gan")).load_state_dict(state, log=said.append)  # today's default: 3
    assert len(said) == 1 and "--lambda_cyc 0 -> 3" in said[0] and "--lambda_tc" not in said[0]
    # A checkpoint from before the weights were saved: only a run that leans on the changed default hears of it.
    del state["loss_weights"]
    said.clear()
    make_trainer(tiny_config(method="recycle_gan")).load_state_dict(state, log=said.append)
    assert len(said) == 1 and "pass --lambda_cyc 0" in said[0]
    said.clear()
    make_trainer(tiny_config(method="recycle_gan", lambda_cyc=3.0)).load_state_dict(state, log=said.append)
    assert said == []


def test_resume_with_a_loss_switch_flipped_says_which(tiny_config, make_trainer, make_batch):
    """--cycle_detach and --tc_relative change a term's form, not its weight: a resume that flips one says so."""
    old = make_trainer(tiny_config(method="recycle_gan", tc_relative=True))
    old.train_step(make_batch())
    state = old.state_dict()
    assert state["loss_switches"] == {"cycle_detach": False, "tc_relative": True}
    said = []
    make_trainer(tiny_config(method="recycle_gan", tc_relative=True)).load_state_dict(state, log=said.append)
    assert said == []
    make_trainer(tiny_config(method="recycle_gan", cycle_detach=True)).load_state_dict(state, log=said.append)
    assert len(said) == 1 and "--cycle_detach false -> true" in said[0] and "--tc_relative true -> false" in said[0]
    del state["loss_switches"]  # saved before the switches were recorded: nothing to compare
    said.clear()
    make_trainer(tiny_config(method="recycle_gan", cycle_detach=True)).load_state_dict(state, log=said.append)
    assert said == []


# ---------------------------------------------------------------- EMA of the generators


def test_ema_decay_warms_up_and_is_capped():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay_at(10**6, 0.999) == 0.999


def test_ema_follows_the_generators_and_is_what_translates(tiny_config, make_trainer, make_batch):
    trainer = make_trainer(tiny_config(method="cycle_gan", ema_decay=0.9, learning_rate=1e-2))
    nets = trainer.nets
    assert translator(nets, "gen_ab") is nets.gen_ab_ema and translator(nets, "gen_ba") is nets.gen_ba_ema
    assert not any(p.requires_grad for p in nets.gen_ab_ema.parameters())
    before = [p.clone() for p in nets.gen_ab_ema.parameters()]
    for _ in range(3):
        trainer.train_step(make_batch())
    online, ema = list(nets.gen_ab.parameters()), list(nets.gen_ab_ema.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(before, ema)]
    assert any(moved)
    # Between where it started and where the online network is: an average, not a copy.
    assert not all(torch.equal(a, b) for a, b in zip(online, ema))
    nets.train()
    assert not nets.gen_ab_ema.training  # the EMA always runs in eval mode
    # Without the flag there is no EMA and the online generator translates.
    plain = networks_from_config(tiny_config(method="cycle_gan", ema_decay=0.0))
    assert translator(plain, "gen_ab") is plain.gen_ab and not hasattr(plain, "gen_ab_ema")


def test_ema_is_saved_with_the_networks(tiny_config):
    nets = networks_from_config(tiny_config(method="cycle_gan", ema_decay=0.99))
    assert any(k.startswith("gen_ab_ema.") for k in nets.state_dict())


# ---------------------------------------------------------------- history pool


def _clips(n, value):
    return torch.full((n, 2, 3, 4, 4), value)


def test_pool_fills_then_returns_old_clips_half_the_time():
    torch.manual_seed(0)
    pool = HistoryPool(4)
    first = _clips(4, -0.5)
    assert torch.equal(pool.query(first), to_float(to_uint8(first)))  # filling: the clips themselves
    assert len(pool) == 4
    old_value = to_float(to_uint8(_clips(1, -0.5)))[0, 0, 0, 0, 0]
    shown_old = 0
    for _ in range(50):
        out = pool.query(_clips(4, 0.5))
        shown_old += int((out[:, 0, 0, 0, 0] == old_value).sum())
    assert 0 < shown_old <= 4  # each stored old clip comes back at most once, then is replaced
    assert len(pool) == 4
    assert (pool.clips == to_uint8(_clips(1, 0.5))[0]).all()  # all replaced by now (p = 1 - 0.5**50)


def test_pool_swaps_distinct_slots_and_round_trips():
    torch.manual_seed(1)
    pool = HistoryPool(2)
    pool.query(torch.stack([_clips(1, -1.0)[0], _clips(1, 1.0)[0]]))
    out = pool.query(torch.zeros(6, 2, 3, 4, 4))
    values = sorted(float(v) for v in out[:, 0, 0, 0, 0])
    assert values.count(-1.0) <= 1 and values.count(1.0) <= 1  # no stored clip handed out twice
    state = pool.state_dict()
    again = HistoryPool(2)
    again.load_state_dict(state)
    assert torch.equal(again.clips, pool.clips)


def test_pool_reaches_the_discriminators_and_the_checkpoint(tiny_config, make_trainer, make_batch):
    trainer = make_trainer(tiny_config(method="rl_v2v_gan", pool_size=3))
    trainer.train_step(make_batch())
    assert {d: len(p) for d, p in trainer.pools.items()} == {"a": 2, "b": 2}
    state = trainer.state_dict()
    fresh = make_trainer(tiny_config(method="rl_v2v_gan", pool_size=3))
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.pools[d].clips, trainer.pools[d].clips) for d in "ab")


# ---------------------------------------------------------------- R1, spectral norm, PatchGAN


def test_r1_penalty_is_the_squared_input_gradient():
    w = torch.tensor([[1.0, -2.0, 3.0]])
    disc = nn.Linear(3, 1)
    disc.weight.data.copy_(w)
    x = torch.randn(5, 3, requires_grad=True)
    penalty = r1_penalty(disc(x)[:, 0], x)
    assert penalty.item() == pytest.approx(14.0)  # |w|^2 for every sample
    penalty.backward()
    assert torch.allclose(disc.weight.grad, 2 * w)  # it trains D


def test_r1_changes_the_discriminator_update_only(tiny_config, make_trainer, make_batch):
    logs = {}
    for gamma in (0.0, 10.0):
        trainer = make_trainer(tiny_config(method="recycle_gan", r1_gamma=gamma))
        logs[gamma] = trainer.train_step(make_batch())
        if gamma:
            assert logs[gamma]["loss/D/r1"] > 0
    assert "loss/D/r1" not in logs[0.0]
    assert logs[0.0]["loss/D/frame"] == pytest.approx(logs[10.0]["loss/D/frame"])  # same forward


def test_lazy_r1_takes_the_penalty_every_nth_step_weighted_n_times(tiny_config, make_trainer, make_batch):
    """--r1_every 2: step 0 is the eager run with gamma doubled (same D update), step 1 has no penalty."""
    batches = [make_batch(seed=0), make_batch(seed=1)]
    lazy = make_trainer(tiny_config(method="recycle_gan", r1_gamma=1.0, r1_every=2, diff_augment=""))
    eager = make_trainer(tiny_config(method="recycle_gan", r1_gamma=2.0, diff_augment=""))
    first = [t.train_step(batches[0]) for t in (lazy, eager)]
    assert first[0]["loss/D/r1"] == pytest.approx(first[1]["loss/D/r1"])
    for p, q in zip(lazy.nets.disc_a.parameters(), eager.nets.disc_a.parameters()):
        assert torch.equal(p, q)
    assert "loss/D/r1" not in lazy.train_step(batches[1])
    assert "loss/D/r1" in lazy.train_step(batches[0])  # step 2 takes it again


def test_r1_is_skipped_under_ddp_with_a_warning(tiny_config, capsys):
    cfg = tiny_config(method="cycle_gan", r1_gamma=1.0)
    nets = networks_from_config(cfg)
    from rl_v2v_gan.train.trainer import Trainer

    trainer = Trainer(cfg, nets, torch.device("cpu"), ddp={"gen_ab": nets.gen_ab})
    assert trainer.r1_gamma == 0.0
    assert "--r1_gamma 1.0 is not applied under torchrun" in capsys.readouterr().out


def test_spectral_norm_bounds_every_discriminator_layer(tiny_config):
    nets = networks_from_config(tiny_config(method="rl_v2v_gan", spectral_norm=True))
    for name in ("disc_a", "vdisc_b"):
        layers = [m for m in getattr(nets, name).modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))]
        assert layers and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in nets.q_a.modules())
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in nets.gen_ab.modules())


def test_patch_discriminator_gives_a_map_of_logits_and_the_rl_cost_reduces_it(tiny_config, make_trainer,
                                                                                make_batch):
    nets = networks_from_config(tiny_config(method="rl_v2v_gan", disc_patch=True))
    logits = nets.disc_a(torch.zeros(5, 3, 16, 16))
    assert logits.dim() == 3 and logits.shape[0] == 5 and logits.shape[1:].numel() > 1
    frames = torch.zeros(5, 3, 16, 16)
    cost = step_cost(logits, frames, frames, frames, frames, 1.0, 1.0)
    assert cost.shape == (5,)
    assert nets.q_a.body.patch is False  # the critic stays one value per state-action
    trainer = make_trainer(tiny_config(method="rl_v2v_gan", disc_patch=True))
    logs = trainer.train_step(make_batch())
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())


def test_diff_augment_shows_both_phases_augmented_inputs_and_leaves_the_rl_reward_plain(tiny_config, make_trainer,
                                                                                       make_batch):
    """With cutout every discriminator input of the D phase (real and generated) and of the G phase
    carries a zeroed square in every sample; the rollouts' rewards read the plain discriminators."""
    for policy, want in (("cutout", 3), ("", 0)):
        trainer = make_trainer(tiny_config(method="rl_v2v_gan", diff_augment=policy))
        seen = {"disc_b": [], "vdisc_b": []}
        for name, calls in seen.items():
            def hook(module, args, calls=calls):
                x = args[0]
                holes = (x == 0).all(dim=-3).flatten(0, -3).flatten(1).sum(1)  # zeroed pixels per frame
                calls.append(bool((holes >= 16).all()))
            getattr(trainer.nets, name).register_forward_pre_hook(hook)
        trainer.train_step(make_batch())
        for name, calls in seen.items():
            assert sum(calls) == want, (policy, name, calls)  # D: real + generated; G: generated
            assert calls.count(False) >= 1  # the rollout's reward: the discriminator on plain frames


@pytest.mark.parametrize("flag, value", [("learning_rate_d", 0.0), ("lr_decay", 1.5), ("ema_decay", 1.0),
                                         ("pool_size", -1), ("r1_gamma", -1.0), ("r1_every", 0),
                                         ("diff_augment", "color")])
def test_bad_stabiliser_values_name_the_flag(flag, value):
    with pytest.raises(ConfigError, match=flag):
        make_config(**{flag: value})


def test_cycle_detach_without_a_cycle_loss_is_refused():
    make_config(cycle_detach=True)  # the video methods' default cycle weight is 3
    with pytest.raises(ConfigError, match="cycle_detach"):
        make_config(cycle_detach=True, lambda_cyc=0.0)


# ---------------------------------------------------------------- the cycle loss as back-translation


@pytest.mark.parametrize("detach", [False, True])
def test_cycle_detach_leaves_the_forward_generator_out_of_the_cycle_loss(tiny_config, make_trainer, make_batch,
                                                                        monkeypatch, detach):
    """--cycle_detach: L_cyc = |gen_yx(sg(gen_xy(x))) - x| trains gen_yx only; without it, both."""
    import rl_v2v_gan.train.trainer as trainer_module

    cfg = tiny_config(method="recycle_gan", lambda_cyc=10.0, cycle_detach=detach)
    trainer = make_trainer(cfg)
    gens = {name: list(getattr(trainer.nets, name).parameters()) for name in ("gen_ab", "gen_ba")}
    reached = []  # per cycle-loss call: which generators its gradient reaches
    real_cycle_loss = trainer_module.G.cycle_loss

    def spy(reconstructed, real):
        loss = real_cycle_loss(reconstructed, real)
        grads = {name: torch.autograd.grad(loss, ps, retain_graph=True, allow_unused=True) for name, ps in gens.items()}
        reached.append({name for name, gs in grads.items() if any(g is not None and g.abs().sum() > 0 for g in gs)})
        return loss

    monkeypatch.setattr(trainer_module.G, "cycle_loss", spy)
    trainer.train_step(make_batch())
    # a -> b -> a, then b -> a -> b
    assert reached == ([{"gen_ba"}, {"gen_ab"}] if detach else [{"gen_ab", "gen_ba"}, {"gen_ab", "gen_ba"}])
