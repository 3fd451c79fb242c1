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


def test_forked_steps_agree_within_the_tolerance_and_fail_beyond_it_or_on_a_skip():
    ref = _logs([1.0, 1.2])
    verdict = gpu_check.compare_forks([(0, ref, _logs([1.05, 1.15])), (25, ref, ref)])
    assert verdict["ok"] and verdict["forks"] == 2 and verdict["steps_compared"] == 4
    assert set(verdict["keys"]) == {"loss/G/total", "loss/D/frame", "rl/q_loss"}
    assert verdict["worst_ratio"]["loss/G/total"] == pytest.approx(0.5)
    off = gpu_check.compare_forks([(25, ref, _logs([1.0, 1.4]))])
    assert not off["ok"] and off["failures"] == ["loss/G/total step 27: 1.4 vs 1.2 (tolerance 0.12)"]
    skipped = gpu_check.compare_forks([(0, ref, _logs([1.0, 1.2], skipped=1.0))])
    assert not skipped["ok"] and skipped["skipped_updates"] == 2
    tiny = gpu_check.compare_forks([(0, _logs([0.0, 0.0]), _logs([0.003, 0.0]))])  # under one grey level
    assert tiny["ok"] and not gpu_check.compare_forks([(0, _logs([0.0, 0.0]), _logs([0.005, 0.0]))])["ok"]
    nan = gpu_check.compare_forks([(0, ref, _logs([float("nan"), 1.2]))])
    assert not nan["ok"] and nan["worst_ratio"]["loss/G/total"] == float("inf")
    assert not gpu_check.compare_forks([])["ok"]  # nothing compared: no verdict


def test_paired_horizons_fork_the_whole_state_and_leave_the_trajectory_alone(tiny_config, make_trainer, make_batch):
    """Two fp32 forks of one state on the same batches and seed are identical (so a bf16 difference
    is precision, not sampling), and forking does not change the fp32 trajectory."""
    import torch

    batches = [make_batch() for _ in range(4)]
    torch.manual_seed(0)
    trainer = make_trainer(tiny_config(method="rl_v2v_gan"))
    pairs = gpu_check.paired_horizons(trainer, batches, window=2, horizon=2, dtype=None)
    assert [p[0] for p in pairs] == [0, 2] and all(len(p[1]) == len(p[2]) == 2 for p in pairs)
    assert all(a == b for _, ref, other in pairs for a, b in zip(ref, other))
    assert pairs[0][1][0] != pairs[1][1][0]  # the forks start from the trajectory's state of their step
    assert gpu_check.compare_forks(pairs)["worst_ratio"]["loss/G/total"] == 0.0
    torch.manual_seed(0)
    alone = make_trainer(tiny_config(method="rl_v2v_gan"))
    for batch in batches:
        alone.train_step(batch)
    assert trainer.step == alone.step == 4
    assert all(torch.equal(a, b) for a, b in zip(trainer.nets.state_dict().values(), alone.nets.state_dict().values()))
    bf16 = gpu_check.compare_forks(gpu_check.paired_horizons(make_trainer(tiny_config(method="rl_v2v_gan")), batches,
                                                             window=2, horizon=2, dtype=torch.bfloat16))
    assert bf16["ok"], bf16["failures"]


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
    assert parts["curves"]["ok"] and parts["curves"]["forks"] == 2 and parts["curves"]["steps_compared"] == 4
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
