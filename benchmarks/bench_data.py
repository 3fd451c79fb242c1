"""Throughput of the data pipeline: synthetic generation and the training dataset.

    .venv/bin/python benchmarks/bench_data.py [--quick] [--workers N]

At T H W C = 16 64 64 3 it prints clips/s of ``synthetic.generate`` (1000 clips per style, 100
with ``--quick``), then prepares a synthetic store in a temporary folder and prints items/s of
``UnpairedClips.__getitem__`` and batches/s of a DataLoader driven by ``StepSampler`` (batch 4).
How fast the trainer consumes clips is measured by bench_train, not here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

# Run from a checkout, the package is importable without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_v2v_gan.config import make_config  # noqa: E402
from rl_v2v_gan.data import synthetic  # noqa: E402
from rl_v2v_gan.data.dataset import StepSampler, UnpairedClips  # noqa: E402
from rl_v2v_gan.data.factory import prepare_data  # noqa: E402

SHAPE = (16, 64, 64, 3)  # T H W C
BATCH = 4


def generation(n: int, style: str) -> float:
    """Clips per second of one ``generate`` call over ``n`` clips."""
    start = time.perf_counter()
    synthetic.generate("trainA", n, SHAPE, seed=0, style=style)
    return n / (time.perf_counter() - start)


def getitem(dataset: UnpairedClips, n: int) -> float:
    """Items per second of ``dataset[key]`` over ``n`` random keys (each item holds an A and a B clip)."""
    keys = dataset.sample_keys(n, torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for key in keys:
        dataset[key]
    return n / (time.perf_counter() - start)


def loader(dataset: UnpairedClips, steps: int, workers: int) -> float:
    """Batches per second through a DataLoader with StepSampler, worker start-up included."""
    sampler = StepSampler(dataset, BATCH, seed=0, rank=0, start_step=0, num_steps=steps)
    start = time.perf_counter()
    for _ in DataLoader(dataset, batch_sampler=sampler, num_workers=workers):
        pass
    return steps / (time.perf_counter() - start)


def report(label: str, value: float, unit: str) -> None:
    print(f"{label:<58} {value:10.1f} {unit}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips and steps (a smoke run)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    args = parser.parse_args(argv)
    n_gen, n_train, n_items, n_steps = (100, 32, 500, 100) if args.quick else (1000, 256, 5000, 1000)

    t, h, w, c = SHAPE
    print(f"clips of {t}x{h}x{w}x{c} uint8; torch threads: {torch.get_num_threads()}")
    for style in ("day", "night"):
        report(f"synthetic generate ({style}, {n_gen} clips)", generation(n_gen, style), "clips/s")

    with tempfile.TemporaryDirectory() as root:
        cfg = make_config(dataset="synthetic", data_root=root, input_shape=SHAPE, synthetic_train_clips=n_train,
                          synthetic_test_clips=8)
        start = time.perf_counter()
        store = prepare_data(cfg, log=lambda *_: None)
        report(f"prepare_data ({n_train} train + 8 test clips per domain)", time.perf_counter() - start, "s")
        dataset = UnpairedClips(store, t)
        getitem(dataset, 100)  # warm the page cache and the memory maps
        report(f"UnpairedClips __getitem__ ({n_items} items)", getitem(dataset, n_items), "items/s")
        rate = loader(dataset, n_steps, args.workers)
        report(f"DataLoader + StepSampler (batch {BATCH}, {args.workers} workers, {n_steps} steps)", rate, "batches/s")
        report("  the same in items", rate * BATCH, "items/s")
    print("(the trainer's consumption rate is measured by bench_train)")


if __name__ == "__main__":
    main()
