"""DDP on CPU (gloo): two ranks stay in sync, only rank 0 writes checkpoints, each rank resumes
with its own replay buffer and RNG state, and a rank's wait for the others ends at --ddp_timeout_s."""

import datetime
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl_v2v_gan.models.networks import networks_from_config
from rl_v2v_gan.train import checkpoint as ckpt_io
from rl_v2v_gan.train import distributed
from rl_v2v_gan.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1"]
WORKER = str(ROOT / "tests" / "train" / "ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, tmp_path, extra_env=None):
    # This checkout's package, not whichever one is installed: the ranks run outside pytest.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **(extra_env or {})}
    cmd = TORCHRUN + ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())] + args
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_two_ranks_keep_identical_parameters_even_when_one_sees_a_nan(tmp_path):
    out = tmp_path / "result.json"
    proc = _run([WORKER, "sync", str(out), str(tmp_path / "data")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["steps"] == 3  # rank 0 saw only clean batches
    # The actor term ran with DDP: on steps 1 and 3 (on step 2 rank 1's NaN rollout left no critic minibatch).
    assert result["actor_steps"] == 2
    assert result["finite"]
    assert result["nonfinite_steps"] == [1.0, 1.0]  # the NaN on rank 1 made both ranks skip
    assert result["max_param_diff"] == 0.0  # networks, targets included, bit-identical across ranks


def test_torchrun_cli_writes_exactly_one_checkpoint(tmp_path):
    proc = _run([str(ROOT / "main.py"), "--mode", "train", "--config", "tiny", "--device", "cpu", "--steps_per_epoch",
                 "3", "--data_root", str(tmp_path / "data"), "--checkpoint_dir", str(tmp_path / "ck")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ck" / "rl_v2v_gan"
    checkpoints = sorted(p.name for p in run.iterdir() if p.is_dir() and p.name.startswith(("epoch_", "step_")))
    assert checkpoints == ["epoch_0001"]
    assert (run / "latest").read_text().strip() == "epoch_0001"
    assert proc.stdout.count("saved checkpoint") == 1  # rank 1 printed nothing of its own


def test_init_distributed_gives_the_process_group_the_timeout(monkeypatch):
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **k: calls.append((a, k)))
    info, device = distributed.init_distributed("cpu", 7)
    assert (info.rank, info.world_size, device.type) == (1, 2, "cpu")
    assert calls == [(("gloo",), {"timeout": datetime.timedelta(seconds=7)})]


def test_train_passes_ddp_timeout_s_to_the_process_group(tiny_config, monkeypatch):
    from rl_v2v_gan.train import loop

    class Seen(Exception):
        pass

    def init(device_flag, timeout_s=None):
        raise Seen(timeout_s)

    monkeypatch.setattr(loop, "init_distributed", init)
    with pytest.raises(Seen) as seen:
        loop.train(tiny_config(ddp_timeout_s=123))
    assert seen.value.args == (123,)
    assert tiny_config().ddp_timeout_s == 7200  # the default: two hours of evaluation and saving


def test_a_wait_for_rank_0_fails_at_ddp_timeout_s(tmp_path):
    """Rank 1 saves a checkpoint (sends rank 0 its state, then the barrier) while rank 0 stays away:
    the wait ends after --ddp_timeout_s 3, not after gloo's default 30 minutes."""
    out = tmp_path / "timeout.json"
    proc = _run([WORKER, "timeout", str(out), str(tmp_path / "data")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(Path(f"{out}.rank1").read_text())
    assert result["error"] is not None and "timed out" in result["error"].lower(), result
    assert 2.5 <= result["waited_s"] < 30, result


def test_torchrun_run_with_slow_rank_0_at_the_epoch_end_completes_within_its_timeout(tmp_path):
    """Rank 0 evaluates and saves (with a test pause of 3 s) while rank 1 waits for it, under
    --ddp_timeout_s 12: the pause plus room for the tiny evaluation on a busy machine (under 4 s
    measured; test_a_wait_for_rank_0_fails_at_ddp_timeout_s shows the timeout is in force). The run
    completes, and its checkpoints, mid-epoch ones included, hold each rank's buffer and RNG state."""
    paused = tmp_path / "paused"
    env = {"RLV2V_TEST_PAUSE_IN_SAVE": "3", "RLV2V_TEST_PAUSE_AT_STEP": "3", "RLV2V_TEST_SAVE_MARKER": str(paused)}
    proc = _run([str(ROOT / "main.py"), "--mode", "train", "--config", "tiny", "--device", "cpu", "--steps_per_epoch",
                 "3", "--save_every_steps", "2", "--ddp_timeout_s", "12", "--r1_gamma", "0",  # DDP: no double backward
                 "--data_root", str(tmp_path / "data"), "--checkpoint_dir", str(tmp_path / "ck")], tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert paused.exists()  # rank 0 did pause in the epoch-end save
    run = tmp_path / "ck" / "rl_v2v_gan"
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["step_00000002", "epoch_0001"]
    assert ckpt_io.resolve(run).name == "epoch_0001"
    newest = json.loads((run / "epoch_0001" / "manifest.json").read_text())
    assert newest["world_size"] == 2
    assert set(newest["sha256"]) == {"networks.safetensors", "state.pt", "config.json", "replay.safetensors",
                                     "rng.rank1.pt", "replay.rank1.safetensors"}
    older = json.loads((run / "step_00000002" / "manifest.json").read_text())
    assert set(older["sha256"]) == {"networks.safetensors", "state.pt", "config.json", "rng.rank1.pt"}
    assert ckpt_io.verify(run / "step_00000002") is None  # its replay buffers retired, both ranks'


def _replay_digest(trainer) -> str:  # as ddp_worker.replay_digest
    h = hashlib.sha256()
    for d, buf in sorted(trainer.replay.items()):
        for k, v in sorted(buf.state_dict().items()):
            h.update(f"{d}.{k}".encode() + v.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_ddp_resume_gives_each_rank_its_own_replay_buffer_and_rng(tmp_path, tiny_config, make_trainer, make_batch):
    cfg = tiny_config(method="rl_v2v_gan", steps_per_epoch=2, r1_gamma=0.0)  # DDP has no R1 (double backward)
    single = make_trainer(cfg)
    for step in range(2):
        single.train_step(make_batch(seed=step))
    ckpt_io.save_checkpoint(cfg.run_dir, single, cfg.to_json(), cfg.steps_per_epoch)  # by one process
    config = tmp_path / "config.json"
    config.write_text(cfg.to_json())
    out = tmp_path / "resume.json"
    proc = _run([WORKER, "resume", str(out), str(tmp_path / "data"), str(config)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads(Path(f"{out}.rank{r}").read_text()) for r in (0, 1))

    # From the single-process checkpoint: both ranks start from its buffer, rank 1 reseeded, a warning.
    assert r0["fallback_replay"] == r1["fallback_replay"] == _replay_digest(single)
    assert r0["fallback_rng"] != r1["fallback_rng"]
    assert all("saved by 1 process(es), this run has 2" in r["fallback_warning"][0] for r in (r0, r1))
    # From the two-process checkpoint: each rank gets back its own buffer and RNG state, not rank 0's.
    assert r0["saved_replay"] != r1["saved_replay"] and r0["saved_rng"] != r1["saved_rng"]
    for r in (r0, r1):
        assert r["restored_replay"] == r["saved_replay"] and r["restored_rng"] == r["saved_rng"], r["rank"]
        assert r["restored_step"] == r["saved_step"] == 4 and r["restored_warning"] == []

    ckpt = cfg.run_dir / "epoch_0002"
    # Resumed by one process: rank 0's buffer, with a warning.
    lines = []
    torch.manual_seed(1)
    alone = Trainer(cfg, networks_from_config(cfg), torch.device("cpu"))
    assert ckpt_io.restore(cfg, alone.nets, alone, None, lines.append).name == "epoch_0002"
    assert _replay_digest(alone) == r0["saved_replay"]
    assert any("saved by 2 process(es), this run has 1" in line for line in lines)
    # A checkpoint without one rank's file is damaged.
    (ckpt / "rng.rank1.pt").unlink()
    assert ckpt_io.verify(ckpt) == "missing rng.rank1.pt"
    manifest = json.loads((ckpt / "manifest.json").read_text())
    del manifest["sha256"]["replay.rank1.safetensors"]
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    assert ckpt_io.verify(ckpt) == "its manifest lists no replay.rank1.safetensors (saved by 2 processes)"



def test_a_collective_returns_its_tensors_released_by_gloo(tmp_path):
    """The gloo worker frees a finished collective's tensors after the caller moved on, which takes
    the GIL; if that is still pending when the interpreter exits, the rank aborts (SIGABRT)."""
    import torch
    import torch.distributed as dist

    from rl_v2v_gan.train.distributed import all_reduce_flag, released

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        for _ in range(20):
            assert all_reduce_flag(True, dist.ReduceOp.MIN) is True
            t = torch.ones(3)
            dist.all_reduce(t)
            released(t)
            assert t._use_count() == 1  # only the Python object holds it now
    finally:
        dist.destroy_process_group()
