"""Folder datasets: the user's videos decoded once into a clip store (DESIGN §8).

Layout (the CycleGAN / Recycle-GAN convention)::

    ROOT/trainA/  ROOT/trainB/  ROOT/testA/  ROOT/testB/     video files, one folder of frames per video,
                                                             or frame images directly (see flat_frames.py)
    ROOT/testA_gt/  ROOT/testB_gt/                           optional paired ground truth (same names)

The store lives in ``ROOT/.clipstore/<H>x<W>x<C>_<resize>_s<stride>/``: one uint8 ``.npy`` per
video and a manifest with fps, frame count, source path, size and modification time. Re-running
decodes only new or changed videos; every file is written atomically, the manifest last.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path


from ..config import Config
from ..errors import UserError
from ..utils.fs import atomic_save_npy
from . import video_io
from .dataset import to_channels
from .flat_frames import FrameRun, group_frames, has_frames
from .store import SPLITS, ClipStore, read_manifest, write_manifest

SEED_PRESETS = {"city": "day / night driving", "flower": "red / yellow flowers", "artificial": "simulation / real"}
REQUIRED = ("trainA", "trainB")


def store_dir(cfg: Config) -> Path:
    h, w = cfg.frame_size
    return cfg.resolved_data_root / ".clipstore" / f"{h}x{w}x{cfg.channels}_{cfg.resize_mode}_s{cfg.frame_stride}"


def list_sources(folder: Path) -> list[Path | FrameRun]:
    """The videos of one split folder: video files, frame folders and the videos of frame images
    lying directly in it (grouped by name, see :mod:`.flat_frames`), in natural order."""
    if not folder.is_dir():
        return []
    found: list[Path | FrameRun] = [p for p in folder.iterdir()
                                    if not p.name.startswith(".") and video_io.is_video_source(p)]
    if has_frames(folder):
        found += group_frames(folder)
    names = Counter(_store_name("", src) for src in found)
    clash = [src.name for src in found if names[_store_name("", src)] > 1]
    if clash:
        raise UserError(f"{folder} holds two videos named '{clash[0]}' (a frame folder and frame images with "
                        f"that prefix?): rename one")
    return sorted(found, key=lambda p: video_io.natural_key(p.name))


def _stat(path: Path | FrameRun) -> tuple[int, float]:
    """(size, mtime) of a video file, or of a frames folder (its files summed, newest mtime)."""
    if isinstance(path, FrameRun):
        return path.stat()
    if path.is_dir():
        stats = [f.stat() for f in path.iterdir() if f.is_file()]
        return sum(s.st_size for s in stats), max((s.st_mtime for s in stats), default=0.0)
    s = path.stat()
    return s.st_size, s.st_mtime


def _store_name(split: str, src: Path | FrameRun) -> str:
    """The store file of a video: its name made safe, plus a hash of the real name when that changed
    it, so that ``a b.mp4`` and ``a_b.mp4`` do not share (and overwrite) one file."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", src.name)
    if safe != src.name:
        safe += "-" + hashlib.sha1(src.name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{split}/{safe}.npy"


def _missing_message(cfg: Config, root: Path) -> str:
    layout = f"{root}/{{trainA,trainB,testA,testB}}/ holding video files, one folder of frames per video, or frame images"
    if cfg.dataset in SEED_PRESETS:
        return (f"dataset '{cfg.dataset}' ({SEED_PRESETS[cfg.dataset]}) not found: expected {layout}; "
                f"its data comes from the download links in the seed README")
    return f"no dataset at {root}: expected {layout} (set --data_root)"


def prepare_folder(cfg: Config, log=print) -> ClipStore:
    """Decode new or changed videos of ``--data_root`` into the clip store; returns the store."""
    root = cfg.resolved_data_root
    if not root.is_dir() or not any((root / s).is_dir() for s in REQUIRED):
        raise UserError(_missing_message(cfg, root))
    out = store_dir(cfg)
    previous = read_manifest(out) or {}
    old_entries = {e["source"]: e for s in previous.get("splits", {}).values() for e in s}
    h, w = cfg.frame_size
    t = cfg.clip_length
    splits: dict[str, list[dict]] = {}
    decoded = skipped_bad = 0
    short_tests: dict[str, set[str]] = {}  # test split -> names of videos shorter than T
    for split in SPLITS:
        sources = list_sources(root / split)
        if split in REQUIRED and not sources:
            raise UserError(f"no videos in {root / split} (expected video files, folders of frames or frame images)")
        entries = []
        for src in sources:
            size, mtime = _stat(src)
            old = old_entries.get(str(src))
            if old and old.get("size") == size and old.get("mtime") == mtime and (out / old["file"]).is_file():
                entries.append(old)
                continue
            try:
                if isinstance(src, FrameRun):
                    frames, fps = src.read((h, w), cfg.resize_mode, cfg.frame_stride)
                else:
                    frames, fps = video_io.read_video(src, (h, w), cfg.resize_mode, cfg.frame_stride)
                if len(frames) < t and split not in REQUIRED:  # evaluation has no clip of it to use
                    log(f"warning: skipping test video '{src}': {len(frames)} frames (after --frame_stride "
                        f"{cfg.frame_stride}), fewer than T={t}")
                    short_tests.setdefault(split.removesuffix("_gt"), set()).add(src.name)
                    continue
                if len(frames) < t:
                    raise UserError(f"video '{src}' has {len(frames)} frames (after --frame_stride "
                                    f"{cfg.frame_stride}), fewer than T={t}")
            except UserError as e:
                if not cfg.skip_bad_videos:
                    raise
                log(f"warning: skipping {e}")
                skipped_bad += 1
                continue
            name = _store_name(split, src)
            atomic_save_npy(out / name, to_channels(frames, cfg.channels))
            entries.append({"file": name, "offset": 0, "length": len(frames), "fps": fps, "source": str(src),
                            "size": size, "mtime": mtime})
            decoded += 1
        splits[split] = entries
    for split in REQUIRED:
        if not splits[split]:
            raise UserError(f"no usable videos left in {root / split} after skipping bad ones")
    for split in ("testA", "testB"):
        gt = f"{split}_gt"
        if splits[gt] and short_tests.get(split):  # a pair goes as a whole
            for s in (split, gt):
                splits[s] = [e for e in splits[s] if Path(e["source"]).name not in short_tests[split]]
        if splits[gt] and [Path(e["source"]).name for e in splits[gt]] != \
                [Path(e["source"]).name for e in splits[split]]:
            raise UserError(f"{root / gt} must hold the same video names as {root / split} (paired ground truth)")
    manifest = {"kind": "folder", "root": str(root), "frame_shape": [cfg.channels, h, w],
                "resize_mode": cfg.resize_mode, "frame_stride": cfg.frame_stride, "splits": splits}
    kept = {e["file"] for s in splits.values() for e in s}
    if decoded or manifest != {k: previous.get(k) for k in manifest}:
        write_manifest(out, manifest)
    for stale in {e["file"] for e in old_entries.values()} - kept:  # videos removed from the dataset
        inside = not Path(stale).is_absolute() and ".." not in Path(stale).parts
        if inside and stale.endswith(".npy"):  # only a store file (split/name.npy), never a path elsewhere
            (out / stale).unlink(missing_ok=True)
    counts = ", ".join(f"{s} {len(v)}" for s, v in splits.items() if v)
    if decoded:
        log(f"prepared {root}: decoded {decoded} video(s) into {out} ({counts})")
    else:
        log(f"clip store {out} is up to date ({counts}); nothing to do")
    if skipped_bad:
        log(f"skipped {skipped_bad} bad video(s) (--skip_bad_videos)")
    return ClipStore(out)
