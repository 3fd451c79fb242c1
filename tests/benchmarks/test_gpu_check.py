"""benchmarks/gpu_check.py: its smoke mode runs every part on CPU, and the bf16-vs-fp32 verdict."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def _logs(values, skipped=0.0):
    return [{"loss/G/total": v, "loss/D/frame": 1.0, "skipped/D": skipped, "rl/q_loss": 0.5} for v in values]


def test_curves_agree_within_the_window_noise():
    ref = _logs([1.0, 1.2] * 10)
    near = _logs([1.05, 1.15] * 10)
    verdict = gpu_check.compare_curves(ref, near, window=5)
    assert verdict["ok"] and verdict["steps_compared"] == 20
    assert set(verdict["keys"]) == {"loss/G/total", "loss/D/frame", "rl/q_loss"}


def test_curves_that_drift_or_skip_fail():
    ref = _logs([1.0, 1.2] * 10)
    drift = gpu_check.compare_curves(ref, _logs([1.0, 1.2] * 5 + [2.0, 2.2] * 5), window=5)
    assert not drift["ok"] and any("loss/G/total steps 11-15" in f for f in drift["failures"])
    skipped = gpu_check.compare_curves(ref, _logs([1.0, 1.2] * 10, skipped=1.0), window=5)
    assert not skipped["ok"] and skipped["skipped_updates"] == 20
    assert not gpu_check.compare_curves(ref[:3], ref[:3], window=5)["ok"]  # too short to judge


@pytest.mark.slow
def test_smoke_mode_runs_every_part_and_writes_json_and_markdown(tmp_path):
    assert gpu_check.main(["--out", str(tmp_path), "--smoke", "--budget_s", "300"]) == 0
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = results["parts"]
    assert set(parts) == {"conv3d", "tests", "bench/rl_v2v_gan", "bench/recycle_gan", "bench/cycle_gan",
                          "bench/rl_v2v_gan+checkpointing", "bench/rl_v2v_gan+selective", "curves", "translate",
                          "memory", "compile/cycle_gan"}
    assert all(r["activation_checkpointing"] == "on" for r in parts["bench/rl_v2v_gan+checkpointing"]["rows"])
    assert all(r["activation_checkpointing"] == "selective" for r in parts["bench/rl_v2v_gan+selective"]["rows"])
    assert results["ok"] and results["smoke"]
    assert all("error" not in p for p in parts.values()), {k: p.get("error") for k, p in parts.items()}
    for method in gpu_check.METHODS:
        rows = parts[f"bench/{method}"]["rows"]
        assert [r["amp"] for r in rows] == ["none", "bf16"] and all(r["step_s"] > 0 for r in rows)
        assert rows[0]["flops_per_step"] > 0
    assert parts["compile/cycle_gan"]["rows"][0]["compile"] is True
    assert parts["curves"]["ok"] and parts["curves"]["steps_compared"] == 4
    assert parts["translate"]["model_fps"] > 0
    assert parts["memory"]["replay_gib"] == pytest.approx(10000 * 3 * 3 * 256 * 256 / 2**30, rel=0.01)
    assert parts["tests"]["test_gpu"]["ok"] and parts["tests"]["k_cuda"]["ok"]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| rl_v2v_gan | bf16 |" in table and "| curves |" in table


def test_a_part_past_its_cap_is_cut_and_says_so():
    def slow(sizes, report):
        report({"partial": 1})
        import time
        time.sleep(30)

    data = gpu_check.run_forked(slow, gpu_check.SMOKE, timeout=2)
    assert data["partial"] == 1 and "cut at its time cap" in data["error"] and data["seconds"] < 10
