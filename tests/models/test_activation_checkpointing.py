"""--activation_checkpointing: same values and gradients, fewer stored activations, the auto rule."""

import pytest
import torch

from rl_v2v_gan.config import make_config
from rl_v2v_gan.errors import ConfigError
from rl_v2v_gan.models.generator import Generator, Predictor
from rl_v2v_gan.utils.memory import estimated_peak_bytes, resolve_checkpointing


def _saved_bytes(fn) -> tuple[torch.Tensor, int]:
    """``fn()`` and the bytes of the tensors autograd stores for its backward pass."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def _grads(net) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("make", [lambda: Generator(ngf=8, n_res_blocks=1),
                                  lambda: Predictor(2, ngf=8, n_res_blocks=1, frame_size=(32, 32))],
                         ids=["generator", "predictor"])
def test_checkpointed_networks_give_the_same_outputs_and_gradients_from_fewer_stored_tensors(make):
    torch.manual_seed(0)
    net = make()
    torch.nn.init.normal_(net.head.weight, std=0.02)  # a non-zero head: gradients reach every layer
    x = torch.rand(2, 2 if isinstance(net, Predictor) else 4, 3, 32, 32) * 2 - 1
    out = {}
    for on in (False, True):
        net.zero_grad()
        net.checkpointing = on
        y, saved = _saved_bytes(lambda: net(x))
        (y.square().mean()).backward()
        out[on] = (y.detach(), _grads(net), saved)
    assert torch.allclose(out[True][0], out[False][0], atol=1e-6)
    for g_on, g_off in zip(out[True][1], out[False][1]):
        assert torch.allclose(g_on, g_off, atol=1e-6, rtol=1e-5)
    assert out[True][2] < 0.1 * out[False][2], (out[True][2], out[False][2])  # input and output only


def test_a_checkpointed_training_step_matches_the_plain_one(tiny_config, make_trainer, make_batch):
    logs = {}
    for on in (False, True):
        trainer = make_trainer(tiny_config(method="rl_v2v_gan"))
        trainer.nets.set_checkpointing(on)
        torch.manual_seed(3)
        logs[on] = [trainer.train_step(make_batch(seed=i)) for i in range(2)]
    for a, b in zip(logs[True], logs[False]):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k


def test_flag_choices_and_the_auto_rule(tmp_path):
    flags = dict(data_root=str(tmp_path), checkpoint_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="--activation_checkpointing needs --norm instance"):
        make_config(activation_checkpointing="on", norm="batch", **flags)
    cpu = torch.device("cpu")
    assert resolve_checkpointing(make_config(**flags), cpu, None)[0] is False  # auto: the host's memory
    assert resolve_checkpointing(make_config(activation_checkpointing="on", **flags), cpu, None)[0] is True
    # The estimate reproduces the measured sizes and scales with the activations.
    seed_size = estimated_peak_bytes("rl_v2v_gan", 4, (16, 256, 256, 3), 64, half_precision=False)
    assert seed_size / 2 ** 30 == pytest.approx(99.1)
    assert estimated_peak_bytes("rl_v2v_gan", 2, (16, 256, 256, 3), 64, False) == pytest.approx(seed_size / 2)
    assert estimated_peak_bytes("cycle_gan", 4, (16, 256, 256, 3), 64, True) < seed_size
