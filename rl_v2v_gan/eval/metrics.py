"""Video quality metrics: PSNR, SSIM, temporal error, flicker ratio, FID and KID; bootstrap intervals.

Videos are ``[B, T, C, H, W]`` floats in [-1, 1]; every metric maps them to [0, 1] first, so the
numbers match the usual image-metric conventions (data range 1) whatever the model's output range.
Per-clip metrics return ``[B]`` so the caller decides how to aggregate across a dataset.
"""

import hashlib
import math
import os
import warnings

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from rl_v2v_gan.errors import UserError

# Identical frames have MSE 0 and infinite PSNR; flooring the MSE caps PSNR at
# 10 * log10(1 / 1e-10) = 100 dB so a perfect clip still gives a finite, JSON-safe number.
PSNR_MSE_FLOOR = 1e-10

# Mean absolute frame change below this (a quarter of one 8-bit level on the [0, 1] scale) is
# invisible, so flicker_ratio treats it as "static" rather than dividing by a near-zero motion.
FLICKER_FLOOR = 1e-3

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
# The torch hub convention: the name carries the first hex digits of the file's SHA-256. Checking
# it makes sure an FID is never computed with other weights that merely have the same layers.
INCEPTION_SHA256_PREFIX = "6726825d"
FID_WEIGHTS_ENV = "RLV2V_FID_WEIGHTS"

# 2048-d pool features of Inception v3: the layer every published FID is computed on.
_INCEPTION_FEATURES = 2048

# Below this many frames per side the feature covariances (2048 x 2048) are rank-deficient, FID is
# biased upwards by an amount that depends on the sample size, and FIDs from different sample sizes
# cannot be compared: such an FID is still reported, with its sample counts and a warning.
FID_MIN_SAMPLES = 2048

# KID (Binkowski et al. 2018) is an unbiased estimate on few samples. Its usual setting (torch-fidelity,
# torchmetrics): the mean over 100 random subsets of 1000 samples per side; with fewer samples the
# subsets hold all of them, and the mean is then the unbiased estimate on the whole sample.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 0
"""Seed of KID's subset draws: the same features always give the same KID."""


def to_unit(x: Tensor) -> Tensor:
    """Map [-1, 1] to [0, 1], clamped so generator overshoot cannot leave the metric's range."""
    return ((x + 1) / 2).clamp(0, 1)


