"""benchmarks/bench_train.py --phases: the phases an rl_v2v_gan step has and recycle_gan's lacks
are timed, and together they fit inside the step."""

import argparse
import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train.py"
spec = importlib.util.spec_from_file_location("bench_train", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("method,phases", [("recycle_gan", {"D", "G"}),
                                           ("rl_v2v_gan", {"D", "rollout", "minibatch", "critic", "G"})])
def test_phases_are_timed_per_step_and_fit_in_it(method, phases):
    args = argparse.Namespace(input_shape=[4, 16, 16, 3], batch_size=2, ngf=4, ndf=4, buffer_size=64, amp="none",
                              compile=False, device="cpu", steps=1, warmup=1, phases=True)
    row = bench.measure(method, args, count_flops=False)
    assert set(row["phases_s"]) == phases
    assert all(v > 0 for v in row["phases_s"].values())
    assert sum(row["phases_s"].values()) < row["step_s"]  # one timed step: its phases lie inside it
