"""Crash safety: SIGKILL mid-epoch and mid-save, SIGTERM, non-finite steps, full disk."""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rl_v2v_gan.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--config", "tiny", "--epochs", "3", "--steps_per_epoch", "2", "--device", "cpu"]


def _cmd(tmp_path, *extra):
    return [sys.executable, str(ROOT / "main.py"), "--mode", "train", *FLAGS, "--data_root", str(tmp_path / "data"),
            "--checkpoint_dir", str(tmp_path / "ck"), *extra]


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _losses(run: Path) -> dict[int, dict]:
    """Step -> logged values; a resumed run's later lines win (they replace the lost ones)."""
    out = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        row = json.loads(line)
        out[row["step"]] = row
    return out


def _wait_for(predicate, proc, timeout=120):
    start = time.time()
    while not predicate():
        assert proc.poll() is None, f"training ended early: {proc.communicate()}"
        assert time.time() - start < timeout, "timed out waiting for the training process"
        time.sleep(0.05)


@pytest.fixture
def tiny_cfg():
    from rl_v2v_gan.config import make_config

    return lambda **kw: make_config(config="tiny", device="cpu", **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: the losses every interrupted-and-resumed run must reproduce."""
    tmp = tmp_path_factory.mktemp("ref")
    proc = subprocess.run(_cmd(tmp), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp, _losses(tmp / "ck" / "rl_v2v_gan")


def _assert_same_losses(got: dict, want: dict, steps):
    for step in steps:
        for key, value in want[step].items():
            assert got[step][key] == value, (step, key)  # exact: CPU resume is bit-identical


def _resume(tmp_path):
    proc = subprocess.run(_cmd(tmp_path, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, reference):
    _, want = reference
    run = tmp_path / "ck" / "rl_v2v_gan"
    proc = subprocess.Popen(_cmd(tmp_path), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: (run / "log.jsonl").exists() and len((run / "log.jsonl").read_text().splitlines()) >= 3, proc)
    proc.kill()  # SIGKILL during epoch 2 (step 3 done, epoch_0001 complete)
    proc.wait()
    assert (run / "latest").read_text().strip() == "epoch_0001"
    out = _resume(tmp_path)
    assert "resumed from" in out.stdout and "at step 2" in out.stdout
    _assert_same_losses(_losses(run), want, steps=range(3, 7))
    # The steps redone after the checkpoint appear once, in the JSONL and in TensorBoard.
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("loss/G/total")] == list(range(1, 7))


def test_sigkill_mid_checkpoint_write_keeps_previous_latest(tmp_path, reference):
    _, want = reference
    run = tmp_path / "ck" / "rl_v2v_gan"
    marker = tmp_path / "in_save"
    env = _env(RLV2V_TEST_PAUSE_IN_SAVE="60", RLV2V_TEST_PAUSE_AT_STEP="4", RLV2V_TEST_SAVE_MARKER=str(marker))
    proc = subprocess.Popen(_cmd(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(marker.exists, proc)
    proc.kill()  # inside save_checkpoint of epoch_0002: files written, not yet renamed into place
    proc.wait()
    assert (run / "latest").read_text().strip() == "epoch_0001"
    assert not (run / "epoch_0002").exists()
    assert list(run.glob(".epoch_0002*.tmp"))  # the half-written checkpoint is only a temp folder
    _resume(tmp_path)
    assert not list(run.glob(".*.tmp"))  # cleaned on resume
    _assert_same_losses(_losses(run), want, steps=range(3, 7))


def test_sigterm_writes_checkpoint_and_exits_143(tmp_path):
    run = tmp_path / "ck" / "rl_v2v_gan"
    cmd = _cmd(tmp_path)
    cmd[cmd.index("--epochs") + 1] = "50"
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run / "log.jsonl").exists() and len((run / "log.jsonl").read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    latest = (run / "latest").read_text().strip()
    step = json.loads((run / latest / "manifest.json").read_text())["step"]
    assert step >= 3 and (latest == f"step_{step:08d}" or latest.startswith("epoch_"))
    assert "--resume" in out


def test_poisoned_batch_is_skipped_and_counted(tiny_cfg, monkeypatch):
    from rl_v2v_gan.models.networks import networks_from_config
    from rl_v2v_gan.train import trainer as trainer_mod

    cfg = tiny_cfg(max_nonfinite_steps=3)
    torch.manual_seed(0)
    trainer = trainer_mod.Trainer(cfg, networks_from_config(cfg), torch.device("cpu"))
    t, h, w, c = cfg.input_shape
    batch = {d: torch.randint(0, 256, (cfg.batch_size, t, c, h, w), dtype=torch.uint8) for d in "ab"}
    trainer.train_step(batch)
    before = {k: v.clone() for k, v in trainer.nets.state_dict().items()}
    replay_before = len(trainer.replay["a"])

    clean = trainer_mod.to_float
    monkeypatch.setattr(trainer_mod, "to_float", lambda x: clean(x) * math.nan)
    logs = trainer.train_step(batch)
    assert logs["nonfinite_steps"] == 1.0
    after = trainer.nets.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k]) and "_target" not in k]
    assert changed == []  # no online parameter moved
    assert len(trainer.replay["a"]) == replay_before  # nothing poisoned the buffer

    monkeypatch.setattr(trainer_mod, "to_float", clean)
    trainer.train_step(batch)  # a good step resets the streak
    assert trainer.nonfinite_streak == 0 and trainer.nonfinite_total == 1

    monkeypatch.setattr(trainer_mod, "to_float", lambda x: clean(x) * math.nan)
    trainer.train_step(batch)
    trainer.train_step(batch)
    with pytest.raises(trainer_mod.NonFiniteError, match="3 consecutive steps"):
        trainer.train_step(batch)


def test_full_disk_keeps_existing_checkpoints(tiny_cfg, tmp_path, monkeypatch):
    from rl_v2v_gan.models.networks import networks_from_config
    from rl_v2v_gan.train import checkpoint as ckpt_io
    from rl_v2v_gan.train.trainer import Trainer

    cfg = tiny_cfg(checkpoint_dir=str(tmp_path))
    trainer = Trainer(cfg, networks_from_config(cfg), torch.device("cpu"))
    trainer.step = 2
    first = ckpt_io.save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), 2)
    trainer.step = 4

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_io, "save_file", no_space)
    with pytest.raises(UserError, match="No space left on device.*intact"):
        ckpt_io.save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), 2)
    assert (cfg.run_dir / "latest").read_text().strip() == first.name
    assert ckpt_io.verify(first) is None
    assert sorted(p.name for p in cfg.run_dir.iterdir()) == ["epoch_0001", "latest"]  # no temp leftovers
