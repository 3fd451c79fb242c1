"""The quality benchmark's quick mode: real footage -> unpaired folder datasets of every change ->
every row -> learning-curve tables, with each run cached by its configuration."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("identity", "rl_v2v_gan", "rl_v2v_gan λ_pg=0", "rl_v2v_gan per-frame", "recycle_gan", "cycle_gan")
sys.path.insert(0, str(ROOT / "benchmarks"))


def _quality(tmp_path, *args):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--quick", "--work",
                           str(tmp_path / "work"), "--json", str(out), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc


def test_quality_quick_mode_produces_the_curves_and_caches_each_run(tmp_path):
    rows, proc = _quality(tmp_path, "--changes", "night", "--curve_svg", str(tmp_path / "curves.svg"))
    got = {(r["variant"], r["change"], r["method"]) for r in rows}
    assert got == {(v, "night", m) for v in ("standard", "fewshot") for m in LABELS}
    for r in rows:
        assert list(r["curve"]) == ["2", "4"]  # one run, evaluated at each curve point
        assert r["curve"]["4"]["test"] == r["test"]  # the last point is the row's headline
        for split in ("val", "test"):
            for direction in ("a2b", "b2a"):
                m = r[split][direction]
                assert m["ground_truth"] and m["n_clips"] > 0
                assert m["psnr"] is not None and 0 < m["psnr"] < 100
    learned = [r for r in rows if r["method"] != "identity"]
    # The curve's points are different checkpoints: some metric moves between them.
    assert any(r["curve"]["2"]["val"]["a2b"]["psnr"] != r["curve"]["4"]["val"]["a2b"]["psnr"] for r in learned)
    flags = {r["method"]: r["flags"] for r in learned}
    assert flags["rl_v2v_gan λ_pg=0"] == {"lambda_pg": 0.0}
    assert flags["rl_v2v_gan per-frame"] == {"temporal_memory": False}
    identity = next(r for r in rows if r["method"] == "identity")
    assert identity["test"]["a2b"]["flicker_ratio"] == 1.0  # the baseline really is output = input
    # Validation and test are different clips.
    assert identity["val"]["a2b"]["psnr"] != identity["test"]["a2b"]["psnr"]
    fewshot = next(r for r in rows if r["variant"] == "fewshot")["counts"]
    standard = next(r for r in rows if r["variant"] == "standard")["counts"]
    assert fewshot["trainB"] < standard["trainB"] and fewshot["trainA"] == standard["trainA"]
    table = proc.stdout.splitlines()
    assert sum(line.startswith("| standard | night |") or line.startswith("| fewshot | night |")
               for line in table) == 6 * 2 * len(LABELS) + 2 * (len(LABELS) - 1)  # last point, PSNR, SSIM,
    # intervals, temporal error, SWD; the targets of the learned rows
    assert len(list((tmp_path / "work" / "cache").glob("*.json"))) == 2 * (len(LABELS) - 1)
    assert (tmp_path / "curves.svg").read_text().startswith("<svg")

    # A second invocation trains nothing: every run comes from the cache, with the same numbers.
    again, proc = _quality(tmp_path, "--variants", "standard", "--changes", "night")
    assert proc.stderr.count("cached") == len(LABELS) - 1 and "trained" not in proc.stderr
    before = {r["method"]: r["test"] for r in rows if r["variant"] == "standard"}
    assert {r["method"]: r["test"] for r in again} == before

    # --cached_only trains nothing: a seed the cache lacks is reported missing, and only the identity is left.
    only, proc = _quality(tmp_path, "--variants", "standard", "--changes", "night", "--seeds", "7", "--cached_only")
    assert proc.stderr.count("missing") == len(LABELS) - 1 and "trained" not in proc.stderr
    assert [r["method"] for r in only] == ["identity"]


def test_every_change_builds_its_unpaired_dataset_and_trains(tmp_path):
    rows, _ = _quality(tmp_path, "--variants", "standard", "--changes", "hue", "sharpen", "--methods", "cycle_gan")
    assert {(r["change"], r["method"]) for r in rows} == {(c, m) for c in ("hue", "sharpen")
                                                         for m in ("identity", "cycle_gan")}
    identity = {r["change"]: r["test"]["a2b"]["psnr"] for r in rows if r["method"] == "identity"}
    assert identity["hue"] != identity["sharpen"]


def test_the_changes_are_of_the_kinds_they_claim():
    import numpy as np
    import quality

    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    luma = np.array([0.299, 0.587, 0.114])[:, None, None]
    f = clip.astype(float)
    # hue: a colour change that keeps brightness (luma) where nothing clips, and changes colour a lot
    hue = quality.hue(clip, 0).astype(float)
    unclipped = ((hue > 0) & (hue < 255)).all(axis=1)
    assert np.abs((hue * luma).sum(1) - (f * luma).sum(1))[unclipped].mean() < 1.0
    assert np.abs(hue - f).mean() > 20
    # sharpen: local, keeps flat regions exactly
    flat = np.full((1, 3, 8, 8), 120, np.uint8)
    assert np.array_equal(quality.sharpen(flat, 0), flat)
    assert np.abs(quality.sharpen(clip, 0).astype(float) - f).mean() > 5
    # night: mostly brightness
    assert (quality.night(clip, 0).astype(float) * luma).sum(1).mean() < 0.5 * (f * luma).sum(1).mean()
    # lowlight: darker, with noise that is independent from frame to frame, and a clean version
    still = np.repeat(rng.integers(40, 216, (1, 3, 16, 16), dtype=np.uint8), 6, axis=0)  # a static scene
    noisy, clean = quality.lowlight(still, 0).astype(float), quality.clean_lowlight(still, 0).astype(float)
    assert np.array_equal(clean, np.repeat(clean[:1], 6, axis=0))  # clean: static stays static
    assert (clean * luma).sum(1).mean() < 0.5 * (still.astype(float) * luma).sum(1).mean()
    noise = (noisy - clean) / 255.0
    assert 0.025 < noise.std() < 0.06 and abs(noise.mean()) < 0.01
    steps = np.diff(noisy, axis=0) / 255.0  # frame-to-frame change of a static scene: the noise's flicker
    assert np.abs(steps).mean() > 0.02
    assert abs(np.corrcoef(noise[:-1].ravel(), noise[1:].ravel())[0, 1]) < 0.1  # independent per frame


def test_lowlight_scores_a2b_against_the_clean_change_and_prints_intervals(tmp_path):
    rows, proc = _quality(tmp_path, "--variants", "standard", "--changes", "lowlight", "--methods", "cycle_gan")
    identity = next(r for r in rows if r["method"] == "identity")
    m = identity["test"]["b2a"]
    assert len(m["per_clip"]["psnr"]) == m["n_clips"] and m["ci95"]["psnr"][0] <= m["psnr"] <= m["ci95"]["psnr"][1]
    # b2a's input is noisy and its ground truth clean: the identity copies the noise's flicker.
    assert m["flicker_gt"] > 1.0
    assert "bootstrap 95 % interval" in proc.stdout
    line = next(l for l in proc.stdout.splitlines() if l.startswith("| standard | lowlight | cycle_gan | 1 | ")
                and "[" in l)
    assert line.count("[") == 6  # an interval for each of PSNR, temporal error, flicker_gt, both ways


def test_the_kept_checkpoint_is_chosen_on_validation_and_scored_on_test():
    import quality

    def point(val_psnr, val_swd, test_psnr, test_swd):
        m = lambda p, s: {"psnr": p, "swd": s}  # noqa: E731
        return {"val": {"a2b": m(val_psnr, val_swd), "b2a": m(val_psnr, val_swd)},
                "test": {"a2b": m(test_psnr, test_swd), "b2a": m(test_psnr, test_swd)}}
    # Validation PSNR peaks at 600, validation SWD is lowest at 150, test SWD at 2400, test PSNR at 150.
    curve = {"150": point(20.0, 5.0, 25.0, 3.0), "600": point(22.0, 7.0, 24.0, 2.0),
             "2400": point(21.0, 9.0, 23.0, 1.0)}
    rows = [{"method": "identity", "change": "sharpen", "seed": None, "curve": curve},
            {"method": "rl_v2v_gan", "change": "sharpen", "seed": 0, "curve": curve}]
    lines = quality.selection_table(rows).splitlines()
    assert len(lines) == 2 + 2  # header, rule, one line per direction of the learned run
    assert lines[2] == "| sharpen | rl_v2v_gan | 0 | a2b | 2400: 23.00 | 150: 25.00 | 2400: 23.00 | 600: 24.00 | 150: 25.00 |"
    # A run cached before SWD existed has no SWD choice.
    old = {k: {s: {d: {"psnr": v[s][d]["psnr"]} for d in v[s]} for s in v} for k, v in curve.items()}
    lines = quality.selection_table([{"method": "cycle_gan", "change": "hue", "seed": 1, "curve": old}]).splitlines()
    assert lines[2] == "| hue | cycle_gan | 1 | a2b | 2400: 23.00 | n/a | n/a | 600: 24.00 | 150: 25.00 |"


def _curve_row(method, seed, psnr, ssim=0.9, change="hue"):
    """A row whose PSNR per point is ``psnr[step] = (a2b, b2a)`` on both splits, SSIM ``ssim`` everywhere."""
    def point(a2b, b2a):
        m = lambda p: {"psnr": p, "ssim": ssim}  # noqa: E731
        return {split: {"a2b": m(a2b), "b2a": m(b2a)} for split in ("val", "test")}
    return {"variant": "standard", "change": change, "method": method, "seed": seed,
            "curve": {k: point(*v) for k, v in psnr.items()}}


def _targets(rows):
    import quality

    lines = quality.targets_table(rows, "test").splitlines()
    return {line.split(" | ")[2]: line.removesuffix(" |").split(" | ")[4:] for line in lines[2:]}


def test_the_convergence_targets_are_checked_on_every_seed_and_the_mean():
    ident = _curve_row("identity", None, {k: (24.0, 24.0) for k in ("150", "600", "2400")}, ssim=0.88)
    rising = {"150": (24.5, 24.5), "600": (26.0, 26.0), "2400": (27.0, 27.0)}
    cells = _targets([ident, _curve_row("rl_v2v_gan", 0, rising), _curve_row("rl_v2v_gan", 1, rising)])
    assert cells["rl_v2v_gan"][:2] == ["yes", "yes"]
    # One seed falls 1.8 dB after 600 steps in b2a: that seed is named, the mean (-0.4) too.
    falls = {**rising, "2400": (27.0, 24.2)}
    cells = _targets([ident, _curve_row("rl_v2v_gan", 0, rising), _curve_row("rl_v2v_gan", 1, falls)])
    assert cells["rl_v2v_gan"][0] == "**no**: seed 1 b2a 600→2400: 26.00→24.20; mean b2a 600→2400: 26.00→25.60"
    # Within the 0.3 dB tolerance is no collapse; a dip between checked points is not read.
    dip = {"150": (24.5, 24.5), "300": (20.0, 20.0), "600": (26.0, 26.0), "2400": (25.75, 25.75)}
    ident4 = _curve_row("identity", None, {k: (24.0, 24.0) for k in dip}, ssim=0.88)
    assert _targets([ident4, _curve_row("cycle_gan", 0, dip)])["cycle_gan"][0] == "yes"
    # SSIM at or below the identity's is a miss even where PSNR is above it.
    cells = _targets([ident, _curve_row("recycle_gan", 2, rising, ssim=0.88)])
    assert cells["recycle_gan"][1].startswith("**no**: seed 2 a2b ssim @600: 0.880 ≤ 0.880")
    assert "psnr" not in cells["recycle_gan"][1]


def test_the_night_margin_and_the_rl_ablation_are_checked():
    ident = _curve_row("identity", None, {"150": (10.0, 10.0), "600": (10.0, 10.0)}, ssim=0.3, change="night")
    rl = [_curve_row("rl_v2v_gan", s, {"150": (25.0, 19.0 + s), "600": (30.0, 21.0 + s)}, change="night")
          for s in (0, 1)]  # b2a 21.5 ± 0.71 at 600
    close = [_curve_row("rl_v2v_gan λ_pg=0", s, {"150": (25.0, 19.0), "600": (30.0, 22.0)}, change="night")
             for s in (0, 1)]  # b2a 22.0: 0.5 dB above rl_v2v_gan, inside the seeds' spread
    cells = _targets([ident, *rl, *close])
    assert cells["rl_v2v_gan"][2] == "yes (+11.50 dB at least)"
    assert cells["rl_v2v_gan"][3] == "yes (2 vs 2 seeds)"
    assert cells["rl_v2v_gan λ_pg=0"][3] == "—"  # the ablation is not compared with itself
    far = [_curve_row("rl_v2v_gan λ_pg=0", s, {"150": (25.0, 19.0), "600": (30.0, 23.0)}, change="night")
           for s in (0, 1)]
    cells = _targets([ident, *rl, *far])
    assert cells["rl_v2v_gan"][3] == "**no**: b2a @600: -1.50 dB (2 vs 2 seeds)"
    low = [_curve_row("cycle_gan", 0, {"150": (18.0, 18.0), "600": (19.0, 25.0)}, change="night")]
    assert _targets([ident, *low])["cycle_gan"][2] == "**no** (+9.00 dB at least)"
