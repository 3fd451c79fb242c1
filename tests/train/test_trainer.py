"""train/trainer.py: what each phase changes, the TD target, method switches, determinism, learning."""

import copy
import json

import pytest
import torch

import rl_v2v_gan.rl.agent as agent_mod
import rl_v2v_gan.train.trainer as trainer_mod
from rl_v2v_gan.data.dataset import StepSampler, UnpairedClips, to_float
from rl_v2v_gan.data.factory import prepare_data
from rl_v2v_gan.errors import ConfigError
from rl_v2v_gan.eval.evaluator import VideoEvaluator
from rl_v2v_gan.losses.rl_losses import td_target
from rl_v2v_gan.models.networks import ROLES

DISCS = {"disc_a", "disc_b", "vdisc_a", "vdisc_b"}
CRITICS = {"q_a", "q_b"}
POLICY = {"gen_ab", "gen_ba", "pred_a", "pred_b"}
TARGETS = {f"{n}_target" for n in POLICY | CRITICS}
EMAS = {"gen_ab_ema", "gen_ba_ema"}  # the generators' EMA (--ema_decay, on by default): not a DDPG target


def _snapshot(nets) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in nets.state_dict().items()}


def _changed_networks(before: dict, nets) -> set[str]:
    """Top-level network names (``gen_ab``, ``q_a_target`` ...) with any tensor that changed."""
    return {k.split(".")[0] for k, v in nets.state_dict().items() if not torch.equal(v, before[k])}


def _prepare(trainer, batch):
    """What ``train_step`` sets up before its phases: float clips and translations with their graph."""
    trainer.nets.train()
    real = {d: to_float(batch[d]) for d in "ab"}
    fake = {"b": trainer.nets.gen_ab(real["a"]), "a": trainer.nets.gen_ba(real["b"])}
    return real, fake


@pytest.mark.parametrize("norm,residual_space", [("instance", "tanh"), ("batch", "tanh"), ("instance", "linear"),
                                                     ("instance", "split")])
def test_each_phase_changes_only_its_own_networks(norm, residual_space, tiny_config, make_trainer, make_batch):
    """Parameters and, with batch norm, running statistics: frozen critics keep theirs too."""
    trainer = make_trainer(tiny_config(method="rl_v2v_gan", norm=norm, residual_space=residual_space))
    nets, logs = trainer.nets, {}
    real, fake = _prepare(trainer, make_batch())

    before = _snapshot(nets)
    assert trainer._d_phase(real, fake, logs)
    assert _changed_networks(before, nets) == DISCS

    before = _snapshot(nets)
    fresh = trainer._collect(real, logs)
    assert _changed_networks(before, nets) == set()
    assert len(fresh["a"]) == 2 * (4 - 2)
    assert len(trainer.replay["a"]) == 0  # train_step stores the rollout after the critic's draw

    before = _snapshot(nets)
    minibatch = trainer._minibatch(fresh, logs)
    assert trainer._critic_phase(minibatch, logs)
    assert _changed_networks(before, nets) == CRITICS

    grads = {n: [None if p.grad is None else p.grad.clone() for p in getattr(nets, n).parameters()]
             for n in DISCS | CRITICS}
    before = _snapshot(nets)
    assert trainer._g_phase(real, fake, logs, minibatch)
    assert "loss/G/actor" in logs
    assert _changed_networks(before, nets) == POLICY
    for n, old in grads.items():  # frozen critics: the generator objective sends them no gradient
        for p, g in zip(getattr(nets, n).parameters(), old):
            assert (p.grad is None and g is None) or torch.equal(p.grad, g), n


def test_minibatch_draws_only_older_experience(tiny_config, make_trainer, make_batch):
    trainer = make_trainer(tiny_config(method="rl_v2v_gan", sigma1=1.0))
    logs = trainer.train_step(make_batch())
    assert logs["rl/from_buffer_a"] == 0.0  # step 1: the buffer was empty when the minibatch was drawn
    assert logs["rl/replay_size"] == 2 * 2 * (4 - 2)  # then both domains' rollouts were stored
    logs = trainer.train_step(make_batch())
    assert logs["rl/from_buffer_a"] == 1.0  # step 2: a full minibatch of older experience exists


