"""``--mode translate``: a video of any length through a generator, to mp4 (DESIGN §8).

The input is streamed in chunks of T frames and the generator's ConvLSTM state is carried from
chunk to chunk, so the result equals one pass over the whole video while memory stays bounded
by one chunk. The output keeps the source fps; it is written to a temporary file and renamed,
so a failure never leaves a half-written video at ``--output``.

``--input`` may also be a folder of videos (video files and frame folders; a folder holding frame
images itself is one video): each is translated to ``--output DIR/<name>.mp4``.

``--output_size native`` runs the fully convolutional generator at the source resolution: each
frame is padded to a multiple of 4 (the generator's stride; reflect padding) and the output cropped
back, with no resize; a model call then takes as few frames as keep its pixels near a training
clip's (the carried state makes that the same result). ``--tile N`` runs the layers at full and half
resolution on N x N tiles (see :func:`run_tiled`) for frames too large for memory.

Only the generator used is built and read (:mod:`rl_v2v_gan.export`), from the run's checkpoint or
from a generator file (``--model``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import Config
from .data import video_io
from .data.dataset import to_channels, to_float, to_uint8
from .errors import UserError
from .models.generator import LOWPASS_RADIUS, LOWPASS_SPACES, Generator, State, check_clip, lowpass

STRIDE = 4
"""The generator's total downsampling: a frame's height and width must be multiples of it."""

TILE_HALO = 16
"""Pixels of real context read around each tile's core: more than the reach of the layers that run
tiled (7x7 stem and head, a 3x3 convolution per level, at full and half resolution, and the split
residual's blur), so the core's result is exact. A multiple of STRIDE, so every tile sits on the
bottleneck's grid."""
assert TILE_HALO >= LOWPASS_RADIUS and TILE_HALO % STRIDE == 0


@torch.no_grad()
def translate_stream(gen: Generator, chunks, channels: int, device: torch.device, frames_per_call: int | None = None,
                     tile: int = 0):
    """Yield ``(input, output)`` uint8 chunks ``[n,C,H,W]`` for input chunks of any frame size, state carried.

    A frame whose sides are not multiples of 4 is padded to them (reflect) and its output cropped
    back. ``frames_per_call`` splits a chunk into model calls of at most that many frames (memory);
    ``tile`` runs them on tiles (:func:`run_tiled`). Neither changes the result.
    """
    state = None
    for frames in chunks:  # uint8 [n,3,h,w]
        x = torch.from_numpy(to_channels(frames, channels)).to(device)
        h, w = x.shape[-2:]
        outputs = []
        for part in x.split(frames_per_call or len(x)):
            part = pad_to_stride(to_float(part))[None]  # [1,n',C,H,W], H and W multiples of 4
            y, state = run_tiled(gen, part, state, tile) if tile else gen.run(part, state)
            outputs.append(to_uint8(y[0, :, :, :h, :w]))
        yield x.cpu(), torch.cat(outputs).cpu()


def pad_to_stride(frames: torch.Tensor) -> torch.Tensor:
    """Float frames ``[n,C,h,w]`` padded at the bottom and right to multiples of STRIDE: reflect
    padding (replicate where a side is too short to reflect)."""
    h, w = frames.shape[-2:]
    pad_h, pad_w = -h % STRIDE, -w % STRIDE
    if not (pad_h or pad_w):
        return frames
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(frames, (0, pad_w, 0, pad_h), mode=mode)


def _spans(size: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(start + tile, size)) for start in range(0, size, tile)]


