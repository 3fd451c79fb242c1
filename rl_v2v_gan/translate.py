"""``--mode translate``: a video of any length through a generator, to mp4 (DESIGN §8).

The input is streamed in chunks of T frames and the generator's ConvLSTM state is carried from
chunk to chunk, so the result equals one pass over the whole video while memory stays bounded
by one chunk. The output keeps the source fps; it is written to a temporary file and renamed,
so a failure never leaves a half-written video at ``--output``.

``--input`` may also be a folder of videos (video files and frame folders; a folder holding frame
images itself is one video): each is translated to ``--output DIR/<name>.mp4``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import Config
from .data import video_io
from .data.dataset import to_channels, to_float, to_uint8
from .errors import UserError
from .models.generator import Generator
from .models.networks import translator


@torch.no_grad()
def translate_stream(gen: Generator, chunks, channels: int, device: torch.device):
    """Yield ``(input, output)`` uint8 chunks ``[n,C,H,W]`` for model-size input chunks, state carried."""
    state = None
    for frames in chunks:  # uint8 [n,3,H,W]
        x = torch.from_numpy(to_channels(frames, channels)).to(device)
        y, state = gen.run(to_float(x)[None], state)  # [1,n,C,H,W]
        yield x.cpu(), to_uint8(y[0]).cpu()


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
    gen, ckpt, device = _generator(cfg, log)
    bar = _bar(cfg, info.num_frames)
    n, width, height = _translate_one(cfg, gen, device, src, info, out, bar)
    bar.close()
    log(f"translated {n} frames of {src} ({cfg.direction}, checkpoint {ckpt.name}) -> {out} "
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
    gen, ckpt, device = _generator(cfg, log)
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
    log(f"translated {len(written)} video(s) of {folder} ({cfg.direction}, checkpoint {ckpt.name}) -> {out_dir}"
        + (f"; skipped {skipped} bad video(s)" if skipped else ""))
    return written


def _generator(cfg: Config, log):
    from .models.networks import networks_from_config
    from .train.distributed import resolve_device
    from .train.checkpoint import restore

    device = resolve_device(cfg.device)
    nets = networks_from_config(cfg).to(device).eval()
    ckpt = restore(cfg, nets, None, cfg.checkpoint, log)
    return translator(nets, "gen_ab" if cfg.direction == "a2b" else "gen_ba"), ckpt, device


def _bar(cfg: Config, total: int | None) -> tqdm:
    return tqdm(total=total, desc=f"translate {cfg.direction}", unit="frame", dynamic_ncols=True,
                disable=None)  # None: shown on a terminal, silent in logs


def _translate_one(cfg: Config, gen: Generator, device: torch.device, src: Path, info: video_io.VideoInfo,
                   out: Path, bar: tqdm) -> tuple[int, int, int]:
    """Stream ``src`` through ``gen`` into the mp4 ``out``; returns (frames, width, height) written."""
    h, w = cfg.frame_size
    if cfg.output_size == "source":
        # The source frame, or with --resize_mode crop the centre crop the model saw, at source
        # resolution: resizing that back to the full frame would stretch it.
        src_h, src_w = (info.height, info.width) if cfg.resize_mode == "resize" else \
            video_io.crop_size((info.height, info.width), (h, w))
        out_h, out_w = src_h - src_h % 2, src_w - src_w % 2  # yuv420p needs even sizes
    else:
        out_h, out_w = h, w
    width = out_w * (2 if cfg.side_by_side else 1)
    chunks = video_io.iter_frames(src, (h, w), cfg.resize_mode, chunk=cfg.clip_length)
    n = 0
    with video_io.VideoWriter(out, info.fps, width, out_h) as writer:
        for x, y in translate_stream(gen, chunks, cfg.channels, device):
            frames = _rgb(y)
            if cfg.side_by_side:
                frames = torch.cat([_rgb(x), frames], dim=3)  # [n,3,H,2W]
            if (out_h, out_w) != (h, w):
                frames = video_io.resize_frames(frames, (out_h, width), "resize")
            writer.write(np.ascontiguousarray(frames.numpy()))
            n += len(y)
            bar.update(len(y))
    return n, width, out_h