def _check_videos(a: Tensor, b: Tensor, names: str) -> None:
    if a.dim() != 5 or a.shape != b.shape:
        raise UserError(
            f"{names}: expected two videos of the same shape [B, T, C, H, W], "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _frame_deltas(x: Tensor) -> Tensor:
    """Change between consecutive frames on the [0, 1] scale, ``[B, T-1, C, H, W]``."""
    if x.shape[1] < 2:
        raise UserError(f"temporal metrics need clips of at least 2 frames, got T={x.shape[1]}")
    unit = to_unit(x)
    return unit[:, 1:] - unit[:, :-1]


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Per-clip PSNR in dB (data range 1), the mean of per-frame PSNRs, ``[B]``.

    Averaging per-frame PSNR rather than pooling the MSE over the clip is the usual video
    convention: one badly wrong frame is not hidden by many good ones. Capped at 100 dB.
    """
    _check_videos(pred, target, "psnr")
    mse = (to_unit(pred) - to_unit(target)).square().mean(dim=(2, 3, 4))  # [B, T]
    return (-10 * torch.log10(mse.clamp(min=PSNR_MSE_FLOOR))).mean(dim=1)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Per-clip SSIM (11x11 Gaussian window, sigma 1.5, data range 1), mean over frames, ``[B]``."""
    _check_videos(pred, target, "ssim")
    b, t, c, h, w = pred.shape
    # The window is reflect-padded by 5 pixels on each side, which needs more than 5 pixels.
    if min(h, w) < 6:
        raise UserError(f"ssim needs frames of at least 6x6 pixels, got {h}x{w}")
    per_frame = structural_similarity_index_measure(
        to_unit(pred).reshape(b * t, c, h, w),
        to_unit(target).reshape(b * t, c, h, w),
        data_range=1.0,
        reduction="none",
    )  # [B*T]
    return per_frame.reshape(b, t).mean(dim=1)


def temporal_error(output: Tensor, ground_truth: Tensor) -> Tensor:
    """Mean ``|Δoutput - Δground_truth|`` per clip on the [0, 1] scale, ``[B]``.

    Compares motion rather than appearance: 0 when the output changes from frame to frame exactly
    as the ground truth does, even if both differ by a constant offset.
    """
    _check_videos(output, ground_truth, "temporal_error")
    return (_frame_deltas(output) - _frame_deltas(ground_truth)).abs().mean(dim=(1, 2, 3, 4))


def flicker_ratio(output: Tensor, source: Tensor) -> Tensor:
    """Frame-to-frame change of the output relative to that of its source, per clip, ``[B]``.

    ``max(mean|Δoutput|, FLICKER_FLOOR) / max(mean|Δsource|, FLICKER_FLOOR)``: 1 means the
    translation adds no temporal change, above 1 means it flickers. Both motions are floored, so
    a static source gives 1 for a static output and ``mean|Δoutput| / FLICKER_FLOOR`` otherwise:
    there every visible change is flicker, and the value stays finite.
    """
    _check_videos(output, source, "flicker_ratio")
    out_motion = _frame_deltas(output).abs().mean(dim=(1, 2, 3, 4))
    src_motion = _frame_deltas(source).abs().mean(dim=(1, 2, 3, 4))
    return out_motion.clamp(min=FLICKER_FLOOR) / src_motion.clamp(min=FLICKER_FLOOR)


def bootstrap_ci(values: Tensor, level: float = 0.95, resamples: int = 2000, seed: int = 0
                 ) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of a mean over test clips (the clips are the sample).

    ``values`` is ``[N]`` (one per clip) or ``[S, N]`` (S runs, e.g. seeds, scored on the same N
    clips): each resample draws N clips with replacement, the same clips for every run, and takes
    the mean over clips and runs. Deterministic (``seed``); None with fewer than 2 clips or any
    non-finite value (an interval over a subset would describe other clips).
    """
    v = torch.as_tensor(values, dtype=torch.float64)
    v = v.reshape(-1, v.shape[-1]) if v.dim() else v.reshape(1, 1)
    n = v.shape[-1]
    if n < 2 or not torch.isfinite(v).all():
        return None
    idx = torch.randint(0, n, (resamples, n), generator=torch.Generator().manual_seed(seed))
    means = v[:, idx].mean(dim=(0, 2))  # [resamples]
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(means, q).tolist()
    return lo, hi


def finite_or_none(x: float) -> float | None:
    """JSON has no NaN or infinity; report those as null instead of writing invalid JSON."""
    x = float(x)
    return x if math.isfinite(x) else None


def _how_to_supply_weights() -> str:
    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    return (
        f"pass --fid_weights PATH, set {FID_WEIGHTS_ENV}, "
        f"or put {INCEPTION_WEIGHTS_FILE} in {checkpoints}/"
    )


def _find_inception_weights(weights_path: str | None) -> tuple[str | None, str | None]:
    """The weights file to use and, when there is none, why: ``(path, None)`` or ``(None, reason)``.

    A path named explicitly (argument, then environment) is used or reported as missing, never
    silently replaced by another file: a typo must not switch the weights a number came from.
    """
    if weights_path:
        candidate, origin = weights_path, "given path"
    elif os.environ.get(FID_WEIGHTS_ENV):
        candidate, origin = os.environ[FID_WEIGHTS_ENV], FID_WEIGHTS_ENV
    else:
        candidate = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_WEIGHTS_FILE)
        if os.path.isfile(candidate):
            return _checked(candidate)
        return None, f"no Inception weights: {_how_to_supply_weights()}"
    if not os.path.isfile(candidate):
        return None, f"no Inception weights at {candidate} ({origin}): {_how_to_supply_weights()}"
    return _checked(candidate)


def _checked(path: str) -> tuple[str | None, str | None]:
    """``(path, None)`` when the file is the standard FID Inception file, else ``(None, reason)``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(INCEPTION_SHA256_PREFIX):
        return None, (f"{path} is not the standard FID Inception file (SHA-256 {digest.hexdigest()[:8]}..., "
                      f"expected {INCEPTION_SHA256_PREFIX}...): {_how_to_supply_weights()}")
    return path, None


class _SharedFeatures(torch.nn.Module):
    """One feature pass for FID and KID: the last input's features are returned again for the same
    tensor object, so the second metric fed the same frames does not run Inception a second time."""

    def __init__(self, extractor: torch.nn.Module):
        super().__init__()
        self.extractor = extractor
        self._last: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        features = self.extractor(x)
        self._last = (x, features)
        return features

    def clear(self) -> None:
        self._last = None


def small_sample_warning(n_real: int, n_fake: int) -> str | None:
    """Why an FID from ``n_real`` real and ``n_fake`` generated frames is not comparable, or None."""
    if min(n_real, n_fake) >= FID_MIN_SAMPLES:
        return None
    return (f"FID from {n_real} real and {n_fake} generated frames, fewer than {FID_MIN_SAMPLES} per side: "
            f"biased upwards by an amount that depends on the sample size, so not comparable with FIDs "
            f"from other sample sizes; compare KID (unbiased) or evaluate more frames (--eval_batches)")


class FID:
    """Frechet Inception Distance and Kernel Inception Distance with the standard Inception weights,
    or an injected extractor (tests).

    Without ``feature_extractor`` this uses the torch-fidelity Inception v3 that published FIDs use,
    loaded only from a local file (see ``_find_inception_weights``). When there is none, or it
    cannot be loaded, ``available`` is False, ``reason`` says why in one line, ``update`` does
    nothing and ``compute`` reports status "unavailable": evaluation goes on without FID and KID
    rather than failing, and never computes them with any other weights.

    KID is computed from the same features (one Inception pass per frame serves both). FID is
    biased on few samples, KID is not: ``compute`` reports the sample counts, and a ``warning``
    below ``FID_MIN_SAMPLES`` frames per side.

    A ``feature_extractor`` receives float frames in [0, 1], ``[N, 3, H, W]``, and returns
    ``[N, d]`` features; give it a ``num_features`` attribute or it is probed with a 299x299 input.
    """

    def __init__(
        self,
        weights_path: str | None = None,
        feature_extractor: torch.nn.Module | None = None,
        device: str | torch.device = "cpu",
    ):
        self.device = torch.device(device)
        self._custom = feature_extractor is not None
        self.available = False
        self.reason: str | None = None
        self._metric: FrechetInceptionDistance | None = None
        self._kid: KernelInceptionDistance | None = None
        if feature_extractor is not None:
            # normalize=True: torchmetrics probes a custom extractor with floats, as update feeds it.
            metric = FrechetInceptionDistance(feature=feature_extractor, normalize=True)
        else:
            path, self.reason = _find_inception_weights(weights_path)
            if path is None:
                return
            try:
                # antialias=False keeps torch-fidelity's TF1-compatible resize, without which the
                # numbers are not comparable to published FIDs.
                metric = FrechetInceptionDistance(
                    feature=_INCEPTION_FEATURES,
                    feature_extractor_weights_path=path,
                    antialias=False,
                )
            except ModuleNotFoundError:
                self.reason = "FID needs the torch-fidelity package: pip install torch-fidelity"
                return
            # FID is optional: any failure to read the file (truncated, not a checkpoint, other
            # layers) must end in a reason, not abort the evaluation that asked for it.
            except Exception as err:
                detail = " ".join(str(err).split())[:200]
                self.reason = (
                    f"cannot load Inception weights from {path} ({type(err).__name__}: {detail}): "
                    f"{_how_to_supply_weights()}"
                )
                return
        # KID gets FID's network (already loaded from the checked file) as its extractor, never
        # one of its own, which torchmetrics would download.
        self._shared = _SharedFeatures(metric.inception)
        metric.inception = self._shared
        with warnings.catch_warnings():  # "KID will save all extracted features": a few thousand here
            warnings.simplefilter("ignore", UserWarning)
            kid = KernelInceptionDistance(feature=self._shared, subsets=KID_SUBSETS,
                                          subset_size=KID_SUBSET_SIZE, compute_with_cache=False)
        self._metric = metric.to(self.device)
        self._kid = kid.to(self.device)
        self.available = True

    def update(self, frames: Tensor, real: bool) -> None:
        """Add frames ``[N, C, H, W]`` in [-1, 1] (C = 1 or 3) to the real or the generated set."""
        if self._metric is None:
            return
        if frames.dim() != 4 or frames.shape[1] not in (1, 3):
            raise UserError(
                f"FID expects frames [N, C, H, W] with C = 1 or 3, got {tuple(frames.shape)}"
            )
        # Grey is repeated to RGB, contiguous because an extractor may view() its input.
        unit = to_unit(frames.to(self.device)).expand(-1, 3, -1, -1).contiguous()  # [N, 3, H, W]
        if not self._custom:
            # Inception was trained on 8-bit images; round rather than truncate so that a
            # [-1, 1] round trip of an 8-bit frame gives back the same byte.
            unit = unit.mul(255).round().to(torch.uint8)
        try:
            self._metric.update(unit, real=real)
            self._kid.update(unit, real=real)  # the same tensor: FID's features, no second pass
        finally:
            self._shared.clear()

    def compute(self) -> dict:
        """``{"fid", "kid", "kid_std", "kid_subset_size", "n_real", "n_fake", "status", "reason", "warning"}``.

        ``fid``, ``kid`` and ``kid_std`` are None unless status is "ok"; status is "ok",
        "too_few_samples" or "unavailable" (no weights, or a non-finite result). ``warning`` is set
        when fewer than ``FID_MIN_SAMPLES`` frames per side were used (FID biased, see there).
        """
        empty = {"fid": None, "kid": None, "kid_std": None, "kid_subset_size": None}
        if self._metric is None:
            return {**empty, "n_real": 0, "n_fake": 0, "status": "unavailable", "reason": self.reason,
                    "warning": None}
        n_real = int(self._metric.real_features_num_samples)
        n_fake = int(self._metric.fake_features_num_samples)
        result = {**empty, "n_real": n_real, "n_fake": n_fake}
        # A covariance needs two samples; torchmetrics would raise. KID's unbiased MMD too.
        if min(n_real, n_fake) < 2:
            reason = f"FID needs at least 2 real and 2 generated frames, got {n_real} and {n_fake}"
            return {**result, "status": "too_few_samples", "reason": reason, "warning": None}
        result["warning"] = small_sample_warning(n_real, n_fake)
        sums = (
            self._metric.real_features_sum,
            self._metric.real_features_cov_sum,
            self._metric.fake_features_sum,
            self._metric.fake_features_cov_sum,
        )
        # torch.linalg.eigvals on a NaN matrix can crash the whole process (MKL double free),
        # so non-finite features must never reach torchmetrics' compute.
        finite = all(bool(torch.isfinite(x).all()) for x in sums)
        fid = finite_or_none(self._metric.compute()) if finite else None
        if fid is None:
            reason = "FID is not finite: NaN or inf in the features"
            return {**result, "status": "unavailable", "reason": reason}
        kid, kid_std, subset = self._compute_kid(n_real, n_fake)
        return {**result, "fid": fid, "kid": kid, "kid_std": kid_std, "kid_subset_size": subset,
                "status": "ok", "reason": None}

    def _compute_kid(self, n_real: int, n_fake: int) -> tuple[float | None, float | None, int]:
        """KID mean and std over subsets of ``min(KID_SUBSET_SIZE, n_real, n_fake)`` frames per side."""
        subset = min(KID_SUBSET_SIZE, n_real, n_fake)
        self._kid.subset_size = subset  # torchmetrics refuses a subset larger than the sample
        # Subsets holding every frame of both sides are all the same set: one gives the same mean
        # (and std 0) at 1/100 of the cost, which matters on CPU.
        self._kid.subsets = 1 if n_real == n_fake == subset else KID_SUBSETS
        with torch.random.fork_rng(devices=[]):  # its subsets are drawn with the global CPU generator
            torch.manual_seed(KID_SEED)
            mean, std = self._kid.compute()
        return finite_or_none(mean), finite_or_none(std), subset

    def reset(self) -> None:
        """Forget both sets of frames, keeping the loaded network."""
        if self._metric is not None:
            self._metric.reset()
            self._kid.reset()


# Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, "Progressive growing
# of GANs", their §5 and metrics/sliced_wasserstein.py): a distance between two sets of frames that
# needs no pretrained weights, so it is always available, unlike FID.
SWD_PATCH = 7
SWD_PATCHES_PER_FRAME = 128
SWD_MAX_DESCRIPTORS = 16384  # per level and side; more frames get fewer patches each
SWD_PROJECTIONS = 512
SWD_SEED = 0
"""Seed of the patch positions and projection directions: the same frames always give the same SWD."""

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: Tensor) -> Tensor:
    """Separable 5-tap binomial blur per channel, reflect-padded: the pyramid's low-pass."""
    c = x.shape[1]
    k = _BINOMIAL.to(x)
    x = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return torch.nn.functional.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def laplacian_pyramid(frames: Tensor, min_side: int = 2 * SWD_PATCH) -> list[Tensor]:
    """Band-pass levels from fine to coarse, then the low-pass residual; ``frames`` ``[N, C, H, W]``.

    Levels are halved while the next one keeps at least ``min_side`` pixels a side; the levels sum
    back to the input (each band is the level minus its blurred, down- and up-sampled self).
    """
    levels = []
    x = frames
    while min(x.shape[-2:]) // 2 >= min_side:
        down = _blur(x)[..., ::2, ::2]
        up = torch.nn.functional.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)
        levels.append(x - up)
        x = down
    levels.append(x)
    return levels