class _Tile:
    """One tile: its core ``[y0:y1, x0:x1]`` (multiples of STRIDE) and the crop read for it (the core
    plus up to TILE_HALO pixels of context on each side inside the frame), in full-resolution pixels."""

    def __init__(self, ys: tuple[int, int], xs: tuple[int, int], height: int, width: int):
        (self.y0, self.y1), (self.x0, self.x1) = ys, xs
        self.cy0, self.cy1 = max(self.y0 - TILE_HALO, 0), min(self.y1 + TILE_HALO, height)
        self.cx0, self.cx1 = max(self.x0 - TILE_HALO, 0), min(self.x1 + TILE_HALO, width)

    def crop(self, frames: torch.Tensor, scale: int = 1) -> torch.Tensor:
        """The crop of a whole-frame tensor at 1/``scale`` resolution."""
        return frames[..., self.cy0 // scale:self.cy1 // scale, self.cx0 // scale:self.cx1 // scale]

    def core(self, crop: torch.Tensor, scale: int = 1) -> torch.Tensor:
        """The core of a tensor computed on the crop, at 1/``scale`` resolution."""
        return crop[..., (self.y0 - self.cy0) // scale:(self.y1 - self.cy0) // scale,
                    (self.x0 - self.cx0) // scale:(self.x1 - self.cx0) // scale]

    def place(self, frames: torch.Tensor, core: torch.Tensor, scale: int = 1) -> None:
        frames[..., self.y0 // scale:self.y1 // scale, self.x0 // scale:self.x1 // scale] = core


class _NormStats:
    """Per-frame, per-channel mean and variance of a layer's input over the whole frame, gathered
    tile core by tile core: what InstanceNorm would compute on the whole frame. None for other norms
    (batch norm in eval mode, none), which are local."""

    def __init__(self, norm: nn.Module):
        self.wanted = isinstance(norm, nn.InstanceNorm2d)
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, y: torch.Tensor) -> None:  # [N,C,h,w]
        if not self.wanted:
            return
        var, mean = torch.var_mean(y, dim=(2, 3), correction=0)  # [N,C] each
        n, mean, m2 = y.shape[2] * y.shape[3], mean.double(), var.double() * (y.shape[2] * y.shape[3])
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        # Chan et al.'s merge of two (count, mean, sum of squared deviations), in float64.
        total, delta = self.count + n, mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    def result(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.wanted:
            return None
        return self.mean.float()[..., None, None], (self.m2 / self.count).float()[..., None, None]  # [N,C,1,1]


def _normalise(norm: nn.Module, y: torch.Tensor, stats) -> torch.Tensor:
    if stats is None:
        return norm(y)
    mean, var = stats  # [N,C,1,1] each
    scale = torch.rsqrt(var + norm.eps)
    if norm.affine:
        scale = scale * norm.weight[:, None, None]
    shift = -mean * scale + (norm.bias[:, None, None] if norm.affine else 0)
    return torch.addcmul(shift, y, scale)  # one pass over the map


def _block(block: nn.Sequential, y: torch.Tensor, stats) -> torch.Tensor:
    """A conv-norm-ReLU block with the norm's statistics given."""
    conv, norm, act = block
    return act(_normalise(norm, conv(y), stats))


@torch.no_grad()
def run_tiled(gen: Generator, x: torch.Tensor, state: State | None, tile: int):
    """``gen.run(x, state)`` with the full- and half-resolution layers run on tiles of at most
    ``tile`` x ``tile`` pixels; the same result (to float rounding). ``x``: ``[B,T,C,H,W]``, H and W
    multiples of 4.

    Those layers hold most of the memory (ngf channels at every pixel, ~5 maps of them). The
    bottleneck -- residual blocks and ConvLSTM, at a sixteenth of the pixels -- runs on the whole
    frame, so the ConvLSTM state stays the whole frame's and nothing at the tile borders drifts over
    time. Each tile computes on its core plus TILE_HALO pixels of real context and keeps the core:
    the cores abut exactly, with nothing to blend. Instance norm normalises with the whole frame's
    statistics, so those are first gathered over every core, one pass over the tiles per norm layer:
    the tiled layers are recomputed (2.5x / 3.4x the time of an untiled run for tiles of 512 / 256
    pixels at 1280x720, about half its activation memory; benchmarks/bench_export.py).
    """
    check_clip(x, gen.channels, "run_tiled")
    if tile <= 0 or tile % STRIDE:
        raise ValueError(f"run_tiled: tile must be a positive multiple of {STRIDE}, got {tile}")
    if tile >= max(x.shape[-2:]):  # one tile: the whole frame
        return gen.run(x, state)
    b, t = x.shape[:2]
    frames = x.flatten(0, 1)  # [N,C,H,W]
    height, width = frames.shape[-2:]
    tiles = [_Tile(ys, xs, height, width) for ys in _spans(height, tile) for xs in _spans(width, tile)]
    encoder = [gen.stem, *gen.down]  # block k outputs at 1/2^k resolution; the last one at the bottleneck's
    bottom_scale = 2 ** (len(encoder) - 1)

    def skips(crop: torch.Tensor, stats: list) -> list[torch.Tensor]:
        """The encoder's outputs on a crop (all but the bottleneck's): the decoder's skips."""
        out = [crop]
        for block, block_stats in zip(encoder[:-1], stats):
            out.append(_block(block, out[-1], block_stats))
        return out[1:]

    enc_stats: list = []
    bottom = None
    for k, block in enumerate(encoder):
        stats, last = _NormStats(block[1]), k == len(encoder) - 1
        if not (stats.wanted or last):
            enc_stats.append(None)
            continue
        for tl in tiles:
            y = tl.crop(frames)
            for j in range(k):
                y = _block(encoder[j], y, enc_stats[j])
            y = tl.core(block[0](y), 2 ** k)  # the conv's output, before the norm
            stats.add(y)
            if last:
                if bottom is None:
                    bottom = y.new_empty(len(frames), y.shape[1], height // bottom_scale, width // bottom_scale)
                tl.place(bottom, y, bottom_scale)
        enc_stats.append(stats.result())
    _, norm, act = encoder[-1]
    feat = gen.bottleneck(act(_normalise(norm, bottom, enc_stats[-1])))  # [N,wL,H/4,W/4]
    # As in Generator.run:
    if gen.temporal:
        hidden, state = gen.lstm(feat.unflatten(0, (b, t)), state)  # [B,T,wL/2,h,w]
    else:
        hidden = gen.lstm(feat[:, None])[0][:, 0].unflatten(0, (b, t))
    feat = feat + gen.lstm_out(hidden.flatten(0, 1))

    out = torch.empty_like(frames)
    dec_stats: list = []
    for k in range(len(gen.up) + 1):  # a pass per decoder norm, then the output pass
        stats = _NormStats(gen.up[k][1]) if k < len(gen.up) else None
        if stats is not None and not stats.wanted:
            dec_stats.append(None)
            continue
        for tl in tiles:
            crop = tl.crop(frames)
            y = tl.crop(feat, bottom_scale)
            levels = list(zip(gen.narrow, gen.up, reversed(skips(crop, enc_stats[:-1]))))
            for j, (narrow, up, skip) in enumerate(levels):
                y = F.interpolate(narrow(y), size=skip.shape[-2:], mode="nearest") + skip
                if j == k:
                    stats.add(tl.core(up[0](y), bottom_scale // 2 ** (j + 1)))
                    break
                y = _block(up, y, dec_stats[j])
            else:
                delta = tl.core(gen.head(y))
                base = tl.core(crop)
                # the whole frame's blur where the residual reads one (exact in the core: the halo > its reach)
                low = tl.core(lowpass(crop)) if gen.residual_space in LOWPASS_SPACES else None
                tl.place(out, gen.output(delta, base, low))
        if stats is not None:
            dec_stats.append(stats.result())
    return out.unflatten(0, (b, t)), state  # [B,T,C,H,W]


def _rgb(frames: torch.Tensor) -> torch.Tensor:
    return frames.expand(-1, 3, -1, -1) if frames.shape[1] == 1 else frames


def video_sources(folder: Path) -> list[Path]:
    """The videos of a folder of videos: its video files and frame folders, in natural order."""
    found = [p for p in folder.iterdir() if not p.name.startswith(".") and video_io.is_video_source(p)]
    return sorted(found, key=lambda p: video_io.natural_key(p.name))


def translate(cfg: Config, log=print) -> Path | list[Path]:
    """``--mode translate``: one video (file or frames folder) to ``--output`` mp4, or every video of
    a folder of videos to ``--output DIR/<name>.mp4``."""
    src = Path(cfg.input)
    if src.is_dir() and not video_io.is_video_source(src):  # no frame images in it: a folder of videos
        return _translate_folder(cfg, src, Path(cfg.output), log)
    out = Path(cfg.output)
    if out.suffix.lower() != ".mp4":
        raise UserError(f"--output {out}: must end in .mp4")
    info = video_io.probe(src)  # clear error for a missing / unsupported / corrupt input
    gen, source, device = _generator(cfg, log)
    bar = _bar(cfg, info.num_frames)
    n, width, height = _translate_one(cfg, gen, device, src, info, out, bar)
    bar.close()
    log(f"translated {n} frames of {src} ({cfg.direction}, {source}) -> {out} "
        f"({width}x{height} at {info.fps:g} fps)")
    return out


def _translate_folder(cfg: Config, folder: Path, out_dir: Path, log) -> list[Path]:
    """Every video of ``folder`` to ``out_dir/<name>.mp4``, under one progress bar.

    Inputs are probed before anything is written; a video that turns out bad is skipped with a
    warning under ``--skip_bad_videos``, else it ends the run with one line. Each output is written
    atomically, so a failure leaves the finished videos and nothing half-written.
    """
    if out_dir.suffix.lower() == ".mp4":
        raise UserError(f"--output {out_dir}: --input {folder} is a folder of videos, so --output must be a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output {out_dir}: not a folder")
    sources = video_sources(folder)
    if not sources:
        raise UserError(f"--input {folder}: no videos in it ({', '.join(video_io.VIDEO_EXTENSIONS)} files or "
                        f"folders of frames)")
    targets: dict[Path, Path] = {}
    for src in sources:
        target = out_dir / f"{src.stem if src.is_file() else src.name}.mp4"
        if target in targets:
            raise UserError(f"{targets[target].name} and {src.name} in {folder} would both be written to {target}")
        if target.resolve() == src.resolve():
            raise UserError(f"--output {out_dir}: {target} would overwrite its input; choose another folder")
        targets[target] = src
    jobs, skipped = [], 0
    for target, src in targets.items():
        try:
            jobs.append((src, video_io.probe(src), target))
        except UserError as e:
            if not cfg.skip_bad_videos:
                raise UserError(f"{e} (nothing written; --skip_bad_videos skips bad videos)") from None
            log(f"warning: skipping {e}")
            skipped += 1
    if not jobs:
        raise UserError(f"--input {folder}: none of its {len(sources)} videos can be read")
    gen, source, device = _generator(cfg, log)
    counts = [info.num_frames for _, info, _ in jobs]
    bar = _bar(cfg, None if None in counts else sum(counts))
    written = []
    for src, info, target in jobs:
        bar.set_postfix_str(src.name)
        try:
            _translate_one(cfg, gen, device, src, info, target, bar)
        except UserError as e:
            if not cfg.skip_bad_videos:
                bar.close()
                raise UserError(f"{e} ({len(written)} of {len(jobs)} videos written to {out_dir} before it; "
                                f"--skip_bad_videos skips bad videos)") from None
            log(f"warning: skipping {e}")
            skipped += 1
            continue
        written.append(target)
    bar.close()
    log(f"translated {len(written)} video(s) of {folder} ({cfg.direction}, {source}) -> {out_dir}"
        + (f"; skipped {skipped} bad video(s)" if skipped else ""))
    return written


def _generator(cfg: Config, log) -> tuple[Generator, str, torch.device]:
    """The one generator translate uses, from ``--model`` or the run's checkpoint; (generator, what it
    came from for the log, device)."""
    from .export import model_generator, run_generator
    from .train.distributed import resolve_device

    device = resolve_device(cfg.device)
    if cfg.model:
        gen, _ = model_generator(cfg)
        source = f"model {Path(cfg.model).name}"
    else:
        gen, ckpt, _ = run_generator(cfg, log)
        source = f"checkpoint {ckpt.name}"
    return gen.to(device), source, device


def _bar(cfg: Config, total: int | None) -> tqdm:
    return tqdm(total=total, desc=f"translate {cfg.direction}", unit="frame", dynamic_ncols=True,
                disable=None)  # None: shown on a terminal, silent in logs


def _translate_one(cfg: Config, gen: Generator, device: torch.device, src: Path, info: video_io.VideoInfo,
                   out: Path, bar: tqdm) -> tuple[int, int, int]:
    """Stream ``src`` through ``gen`` into the mp4 ``out``; returns (frames, width, height) written."""
    h, w = cfg.frame_size
    size, per_call = (h, w), None
    if cfg.output_size == "native":  # the model at the source size: nothing resized
        size = None
        out_h, out_w = info.height - info.height % 2, info.width - info.width % 2  # yuv420p needs even sizes
        # As many frames per call as keep a call's pixels near a training clip's (memory).
        padded = (info.height + -info.height % STRIDE) * (info.width + -info.width % STRIDE)
        per_call = max(1, cfg.clip_length * cfg.frame_size[0] * cfg.frame_size[1] // padded)
    elif cfg.output_size == "source":
        # The source frame, or with --resize_mode crop the centre crop the model saw, at source
        # resolution: resizing that back to the full frame would stretch it.
        src_h, src_w = (info.height, info.width) if cfg.resize_mode == "resize" else \
            video_io.crop_size((info.height, info.width), (h, w))
        out_h, out_w = src_h - src_h % 2, src_w - src_w % 2  # yuv420p needs even sizes
    else:
        out_h, out_w = h, w
    width = out_w * (2 if cfg.side_by_side else 1)
    chunks = video_io.iter_frames(src, size, cfg.resize_mode, chunk=cfg.clip_length)
    n = 0
    with video_io.VideoWriter(out, info.fps, width, out_h) as writer:
        for x, y in translate_stream(gen, chunks, cfg.channels, device, per_call, cfg.tile):
            if size is None:  # native: an odd source size loses its last row / column
                x, y = x[..., :out_h, :out_w], y[..., :out_h, :out_w]
            frames = _rgb(y)
            if cfg.side_by_side:
                frames = torch.cat([_rgb(x), frames], dim=3)  # [n,3,H,2W]
            if size is not None and (out_h, out_w) != (h, w):
                frames = video_io.resize_frames(frames, (out_h, width), "resize")
            writer.write(np.ascontiguousarray(frames.numpy()))
            n += len(y)
            bar.update(len(y))
    return n, width, out_h
