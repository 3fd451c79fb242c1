"""Evaluation (DESIGN §7): VideoEvaluator, the per-epoch evaluation and ``--mode eval``.

Metrics per direction (a2b uses gen_ab on testA, b2a uses gen_ba on testB):

- ``psnr``, ``ssim``, ``temporal_error``: translation vs paired ground truth, only where the test
  split has it (synthetic always; folder datasets with ``testA_gt/``, ``testB_gt/``);
- ``cycle_psnr``, ``cycle_ssim``: input vs ``gen_ba(gen_ab(input))``, always;
- ``flicker_ratio``: mean |Δ output| / mean |Δ input|, always; ``flicker_gt``: mean |Δ output| /
  mean |Δ ground truth| where the split has ground truth (not fooled by a style that lowers contrast);
- ``fid``, ``kid``, ``kid_std``: translated frames vs real frames of the target domain, with the
  standard Inception weights only (else null with the reason); ``fid_info`` holds the sample counts
  and a ``warning`` when FID came from fewer than 2048 frames per side (biased, not comparable);
- ``swd``: sliced Wasserstein distance (x 10^3) between translated frames and real frames of the
  target domain on 7x7 Laplacian-pyramid patches (Karras et al. 2018): needs neither ground truth
  nor weights, so every split has it (``metrics.SWD``); ``swd_levels`` per level, fine to coarse.
  It measures how target-like the output is, not how much of the input's content it keeps (a
  translation drifting from its content can still grow more target-like: README);
- ``video_psnr``, ``video_ssim``, ``video_temporal_error``: what ``--mode translate`` gives users,
  against ground truth: whole test videos through the generator in chunks of T frames with the
  ConvLSTM state carried, frames through uint8 (DESIGN §7); ``video_frames``, ``video_count``: how
  many frames of how many videos that covered.

The clip metrics translate separate T-frame clips from the zero state in float; the video metrics
show what carrying the state and quantising do to them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import Config
from ..data.dataset import TestClips, to_float, to_uint8
from ..errors import UserError
from ..models.networks import translator
from ..utils.fs import atomic_write_text
from . import metrics as M
from .report import TABLE_KEYS

DIRECTIONS = {"a2b": ("a", "b", "gen_ab", "gen_ba"), "b2a": ("b", "a", "gen_ba", "gen_ab")}
SAMPLE_SEED = 0
"""Seed of the evaluated test clips and videos and FID's real frames: every evaluation sees the same ones."""
VIDEO_KEYS = ("video_psnr", "video_ssim", "video_temporal_error")
GT_KEYS = ("psnr", "ssim", "temporal_error", "flicker_gt")  # the metrics against paired ground truth


def _run(gen, x: torch.Tensor, state):
    """``gen.run(x, state)`` -> (output, state) for a Generator; any other module is stateless."""
    run = getattr(gen, "run", None)
    return run(x, state) if run is not None else (gen(x), None)


def _cat_states(states: list):
    """Per-video states (tensors, or tuples of them, batch first) as one batch state; None when any is."""
    if any(s is None for s in states):
        return None
    if isinstance(states[0], torch.Tensor):
        return torch.cat(states)
    return type(states[0])(_cat_states(list(parts)) for parts in zip(*states))


def _split_state(state, n: int) -> list:
    """A batch state back into ``n`` per-video states (``[None] * n`` for None)."""
    if state is None:
        return [None] * n
    if isinstance(state, torch.Tensor):
        return list(state.split(1))
    return [type(state)(parts) for parts in zip(*(_split_state(s, n) for s in state))]


def _per_frame(videos: torch.Tensor) -> torch.Tensor:
    """``[B,T,C,H,W]`` as ``B*T`` one-frame clips, so a per-clip metric gives per-frame values."""
    return videos.flatten(0, 1)[:, None]


