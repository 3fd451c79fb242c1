"""Datasets by name: prepare (or find up to date) the clip store of ``--dataset``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Config
from ..utils.fs import atomic_dir
from . import synthetic
from .store import SPLITS, STORE_VERSION, ClipStore, read_manifest, write_manifest

SYNTHETIC_VERSION = 1


def synthetic_store_dir(cfg: Config) -> Path:
    t, h, w, c = cfg.input_shape
    return cfg.resolved_data_root / (f"clips_{t}x{h}x{w}x{c}_n{cfg.synthetic_train_clips}-"
                                     f"{cfg.synthetic_test_clips}_seed{cfg.seed}")


def _synthetic_manifest(cfg: Config) -> dict:
    t, h, w, c = cfg.input_shape
    return {"version": STORE_VERSION, "kind": "synthetic", "synthetic_version": SYNTHETIC_VERSION,
            "clip_shape": [t, c, h, w], "seed": cfg.seed,
            "counts": {"train": cfg.synthetic_train_clips, "test": cfg.synthetic_test_clips}}


def prepare_synthetic(cfg: Config, log=print) -> ClipStore:
    """Write the synthetic store (or say it is up to date). Atomic: all splits appear at once."""
    root = synthetic_store_dir(cfg)
    expected = _synthetic_manifest(cfg)
    found = read_manifest(root)
    if found is not None and all(found.get(k) == v for k, v in expected.items()):
        log(f"synthetic dataset at {root} is up to date; nothing to do")
        return ClipStore(root)
    t, h, w, c = cfg.input_shape
    # Test scenes rendered in both styles: the other style is the paired ground truth.
    plan = {"trainA": ("trainA", "day", cfg.synthetic_train_clips),
            "trainB": ("trainB", "night", cfg.synthetic_train_clips),
            "testA": ("testA", "day", cfg.synthetic_test_clips),
            "testA_gt": ("testA", "night", cfg.synthetic_test_clips),
            "testB": ("testB", "night", cfg.synthetic_test_clips),
            "testB_gt": ("testB", "day", cfg.synthetic_test_clips)}
    with atomic_dir(root) as tmp:
        splits = {}
        for split in SPLITS:
            scenes, style, n = plan[split]
            clips = synthetic.generate(scenes, n, (t, h, w, c), cfg.seed, style)  # [n,T,C,H,W]
            np.save(tmp / f"{split}.npy", clips.reshape(n * t, c, h, w))
            splits[split] = [{"file": f"{split}.npy", "offset": i * t, "length": t, "fps": 10.0,
                              "source": f"synthetic:{scenes}:{i}"} for i in range(n)]
        write_manifest(tmp, {**expected, "frame_shape": [c, h, w], "splits": splits})
    n_frames = 2 * t * (cfg.synthetic_train_clips + 2 * cfg.synthetic_test_clips)
    log(f"prepared synthetic dataset at {root}: {cfg.synthetic_train_clips} train clips per domain, "
        f"{cfg.synthetic_test_clips} test clips per domain with ground truth, "
        f"{n_frames} frames of {h}x{w}x{c} ({n_frames * c * h * w / 2**20:.1f} MiB)")
    return ClipStore(root)


def prepare_data(cfg: Config, log=print) -> ClipStore:
    """Build (or refresh) the clip store of ``--dataset``; training calls it too, so a missing or
    stale store is prepared on the fly and an up-to-date one costs one log line."""
    if cfg.dataset == "synthetic":
        return prepare_synthetic(cfg, log)
    from .folder import prepare_folder

    return prepare_folder(cfg, log)

