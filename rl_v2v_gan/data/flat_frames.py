"""Flat frame folders: image files directly in a split folder, grouped into videos by their names.

Recycle-GAN's released datasets store every frame of a split in one folder
(``trainA/city03_000123.png``). The video of a frame is the name's prefix before the trailing frame
number (``city03``); names that are only a number, or have none, form one video named after the
folder. Within a video the frames are ordered by number, and a gap in the numbering starts a new
video (``city03_000000-000099``, ``city03_000150-000300``), so that no training clip spans a cut.
The step between consecutive frames is the most common one of the video, so numbering every k-th
frame (0, 5, 10, ...) is not a gap.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import video_io

_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)$")


@dataclass(frozen=True)
class FrameRun:
    """One video of a flat folder: its name and its frame files in order."""

    folder: Path
    name: str
    files: tuple[Path, ...]

    def __str__(self) -> str:
        return str(self.folder / self.name)

    def stat(self) -> tuple[int, float]:
        """(total size, newest mtime) of the frame files: a change to any frame re-decodes the video."""
        stats = [f.stat() for f in self.files]
        return sum(s.st_size for s in stats), max(s.st_mtime for s in stats)

    def read(self, size=None, resize_mode: str = "resize", stride: int = 1) -> tuple[np.ndarray, float]:
        """All (``stride``-th) frames as uint8 ``[F, 3, H, W]`` and the frame rate, like ``video_io.read_video``."""
        files = list(self.files)
        chunks = video_io._folder_chunks(self.folder, files, stride, chunk=64)  # [n, h, w, 3]
        frames = np.concatenate(list(video_io._resized(chunks, self.folder / self.name, size, resize_mode)))
        return frames, video_io.DEFAULT_FOLDER_FPS / stride


def has_frames(folder: Path) -> bool:
    """True when ``folder`` holds image files directly (besides any videos or frame folders)."""
    return folder.is_dir() and any(entry.is_file() and video_io._is_frame_file(entry.name)
                                   for entry in os.scandir(folder))


def group_frames(folder: Path) -> list[FrameRun]:
    """The videos formed by the image files directly in ``folder``, in natural name order."""
    groups: dict[str, list[tuple[int | None, str, str]]] = {}  # prefix: [(number, its digits, file name)]
    for entry in os.scandir(folder):
        if not (entry.is_file() and video_io._is_frame_file(entry.name)):
            continue
        m = _NUMBERED.match(os.path.splitext(entry.name)[0])
        if m:
            groups.setdefault(m["prefix"].rstrip("_-. "), []).append((int(m["number"]), m["number"], entry.name))
        else:
            groups.setdefault("", []).append((None, "", entry.name))
    runs = []
    for prefix, frames in groups.items():
        frames.sort(key=lambda f: (f[0] is None, f[0] or 0, video_io.natural_key(f[2]), f[2]))
        segments = _split_at_gaps(frames)
        for segment in segments:
            name = prefix or folder.name
            if len(segments) > 1:
                digits = [f[1] for f in segment if f[0] is not None]
                name = f"{prefix + '_' if prefix else ''}{digits[0]}-{digits[-1]}"
            runs.append(FrameRun(folder, name, tuple(folder / f[2] for f in segment)))
    return sorted(runs, key=lambda r: video_io.natural_key(r.name))


def _split_at_gaps(frames: list[tuple[int | None, str, str]]) -> list[list[tuple[int | None, str, str]]]:
    """Cut an ordered list of frames where the number jumps by more than the usual step."""
    steps = Counter(b[0] - a[0] for a, b in zip(frames, frames[1:])
                    if a[0] is not None and b[0] is not None and b[0] > a[0])
    if not steps:
        return [frames]
    step = min(s for s, n in steps.items() if n == max(steps.values()))  # the most common; ties: the smaller
    segments = [[frames[0]]]
    for a, b in zip(frames, frames[1:]):
        if a[0] is not None and b[0] is not None and b[0] - a[0] > step:
            segments.append([])
        segments[-1].append(b)
    return segments
