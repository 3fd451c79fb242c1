"""Mixed precision and compile (bf16 autocast, fp16 with GradScaler, torch.compile): the CUDA
cases run where CUDA is present, and bf16 also on the CPU (``--amp bf16``, oneDNN).

This project's CI and development machines have no GPU; the CUDA cases skip there with the reason.
"""

import math

import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
# (device, amp) cases: CUDA's two, and bf16 on the CPU.
CASES = [pytest.param("cuda", "bf16", marks=needs_cuda), pytest.param("cuda", "fp16", marks=needs_cuda),
         ("cpu", "bf16")]


def perturbed_heads(nets, std: float = 0.05):
    """``nets`` with the zero-initialised heads of generators and predictors set to small random
    weights: untrained, they return their input, and any finite miscompile or precision error of
    the rest of the network would go unseen."""
    from rl_v2v_gan.models.generator import Generator

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in nets.modules():
            if isinstance(module, Generator):
                for p in module.head.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * std)
    return nets


def _step_logs(tiny_config, make_batch, device="cuda", **flags):
    from rl_v2v_gan.models.networks import networks_from_config
    from rl_v2v_gan.train.trainer import Trainer

    cfg = tiny_config(device=device, **flags)
    torch.manual_seed(0)
    trainer = Trainer(cfg, perturbed_heads(networks_from_config(cfg)).to(device), torch.device(device))
    logs = [trainer.train_step(make_batch()) for _ in range(3)]
    return trainer, logs


def _role_params(trainer) -> dict[str, list[torch.Tensor]]:
    return {role: [p.detach().clone() for net in trainer.nets.role(role) for p in net.parameters()]
            for role in trainer.optimizers}


@pytest.mark.parametrize("device, amp", CASES)
def test_mixed_precision_steps_are_finite_and_update(tiny_config, make_batch, device, amp):
    from rl_v2v_gan.models.networks import networks_from_config
    from rl_v2v_gan.train.trainer import Trainer

    cfg = tiny_config(device=device, amp=amp)
    torch.manual_seed(0)
    trainer = Trainer(cfg, networks_from_config(cfg).to(device), torch.device(device))
    assert trainer.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    before = _role_params(trainer)
    # fp16: the scaler skips a step whose gradients overflow and halves its scale, so the first
    # steps may change nothing; within a few every role must have been updated.
    for _ in range(8):
        logs = trainer.train_step(make_batch())
        assert all(math.isfinite(v) for v in logs.values()), logs
        after = _role_params(trainer)
        changed = {role: any(not torch.equal(a, b) for a, b in zip(before[role], after[role])) for role in before}
        if all(changed.values()):
            break
    assert set(changed) == {"G", "D", "Q"} and all(changed.values()), changed
    assert all(p.dtype == torch.float32 for p in trainer.nets.parameters())  # master weights stay fp32


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda), "cpu"])
def test_bf16_close_to_fp32_on_first_step(tiny_config, make_batch, device):
    # Perturbed heads: with identity networks L_rr and L_rc would depend on the data alone.
    _, fp32 = _step_logs(tiny_config, make_batch, device, amp="none")
    _, bf16 = _step_logs(tiny_config, make_batch, device, amp="bf16")
    for key in ("loss/G/rr", "loss/G/rc", "loss/D/frame", "loss/G/adv"):
        assert bf16[0][key] == pytest.approx(fp32[0][key], rel=0.05), key


@needs_cuda
def test_compiled_networks_match_eager(tiny_config, make_batch):
    from rl_v2v_gan.data.dataset import to_float
    from rl_v2v_gan.models.networks import networks_from_config

    cfg = tiny_config(device="cuda")
    torch.manual_seed(0)
    nets = perturbed_heads(networks_from_config(cfg)).cuda().eval()
    x = to_float(make_batch()["a"].cuda())
    eager, eager_pred = nets.gen_ab(x), nets.pred_a(x[:, :2])
    assert (eager - x).abs().mean() > 1e-3  # not the identity: the whole network shapes the output
    nets.gen_ab.compile()
    nets.pred_a.compile()
    torch.testing.assert_close(nets.gen_ab(x), eager, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(nets.pred_a(x[:, :2]), eager_pred, rtol=1e-3, atol=1e-3)
    assert set(nets.state_dict()) == set(networks_from_config(cfg).state_dict())  # checkpoint keys unchanged


def test_selective_checkpointing_trains_under_cpu_bf16_autocast(tiny_config, make_batch):
    """Autocast's weight-cast cache made the selective recomputation meet casts its forward had not
    recorded (a generator called twice in one region casts once): the step failed in the backward."""
    from rl_v2v_gan.models.networks import networks_from_config
    from rl_v2v_gan.train.trainer import Trainer

    cfg = tiny_config(device="cpu", amp="bf16")
    torch.manual_seed(0)
    nets = perturbed_heads(networks_from_config(cfg))
    nets.set_checkpointing("selective")
    trainer = Trainer(cfg, nets, torch.device("cpu"))
    logs = [trainer.train_step(make_batch()) for _ in range(2)]
    assert all(math.isfinite(v) for step in logs for v in step.values())
