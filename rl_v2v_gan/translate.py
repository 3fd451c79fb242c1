"""``--mode translate``: a video of any length through a generator, to mp4 (DESIGN §8).

The input is streamed in chunks of T frames and the generator's ConvLSTM state is carried from
chunk to chunk, so the result equals one pass over the whole video while memory stays bounded
by one chunk. The output keeps the source fps; it is written to a temporary file and renamed,
so a failure never leaves a half-written video at ``--output``.
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


def translate(cfg: Config, log=print) -> Path:
    from .models.networks import networks_from_config
    from .train.distributed import resolve_device
    from .train.checkpoint import restore

    src = Path(cfg.input)
    out = Path(cfg.output)
    if out.suffix.lower() != ".mp4":
        raise UserError(f"--output {out}: must end in .mp4")
    info = video_io.probe(src)  # clear error for a missing / unsupported / corrupt input
    device = resolve_device(cfg.device)
    nets = networks_from_config(cfg).to(device).eval()
    ckpt = restore(cfg, nets, None, cfg.checkpoint, log)
    gen = nets.gen_ab if cfg.direction == "a2b" else nets.gen_ba
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
    bar = tqdm(total=info.num_frames, desc=f"translate {cfg.direction}", unit="frame", dynamic_ncols=True,
               disable=None)  # None: shown on a terminal, silent in logs
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
    bar.close()
    log(f"translated {n} frames of {src} ({cfg.direction}, checkpoint {ckpt.name}) -> {out} "
        f"({width}x{out_h} at {info.fps:g} fps)")
    return out
