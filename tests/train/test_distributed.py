"""DDP on CPU (gloo): two ranks stay in sync and only rank 0 writes checkpoints."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, tmp_path):
    # This checkout's package, not whichever one is installed: the ranks run outside pytest.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = TORCHRUN + ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())] + args
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_two_ranks_keep_identical_parameters_even_when_one_sees_a_nan(tmp_path):
    out = tmp_path / "result.json"
    proc = _run([str(ROOT / "tests" / "train" / "ddp_worker.py"), str(out), str(tmp_path / "data")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["steps"] == 3  # rank 0 saw only clean batches
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



def test_a_collective_returns_its_tensors_released_by_gloo(tmp_path):
    """The gloo worker frees a finished collective's tensors after the caller moved on, which takes
    the GIL; if that is still pending when the interpreter exits, the rank aborts (SIGABRT)."""
    import torch
    import torch.distributed as dist

    from rl_v2v_gan.train.distributed import all_reduce_flag, released

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        for _ in range(20):
            assert all_reduce_flag(True, dist.ReduceOp.MIN, torch.device("cpu")) is True
            t = torch.ones(3)
            dist.all_reduce(t)
            released(t)
            assert t._use_count() == 1  # only the Python object holds it now
    finally:
        dist.destroy_process_group()
