"""--replay_device: where the buffer lives, and that a host buffer hands out only the minibatch."""

import pytest
import torch

from rl_v2v_gan.errors import UserError
from rl_v2v_gan.rl.replay_buffer import (AUTO_DEVICE_SHARE, ReplayBuffer, Transitions, mix, replay_nbytes,
                                         replay_placement)

P, C, H, W = 2, 3, 8, 8
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)
GiB = 2**30

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")


def _transitions(n: int, seed: int = 0, device=CPU) -> Transitions:
    g = torch.Generator().manual_seed(seed)
    state = torch.rand(n, P, C, H, W, generator=g) * 2 - 1
    action = torch.rand(n, C, H, W, generator=g) * 2 - 1
    tr = Transitions(state, action, torch.arange(n, dtype=torch.float32), torch.arange(n) % 2 == 1,
                     torch.arange(n) + P - 1)
    return Transitions(*(x.to(device) for x in tr))


def test_replay_nbytes_counts_frames_and_scalars():
    buf = ReplayBuffer(10, (P, C, H, W))
    assert buf.nbytes == replay_nbytes(10, (P, C, H, W)) == 10 * ((P + 1) * C * H * W + 7)
    # The default 10000 transitions at 256x256, p = 2: 5.9 GB of frames.
    assert replay_nbytes(10000, (2, 3, 256, 256)) == pytest.approx(5.9e9, rel=0.01)


def test_placement_on_cpu_training_is_the_host_unpinned():
    assert replay_placement("auto", GiB, CPU) == (CPU, False)
    assert replay_placement("cpu", GiB, CPU) == (CPU, False)
    with pytest.raises(UserError, match="--replay_device cuda needs training on a CUDA device"):
        replay_placement("cuda", GiB, CPU)


def test_auto_keeps_a_buffer_that_fits_on_the_gpu_and_pins_one_that_does_not():
    free = 40 * GiB
    fits = int(AUTO_DEVICE_SHARE * free)
    assert replay_placement("auto", fits, CUDA, free_bytes=free) == (CUDA, False)
    assert replay_placement("auto", fits + 1, CUDA, free_bytes=free) == (CPU, True)
    assert replay_placement("cpu", 1, CUDA, free_bytes=free) == (CPU, True)  # host memory, pinned
    assert replay_placement("cuda", 100 * GiB, CUDA, free_bytes=free) == (CUDA, False)  # as asked


def test_get_onto_another_device_equals_get_then_move():
    buf = ReplayBuffer(16, (P, C, H, W))
    buf.push(_transitions(12))
    idx = torch.tensor([3, 0, 11, 3])
    for x, y in zip(buf.get(idx, "cpu"), buf.get(idx)):
        assert torch.equal(x, y)


@needs_cuda
def test_host_replay_on_cuda_copies_only_the_minibatch_non_blocking():
    buf = ReplayBuffer(512, (P, C, 64, 64), CPU, pin_memory=True)
    assert buf.states.is_pinned() and buf.device == CPU
    g = torch.Generator().manual_seed(0)
    state = torch.rand(512, P, C, 64, 64, generator=g, device="cpu").cuda() * 2 - 1
    fresh = Transitions(state, state[:, -1], torch.rand(512).cuda(), torch.zeros(512, dtype=torch.bool).cuda(),
                        torch.ones(512, dtype=torch.long).cuda())
    buf.push(fresh)  # from the GPU into host memory
    assert len(buf) == 512 and torch.equal(buf.get(torch.arange(4)).cost, fresh.cost[:4].cpu())
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    n = 8
    for i in range(3):  # reuses the pinned staging rows; each draw must see its own rows
        idx = torch.tensor([i, 100 + i, 500 - i, 7, i, 1, 2, 3])
        got = buf.get(idx, CUDA)
        assert got.state.device.type == "cuda"
        torch.testing.assert_close(got.state.cpu(), buf.get(idx).state)
    frames = n * (P + 1) * C * 64 * 64
    # uint8 rows plus their float copies: a few minibatches' worth, never the 512-row buffer
    assert torch.cuda.max_memory_allocated() - before < 3 * 5 * frames
    batch, _ = mix(_transitions(n, device=CUDA), buf, 1.0)
    assert batch.state.device.type == "cuda" and batch.cost.min() >= 0


@needs_cuda
def test_trainer_on_cuda_places_replay_by_flag(tiny_config):
    from rl_v2v_gan.models.networks import networks_from_config
    from rl_v2v_gan.train.trainer import Trainer

    for flag, device, pinned in (("cpu", "cpu", True), ("cuda", "cuda", False), ("auto", "cuda", False)):
        cfg = tiny_config(device="cuda", replay_device=flag, sigma1=1.0)
        trainer = Trainer(cfg, networks_from_config(cfg).cuda(), CUDA)
        assert {(b.device.type, b.pinned) for b in trainer.replay.values()} == {(device, pinned)}
        logs = [trainer.train_step({d: torch.randint(0, 256, (2, 4, 3, 16, 16), dtype=torch.uint8) for d in "ab"})
                for _ in range(2)]
        # B=2 episodes of T-p=2 transitions per domain: the second step's minibatch is all from the buffer
        assert logs[1]["rl/from_buffer_a"] == 1.0 and logs[1]["rl/replay_size"] == 2 * 2 * 4