def test_soft_update_is_the_only_way_targets_move(tiny_config, make_trainer, make_batch, monkeypatch):
    tau = 0.05
    trainer = make_trainer(tiny_config(method="rl_v2v_gan", tau=tau))
    nets = trainer.nets
    before = _snapshot(nets)
    trainer.train_step(make_batch())
    after = nets.state_dict()
    changed = _changed_networks(before, nets)
    assert changed == DISCS | CRITICS | POLICY | TARGETS | EMAS
    for name in TARGETS:  # theta' <- theta' + tau (theta - theta'), with the online weights after the step
        online = name.removesuffix("_target")
        for k in getattr(nets, name).state_dict():
            old, new, source = before[f"{name}.{k}"], after[f"{name}.{k}"], after[f"{online}.{k}"]
            torch.testing.assert_close(new, old + tau * (source - old))
            assert (new - source).abs().sum() <= (old - source).abs().sum()

    monkeypatch.setattr(trainer_mod, "soft_update", lambda *a, **k: None)
    before = _snapshot(nets)
    trainer.train_step(make_batch(seed=1))
    changed = _changed_networks(before, nets)
    assert changed & TARGETS == set()
    assert changed == DISCS | CRITICS | POLICY | EMAS  # the online networks still trained, their EMA followed


def _g_step(trainer, make_batch, seed=0):
    """One G phase on a batch, with the critic's minibatch of that batch's rollouts."""
    real, fake = _prepare(trainer, make_batch(seed=seed))
    logs = {}
    minibatch = trainer._minibatch(trainer._collect(real, logs), logs)
    assert trainer._g_phase(real, fake, logs, minibatch)
    return logs, minibatch


@pytest.mark.parametrize("chosen", ["a1", "a2"])
def test_actor_alone_moves_the_policy_and_gives_the_critics_no_gradient(chosen, tiny_config, make_trainer, make_batch,
                                                                        monkeypatch):
    """Every content weight at zero: only the actor term (and the adversarial term, on the
    generators) can reach the policy. The greedy choice is forced by construction (a constant
    offset on the other candidate's q leaves every gradient as it is), so which networks a
    chosen action runs through is known: a1 = pred_d(s), a2 = gen_nd(pred_n(gen_dn(s))).
    Detached candidates, or a detached chosen action, would leave the predictors where they were."""
    real_q_pair = agent_mod.q_pair

    def forced(q_d, state, a1, a2, left):
        q1, q2 = real_q_pair(q_d, state, a1, a2, left)
        return (q1, q2 + 1e3) if chosen == "a1" else (q1 + 1e3, q2)

    monkeypatch.setattr(agent_mod, "q_pair", forced)

    def trainer_with(lambda_pg):
        cfg = tiny_config(method="rl_v2v_gan", lambda_v=0.0, lambda_rr=0.0, lambda_rc=0.0, lambda_pg=lambda_pg,
                          actor_batch=4)
        return make_trainer(cfg)

    trainer = trainer_with(1.0)
    nets = trainer.nets
    before = _snapshot(nets)
    logs, _ = _g_step(trainer, make_batch)
    changed = _changed_networks(before, nets)
    # a1 runs through pred_a (domain a) and pred_b (domain b); a2 through both predictors too.
    assert changed == POLICY
    for name in CRITICS | DISCS:
        assert all(p.grad is None for p in getattr(nets, name).parameters()), name
    # The generators' gradient differs from the adversarial term's alone exactly when the chosen
    # action runs through them (a2); a1 does not touch them.
    with_actor = [p.grad.clone() for p in nets.gen_ab.parameters()]
    trainer = trainer_with(0.0)
    _g_step(trainer, make_batch)
    without = [p.grad for p in trainer.nets.gen_ab.parameters()]
    same = all(torch.equal(a, b) for a, b in zip(with_actor, without))
    assert same == (chosen == "a1")


def test_actor_states_are_the_critics_minibatch_states(tiny_config, make_trainer, make_batch, monkeypatch):
    trainer = make_trainer(tiny_config(method="rl_v2v_gan", actor_batch=3))
    seen = []
    real_greedy = trainer_mod.greedy_action

    def spy(policy, state, *args):
        seen.append(state.detach().clone())
        return real_greedy(policy, state, *args)

    monkeypatch.setattr(trainer_mod, "greedy_action", spy)
    real, fake = _prepare(trainer, make_batch())
    logs = {}
    minibatch = trainer._minibatch(trainer._collect(real, logs), logs)
    seen.clear()
    trainer._g_phase(real, fake, logs, minibatch)
    assert len(seen) == 2
    for state, d in zip(seen, "ab"):
        torch.testing.assert_close(state, minibatch[d].state[:3])


