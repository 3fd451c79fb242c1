"""The uint8 clip store: videos decoded once, so training never decodes video (DESIGN §8).

A store is a folder with ``manifest.json`` and ``.npy`` files of uint8 frames ``[F, C, H, W]``.
The manifest lists, for each split (``trainA``, ``trainB``, ``testA``, ``testB`` and the optional
paired ground truth ``testA_gt``, ``testB_gt``), its videos: which file, at which frame offset,
how many frames, the fps and the source. Files are memory-mapped, so opening a store is cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..utils.fs import atomic_write_text

SPLITS = ("trainA", "trainB", "testA", "testB", "testA_gt", "testB_gt")
MANIFEST = "manifest.json"
STORE_VERSION = 1


class ClipStore:
    """A prepared store: read-only views of its videos as uint8 ``[F, C, H, W]`` arrays."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / MANIFEST
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"no clip store at {self.root} (run --mode prepare_data)") from None
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"unreadable clip store manifest {path}: {e}") from None
        self._files: dict[str, np.ndarray] = {}

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every frame in the store."""
        return tuple(self.manifest["frame_shape"])

    def has(self, split: str) -> bool:
        return bool(self.manifest["splits"].get(split))

    def entries(self, split: str) -> list[dict[str, Any]]:
        return list(self.manifest["splits"].get(split, []))

    def _file(self, name: str) -> np.ndarray:
        if name not in self._files:
            try:
                self._files[name] = np.load(self.root / name, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise UserError(f"damaged clip store file {self.root / name}: {e} (re-run --mode prepare_data)") \
                    from None
        return self._files[name]

    def videos(self, split: str) -> list[np.ndarray]:
        """The split's videos, each a uint8 ``[F, C, H, W]`` view (memory-mapped)."""
        return [self._file(e["file"])[e["offset"]:e["offset"] + e["length"]] for e in self.entries(split)]


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(root / MANIFEST, json.dumps({"version": STORE_VERSION, **manifest}, indent=1))


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of a store at ``root``, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