class SWD:
    """Sliced Wasserstein distance between generated frames and real target-domain frames, per
    pyramid level and averaged (reported x 10^3, as in Karras et al.).

    Each frame gives up to ``SWD_PATCHES_PER_FRAME`` random 7x7 patches per level (fewer when
    ``expected_frames`` would exceed ``SWD_MAX_DESCRIPTORS``). Unlike Karras et al., both sets are
    normalised with the *real* set's per-channel mean and std rather than each with its own, so a
    shift of colour or brightness (what a translator is asked to learn) counts in the distance.
    Lower is closer; 0 for identical sets. Frames are ``[N, C, H, W]`` in [-1, 1].
    """

    def __init__(self, expected_frames: int | None = None):
        self.reset(expected_frames)

    def reset(self, expected_frames: int | None = None) -> None:
        per_frame = SWD_PATCHES_PER_FRAME
        if expected_frames:
            per_frame = max(1, min(per_frame, SWD_MAX_DESCRIPTORS // expected_frames))
        self.per_frame = per_frame
        self.too_small = False
        self._sets: dict[bool, list[list[Tensor]]] = {True: [], False: []}
        # One seed for both sides: identical sets get identical patches (SWD 0), and the generated side of
        # every evaluation of a run draws the same positions, so checkpoints are compared on the same patches.
        self._gens = {r: torch.Generator().manual_seed(SWD_SEED) for r in (True, False)}

    def update(self, frames: Tensor, real: bool) -> None:
        if frames.dim() != 4:
            raise UserError(f"SWD expects frames [N, C, H, W], got {tuple(frames.shape)}")
        if min(frames.shape[-2:]) < SWD_PATCH:  # no patch fits: no number, and evaluation goes on
            self.too_small = True
            return
        levels = laplacian_pyramid(to_unit(frames).float().cpu())
        stored = self._sets[real]
        for i, level in enumerate(levels):
            patches = torch.nn.functional.unfold(level, SWD_PATCH)  # [N, C*49, L]
            n, _, positions = patches.shape
            k = min(self.per_frame, positions)
            pick = torch.rand(n, positions, generator=self._gens[real]).argsort(dim=1)[:, :k]  # [N, k]
            desc = patches.gather(2, pick.unsqueeze(1).expand(-1, patches.shape[1], -1))  # [N, D, k]
            if len(stored) <= i:
                stored.append([])
            stored[i].append(desc.transpose(1, 2).reshape(n * k, -1))

    def compute(self) -> dict:
        """``{"swd": mean over levels or None, "swd_levels": [per level, fine to coarse], "n_real",
        "n_fake"}`` (descriptors per level and side); None when either side is empty or frames were
        smaller than a patch."""
        real, fake = self._sets[True], self._sets[False]
        if not real or not fake or self.too_small:
            return {"swd": None, "swd_levels": [], "n_real": 0, "n_fake": 0}
        gen = torch.Generator().manual_seed(SWD_SEED + 1)
        per_level = []
        for r, f in zip(real, fake):
            r, f = torch.cat(r), torch.cat(f)  # [n, C*49]
            n = min(len(r), len(f))  # equal counts: the 1-D distances compare sorted projections
            keep = torch.randperm(max(len(r), len(f)), generator=gen)
            r, f = r[keep[keep < len(r)][:n]], f[keep[keep < len(f)][:n]]
            c = r.shape[1] // (SWD_PATCH * SWD_PATCH)
            rc = r.view(n, c, -1)
            mean = rc.mean(dim=(0, 2)).repeat_interleave(SWD_PATCH * SWD_PATCH)
            std = rc.std(dim=(0, 2)).clamp_min(1e-8).repeat_interleave(SWD_PATCH * SWD_PATCH)
            r, f = (r - mean) / std, (f - mean) / std
            dirs = torch.randn(r.shape[1], SWD_PROJECTIONS, generator=gen)
            dirs = dirs / dirs.norm(dim=0, keepdim=True)
            pr, _ = (r @ dirs).sort(dim=0)
            pf, _ = (f @ dirs).sort(dim=0)
            per_level.append(float((pr - pf).abs().mean()) * 1e3)
        return {"swd": finite_or_none(sum(per_level) / len(per_level)), "swd_levels": per_level,
                "n_real": sum(len(x) for x in real[0]), "n_fake": sum(len(x) for x in fake[0])}
