"""VideoEvaluator and --mode eval: honest metrics, both directions, a valid metrics.json."""

import json

import pytest
import torch

from rl_v2v_gan.cli import main
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
    assert main(["--mode", "eval", *common, "--all_checkpoints"]) == 0
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
