import hashlib
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from rl_v2v_gan.errors import UserError
from rl_v2v_gan.eval import metrics
from rl_v2v_gan.eval.metrics import (
    FID,
    SWD,
    laplacian_pyramid,
    FLICKER_FLOOR,
    INCEPTION_WEIGHTS_FILE,
    finite_or_none,
    flicker_ratio,
    psnr,
    ssim,
    temporal_error,
    to_unit,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _video(b=2, t=4, c=3, h=32, w=32, seed=0) -> torch.Tensor:
    """Smooth random video in [-1, 1]: SSIM is only meaningful on images with structure."""
    coarse = torch.rand(b * t, c, h // 4, w // 4, generator=_gen(seed))
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")
    return (smooth * 2 - 1).reshape(b, t, c, h, w)


def test_to_unit_maps_and_clamps():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.5])
    assert torch.equal(to_unit(x), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_psnr_identical_is_finite_and_json_safe():
    video = _video()
    value = psnr(video, video)
    assert value.shape == (2,)
    assert torch.isfinite(value).all()
    assert value[0].item() == pytest.approx(100.0)  # the documented cap
    json.dumps({"psnr": finite_or_none(value.mean())})


def test_psnr_of_known_gaussian_noise():
    sigma = 0.05  # on the [0, 1] scale; mid-grey keeps 10 sigma away from clipping
    target = torch.zeros(2, 4, 3, 128, 128)
    noise = torch.randn(target.shape, generator=_gen(1)) * sigma
    pred = target + 2 * noise  # [-1, 1] is twice the [0, 1] scale
    expected = 10 * math.log10(1 / sigma**2)  # 26.02 dB
    assert psnr(pred, target).tolist() == pytest.approx([expected] * 2, abs=0.1)


def test_psnr_averages_per_frame_values():
    target = torch.zeros(1, 2, 1, 8, 8)
    pred = target.clone()
    pred[:, 0] += 2 * 0.1  # frame 0: MSE 0.01 -> 20 dB; frame 1 identical -> 100 dB cap
    assert psnr(pred, target).item() == pytest.approx(60.0, abs=1e-3)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_identical_is_one(channels):
    video = _video(c=channels)
    value = ssim(video, video)
    assert value.shape == (2,)
    assert value.tolist() == pytest.approx([1.0, 1.0], abs=1e-4)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_decreases_with_noise(channels):
    video = _video(c=channels)
    scores = [
        ssim(video + sigma * torch.randn(video.shape, generator=_gen(2)), video).mean().item()
        for sigma in (0.02, 0.1, 0.4)
    ]
    assert 1.0 > scores[0] > scores[1] > scores[2]


def test_ssim_rejects_frames_smaller_than_its_window():
    video = torch.zeros(1, 2, 1, 4, 4)
    with pytest.raises(UserError, match="6x6"):
        ssim(video, video)


def test_temporal_error_is_zero_for_matching_motion():
    gt = _video() * 0.5  # headroom so that the offset below is not clamped
    assert temporal_error(gt, gt).tolist() == [0.0, 0.0]
    assert temporal_error(gt + 0.2, gt).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_temporal_error_hand_built_example():
    # On the [0, 1] scale: Δoutput = [0.5, 0], Δgt = [0.25, 0.5] -> mean(0.25, 0.5) = 0.375.
    output = torch.tensor([0.0, 0.5, 0.5]).reshape(1, 3, 1, 1, 1) * 2 - 1
    gt = torch.tensor([0.0, 0.25, 0.75]).reshape(1, 3, 1, 1, 1) * 2 - 1
    assert temporal_error(output, gt).item() == pytest.approx(0.375)


def test_flicker_ratio_identity_and_doubled_motion():
    source = _video() * 0.3  # [0, 1] values in [0.35, 0.65]: doubling the motion stays in range
    assert flicker_ratio(source, source).tolist() == pytest.approx([1.0, 1.0])
    first = source[:, :1]
    doubled = first + 2 * (source - first)  # every frame-to-frame change twice as large
    assert flicker_ratio(doubled, source).tolist() == pytest.approx([2.0, 2.0], rel=1e-5)


def test_flicker_ratio_static_source_is_finite():
    static = torch.zeros(1, 3, 1, 4, 4)
    assert flicker_ratio(static, static).item() == pytest.approx(1.0)
    moving = static.clone()
    moving[:, 1] += 2 * 0.01  # one frame up 0.01 and back: mean |Δ| = 0.01
    assert flicker_ratio(moving, static).item() == pytest.approx(0.01 / FLICKER_FLOOR, rel=1e-4)


@pytest.mark.parametrize("fn", [psnr, ssim, temporal_error, flicker_ratio])
def test_mismatched_shapes_are_a_user_error(fn):
    with pytest.raises(UserError, match="same shape"):
        fn(torch.zeros(1, 3, 1, 8, 8), torch.zeros(1, 3, 1, 8, 16))


@pytest.mark.parametrize("fn", [temporal_error, flicker_ratio])
def test_temporal_metrics_need_two_frames(fn):
    clip = torch.zeros(1, 1, 1, 8, 8)
    with pytest.raises(UserError, match="at least 2 frames"):
        fn(clip, clip)


def test_finite_or_none():
    assert finite_or_none(1.5) == 1.5
    assert finite_or_none(torch.tensor(2.0)) == 2.0
    assert finite_or_none(float("nan")) is None
    assert finite_or_none(float("inf")) is None
    assert finite_or_none(-float("inf")) is None


# --- FID ------------------------------------------------------------------------------------


class FirstPixels(torch.nn.Module):
    """Features = the first ``num_features`` values of each frame, so tests choose them exactly."""

    num_features = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.float32 and x.shape[1] == 3, (x.dtype, x.shape)
        assert 0.0 <= x.min() and x.max() <= 1.0
        return x.flatten(1)[:, : self.num_features]


def _frames_with_features(features: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """Frames [N, C, 8, 8] in [-1, 1] whose FirstPixels features are ``features`` [N, 4]."""
    unit = torch.zeros(features.shape[0], channels, 8, 8)
    unit[:, 0, 0, :4] = features
    return unit * 2 - 1


def _gaussian_features(mean, scale, n, seed) -> torch.Tensor:
    mixing = torch.tensor(scale, dtype=torch.float32)
    samples = torch.randn(n, 4, generator=_gen(seed)) @ mixing.T + torch.tensor(mean)
    return samples.clamp(0, 1)


def _frechet_closed_form(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_fid_of_identical_sets_is_zero():
    fid = FID(feature_extractor=FirstPixels())
    assert fid.available and fid.reason is None
    frames = _frames_with_features(_gaussian_features([0.5] * 4, 0.1 * np.eye(4), 200, seed=3))
    fid.update(frames, real=True)
    fid.update(frames, real=False)
    result = fid.compute()
    assert result["status"] == "ok" and result["reason"] is None
    assert (result["n_real"], result["n_fake"]) == (200, 200)
    assert result["fid"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_fid_matches_closed_form_on_sample_statistics(channels):
    real = _gaussian_features([0.4, 0.5, 0.5, 0.6], 0.08 * np.eye(4), 300, seed=4)
    fake_scale = [[0.10, 0.02, 0, 0], [0, 0.05, 0, 0], [0, 0.03, 0.07, 0], [0.01, 0, 0, 0.12]]
    fake = _gaussian_features([0.5, 0.45, 0.55, 0.5], fake_scale, 300, seed=5)
    fid = FID(feature_extractor=FirstPixels())
    # Two batches per side: the statistics must accumulate across updates.
    for real_part, fake_part in zip(real.chunk(2), fake.chunk(2)):
        fid.update(_frames_with_features(real_part, channels), real=True)
        fid.update(_frames_with_features(fake_part, channels), real=False)
    expected = _frechet_closed_form(real.double().numpy(), fake.double().numpy())
    assert expected > 0.01  # the sets really differ
    assert fid.compute()["fid"] == pytest.approx(expected, rel=1e-4)


def test_fid_too_few_samples_and_reset():
    fid = FID(feature_extractor=FirstPixels())
    features = _gaussian_features([0.5] * 4, 0.1 * np.eye(4), 3, seed=6)
    fid.update(_frames_with_features(features[:1]), real=True)
    fid.update(_frames_with_features(features), real=False)
    result = fid.compute()
    assert result["fid"] is None and result["status"] == "too_few_samples"
    assert result["kid"] is None and result["kid_std"] is None
    assert (result["n_real"], result["n_fake"]) == (1, 3)
    fid.reset()
    assert (fid.compute()["n_real"], fid.compute()["n_fake"]) == (0, 0)


def test_fid_non_finite_features_give_no_number():
    class NaNFeatures(torch.nn.Module):
        num_features = 2

        def forward(self, x):
            return torch.full((x.shape[0], 2), float("nan"))

    fid = FID(feature_extractor=NaNFeatures())
    fid.update(torch.zeros(4, 3, 8, 8), real=True)
    fid.update(torch.zeros(4, 3, 8, 8), real=False)
    result = fid.compute()
    assert result["fid"] is None and result["status"] == "unavailable"
    json.dumps(result)


def test_fid_warns_below_2048_frames_per_side():
    fid = FID(feature_extractor=FirstPixels())
    frames = _frames_with_features(_gaussian_features([0.5] * 4, 0.1 * np.eye(4), metrics.FID_MIN_SAMPLES, seed=9))
    assert metrics.FID_MIN_SAMPLES == 2048  # the rank of Inception's pool features
    fid.update(frames[:-1], real=True)
    fid.update(frames, real=False)
    result = fid.compute()
    assert result["status"] == "ok" and isinstance(result["fid"], float)  # still reported, with its counts
    assert (result["n_real"], result["n_fake"]) == (2047, 2048)
    assert "2047 real and 2048 generated frames" in result["warning"]
    assert "fewer than 2048 per side" in result["warning"] and "KID" in result["warning"]
    fid.update(frames[-1:], real=True)
    result = fid.compute()
    assert (result["n_real"], result["n_fake"]) == (2048, 2048) and result["warning"] is None
    assert result["kid_subset_size"] == metrics.KID_SUBSET_SIZE  # the standard 1000 once there are enough
    json.dumps(result)


def _unbiased_poly_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """KID by hand: the unbiased MMD^2 with the kernel (x.y / d + 1)^3 (Binkowski et al. 2018)."""
    d, m, n = x.shape[1], len(x), len(y)
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


class CountingFirstPixels(FirstPixels):
    def __init__(self):
        super().__init__()
        self.frames = 0

    def forward(self, x):
        self.frames += x.shape[0]
        return super().forward(x)


def test_kid_is_the_unbiased_mmd_from_fids_own_feature_pass():
    real = _gaussian_features([0.4, 0.5, 0.5, 0.6], 0.08 * np.eye(4), 40, seed=10)
    fake = _gaussian_features([0.5, 0.45, 0.55, 0.5], 0.12 * np.eye(4), 40, seed=11)
    extractor = CountingFirstPixels()
    fid = FID(feature_extractor=extractor)
    for real_part, fake_part in zip(real.chunk(2), fake.chunk(2)):
        fid.update(_frames_with_features(real_part), real=True)
        fid.update(_frames_with_features(fake_part), real=False)
    assert extractor.frames == 80  # one feature pass per frame serves FID and KID
    result = fid.compute()
    # 40 frames per side: every subset is all of them (torchmetrics refuses its default of 1000).
    assert result["kid_subset_size"] == 40
    expected = _unbiased_poly_mmd(real.double().numpy(), fake.double().numpy())
    assert expected > 1e-4
    assert result["kid"] == pytest.approx(expected, rel=1e-4)
    assert result["kid_std"] == 0.0  # every subset is the whole sample
    again = fid.compute()
    assert (again["kid"], again["kid_std"]) == (result["kid"], result["kid_std"])  # seeded subsets
    fid.update(_frames_with_features(fake[:5]), real=False)  # unequal sides: subsets of the smaller
    result = fid.compute()
    assert result["kid_subset_size"] == 40 and result["kid_std"] > 0 and math.isfinite(result["kid"])
    fid.reset()
    assert fid.compute()["kid"] is None


def test_fid_rejects_bad_frame_shape():
    fid = FID(feature_extractor=FirstPixels())
    with pytest.raises(UserError, match="C = 1 or 3"):
        fid.update(torch.zeros(2, 4, 3, 8, 8), real=True)


# --- FID with the Inception network: where the weights come from ----------------------------


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A file in the real weights' format holding random weights: tests the loading path only.

    The real weights cannot be downloaded here, and torch-fidelity only builds the network while
    loading weights, so loading is bypassed once to obtain the state dict layout.
    """
    inception = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        net = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / INCEPTION_WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def trusted_inception_file(inception_file, monkeypatch):
    """The random-weights file, accepted as if it had the standard file's SHA-256 prefix."""
    digest = hashlib.sha256(inception_file.read_bytes()).hexdigest()
    monkeypatch.setattr(metrics, "INCEPTION_SHA256_PREFIX", digest[:8])
    return inception_file


def test_fid_refuses_weights_that_are_not_the_standard_file(no_weights_anywhere, inception_file, monkeypatch):
    monkeypatch.setenv(metrics.FID_WEIGHTS_ENV, str(inception_file))  # right layers, other weights
    _assert_unavailable(FID(), "not the standard FID Inception file")


def _assert_unavailable(fid: FID, reason_part: str):
    assert not fid.available
    assert reason_part in fid.reason
    assert "--fid_weights" in fid.reason and metrics.FID_WEIGHTS_ENV in fid.reason
    assert INCEPTION_WEIGHTS_FILE in fid.reason and "\n" not in fid.reason
    fid.update(torch.zeros(4, 3, 8, 8), real=True)  # a no-op, so callers need not branch
    result = fid.compute()
    assert result == {
        "fid": None, "kid": None, "kid_std": None, "kid_subset_size": None, "n_real": 0, "n_fake": 0,
        "status": "unavailable", "reason": fid.reason, "warning": None,
    }
    json.dumps(result)


def test_fid_missing_weights_path(no_weights_anywhere):
    _assert_unavailable(FID(weights_path="/nonexistent"), "/nonexistent")


def test_fid_no_weights_anywhere(no_weights_anywhere):
    _assert_unavailable(FID(), str(no_weights_anywhere))


def test_fid_env_var_to_missing_file(no_weights_anywhere, monkeypatch):
    monkeypatch.setenv(metrics.FID_WEIGHTS_ENV, "/nonexistent/inception.pth")
    _assert_unavailable(FID(), "/nonexistent/inception.pth")


def test_fid_env_var_to_bogus_file(no_weights_anywhere, monkeypatch, tmp_path):
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint\n" * 10)
    monkeypatch.setenv(metrics.FID_WEIGHTS_ENV, str(bogus))
    _assert_unavailable(FID(), "not the standard FID Inception file")
    # Even a file with the right checksum prefix that cannot be loaded gives a reason, not a crash.
    monkeypatch.setattr(metrics, "INCEPTION_SHA256_PREFIX", hashlib.sha256(bogus.read_bytes()).hexdigest()[:8])
    _assert_unavailable(FID(), f"cannot load Inception weights from {bogus}")


def test_fid_missing_explicit_path_does_not_fall_back(no_weights_anywhere, inception_file):
    no_weights_anywhere.mkdir(parents=True)
    (no_weights_anywhere / INCEPTION_WEIGHTS_FILE).symlink_to(inception_file)
    _assert_unavailable(FID(weights_path="/nonexistent"), "/nonexistent")


def test_fid_finds_weights_in_the_hub_cache(no_weights_anywhere, trusted_inception_file):
    no_weights_anywhere.mkdir(parents=True)
    (no_weights_anywhere / INCEPTION_WEIGHTS_FILE).symlink_to(trusted_inception_file)
    fid = FID()
    assert fid.available and fid.reason is None


@pytest.fixture
def flush_denormals():
    """Random Inception weights shrink activations into denormal floats, which are ~50x slower."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def test_fid_inception_path_end_to_end(
    no_weights_anywhere, monkeypatch, trusted_inception_file, flush_denormals
):
    monkeypatch.setenv(metrics.FID_WEIGHTS_ENV, str(trusted_inception_file))
    fid = FID()
    assert fid.available and fid.reason is None
    # Grey 32x32 frames: repeated to RGB, converted to uint8 and resized to 299 by the network.
    fid.update(_video(b=1, t=3, c=1, seed=7)[0], real=True)
    fid.update(_video(b=1, t=3, c=1, seed=8)[0], real=False)
    result = fid.compute()
    assert result["status"] == "ok" and (result["n_real"], result["n_fake"]) == (3, 3)
    assert math.isfinite(result["fid"])
    # KID from the same network and the same features (subsets of all 3 frames), with FID's warning.
    assert math.isfinite(result["kid"]) and result["kid_subset_size"] == 3
    assert "3 real and 3 generated frames" in result["warning"]


def test_bootstrap_ci_covers_the_mean_and_narrows_with_more_clips():
    rng = np.random.default_rng(0)
    small = torch.from_numpy(rng.normal(20.0, 2.0, 10))
    big = torch.from_numpy(rng.normal(20.0, 2.0, 400))
    lo_s, hi_s = metrics.bootstrap_ci(small)
    lo_b, hi_b = metrics.bootstrap_ci(big)
    assert lo_s < float(small.mean()) < hi_s and lo_b < float(big.mean()) < hi_b
    # The normal-theory half-width 1.96 s / sqrt(n), within the bootstrap's own noise.
    assert (hi_b - lo_b) / 2 == pytest.approx(1.96 * float(big.std()) / 20.0, rel=0.15)
    assert hi_b - lo_b < (hi_s - lo_s) / 3
    assert metrics.bootstrap_ci(small) == (lo_s, hi_s)  # deterministic


def test_bootstrap_ci_over_runs_resamples_the_same_clips_for_every_run():
    clip_effect = torch.linspace(10.0, 30.0, 12)
    runs = torch.stack([clip_effect, clip_effect + 1.0])  # two seeds: the same clips, one dB apart
    lo, hi = metrics.bootstrap_ci(runs)
    single = metrics.bootstrap_ci(clip_effect + 0.5)  # the runs' mean per clip
    assert (lo, hi) == pytest.approx(single)
    assert metrics.bootstrap_ci(torch.tensor([3.0])) is None
    assert metrics.bootstrap_ci(torch.tensor([1.0, float("inf")])) is None


# --- SWD -------------------------------------------------------------------------------------------

def _swd(fake: torch.Tensor, real: torch.Tensor) -> dict:
    s = SWD(expected_frames=len(fake))
    s.update(fake, real=False)
    s.update(real, real=True)
    return s.compute()


def _frames(n=24, seed=0, h=32):
    return _video(b=n, t=1, h=h, w=h, seed=seed)[:, 0]  # [n, 3, h, w] smooth, in [-1, 1]


def test_laplacian_pyramid_sums_back_to_the_frames():
    x = _frames(4, h=64)
    levels = laplacian_pyramid(x)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16]  # halved while the next keeps >= 14 pixels
    y = levels[-1]
    for band in reversed(levels[:-1]):
        y = band + torch.nn.functional.interpolate(y, size=band.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(y, x)


def test_swd_is_zero_for_identical_sets_and_deterministic():
    x = _frames()
    out = _swd(x, x)
    assert out["swd"] == 0.0 and out["swd_levels"] == [0.0, 0.0]
    y = _frames(seed=1)
    assert _swd(x, y) == _swd(x, y)


def test_swd_grows_with_a_colour_shift_and_with_noise_at_the_fine_level():
    real, other = _frames(seed=1), _frames(seed=2)  # two samples of one distribution: the floor
    floor = _swd(other, real)
    tinted = other.clone()
    tinted[:, 2] = (tinted[:, 2] + 0.4).clamp(-1, 1)  # a blue cast: what a translator must learn or undo
    shifted = _swd(tinted, real)
    assert shifted["swd"] > 3 * floor["swd"]
    noisy = _swd((other + 0.1 * torch.randn(other.shape, generator=_gen(3))).clamp(-1, 1), real)
    # Per-frame noise lives in the finest band, far more than in the coarse residual.
    assert noisy["swd_levels"][0] > 3 * floor["swd_levels"][0]
    assert noisy["swd_levels"][0] / floor["swd_levels"][0] > noisy["swd_levels"][-1] / floor["swd_levels"][-1]


def test_swd_descriptor_budget_and_empty_sets():
    s = SWD(expected_frames=1000)
    assert s.per_frame == 16  # 16384 descriptors per level and side at most
    assert SWD().compute() == {"swd": None, "swd_levels": [], "n_real": 0, "n_fake": 0}
    out = _swd(_frames(8), _frames(8, seed=1))
    assert out["n_real"] == out["n_fake"] == 8 * 128


def test_swd_rejects_bad_frames_and_gives_no_number_below_a_patch():
    with pytest.raises(UserError, match="SWD"):
        SWD().update(torch.zeros(2, 3, 32), real=True)
    s = SWD()
    s.update(torch.zeros(2, 3, 6, 6), real=True)
    s.update(torch.zeros(2, 3, 6, 6), real=False)
    assert s.compute()["swd"] is None
