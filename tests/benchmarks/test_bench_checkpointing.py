"""benchmarks/bench_checkpointing.py: its live-bytes count is exact on a known sequence, and both parts run."""

import importlib.util
import sys
from pathlib import Path

import torch

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_checkpointing.py"
spec = importlib.util.spec_from_file_location("bench_checkpointing", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_live_bytes_peaks_at_the_most_storage_alive_at_once():
    mib = 2 ** 20
    before = torch.zeros(4 * mib // 4)  # 4 MiB allocated before the region
    with bench.LiveBytes() as live:
        a = torch.zeros(mib // 4)  # 1 MiB of float32
        b = torch.zeros(2 * mib // 4)  # 2 MiB: 3 alive
        view = b[1:]  # a view: no new storage
        del a
        c = torch.ones(mib // 4)  # 1 MiB: 3 alive again, never 4
        del b, view
        d = c + 1  # 1 MiB: 2 alive
        before.add_(1)  # in place on a storage from before the region: nothing allocated
        torch.add(c, 1, out=d)  # out= on a counted storage: nothing new
    assert live.peak == 3 * mib
    assert live.current == 2 * mib
    del c, d


def test_both_parts_run_and_report_every_mode(capsys, monkeypatch):
    flags = ["--input_shape", "4", "16", "16", "3", "--ngf", "8", "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", ["bench_checkpointing.py", *flags])
    bench.main()
    out = capsys.readouterr().out
    assert all(f"generator  {m}" in out for m in ("off", "on", "selective")) and "False" not in out
    monkeypatch.setattr(sys, "argv", ["bench_checkpointing.py", "--step", "--batch_size", "1", *flags])
    bench.main()
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["on"], ["off"],
                                                                                                  ["selective"])]
    assert [r[0] for r in rows] == ["off", "on", "selective"]
    assert float(rows[1][1]) < float(rows[0][1])  # checkpointing lowers the step's peak