def test_actor_waits_for_the_critic(tiny_config, make_trainer, make_batch):
    trainer = make_trainer(tiny_config(method="rl_v2v_gan", actor_start_step=2))
    for step in range(3):
        logs = trainer.train_step(make_batch(seed=step))
        assert ("loss/G/actor" in logs) == (step >= 2)
        assert "rl/q_loss" in logs  # the critic trains from step 0


def test_rollouts_leave_batch_norm_statistics_alone(tiny_config, make_trainer, make_batch):
    """Running statistics come from real training batches only, not from the no-grad rollouts
    of generated frames (which still normalise with their own batch statistics)."""
    trainer = make_trainer(tiny_config(method="rl_v2v_gan", norm="batch"))
    real, _ = _prepare(trainer, make_batch())
    stats = {k: v.clone() for k, v in trainer.nets.state_dict().items() if "running" in k or "num_batches" in k}
    assert stats
    trainer._collect(real, {})
    after = trainer.nets.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stats.items())


def test_every_online_parameter_has_exactly_one_optimizer(tiny_config, make_trainer):
    for method in ROLES:
        trainer = make_trainer(tiny_config(method=method))
        owner = {}
        for role, opt in trainer.optimizers.items():
            for group in opt.param_groups:
                for p in group["params"]:
                    assert id(p) not in owner, f"{method}: a parameter in both {owner[id(p)]} and {role}"
                    owner[id(p)] = role
        online = {id(p) for name in trainer.nets.online_names() for p in getattr(trainer.nets, name).parameters()}
        assert set(owner) == online  # targets are in no optimizer
        for name in trainer.nets.target_names:
            assert not any(p.requires_grad for p in getattr(trainer.nets, f"{name}_target").parameters())


def test_critic_target_comes_from_the_target_networks(tiny_config, make_trainer, make_batch, monkeypatch):
    gamma = 0.9
    trainer = make_trainer(tiny_config(method="rl_v2v_gan", gamma=gamma))
    nets = trainer.nets
    with torch.no_grad():  # make the targets differ from the online networks
        g = torch.Generator().manual_seed(3)
        for name in TARGETS:
            for p in getattr(nets, name).parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    minibatches, calls = [], []
    real_mix, real_critic_loss = trainer_mod.mix, trainer_mod.critic_loss

    def spy_mix(*args):
        out = real_mix(*args)
        minibatches.append(out[0])
        return out

    def spy_critic_loss(q, y):
        calls.append((q.detach().clone(), y.detach().clone()))
        return real_critic_loss(q, y)

    monkeypatch.setattr(trainer_mod, "mix", spy_mix)
    monkeypatch.setattr(trainer_mod, "critic_loss", spy_critic_loss)
    real, _ = _prepare(trainer, make_batch())
    logs = {}
    fresh = trainer._collect(real, logs)
    q_before = {d: copy.deepcopy(getattr(nets, f"q_{d}")) for d in "ab"}
    trainer._critic_phase(trainer._minibatch(fresh, logs), logs)
    assert len(calls) == len(minibatches) == 2

    def by_hand(d, suffix):
        n = "b" if d == "a" else "a"
        net = {name: getattr(nets, f"{name}{suffix}") for name in
               (f"pred_{d}", f"gen_{d}{n}", f"pred_{n}", f"gen_{n}{d}", f"q_{d}")}
        mb = minibatches["ab".index(d)]
        s_next = torch.cat([mb.state[:, 1:], mb.action[:, None]], 1)  # [N,p,C,H,W]
        # The next state ends one frame later: (T - 1 - (t + 1)) / (T - p) of the episode is left.
        t_len = trainer.cfg.clip_length
        left_next = (t_len - 2 - mb.t).clamp(min=0).float() / (t_len - trainer.p)
        with torch.no_grad():
            a1 = net[f"pred_{d}"](s_next)
            a2 = net[f"gen_{n}{d}"](net[f"pred_{n}"](net[f"gen_{d}{n}"](s_next))[:, None])[:, 0]
            next_q = torch.minimum(net[f"q_{d}"](s_next, a1, left_next), net[f"q_{d}"](s_next, a2, left_next))
        return mb.cost + gamma * (1 - mb.done.float()) * next_q

    for i, d in enumerate("ab"):
        q, y = calls[i]
        mb = minibatches[i]
        torch.testing.assert_close(y, by_hand(d, "_target"))
        assert not torch.allclose(y, by_hand(d, ""))  # the online networks would give another target
        with torch.no_grad():
            left = (trainer.cfg.clip_length - 1 - mb.t).float() / (trainer.cfg.clip_length - trainer.p)
            torch.testing.assert_close(q, q_before[d](mb.state, mb.action, left))
        assert mb.done.any() and not mb.done.all()
        # Terminal transitions bootstrap nothing.
        torch.testing.assert_close(y[mb.done], mb.cost[mb.done])
        torch.testing.assert_close(td_target(mb.cost, mb.done, torch.zeros_like(mb.cost), gamma)[~mb.done],
                                   mb.cost[~mb.done])


