"""The quality benchmark's quick mode: real footage -> unpaired folder dataset -> 3 methods -> table."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quality_quick_mode_produces_the_table(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--quick", "--work",
                           str(tmp_path / "work"), "--json", str(out)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    got = {(r["variant"], r["method"]) for r in rows}
    assert got == {(v, m) for v in ("standard", "fewshot") for m in ("identity", "rl_v2v_gan", "recycle_gan",
                                                                      "cycle_gan")}
    for r in rows:
        for direction in ("a2b", "b2a"):
            m = r[direction]
            assert m["ground_truth"] and m["n_clips"] > 0
            assert m["psnr"] is not None and 0 < m["psnr"] < 100
    identity = next(r for r in rows if r["method"] == "identity")
    assert identity["a2b"]["flicker_ratio"] == 1.0  # the baseline really is output = input
    fewshot = next(r for r in rows if r["variant"] == "fewshot")["counts"]
    standard = next(r for r in rows if r["variant"] == "standard")["counts"]
    assert fewshot["trainB"] < standard["trainB"] and fewshot["trainA"] == standard["trainA"]
    table = proc.stdout.splitlines()
    assert sum(line.startswith("| standard |") or line.startswith("| fewshot |") for line in table) == 8