@torch.no_grad()
def translate_videos(gen, videos: list, lengths: list[int], clip_length: int, device: torch.device,
                     batch_size: int):
    """Translate the first ``lengths[i]`` frames of each uint8 video ``[L,C,H,W]`` as ``--mode translate``
    does: chunks of ``clip_length`` frames from the zero state, the ConvLSTM state carried from chunk
    to chunk, output through uint8 (``to_uint8``).

    Yields ``(video indices, first frame, uint8 outputs [len(indices),n,C,H,W] on device)`` for every
    model call, in order within each video. Up to ``batch_size`` videos run together: at each chunk
    position the videos whose chunk has the same length share a call, so every output is what a
    batch of one gives (up to the rounding of a float operation on another batch size).
    """
    order = sorted(range(len(videos)), key=lambda i: -lengths[i])
    for first in range(0, len(order), batch_size):
        group = order[first:first + batch_size]
        states: dict[int, Any] = {i: None for i in group}
        for start in range(0, lengths[group[0]], clip_length):
            by_size: dict[int, list[int]] = {}
            for i in group:
                if lengths[i] > start:
                    by_size.setdefault(min(clip_length, lengths[i] - start), []).append(i)
            for n, ids in by_size.items():
                x = torch.from_numpy(np.stack([np.asarray(videos[i][start:start + n]) for i in ids]))
                y, state = _run(gen, to_float(x.to(device)), _cat_states([states[i] for i in ids]))
                states.update(zip(ids, _split_state(state, len(ids))))
                yield ids, start, to_uint8(y)


