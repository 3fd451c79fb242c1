"""utils/precision.py: --amp resolution and the fp32 fallback for bf16 Conv3d on CPU."""

import pytest
import torch

from rl_v2v_gan.models.discriminator import VideoDiscriminator
from rl_v2v_gan.utils.precision import bf16_conv3d_unsafe, conv3d_fp32_where_unsafe, resolve_amp

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize("amp, cpu, cuda", [("none", None, None), ("auto", None, torch.bfloat16),
                                            ("bf16", torch.bfloat16, torch.bfloat16), ("fp16", None, torch.float16)])
def test_resolve_amp_auto_is_bf16_on_cuda_and_none_on_cpu_where_only_bf16_is_taken(amp, cpu, cuda):
    assert resolve_amp(amp, CPU) is cpu
    assert resolve_amp(amp, CUDA) is cuda
    with pytest.raises(ValueError, match="one of none, auto"):
        resolve_amp("fp8", CUDA)


def test_unsafe_only_under_cpu_bf16_autocast():
    assert not bf16_conv3d_unsafe("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert bf16_conv3d_unsafe("cpu") and not bf16_conv3d_unsafe("cuda")
    with torch.autocast("cpu", dtype=torch.float16):
        assert not bf16_conv3d_unsafe("cpu")


def test_fallback_runs_fp32_under_cpu_bf16_autocast_and_is_a_no_op_otherwise():
    conv = torch.nn.Conv3d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 2, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16
        assert conv3d_fp32_where_unsafe(conv, x).dtype == torch.float32
    torch.testing.assert_close(conv3d_fp32_where_unsafe(conv, x), conv(x))


def test_video_discriminator_weight_gradients_match_fp32_with_the_fallback():
    # 8x32x32: the strided blocks bring T to 2 with temporal stride 1, the shape whose oneDNN bf16
    # weight gradient is garbage (benchmarks/repro_bf16_conv3d.py).
    torch.manual_seed(0)
    vdisc = VideoDiscriminator(3, (8, 32, 32), ndf=8)
    x = torch.rand(2, 8, 3, 32, 32) * 2 - 1  # [B,T,C,H,W]

    def grads(bf16: bool) -> list[torch.Tensor]:
        vdisc.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            feat = conv3d_fp32_where_unsafe(vdisc.features, x.transpose(1, 2))  # [B,ch,t,h,w]
            logit = vdisc.head(feat.float().mean(dim=(2, 3, 4)))[:, 0]
        logit.float().sum().backward()
        return [p.grad.clone() for p in vdisc.parameters()]

    for ref, got in zip(grads(False), grads(True)):
        assert torch.isfinite(got).all()
        assert float((got - ref).norm()) <= 0.02 * float(ref.norm()) + 1e-6


def test_trainer_resolves_amp_auto_to_none_on_cpu(tiny_config, make_trainer):
    trainer = make_trainer(tiny_config(method="cycle_gan", amp="auto"))
    assert trainer.amp_dtype is None and not trainer.scaler.is_enabled()