EXPECTED_G_TERMS = {"cycle_gan": {"adv", "cyc", "idt"}, "recycle_gan": {"adv", "rr", "rc", "cyc", "idt", "tc"},
                    "rl_v2v_gan": {"adv", "video", "rr", "rc", "cyc", "idt", "tc", "actor"}}


@pytest.mark.parametrize("method", list(EXPECTED_G_TERMS))
def test_each_method_turns_on_exactly_its_terms(method, tiny_config, make_trainer, make_batch):
    trainer = make_trainer(tiny_config(method=method, lambda_idt=0.5))
    logs = trainer.train_step(make_batch())
    assert all(isinstance(v, float) for v in logs.values())
    g_terms = {k.split("/")[-1] for k in logs if k.startswith("loss/G/")} - {"total"}
    assert g_terms == EXPECTED_G_TERMS[method]
    rl_keys = {k for k in logs if k.startswith("rl/")}
    if method == "rl_v2v_gan":
        assert {"rl/q_loss", "rl/replay_size", "rl/mean_reward_a", "rl/mean_reward_b", "rl/greedy_a1_share_a",
                "rl/greedy_a1_share_b", "rl/q_mean_a", "rl/from_buffer_a"} <= rl_keys
        assert "loss/D/video" in logs
        assert logs["rl/replay_size"] == 2 * 2 * (4 - 2)  # rl_episodes (= B here) * (T - p) per domain
        assert logs["rl/mean_reward_a"] <= 0 and logs["rl/mean_reward_b"] <= 0
        assert set(trainer.optimizers) == {"G", "D", "Q"}
    else:
        assert rl_keys == set()
        assert "loss/D/video" not in logs
        assert trainer.replay == {}
        assert set(trainer.optimizers) == {"G", "D"}
        assert trainer.nets.target_names == ()
    if method == "cycle_gan":
        assert trainer.nets.pred_a is None and trainer.nets.pred_b is None
    # The total is the weighted sum of the logged terms.
    cfg = trainer.cfg
    weights = {"adv": 1.0, "video": cfg.lambda_v, "cyc": cfg.cycle_weight, "rr": cfg.lambda_rr,
               "rc": cfg.lambda_rc, "idt": cfg.lambda_idt, "tc": cfg.tc_weight, "actor": cfg.lambda_pg}
    # The total is the weighted sum of the GAN terms; the scale-free actor loss (1 by construction)
    # is logged as what informs instead: the mean Q of the policy's chosen actions.
    total = sum(weights[k] * logs[f"loss/G/{k}"] for k in g_terms - {"actor"})
    assert logs["loss/G/total"] == pytest.approx(total, rel=1e-5)
    if method == "rl_v2v_gan":
        assert logs["loss/G/actor"] == pytest.approx((logs["rl/actor_q_a"] + logs["rl/actor_q_b"]) / 2)
        assert logs["loss/G/actor"] != pytest.approx(2.0)


def test_same_seed_gives_identical_losses(tiny_config, make_trainer, make_batch):
    cfg = tiny_config(method="rl_v2v_gan")
    runs = []
    for _ in range(2):
        trainer = make_trainer(cfg, seed=0)
        runs.append([trainer.train_step(make_batch(seed=s)) for s in range(3)])
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]  # the steps did differ: a constant would pass trivially


def test_rejects_mismatched_clips(tiny_config, make_trainer, make_batch):
    trainer = make_trainer(tiny_config(method="cycle_gan"))
    batch = make_batch()
    batch["b"] = batch["b"][:, :3]
    with pytest.raises(ValueError, match=r"batch\['b'\]"):
        trainer.train_step(batch)