def paired_metrics(output: torch.Tensor, ground_truth: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """PSNR, SSIM and temporal error of ``output`` against paired ground truth, per clip ``[B]``.

    Refuses data without ground truth: a PSNR against an unpaired clip measures nothing.
    """
    if ground_truth is None:
        raise UserError("PSNR/SSIM need paired ground truth (testA_gt/testB_gt); this test split has none")
    # Flicker against the ground truth's own motion: a style that lowers contrast (night) lowers
    # all motion, so against the input's motion it would read as "less flicker" (DESIGN §7).
    return {"psnr": M.psnr(output, ground_truth), "ssim": M.ssim(output, ground_truth),
            "temporal_error": M.temporal_error(output, ground_truth),
            "flicker_gt": M.flicker_ratio(output, ground_truth)}


class VideoEvaluator:
    """Evaluates a pair of generators on the test clips of a store, both directions."""

    def __init__(self, store, clip_length: int, batch_size: int, device: torch.device,
                 fid_weights: str | None = None, fid_feature_extractor: torch.nn.Module | None = None):
        self.store, self.device, self.batch_size = store, device, batch_size
        self.tests = {d: TestClips(store, d, clip_length) for d in DIRECTIONS
                      if store.has(f"test{DIRECTIONS[d][0].upper()}")}
        self.fid = M.FID(weights_path=fid_weights, feature_extractor=fid_feature_extractor, device=str(device))
        if not self.fid.available:
            print(f"FID unavailable: {self.fid.reason}")

    def _loader(self, direction: str, max_batches: int) -> DataLoader:
        """At most ``max_batches`` batches of test clips drawn uniformly over all test videos (fixed
        seed), not the first clips of the first videos."""
        test = self.tests[direction]
        n = min(len(test), max_batches * self.batch_size)
        picked = torch.randperm(len(test), generator=torch.Generator().manual_seed(SAMPLE_SEED))[:n]
        return DataLoader(torch.utils.data.Subset(test, sorted(picked.tolist())), batch_size=self.batch_size)

    @torch.no_grad()
    def evaluate(self, nets, max_batches: int) -> dict[str, Any]:
        """``{direction: {metric: value or None, ...}}`` over at most ``max_batches`` test batches."""
        was_training = nets.training
        nets.eval()
        report = {}
        try:
            for direction in self.tests:
                report[direction] = self._direction(nets, direction, max_batches)
        finally:
            nets.train(was_training)
        return report

    def _direction(self, nets, direction: str, max_batches: int) -> dict[str, Any]:
        src, dst, fwd, back = DIRECTIONS[direction]
        gen, gen_back = translator(nets, fwd), translator(nets, back)
        test = self.tests[direction]
        video = self._video_path(gen, direction, max_frames=max_batches * self.batch_size * test.clip_length)
        sums: dict[str, list[torch.Tensor]] = {}
        n_clips = 0
        self.fid.reset()
        loader = self._loader(direction, max_batches)
        swd = M.SWD(expected_frames=len(loader.dataset) * test.clip_length)
        for item in loader:
            x = to_float(item[src].to(self.device))  # [B,T,C,H,W]
            y = gen(x)
            cyc = gen_back(y)
            per_clip = {"cycle_psnr": M.psnr(cyc, x), "cycle_ssim": M.ssim(cyc, x),
                        "flicker_ratio": M.flicker_ratio(y, x)}
            if test.has_ground_truth:
                per_clip.update(paired_metrics(y, to_float(item[f"{dst}_gt"].to(self.device))))
            for k, v in per_clip.items():
                sums.setdefault(k, []).append(v.float().cpu())
            n_clips += x.shape[0]
            swd.update(y.flatten(0, 1), real=False)
            if self.fid.available:
                self.fid.update(y.flatten(0, 1), real=False)
        out: dict[str, Any] = {k: M.finite_or_none(float(torch.cat(v).mean())) for k, v in sums.items()}
        for k in GT_KEYS:
            out.setdefault(k, None)
        # Per test clip (a fixed set in a fixed order, so runs scored here line up clip by clip) and
        # the bootstrap 95 % interval of each mean over clips: how much the test set alone moves it.
        per_clip = {k: torch.cat(sums[k]) for k in GT_KEYS if k in sums}
        out["per_clip"] = {k: v.tolist() for k, v in per_clip.items()}
        out["ci95"] = {k: M.bootstrap_ci(v) for k, v in per_clip.items()}
        out.update(video)
        out.update({"n_clips": n_clips, "ground_truth": test.has_ground_truth})
        for frames in self._real_frames(dst, n_frames=n_clips * test.clip_length):
            swd.update(frames, real=True)
            if self.fid.available:
                self.fid.update(frames, real=True)
        sliced = swd.compute()
        out.update({"swd": sliced["swd"], "swd_levels": sliced["swd_levels"]})
        fid = self.fid.compute()
        out.update({"fid": fid["fid"], "kid": fid["kid"], "kid_std": fid["kid_std"], "fid_info": fid})
        return out

    def _video_path(self, gen, direction: str, max_frames: int) -> dict[str, Any]:
        """PSNR, SSIM and temporal error of the translate path against ground truth (DESIGN §7).

        Test videos are taken whole, in a fixed-seed order, until ``max_frames`` frames (the clip
        metrics' frame count): the last one taken is cut there, and as translation is causal its
        first frames are what translating it whole gives. Means are over frames (frame pairs for
        the temporal error), as the clip metrics' are.
        """
        test = self.tests[direction]
        out: dict[str, Any] = {k: None for k in VIDEO_KEYS}
        out.update({"video_frames": 0, "video_count": 0})
        if not test.has_ground_truth:
            return out
        lengths = []
        for i in torch.randperm(len(test.videos), generator=torch.Generator().manual_seed(SAMPLE_SEED)).tolist():
            left = max_frames - sum(n for _, n in lengths)
            if left <= 0:
                break
            lengths.append((i, min(len(test.videos[i]), left)))
        ids = [i for i, _ in lengths]
        sums = {"psnr": 0.0, "ssim": 0.0, "temporal_error": 0.0}
        n_frames = n_pairs = 0
        last: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # video -> previous (output, gt) frame
        for js, start, u8 in translate_videos(gen, [test.videos[i] for i in ids], [n for _, n in lengths],
                                              test.clip_length, self.device, self.batch_size):
            y = to_float(u8)  # [k,n,C,H,W]
            n = y.shape[1]
            gt = to_float(torch.from_numpy(np.stack([np.array(test.gt[ids[j]][start:start + n]) for j in js]))
                          .to(self.device))
            sums["psnr"] += float(M.psnr(_per_frame(y), _per_frame(gt)).double().sum())
            sums["ssim"] += float(M.ssim(_per_frame(y), _per_frame(gt)).double().sum())
            n_frames += y.shape[0] * n
            if start:  # the pair across the chunk boundary is part of the video too
                y = torch.cat([torch.cat([last[j][0] for j in js]), y], dim=1)
                gt = torch.cat([torch.cat([last[j][1] for j in js]), gt], dim=1)
            if y.shape[1] > 1:
                pairs = y.shape[1] - 1
                sums["temporal_error"] += float(M.temporal_error(y, gt).double().sum()) * pairs
                n_pairs += y.shape[0] * pairs
            last.update((j, (y[k:k + 1, -1:], gt[k:k + 1, -1:])) for k, j in enumerate(js))
        out.update({"video_psnr": M.finite_or_none(sums["psnr"] / n_frames) if n_frames else None,
                    "video_ssim": M.finite_or_none(sums["ssim"] / n_frames) if n_frames else None,
                    "video_temporal_error": M.finite_or_none(sums["temporal_error"] / n_pairs) if n_pairs else None,
                    "video_frames": n_frames, "video_count": len(ids)})
        return out

    def _real_frames(self, domain: str, n_frames: int, chunk: int = 256):
        """``n_frames`` real frames of ``domain`` for SWD and FID, drawn uniformly over all frames of all
        videos of its test split (else its training split) with a fixed seed; in chunks."""
        split = f"test{domain.upper()}" if self.store.has(f"test{domain.upper()}") else f"train{domain.upper()}"
        videos = self.store.videos(split)
        starts = np.cumsum([0] + [len(v) for v in videos])  # frame k is videos[i][k - starts[i]]
        n = min(n_frames, int(starts[-1]))
        picked = np.sort(np.random.default_rng(SAMPLE_SEED).choice(int(starts[-1]), size=n, replace=False))
        for first in range(0, n, chunk):
            ks = picked[first:first + chunk]
            vs = np.searchsorted(starts, ks, side="right") - 1
            frames = np.stack([videos[v][k - starts[v]] for v, k in zip(vs, ks)])  # [n,C,H,W]
            yield to_float(torch.from_numpy(frames).to(self.device))

    @torch.no_grad()
    def samples(self, nets, n_clips: int = 2) -> dict[str, torch.Tensor]:
        """uint8 ``[clips, rows, T, C, H, W]`` per direction; rows: input, translation, (ground truth), cycle."""
        was_training = nets.training
        nets.eval()
        out = {}
        try:
            for direction, test in self.tests.items():
                src, dst, fwd, back = DIRECTIONS[direction]
                item = next(iter(DataLoader(test, batch_size=n_clips)))
                x = to_float(item[src].to(self.device))
                y = translator(nets, fwd)(x)
                rows = [x, y] + ([to_float(item[f"{dst}_gt"].to(self.device))] if test.has_ground_truth else []) \
                    + [translator(nets, back)(y)]
                out[direction] = to_uint8(torch.stack(rows, 1)).cpu()  # [clips,rows,T,C,H,W]
        finally:
            nets.train(was_training)
        return out


def _cell(m: dict[str, Any], k: str) -> str:
    if m.get(k) is None:
        return "n/a"
    text = format(m[k], ".4f")
    return text + "*" if k == "fid" and (m.get("fid_info") or {}).get("warning") else text


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one row per (label, direction), one column per metric, then the frames
    FID/KID came from, and a note under the table for each FID from too few frames (marked *)."""
    header = f"{'':<22}" + "".join(f"{k:>15}" for k in TABLE_KEYS) + f"{'clips':>7}{'fid frames':>12}"
    lines, notes = [header], []
    for label, report in rows.items():
        for direction, m in report.items():
            cells = "".join(f"{_cell(m, k):>15}" for k in TABLE_KEYS)
            info = m.get("fid_info") or {}
            frames = f"{info['n_real']}/{info['n_fake']}" if info.get("n_real") or info.get("n_fake") else "n/a"
            lines.append(f"{label + ' ' + direction:<22}{cells}{m['n_clips']:>7}{frames:>12}")
            if info.get("warning"):
                notes.append(f"* {label} {direction}: {info['warning']}")
    return "\n".join(lines + notes)


def _save_samples(samples: dict[str, torch.Tensor], out_dir: Path, stem: str, fps: float) -> list[Path]:
    """A PNG grid (rows: clips x [input, output, gt, cycle]; columns: frames) and a side-by-side mp4."""
    from torchvision.utils import save_image

    from ..data.video_io import write_video

    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for direction, clips in samples.items():  # [clips,rows,T,C,H,W] uint8
        n, r, t, c, h, w = clips.shape
        png = out_dir / f"{stem}_{direction}.png"
        save_image(clips.reshape(n * r * t, c, h, w).float() / 255.0, png, nrow=t, padding=1)
        written.append(png)
        side = clips[0].permute(1, 2, 3, 0, 4).reshape(t, c, h, r * w)  # first clip, rows side by side
        if c == 1:
            side = side.expand(t, 3, h, r * w)
        mp4 = out_dir / f"{stem}_{direction}.mp4"
        write_video(mp4, np.ascontiguousarray(side.numpy()), fps)
        written.append(mp4)
    return written


class Evaluator:
    """The evaluation run after every training epoch (rank 0): metrics, TensorBoard, samples."""

    def __init__(self, cfg: Config, store, device: torch.device):
        self.cfg = cfg
        self.vid = VideoEvaluator(store, cfg.clip_length, cfg.batch_size, device, cfg.fid_weights)
        entries = store.entries("testA") or store.entries("trainA")
        self.fps = float(entries[0].get("fps", 10.0)) if entries else 10.0

    def run_epoch(self, nets, epoch: int, writer, step: int) -> dict[str, Any]:
        if not self.vid.tests:
            print("no test split in the clip store: skipping evaluation")
            return {}
        report = self.vid.evaluate(nets, self.cfg.eval_batches)
        print(format_table({f"epoch {epoch}": report}))
        for direction, m in report.items():
            for k in TABLE_KEYS:
                if m.get(k) is not None:
                    writer.add_scalar(f"eval/{direction}/{k}", m[k], step)
        samples = self.vid.samples(nets)
        stem = f"epoch_{epoch:04d}"
        for direction, clips in samples.items():  # TensorBoard: the first clip's rows, frame by frame
            writer.add_images(f"samples/{direction}", clips[0].flatten(0, 1), step, dataformats="NCHW")
        paths = _save_samples(samples, self.cfg.run_dir / "samples", stem, self.fps)
        print(f"samples: {', '.join(str(p) for p in paths)}")
        return report


def evaluate_run(cfg: Config) -> dict[str, Any]:
    """``--mode eval``: evaluate the latest (or ``--checkpoint``, or every) checkpoint of the run."""
    from ..data.factory import prepare_data
    from ..models.networks import networks_from_config
    from ..train import checkpoint as ckpt_io
    from ..train.distributed import resolve_device
    from ..train.checkpoint import restore

    device = resolve_device(cfg.device)
    store = prepare_data(cfg)
    evaluator = VideoEvaluator(store, cfg.clip_length, cfg.batch_size, device, cfg.fid_weights)
    if not evaluator.tests:
        raise UserError(f"the clip store {store.root} has no test split (testA/ or testB/) to evaluate")
    if cfg.all_checkpoints:
        names = [p.name for p in ckpt_io.list_checkpoints(cfg.run_dir)]
        if not names:
            raise UserError(f"no checkpoints in {cfg.run_dir}")
    else:
        names = [cfg.checkpoint]
    nets = networks_from_config(cfg).to(device)
    rows, results = {}, []
    for name in names:
        ckpt = restore(cfg, nets, None, name)
        t0 = time.time()
        report = evaluator.evaluate(nets, cfg.eval_batches)
        rows[ckpt.name] = report
        results.append({"checkpoint": ckpt.name, "path": str(ckpt), "seconds": round(time.time() - t0, 2),
                        "metrics": report})
    print(format_table(rows))
    fid_status = {r["checkpoint"]: {d: m["fid_info"] for d, m in r["metrics"].items()} for r in results}
    for ckpt_name, dirs in fid_status.items():
        for d, info in dirs.items():
            if info["status"] == "ok":
                kid = "n/a" if info.get("kid") is None else f"{info['kid']:.5f} +- {info['kid_std']:.5f}"
                note = " (* too few for FID: see the note above)" if info.get("warning") else ""
                print(f"FID {ckpt_name} {d}: {info['fid']:.3f}, KID {kid} on {info['n_fake']} translated vs "
                      f"{info['n_real']} real frames{note}")
            else:
                print(f"FID {ckpt_name} {d}: unavailable ({info['reason']})")
    out = {"dataset": cfg.dataset, "data_root": str(store.root), "eval_batches": cfg.eval_batches,
           "results": results, "config": cfg.to_dict()}
    path = cfg.run_dir / "metrics.json"
    atomic_write_text(path, json.dumps(out, indent=2, allow_nan=False))
    print(f"wrote {path}")
    if cfg.all_checkpoints:
        from .report import metrics_svg

        svg = metrics_svg(results, cfg.steps_per_epoch)
        if svg is not None:
            atomic_write_text(cfg.run_dir / "metrics.svg", svg)
            print(f"wrote {cfg.run_dir / 'metrics.svg'}")
    return out


