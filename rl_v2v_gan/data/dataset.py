"""Map-style datasets over a clip store, and the step-seeded batch sampler.

Items are dicts of uint8 tensors ``[T, C, H, W]``: the wire format; normalisation to [-1, 1]
happens on the compute device (:func:`to_float`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import UserError
from .store import ClipStore


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B


def to_channels(frames: np.ndarray, channels: int) -> np.ndarray:
    """RGB frames ``[..., 3, H, W]`` to the model's channel count: as they are, or BT.601 luma
    ``[..., 1, H, W]`` (uint8 in, rounded uint8 out; float in, float out)."""
    if channels == 3:
        return frames
    y = np.tensordot(frames.astype(np.float32), np.array(LUMA, np.float32), axes=([-3], [0]))[..., None, :, :]
    return np.round(y).astype(np.uint8) if frames.dtype == np.uint8 else y


def to_float(clip: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., C, H, W]`` in 0..255 to float in [-1, 1] (on whatever device ``clip`` is)."""
    return clip.float().mul_(1.0 / 127.5).sub_(1.0)


def to_uint8(clip: torch.Tensor) -> torch.Tensor:
    """Float in [-1, 1] to uint8 0..255 (rounded, clamped)."""
    return clip.detach().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def _zoomed_width(height, h: int, w: int):
    """The width of an ``h x w`` frame zoomed to ``height`` rows (rounded half up, in integers, so a
    key's draw and its loading agree exactly; ints or int tensors)."""
    return (2 * height * w + h) // (2 * h)


class UnpairedClips(Dataset):
    """Training items ``{"a": [T,C,H,W], "b": [T,C,H,W]}`` from independent videos and start frames.

    A key is ``(video_a, start_a, video_b, start_b)``; :meth:`sample_keys` draws keys uniformly over
    every clip position of every video, so long videos count by their length. With ``hflip`` a key
    is ``(video_a, start_a, flip_a, video_b, start_b, flip_b)``: each clip is mirrored left-right as
    a whole (every frame alike, so its motion stays a motion) with probability 1/2, CycleGAN's
    training-data augmentation; the videos and starts drawn are those without it.

    With ``crop_scale`` S > 1 each domain's part of the key also holds ``(size, top, left)``: the clip
    is zoomed (bilinear, every frame alike) to a random height ``size`` in ``[H, round(S * H)]`` (the
    width in proportion) and an ``H x W`` window at a random position is cut out of it: CycleGAN's
    resize-and-crop with the scale drawn per clip, so the unzoomed scale the model is tested at stays
    among those it trains on. Its draws come after the flips', so the clips and flips are unchanged.
    """

    def __init__(self, store: ClipStore, clip_length: int, max_videos_a: int | None = None,
                 max_videos_b: int | None = None, hflip: bool = False, crop_scale: float = 1.0):
        if crop_scale < 1.0:
            raise ValueError(f"crop_scale must be at least 1, got {crop_scale}")
        self.clip_length = clip_length
        self.hflip = hflip
        self.videos: dict[str, list[np.ndarray]] = {}
        self._starts: dict[str, torch.Tensor] = {}
        for domain, split, limit in (("a", "trainA", max_videos_a), ("b", "trainB", max_videos_b)):
            videos = store.videos(split)[:limit]
            if not videos:
                raise UserError(f"no training videos in {split} of the clip store {store.root}")
            short = [i for i, v in enumerate(videos) if len(v) < clip_length]
            if short:
                src = store.entries(split)[short[0]].get("source", f"{split}[{short[0]}]")
                raise UserError(f"video {src} has {len(videos[short[0]])} frames, fewer than T={clip_length}")
            self.videos[domain] = videos
            # Cumulative count of valid start positions: a uniform draw over it picks a clip.
            counts = torch.tensor([len(v) - clip_length + 1 for v in videos])
            self._starts[domain] = torch.cumsum(counts, 0)
        self.frame_size = tuple(int(v) for v in self.videos["a"][0].shape[-2:])
        self._max_size = round(crop_scale * self.frame_size[0])  # the largest zoomed height
        self._crops = self._max_size > self.frame_size[0]  # a scale too close to 1 to zoom by a row: off

    def __len__(self) -> int:
        return int(max(s[-1] for s in self._starts.values()))

    def sample_keys(self, n: int, generator: torch.Generator) -> list[tuple[int, ...]]:
        cols = {}
        for domain in ("a", "b"):
            cum = self._starts[domain]
            u = torch.randint(int(cum[-1]), (n,), generator=generator)
            video = torch.searchsorted(cum, u, right=True)
            start = u - torch.cat([cum.new_zeros(1), cum])[video]
            cols[domain] = [video, start]
        if self.hflip or self._crops:
            for domain in ("a", "b"):  # drawn after the clips: a run with flips sees the same clips as one without
                flip = torch.randint(2, (n,), generator=generator)
                cols[domain].append(flip if self.hflip else torch.zeros_like(flip))
        if self._crops:  # after the flips, for the same reason
            h, w = self.frame_size
            for domain in ("a", "b"):
                size = torch.randint(h, self._max_size + 1, (n,), generator=generator)
                width = _zoomed_width(size, h, w)
                top = (torch.rand(n, generator=generator) * (size - h + 1)).long()
                left = (torch.rand(n, generator=generator) * (width - w + 1)).long()
                cols[domain] += [size, top, left]
        return [tuple(int(v) for v in row) for row in torch.stack(cols["a"] + cols["b"], 1)]

    def __getitem__(self, key: tuple[int, ...]) -> dict[str, torch.Tensor]:
        n = len(key) // 2  # fields per domain: (video, start[, flip[, size, top, left]])
        if len(key) % 2 or n not in (2, 3, 6):
            raise ValueError(f"a key holds 4, 6 or 12 values, got {key}")
        h, w = self.frame_size
        t = self.clip_length
        item = {}
        for domain, fields in zip(("a", "b"), (key[:n], key[n:])):
            video, start, flip, size, top, left = (*fields, *(0, h, 0, 0)[n - 2:])
            clip = self.videos[domain][video][start:start + t]  # [T, C, H, W]
            clip = torch.from_numpy(np.array(clip[..., ::-1] if flip else clip))
            if size != h:
                width = _zoomed_width(size, h, w)
                zoomed = torch.nn.functional.interpolate(clip.float(), size=(size, width), mode="bilinear",
                                                         align_corners=False)
                clip = zoomed[..., top:top + h, left:left + w].round_().clamp_(0, 255).to(torch.uint8).contiguous()
            item[domain] = clip
        return item


