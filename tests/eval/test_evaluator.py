"""VideoEvaluator and --mode eval: honest metrics, both directions, a valid metrics.json."""

import json

import numpy as np
import pytest
import torch

from rl_v2v_gan.cli import main
from rl_v2v_gan.data.dataset import to_float
from rl_v2v_gan.data.factory import prepare_data
from rl_v2v_gan.errors import UserError
from rl_v2v_gan.eval import metrics as M
from rl_v2v_gan.eval.evaluator import VideoEvaluator, paired_metrics

KEYS = {"psnr", "ssim", "temporal_error", "flicker_gt", "cycle_psnr", "cycle_ssim", "flicker_ratio", "fid", "fid_info", "n_clips",
        "ground_truth", "kid", "kid_std", "video_psnr", "video_ssim", "video_temporal_error", "video_frames",
        "video_count", "per_clip", "ci95", "swd", "swd_levels"}


class Identity(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gen_ab, self.gen_ba = torch.nn.Identity(), torch.nn.Identity()


def test_paired_metrics_refuse_data_without_ground_truth():
    x = torch.zeros(1, 4, 3, 16, 16)
    with pytest.raises(UserError, match="ground truth"):
        paired_metrics(x, None)


def test_identity_on_synthetic_gives_the_ground_truth_gap(tiny_config, no_weights_anywhere):
    cfg = tiny_config()
    store = prepare_data(cfg, log=lambda *a: None)
    report = VideoEvaluator(store, cfg.clip_length, 2, torch.device("cpu")).evaluate(Identity(), max_batches=5)
    assert set(report) == {"a2b", "b2a"}
    for direction, m in report.items():
        assert set(m) == KEYS
        assert m["ground_truth"] and m["n_clips"] == cfg.synthetic_test_clips
        assert m["cycle_psnr"] == 100.0  # identity cycles perfectly: the PSNR cap, not inf
        assert m["flicker_ratio"] == pytest.approx(1.0)
        assert m["psnr"] < 30  # day vs night frames are far apart: the metric is against the other style
        assert m["fid"] is None and m["fid_info"]["status"] == "unavailable"  # never from other weights
        assert m["kid"] is None and m["kid_std"] is None  # KID comes from the same weights or not at all
        # SWD needs no weights: always a number, and far from 0 for night frames scored against day ones.
        assert m["swd"] > 50 and len(m["swd_levels"]) == 1
        # Every test video is one clip of T frames here, so the translate path covers the same frames.
        assert m["video_frames"] == cfg.synthetic_test_clips * cfg.clip_length
        assert m["video_psnr"] == pytest.approx(m["psnr"], rel=1e-6)
        assert m["video_ssim"] == pytest.approx(m["ssim"], rel=1e-6)
        # The per-clip values behind each mean, and a bootstrap interval around it.
        assert set(m["per_clip"]) == set(m["ci95"]) == {"psnr", "ssim", "temporal_error", "flicker_gt"}
        for k, values in m["per_clip"].items():
            assert len(values) == m["n_clips"] and sum(values) / len(values) == pytest.approx(m[k], rel=1e-5)
            lo, hi = m["ci95"][k]
            assert min(values) <= lo <= m[k] <= hi <= max(values)


def test_eval_mode_writes_metrics_json_for_every_checkpoint(tmp_path, capsys, no_weights_anywhere):
    common = ["--config", "tiny", "--device", "cpu", "--data_root", str(tmp_path / "data"), "--checkpoint_dir",
              str(tmp_path / "ck"), "--epochs", "2", "--steps_per_epoch", "1"]
    assert main(["--mode", "train", *common]) == 0
    run = tmp_path / "ck" / "rl_v2v_gan"
    assert (run / "report.html").is_file()  # rewritten after each epoch's evaluation
    assert [json.loads(line)["epoch"] for line in (run / "epoch_metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert main(["--mode", "eval", *common, "--all_checkpoints"]) == 0
    svg = (run / "metrics.svg").read_text()  # each metric against the epoch, a line per direction
    assert svg.startswith("<svg") and svg.count('class="plot"') == 9 and 'aria-label="PSNR (dB)"' in svg
    assert 'aria-label="SWD x 10^3 (no ground truth)"' in svg  # the weight-free metric is plotted too
    assert 'aria-label="video PSNR (dB), translate path"' in svg
    out = capsys.readouterr().out
    assert "epoch_0001 a2b" in out and "epoch_0002 b2a" in out  # one table, every checkpoint
    data = json.loads((tmp_path / "ck" / "rl_v2v_gan" / "metrics.json").read_text())
    assert [r["checkpoint"] for r in data["results"]] == ["epoch_0001", "epoch_0002"]
    for r in data["results"]:
        assert set(r["metrics"]) == {"a2b", "b2a"}
        for m in r["metrics"].values():
            assert set(m) == KEYS and m["n_clips"] > 0 and isinstance(m["psnr"], float)
    assert data["config"]["input_shape"] == [4, 16, 16, 3] and data["dataset"] == "synthetic"
    assert main(["--mode", "eval", *common, "--checkpoint", "epoch_0001"]) == 0
    data = json.loads((tmp_path / "ck" / "rl_v2v_gan" / "metrics.json").read_text())
    assert [r["checkpoint"] for r in data["results"]] == ["epoch_0001"]


def _numbered_store(root, n_videos: int = 4, frames: int = 12):
    """Test splits whose every frame holds its video's number, so a sample shows where it came from."""
    from rl_v2v_gan.data.store import ClipStore, write_manifest

    root.mkdir(parents=True)
    splits = {}
    for split in ("testA", "testB"):
        splits[split] = []
        for i in range(n_videos):
            np.save(root / f"{split}_{i}.npy", np.full((frames, 3, 8, 8), 10 * i, np.uint8))
            splits[split].append({"file": f"{split}_{i}.npy", "offset": 0, "length": frames, "fps": 10.0})
    write_manifest(root, {"kind": "test", "frame_shape": [3, 8, 8], "splits": splits})
    return ClipStore(root)


def _video_numbers(frames: torch.Tensor) -> set[int]:
    return {round(v) // 10 for v in ((frames.flatten(1)[:, 0] + 1) * 127.5).tolist()}


def test_fid_samples_span_all_videos_with_a_fixed_seed(tmp_path, no_weights_anywhere):
    store = _numbered_store(tmp_path / "store")  # 4 videos x 12 frames = 3 clips of T=4 each
    ev = VideoEvaluator(store, 4, 2, torch.device("cpu"))
    real = torch.cat(list(ev._real_frames("b", 12)))
    assert real.shape == (12, 3, 8, 8)
    assert _video_numbers(real) == {0, 1, 2, 3}  # not the first video's first 12 frames
    assert torch.equal(real, torch.cat(list(ev._real_frames("b", 12))))  # the same frames every time
    clips = torch.cat([item["a"] for item in ev._loader("a2b", max_batches=2)])  # 4 of the 12 clips
    assert clips.shape[0] == 4
    assert len(_video_numbers(to_float(clips[:, 0]))) >= 3  # the first 4 clips would be videos 0 and 1
    again = torch.cat([item["a"] for item in ev._loader("a2b", max_batches=2)])
    assert torch.equal(clips, again)
    assert len(torch.cat(list(ev._real_frames("b", 10**6)))) == 48  # capped at what the split holds


# --- the translate path: whole videos, carried state, uint8 -------------------------------------

LENGTHS = (12, 10, 7)  # T = 4: full chunks, a 2-frame tail, a 3-frame tail, one video below T


def _paired_store(root, lengths=LENGTHS, size: int = 16):
    """testA/testB with paired ground truth: smooth random videos of ``lengths`` frames."""
    from rl_v2v_gan.data.store import ClipStore, write_manifest

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {}
    for src in ("A", "B"):
        for split in (f"test{src}", f"test{src}_gt"):
            splits[split] = []
        for i, n in enumerate(lengths):
            coarse = rng.integers(0, 256, (n, 3, size // 4, size // 4)).astype(np.float32)
            video = np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3).astype(np.uint8)
            gt = np.round(video * 0.7 + 40).astype(np.uint8)  # the "other style": dimmer, lifted blacks
            for split, frames in ((f"test{src}", video), (f"test{src}_gt", gt)):
                np.save(root / f"{split}_{i}.npy", frames)
                splits[split].append({"file": f"{split}_{i}.npy", "offset": 0, "length": n, "fps": 10.0})
    write_manifest(root, {"kind": "test", "frame_shape": [3, size, size], "splits": splits})
    return ClipStore(root)


class Darkening(torch.nn.Module):
    """Output = input darkened by 0.02 per frame seen since the start of the video: depends on the
    carried state (the frame count, as a ConvLSTM-like ``(h, c)`` pair), so the clip path differs."""

    step = 0.02

    def run(self, x, state=None):
        b, t = x.shape[:2]
        seen = torch.zeros(b, 1) if state is None else state[0]
        frame = seen + torch.arange(t, dtype=torch.float32)  # [B,T]: index of each frame in its video
        out = (x - self.step * frame[:, :, None, None, None]).clamp(-1, 1)
        return out, (seen + t, seen + t)

    def forward(self, x, state=None):
        return self.run(x, state)[0]


class Offset(torch.nn.Module):
    """Adds a constant on the [-1, 1] scale, no state."""

    def __init__(self, offset: float):
        super().__init__()
        self.offset = offset

    def forward(self, x):
        return x + self.offset


class Nets(torch.nn.Module):
    def __init__(self, gen):
        super().__init__()
        self.gen_ab, self.gen_ba = gen, torch.nn.Identity()


def _u8_to_unit(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float64) / 255.0


def test_video_path_carries_the_state_across_chunks_and_videos_of_any_length(tmp_path, no_weights_anywhere):
    store = _paired_store(tmp_path / "store")
    report = VideoEvaluator(store, 4, 2, torch.device("cpu")).evaluate(Nets(Darkening()), max_batches=10)["a2b"]
    # The reference by hand: each whole video in one pass (frame t darkened by 0.02 t), through uint8.
    psnrs, ssims, temporal = [], [], []
    for video, gt in zip(store.videos("testA"), store.videos("testA_gt")):
        t = torch.arange(len(video), dtype=torch.float32)[:, None, None, None]
        out = ((to_float(torch.from_numpy(np.array(video))) - 0.02 * t).clamp(-1, 1) + 1) * 127.5
        out = out.round().clamp(0, 255).to(torch.uint8).numpy()
        mse = ((_u8_to_unit(out) - _u8_to_unit(gt)) ** 2).mean(axis=(1, 2, 3))
        psnrs += list(-10 * np.log10(mse))
        out_f, gt_f = to_float(torch.from_numpy(out))[None], to_float(torch.from_numpy(np.array(gt)))[None]
        ssims += M.ssim(out_f.transpose(0, 1), gt_f.transpose(0, 1)).tolist()
        d_out, d_gt = np.diff(_u8_to_unit(out), axis=0), np.diff(_u8_to_unit(gt), axis=0)
        temporal += list(np.abs(d_out - d_gt).mean(axis=(1, 2, 3)))
    assert report["video_frames"] == sum(LENGTHS) and report["video_count"] == len(LENGTHS)
    assert report["video_psnr"] == pytest.approx(np.mean(psnrs), rel=1e-5)
    assert report["video_ssim"] == pytest.approx(np.mean(ssims), rel=1e-5)
    assert report["video_temporal_error"] == pytest.approx(np.mean(temporal), rel=1e-5)
    # The clip path restarts every clip from the zero state: other numbers.
    assert abs(report["psnr"] - report["video_psnr"]) > 0.05
    # One video at a time gives the same numbers as batches of videos with chunks of other lengths.
    alone = VideoEvaluator(store, 4, 1, torch.device("cpu")).evaluate(Nets(Darkening()), max_batches=30)["a2b"]
    for k in ("video_psnr", "video_ssim", "video_temporal_error", "video_frames"):
        assert alone[k] == pytest.approx(report[k], rel=1e-6)


def test_video_path_is_quantised_to_uint8(tmp_path, no_weights_anywhere):
    store = _paired_store(tmp_path / "store")
    ev = VideoEvaluator(store, 4, 2, torch.device("cpu"))
    plain = ev.evaluate(Nets(torch.nn.Identity()), max_batches=10)["a2b"]
    nudged = ev.evaluate(Nets(Offset(2 * 0.3 / 255)), max_batches=10)["a2b"]  # +0.3/255 on the [0, 1] scale
    for k in ("video_psnr", "video_ssim", "video_temporal_error"):
        assert nudged[k] == plain[k]  # less than half an 8-bit level: the same bytes
    assert nudged["psnr"] != plain["psnr"]  # the float clip path sees it


def test_untrained_generator_gives_the_same_numbers_on_both_paths(tmp_path, tiny_config, no_weights_anywhere):
    from rl_v2v_gan.models.networks import networks_from_config

    store = _paired_store(tmp_path / "store", lengths=(8, 8, 8))  # whole videos: both paths see every frame
    nets = networks_from_config(tiny_config())  # residual generators start as the identity
    report = VideoEvaluator(store, 4, 2, torch.device("cpu")).evaluate(nets, max_batches=10)
    for m in report.values():
        assert m["n_clips"] * 4 == m["video_frames"] == 24
        # Not exactly: in float the residual output keeps RESIDUAL_MARGIN off 0 and 255, uint8 does not.
        assert m["video_psnr"] == pytest.approx(m["psnr"], rel=1e-3)
        assert m["video_ssim"] == pytest.approx(m["ssim"], rel=1e-3)
        # (video_temporal_error also counts the frame pairs across clip boundaries, which no clip holds.)


def test_translate_videos_gives_the_bytes_of_the_translate_stream(tmp_path, tiny_config):
    from rl_v2v_gan.eval.evaluator import translate_videos
    from rl_v2v_gan.models.networks import networks_from_config
    from rl_v2v_gan.translate import translate_stream

    store = _paired_store(tmp_path / "store")
    torch.manual_seed(1)
    gen = networks_from_config(tiny_config()).gen_ab.eval()
    torch.nn.init.normal_(gen.head.weight, std=0.1)  # a non-identity output that depends on the state
    videos = store.videos("testA")
    got = {}
    for ids, start, outs in translate_videos(gen, videos, [len(v) for v in videos], 4, torch.device("cpu"), 2):
        for i, out in zip(ids, outs):
            got.setdefault(i, []).append((start, out))
    for i, video in enumerate(videos):
        chunks = [np.array(video[s:s + 4]) for s in range(0, len(video), 4)]
        expected = torch.cat([y for _, y in translate_stream(gen, chunks, 3, torch.device("cpu"))])
        assert [s for s, _ in got[i]] == list(range(0, len(video), 4))
        ours = torch.cat([out for _, out in got[i]])
        assert (ours.int() - expected.int()).abs().max() <= 1  # batch composition may move a rounding
        assert (ours != expected).float().mean() < 0.01


def test_video_path_stops_at_the_clip_paths_frame_budget(tmp_path, no_weights_anywhere):
    store = _paired_store(tmp_path / "store")
    m = VideoEvaluator(store, 4, 2, torch.device("cpu")).evaluate(Nets(Darkening()), max_batches=1)["a2b"]
    assert m["n_clips"] == 2 and m["video_frames"] == 8  # 1 batch x 2 clips x T = 4


def test_no_ground_truth_no_video_metrics(tmp_path, no_weights_anywhere):
    store = _numbered_store(tmp_path / "store")
    m = VideoEvaluator(store, 4, 2, torch.device("cpu")).evaluate(Nets(Darkening()), max_batches=1)["a2b"]
    assert m["video_psnr"] is None and m["video_ssim"] is None and m["video_frames"] == 0


# --- FID honesty ---------------------------------------------------------------------------------

class FirstPixels(torch.nn.Module):
    num_features = 4

    def forward(self, x):
        return x.flatten(1)[:, :4]


def test_fid_and_kid_come_with_their_sample_counts_and_a_warning(tiny_config, no_weights_anywhere, capsys):
    from rl_v2v_gan.eval.evaluator import format_table

    cfg = tiny_config()
    store = prepare_data(cfg, log=lambda *a: None)
    ev = VideoEvaluator(store, cfg.clip_length, 2, torch.device("cpu"), fid_feature_extractor=FirstPixels())
    report = ev.evaluate(Identity(), max_batches=5)
    frames = cfg.synthetic_test_clips * cfg.clip_length
    for m in report.values():
        info = m["fid_info"]
        assert info["status"] == "ok" and (info["n_real"], info["n_fake"]) == (frames, frames)
        assert isinstance(m["fid"], float) and isinstance(m["kid"], float) and isinstance(m["kid_std"], float)
        assert info["kid_subset_size"] == frames  # KID's subsets cannot be larger than the sample
        assert f"{frames} real and {frames} generated frames" in info["warning"] and "2048" in info["warning"]
    table = format_table({"run": report})
    lines = table.splitlines()
    assert "kid" in lines[0] and "video_psnr" in lines[0] and "fid frames" in lines[0]
    assert f"{frames}/{frames}" in lines[1] and f"{report['a2b']['fid']:.4f}*" in lines[1]
    assert any(line.startswith("* run a2b: ") and "2048" in line for line in lines)
    json.dumps(report, allow_nan=False)


def test_flicker_against_the_ground_truth_motion_is_not_fooled_by_a_darker_style():
    """A translation that moves exactly as its ground truth does has flicker_gt 1, although its
    motion is half the input's (a night style halves the contrast): flicker_ratio reads 0.5."""
    torch.manual_seed(0)
    x = torch.rand(2, 5, 3, 8, 8) * 2 - 1
    gt = 0.5 * x - 0.5  # darker, half the contrast: half the motion
    m = paired_metrics(gt.clone(), gt)
    assert torch.allclose(m["flicker_gt"], torch.ones(2))
    assert torch.allclose(M.flicker_ratio(gt, x), torch.full((2,), 0.5))
    noisy = gt + 0.5 * torch.randn_like(gt)  # independent per-frame noise: flicker
    assert (paired_metrics(noisy, gt)["flicker_gt"] > 1.5).all()


class GroundTruth(torch.nn.Module):
    """A translator that looks its ground truth up: the best any translator can do."""

    def __init__(self, store, split: str):
        super().__init__()
        self.frames = {}  # every input frame's bytes -> its ground-truth frame ([C, H, W] uint8)
        for v, g in zip(store.videos(split), store.videos(f"{split}_gt")):
            for frame, truth in zip(np.asarray(v), np.asarray(g)):
                self.frames.setdefault(frame.tobytes(), np.array(truth))

    def forward(self, x):  # [B, T, C, H, W] in [-1, 1]: the evaluator's windows of the videos
        # A frame from elsewhere (the cycle's second pass gets the other domain's ground truth)
        # passes unchanged: only the forward translation is looked up.
        frames = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        out = [[self.frames.get(f.tobytes(), f) for f in clip] for clip in frames]
        return to_float(torch.from_numpy(np.asarray(out)))


def test_swd_is_lower_for_the_ground_truth_than_for_the_identity(tiny_config, no_weights_anywhere):
    """SWD scores a translation against unpaired target frames: the ground-truth translation sits
    closer to the target domain than the untranslated input, in both directions."""
    cfg = tiny_config()
    store = prepare_data(cfg, log=lambda *a: None)
    assert store.has("testA_gt") and store.has("testB_gt")  # synthetic data always has its ground truth
    nets = torch.nn.Module()
    nets.gen_ab, nets.gen_ba = GroundTruth(store, "testA"), GroundTruth(store, "testB")
    ev = VideoEvaluator(store, cfg.clip_length, 2, torch.device("cpu"))
    ident, truth = ev.evaluate(Identity(), max_batches=5), ev.evaluate(nets, max_batches=5)
    for d in ("a2b", "b2a"):
        assert truth[d]["psnr"] > 60  # the lookup really is the ground truth
        assert truth[d]["swd"] < 0.5 * ident[d]["swd"]
