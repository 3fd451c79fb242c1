"""The quality benchmark's quick mode: real footage -> unpaired folder dataset -> every row -> table,
with each run cached by its configuration."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("identity", "rl_v2v_gan", "rl_v2v_gan λ_pg=0", "recycle_gan", "cycle_gan")


def _quality(tmp_path, *args):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--quick", "--work",
                           str(tmp_path / "work"), "--json", str(out), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc


def test_quality_quick_mode_produces_the_table_and_caches_each_run(tmp_path):
    rows, proc = _quality(tmp_path)
    got = {(r["variant"], r["method"]) for r in rows}
    assert got == {(v, m) for v in ("standard", "fewshot") for m in LABELS}
    for r in rows:
        for split in ("val", "test"):
            for direction in ("a2b", "b2a"):
                m = r[split][direction]
                assert m["ground_truth"] and m["n_clips"] > 0
                assert m["psnr"] is not None and 0 < m["psnr"] < 100
    ablation = next(r for r in rows if r["method"] == "rl_v2v_gan λ_pg=0")
    assert ablation["flags"] == {"lambda_pg": 0.0}
    identity = next(r for r in rows if r["method"] == "identity")
    assert identity["test"]["a2b"]["flicker_ratio"] == 1.0  # the baseline really is output = input
    # Validation and test are different clips.
    assert identity["val"]["a2b"]["psnr"] != identity["test"]["a2b"]["psnr"]
    fewshot = next(r for r in rows if r["variant"] == "fewshot")["counts"]
    standard = next(r for r in rows if r["variant"] == "standard")["counts"]
    assert fewshot["trainB"] < standard["trainB"] and fewshot["trainA"] == standard["trainA"]
    table = proc.stdout.splitlines()
    assert sum(line.startswith("| standard |") or line.startswith("| fewshot |") for line in table) == 10
    assert len(list((tmp_path / "work" / "cache").glob("*.json"))) == 8

    # A second invocation trains nothing: every run comes from the cache, with the same numbers.
    again, proc = _quality(tmp_path, "--variants", "standard")
    assert proc.stderr.count("cached") == 4 and "trained" not in proc.stderr
    before = {r["method"]: r["test"] for r in rows if r["variant"] == "standard"}
    assert {r["method"]: r["test"] for r in again} == before