class StepSampler(Sampler[list]):
    """Batch sampler whose batch for global step ``s`` depends only on ``(seed, rank, s)``.

    Resuming at step ``s`` therefore sees exactly the batches an uninterrupted run would have
    seen, with no sampler state to checkpoint; each DDP rank draws its own batches.
    """

    def __init__(self, dataset: UnpairedClips, batch_size: int, seed: int, rank: int, start_step: int,
                 num_steps: int):
        self.dataset, self.batch_size = dataset, batch_size
        self.seed, self.rank, self.start_step, self.num_steps = seed, rank, start_step, num_steps

    def __len__(self) -> int:
        return self.num_steps

    def __iter__(self) -> Iterator[list]:
        for step in range(self.start_step, self.start_step + self.num_steps):
            g = torch.Generator().manual_seed(hash((self.seed, self.rank, step)) & 0x7FFF_FFFF_FFFF)
            yield self.dataset.sample_keys(self.batch_size, g)


class TestClips(Dataset):
    """Test items of one direction: ``{"a": clip}`` plus ``"b_gt"`` for a2b (mirrored for b2a).

    Clips are consecutive non-overlapping chunks of T frames of each test video; ground truth
    comes from the paired ``testA_gt`` / ``testB_gt`` split when the store has one.
    """

    def __init__(self, store: ClipStore, direction: str, clip_length: int):
        src, dst = ("a", "b") if direction == "a2b" else ("b", "a")
        split = f"test{src.upper()}"
        self.src_key, self.gt_key = src, f"{dst}_gt"
        self.videos = store.videos(split)
        self.gt = store.videos(f"{split}_gt") if store.has(f"{split}_gt") else None
        if self.gt is not None:
            mismatched = [i for i, (v, g) in enumerate(zip(self.videos, self.gt)) if len(v) != len(g)]
            if len(self.gt) != len(self.videos) or mismatched:
                raise UserError(f"{split}_gt does not pair frame by frame with {split} in {store.root}")
        self.index = [(i, s) for i, v in enumerate(self.videos)
                      for s in range(0, len(v) - clip_length + 1, clip_length)]
        self.clip_length = clip_length

    @property
    def has_ground_truth(self) -> bool:
        return self.gt is not None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v, s = self.index[i]
        sl = slice(s, s + self.clip_length)
        item = {self.src_key: torch.from_numpy(np.array(self.videos[v][sl]))}
        if self.gt is not None:
            item[self.gt_key] = torch.from_numpy(np.array(self.gt[v][sl]))
        return item
