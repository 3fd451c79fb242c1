"""`make clean` removes only what the project generated: never a user's datasets or trained runs."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    return path


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_clean_keeps_user_data_and_runs(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    kept = [_touch(tmp_path / p) for p in ("data/city/trainA/video.mp4", "data/flower/testB/clip/0001.png",
                                           "checkpoints/my_run/epoch_0001/networks.safetensors",
                                           "checkpoints/my_run/latest", "data/synthetic/notes.txt")]
    gone = [_touch(tmp_path / p) for p in (".venv/bin/python", "rl_v2v_gan.egg-info/PKG-INFO",
                                           "checkpoints/demo/latest", "data/synthetic/clips_8x32x32x3_n4-2_seed0/a.npy",
                                           "data/city/.clipstore/32x32x3_resize_s1/manifest.json",
                                           "pkg/__pycache__/m.cpython-311.pyc")]
    proc = subprocess.run(["make", "-C", str(tmp_path), "clean"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert all(p.exists() for p in kept), [str(p) for p in kept if not p.exists()]
    assert not any(p.exists() for p in gone), [str(p) for p in gone if p.exists()]
    assert (tmp_path / "data" / "city" / "trainA").is_dir()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_clean_without_data_folder_succeeds(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    proc = subprocess.run(["make", "-C", str(tmp_path), "clean"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
