"""--activation_checkpointing: same values and gradients, fewer stored activations, the auto rule."""

import pytest
import torch

from rl_v2v_gan.config import make_config
from rl_v2v_gan.errors import ConfigError
from rl_v2v_gan.models.generator import SAVE_MACS_PER_VALUE, Generator, Predictor
from rl_v2v_gan.utils.memory import HEADROOM, choose_checkpointing, estimated_peak_bytes, resolve_checkpointing


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


def _run_modes(net, x, modes) -> dict:
    """Per mode: (output, gradients, stored bytes) of one forward + backward."""
    out = {}
    for mode in modes:
        net.zero_grad()
        net.checkpointing = mode
        y, saved = _saved_bytes(lambda: net(x))
        (y.square().mean()).backward()
        out[mode] = (y.detach(), _grads(net), saved)
    return out


def _assert_same(out, mode):
    assert torch.allclose(out[mode][0], out["off"][0], atol=1e-6)
    for g_on, g_off in zip(out[mode][1], out["off"][1]):
        assert torch.allclose(g_on, g_off, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("make", [lambda: Generator(ngf=8, n_res_blocks=1),
                                  lambda: Predictor(2, ngf=8, n_res_blocks=1, frame_size=(32, 32))],
                         ids=["generator", "predictor"])
def test_checkpointed_networks_give_the_same_outputs_and_gradients_from_fewer_stored_tensors(make):
    torch.manual_seed(0)
    net = make()
    torch.nn.init.normal_(net.head.weight, std=0.02)  # a non-zero head: gradients reach every layer
    x = torch.rand(2, 2 if isinstance(net, Predictor) else 4, 3, 32, 32) * 2 - 1
    out = _run_modes(net, x, ("off", "on", "selective"))
    for mode in ("on", "selective"):
        _assert_same(out, mode)
        # At this width no convolution is dear enough to keep: selective stores what on does.
        assert out[mode][2] < 0.1 * out["off"][2], (mode, out[mode][2], out["off"][2])  # input and output only


def test_selective_checkpointing_keeps_only_the_dear_convolutions_outputs():
    torch.manual_seed(0)
    net = Generator(ngf=64, n_res_blocks=1)  # the bottleneck's 3x3 convolutions on 256 channels: 2304 MACs a value
    assert net.bottleneck[0].body[0].weight[0].numel() >= SAVE_MACS_PER_VALUE > net.down[0][0].weight[0].numel()
    torch.nn.init.normal_(net.head.weight, std=0.02)
    x = torch.rand(1, 2, 3, 16, 16) * 2 - 1
    out = _run_modes(net, x, ("off", "on", "selective"))
    _assert_same(out, "selective")
    # More than on (the kept convolutions' outputs), far less than off (the rest is recomputed).
    assert out["on"][2] < out["selective"][2] < 0.5 * out["off"][2], {m: v[2] for m, v in out.items()}


@pytest.mark.parametrize("mode", ["on", "selective"])
def test_a_checkpointed_training_step_matches_the_plain_one(mode, tiny_config, make_trainer, make_batch):
    logs = {}
    for m in ("off", mode):
        trainer = make_trainer(tiny_config(method="rl_v2v_gan"))
        trainer.nets.set_checkpointing(m)
        torch.manual_seed(3)
        logs[m] = [trainer.train_step(make_batch(seed=i)) for i in range(2)]
    for a, b in zip(logs[mode], logs["off"]):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k


def test_flag_choices_and_the_auto_rule(tmp_path):
    flags = dict(data_root=str(tmp_path), checkpoint_dir=str(tmp_path))
    for mode in ("on", "selective"):
        with pytest.raises(ConfigError, match="--activation_checkpointing needs --norm instance"):
            make_config(activation_checkpointing=mode, norm="batch", **flags)
    cpu = torch.device("cpu")
    assert resolve_checkpointing(make_config(**flags), cpu, None)[0] == "off"  # auto: the host's memory
    for mode in ("on", "selective", "off"):
        assert resolve_checkpointing(make_config(activation_checkpointing=mode, **flags), cpu, None)[0] == mode
    # auto on CUDA: the least recomputation that fits the budget, "on" when nothing is estimated to fit.
    assert choose_checkpointing(10.0, 10.0) == "off"
    assert choose_checkpointing(12.0, 10.0) == "selective"
    assert choose_checkpointing(100.0, 10.0) == "on"
    seed_bf16 = estimated_peak_bytes("rl_v2v_gan", 4, (16, 256, 256, 3), 64, half_precision=True)
    assert choose_checkpointing(seed_bf16, HEADROOM * 80 * 2 ** 30) == "off"  # an 80 GiB card
    # The estimate reproduces the measured sizes and scales with the activations.
    seed_size = estimated_peak_bytes("rl_v2v_gan", 4, (16, 256, 256, 3), 64, half_precision=False)
    assert seed_size / 2 ** 30 == pytest.approx(99.1)
    assert estimated_peak_bytes("rl_v2v_gan", 2, (16, 256, 256, 3), 64, False) == pytest.approx(seed_size / 2)
    assert estimated_peak_bytes("cycle_gan", 4, (16, 256, 256, 3), 64, True) < seed_size