@pytest.mark.slow
def test_short_synthetic_run_learns(tmp_path, tiny_config, make_trainer):
    """Learning, not just running: from the identity start (output = input, far from the other
    domain's style), translation PSNR against the ground truth rises well above it in both
    directions, while the cycle keeps the content (random frames would give about 8 dB)."""
    cfg = tiny_config(method="recycle_gan", input_shape=(4, 32, 32, 3), ngf=8, ndf=8, learning_rate=1e-3,
                      synthetic_train_clips=8, synthetic_test_clips=2, epochs=1, steps_per_epoch=60,
                      # The bare learning signal: the stabilisers trade speed for staying power (the
                      # decay alone halves the mean step size; DiffAugment shows the discriminators
                      # shifted and cut frames), which 60 steps cannot show; the temporal-consistency
                      # term slows the first 100 steps on this data (the demo: 10.8 against 16.9 dB
                      # after 100 steps, 18.46 / 18.02 against 18.42 / 18.20 after 150), and so does the
                      # light cycle term, which holds the generators at the identity longer (the demo:
                      # 4.0 against 11.7 dB after 100 steps).
                      lr_decay=0.0, ema_decay=0.0, r1_gamma=0.0, diff_augment="", lambda_tc=0.0, lambda_cyc=0.0)
    store = prepare_data(cfg, log=lambda *a: None)
    dataset = UnpairedClips(store, cfg.clip_length)
    trainer = make_trainer(cfg, seed=0)
    evaluator = VideoEvaluator(store, cfg.clip_length, cfg.batch_size, torch.device("cpu"))
    before = evaluator.evaluate(trainer.nets, 1)
    for direction in ("a2b", "b2a"):
        # The identity start: a perfect cycle up to the residual margin (+-1 move by 0.003).
        assert before[direction]["cycle_psnr"] > 60.0
    for keys in StepSampler(dataset, cfg.batch_size, cfg.seed, 0, 0, 60):
        items = [dataset[k] for k in keys]
        trainer.train_step({d: torch.stack([it[d] for it in items]) for d in "ab"})
    after = evaluator.evaluate(trainer.nets, 1)
    for direction in ("a2b", "b2a"):
        gain = after[direction]["psnr"] - before[direction]["psnr"]
        assert gain > 3.0, f"{direction} PSNR {before[direction]['psnr']:.2f} -> {after[direction]['psnr']:.2f}"
        assert after[direction]["cycle_psnr"] > 15.0, f"{direction} cycle PSNR {after[direction]['cycle_psnr']:.2f}"


def test_temporal_consistency_term_enters_the_generator_objective(tiny_config, make_trainer, make_batch):
    base = make_trainer(tiny_config(method="recycle_gan", lambda_tc=0.0)).train_step(make_batch())
    logs = make_trainer(tiny_config(method="recycle_gan", lambda_tc=2.0)).train_step(make_batch())
    assert "loss/G/tc" not in base and logs["loss/G/tc"] > 0
    assert logs["loss/G/total"] == pytest.approx(base["loss/G/total"] + 2.0 * logs["loss/G/tc"], rel=1e-5)


def test_relative_temporal_consistency_replaces_the_plain_term(tiny_config, make_trainer, make_batch):
    plain = make_trainer(tiny_config(method="recycle_gan", lambda_tc=2.0)).train_step(make_batch())
    rel = make_trainer(tiny_config(method="recycle_gan", lambda_tc=2.0, tc_relative=True)).train_step(make_batch())
    assert rel["loss/G/tc"] >= 0 and rel["loss/G/tc"] != plain["loss/G/tc"]
    assert rel["loss/G/adv"] == plain["loss/G/adv"]  # the same step up to the term
    with pytest.raises(ConfigError, match="tc_relative"):
        tiny_config(method="cycle_gan", tc_relative=True)  # cycle_gan has no temporal-consistency loss by default


def test_channels_last_trains_the_same_and_checkpoints(tiny_config):
    """--channels_last changes the layout, not the numbers; its checkpoint loads into a plain run."""
    from rl_v2v_gan.train import checkpoint as ckpt_io
    from rl_v2v_gan.train import loop

    flags = dict(method="rl_v2v_gan", epochs=1, steps_per_epoch=2, eval_batches=1)
    plain, fast = tiny_config(checkpoint_name="plain", **flags), tiny_config(checkpoint_name="cl", channels_last=True, **flags)
    assert loop.train(plain) == 0 and loop.train(fast) == 0
    rows = {}
    for cfg in (plain, fast):
        rows[cfg.checkpoint_name] = [json.loads(line) for line in (cfg.run_dir / "log.jsonl").read_text().splitlines()]
    for a, b in zip(rows["plain"], rows["cl"]):
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4), k
    resumed = tiny_config(checkpoint_name="cl", resume=True, **{**flags, "epochs": 2})
    assert loop.train(resumed) == 0
    assert [p.name for p in ckpt_io.list_checkpoints(resumed.run_dir)][-1] == "epoch_0002"
