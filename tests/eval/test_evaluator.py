"""VideoEvaluator and --mode eval: honest metrics, both directions, a valid metrics.json."""

import json

import numpy as np
import pytest
import torch

from rl_v2v_gan.cli import main
from rl_v2v_gan.data.dataset import to_float
from rl_v2v_gan.data.factory import prepare_data
from rl_v2v_gan.errors import UserError
from rl_v2v_gan.eval.evaluator import VideoEvaluator, paired_metrics

KEYS = {"psnr", "ssim", "temporal_error", "cycle_psnr", "cycle_ssim", "flicker_ratio", "fid", "fid_info", "n_clips",
        "ground_truth"}


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


def test_eval_mode_writes_metrics_json_for_every_checkpoint(tmp_path, capsys, no_weights_anywhere):
    common = ["--config", "tiny", "--device", "cpu", "--data_root", str(tmp_path / "data"), "--checkpoint_dir",
              str(tmp_path / "ck"), "--epochs", "2", "--steps_per_epoch", "1"]
    assert main(["--mode", "train", *common]) == 0
    run = tmp_path / "ck" / "rl_v2v_gan"
    assert (run / "report.html").is_file()  # rewritten after each epoch's evaluation
    assert [json.loads(line)["epoch"] for line in (run / "epoch_metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert main(["--mode", "eval", *common, "--all_checkpoints"]) == 0
    svg = (run / "metrics.svg").read_text()  # each metric against the epoch, a line per direction
    assert svg.startswith("<svg") and svg.count('class="plot"') == 6 and 'aria-label="PSNR (dB)"' in svg
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
