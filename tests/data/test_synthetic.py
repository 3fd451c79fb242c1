import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rl_v2v_gan.config import make_config
from rl_v2v_gan.data import synthetic
from rl_v2v_gan.data import dataset as clips_dataset  # TestClips by module, so pytest does not collect it
from rl_v2v_gan.data.dataset import StepSampler, UnpairedClips, to_float, to_uint8
from rl_v2v_gan.data.factory import prepare_data, synthetic_store_dir
from rl_v2v_gan.data.store import MANIFEST, SPLITS, ClipStore, write_manifest
from rl_v2v_gan.errors import ConfigError, UserError

T, H, W = 4, 16, 16
N_TRAIN, N_TEST = 4, 3


def quiet(*_):
    pass


def tiny_config(root: Path, **overrides):
    values = dict(dataset="synthetic", data_root=str(root), input_shape=(T, H, W, 3), synthetic_train_clips=N_TRAIN,
                  synthetic_test_clips=N_TEST)
    return make_config(**{**values, **overrides})


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory) -> ClipStore:
    return prepare_data(tiny_config(tmp_path_factory.mktemp("synthetic")), log=quiet)


def write_store(root: Path, lengths: dict[str, list[int]], frame_shape=(3, 8, 8)) -> ClipStore:
    """A hand-made store whose frame ``f`` of video ``v`` in split number ``s`` is filled with
    ``100 * s + 10 * v + f``, so a clip's content tells where it came from."""
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for s, (split, videos) in enumerate(lengths.items()):
        frames = [np.full((n, *frame_shape), 100 * s + 10 * v + np.arange(n)[:, None, None, None], np.uint8)
                  for v, n in enumerate(videos)]
        np.save(root / f"{split}.npy", np.concatenate(frames))
        offsets = np.cumsum([0] + videos)
        splits[split] = [{"file": f"{split}.npy", "offset": int(offsets[v]), "length": n, "fps": 10.0,
                          "source": f"{split}/video{v}.mp4"} for v, n in enumerate(videos)]
    write_manifest(root, {"kind": "test", "frame_shape": list(frame_shape), "splits": splits})
    return ClipStore(root)


def labels(clip: torch.Tensor) -> list[int]:
    """The per-frame fill values of a clip made by :func:`write_store`."""
    return clip[:, 0, 0, 0].tolist()


def scenes_of(split: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The scene parameters :func:`synthetic.generate` draws for ``split``."""
    return synthetic.sample_scenes(n, T, H, W, np.random.default_rng([seed, synthetic.SPLIT_STREAMS[split]]))


def foreground(clips: np.ndarray, scenes: dict[str, np.ndarray], style: str) -> np.ndarray:
    """Pixels ``[n,T,H,W]`` where a uint8 rendering differs from the same scenes with no shapes."""
    empty = {**scenes, "present": np.zeros_like(scenes["present"])}
    background = synthetic.to_uint8(synthetic.render(empty, H, W, style), clips.shape[2])
    return np.abs(clips.astype(int) - background.astype(int)).max(axis=2) > 0


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of ``[..., H, W]`` by a square of ``2 * radius + 1``."""
    x = torch.from_numpy(mask.astype(np.float32)).reshape(-1, 1, *mask.shape[-2:])
    return torch.nn.functional.max_pool2d(x, 2 * radius + 1, 1, radius).reshape(mask.shape).numpy() > 0


# --- synthetic clips -----------------------------------------------------------------------

@pytest.mark.parametrize("style", ["day", "night"])
@pytest.mark.parametrize("channels", [3, 1])
def test_generate_shape_dtype_range(style, channels):
    clips = synthetic.generate("trainA", 5, (T, H, W, channels), seed=0, style=style)
    assert clips.shape == (5, T, channels, H, W)
    assert clips.dtype == np.uint8
    assert int(clips.max()) - int(clips.min()) >= 100  # not a flat or tiny-range image


def test_day_is_brighter_than_night():
    day = synthetic.generate("testA", 4, (T, H, W, 3), seed=0, style="day")
    night = synthetic.generate("testA", 4, (T, H, W, 3), seed=0, style="night")
    assert day.mean() > night.mean() + 80


def test_generate_is_deterministic_per_seed():
    shape = (T, H, W, 3)
    first = synthetic.generate("trainA", 3, shape, seed=5, style="day")
    assert np.array_equal(first, synthetic.generate("trainA", 3, shape, seed=5, style="day"))
    other = synthetic.generate("trainA", 3, shape, seed=6, style="day")
    assert all(not np.array_equal(first[i], other[i]) for i in range(3))


def test_generate_chunks_do_not_change_the_clips():
    shape = (T, H, W, 3)
    whole = synthetic.generate("testB", 5, shape, seed=0, style="night")
    assert np.array_equal(whole, synthetic.generate("testB", 5, shape, seed=0, style="night", chunk=2))


def test_shapes_move_between_frames():
    clips = synthetic.generate("trainA", 4, (T, H, W, 3), seed=0, style="day")
    assert all(not np.array_equal(clip[0], clip[-1]) for clip in clips)


def test_one_channel_is_the_luma_of_rgb():
    rgb = synthetic.generate("trainB", 3, (T, H, W, 3), seed=0, style="night").astype(np.float32)
    grey = synthetic.generate("trainB", 3, (T, H, W, 1), seed=0, style="night").astype(np.float32)
    luma = np.tensordot(rgb, np.array([0.299, 0.587, 0.114], np.float32), axes=([2], [0]))[:, :, None]
    assert np.abs(grey - luma).max() <= 1.0  # both are rounded to uint8


def test_render_rejects_unknown_style():
    scenes = scenes_of("testA", 1)
    with pytest.raises(ValueError, match="dusk"):
        synthetic.render(scenes, H, W, "dusk")


def test_day_and_night_renderings_show_the_same_scene():
    scenes = scenes_of("testA", N_TEST)
    masks = synthetic.shape_masks(scenes, H, W).max(axis=2)  # [n,T,H,W] coverage of any shape
    day = synthetic.generate("testA", N_TEST, (T, H, W, 3), seed=0, style="day")
    night = synthetic.generate("testA", N_TEST, (T, H, W, 3), seed=0, style="night")
    fg_day, fg_night = foreground(day, scenes, "day"), foreground(night, scenes, "night")
    inside = masks > 0.5
    assert inside.any() and not inside.all()
    # Both renderings differ from their background wherever a shape covers the pixel ...
    assert fg_day[inside].all() and fg_night[inside].all()
    # ... and only there: day exactly on the shapes, night also within the glow's reach.
    assert not fg_day[masks == 0].any()
    glow_radius = max(1, min(H, W) // 16)
    assert not fg_night[~dilate(masks > 0, glow_radius)].any()


def test_renderings_of_other_scenes_do_not_match_the_masks():
    # The check above can fail: testB's night renderings do not follow testA's shapes.
    masks = synthetic.shape_masks(scenes_of("testA", N_TEST), H, W).max(axis=2)
    night_b = synthetic.generate("testB", N_TEST, (T, H, W, 3), seed=0, style="night")
    fg = foreground(night_b, scenes_of("testB", N_TEST), "night")
    assert not fg[masks > 0.5].all()


def test_split_streams_draw_different_scenes():
    n = 6
    masks = {split: synthetic.shape_masks(scenes_of(split, n), H, W).max(axis=2) > 0.5
             for split in ("trainA", "trainB", "testA", "testB")}
    again = synthetic.shape_masks(scenes_of("trainA", n), H, W).max(axis=2) > 0.5
    assert np.array_equal(masks["trainA"], again)  # a scene is a function of (seed, split)
    for first, second in [("trainA", "trainB"), ("trainA", "testA"), ("trainB", "testB"), ("testA", "testB")]:
        for i in range(n):
            for j in range(n):
                assert not np.array_equal(masks[first][i], masks[second][j]), (first, i, second, j)
    centres = {split: scenes_of(split, n)["centre"][:, 0] for split in ("trainA", "trainB")}
    assert not np.isclose(centres["trainA"][:, None], centres["trainB"][None, :]).all(axis=(-1, -2)).any()


# --- prepare_data and the store -------------------------------------------------------------

def test_prepared_store_holds_the_renderings(synthetic_store):
    shape = (T, H, W, 3)
    plan = {"trainA": ("trainA", "day", N_TRAIN), "trainB": ("trainB", "night", N_TRAIN),
            "testA": ("testA", "day", N_TEST), "testA_gt": ("testA", "night", N_TEST),
            "testB": ("testB", "night", N_TEST), "testB_gt": ("testB", "day", N_TEST)}
    assert synthetic_store.frame_shape == (3, H, W)
    for split, (scenes, style, n) in plan.items():
        videos = synthetic_store.videos(split)
        assert len(videos) == n, split
        assert all(v.shape == (T, 3, H, W) and v.dtype == np.uint8 for v in videos)
        assert np.array_equal(np.stack(videos), synthetic.generate(scenes, n, shape, 0, style)), split


def test_store_ground_truth_is_the_night_rendering_of_test_a(synthetic_store):
    test_a = np.stack(synthetic_store.videos("testA"))
    gt = np.stack(synthetic_store.videos("testA_gt"))
    scenes = scenes_of("testA", N_TEST)
    masks = synthetic.shape_masks(scenes, H, W).max(axis=2)
    assert gt.mean() < test_a.mean() - 80  # night
    assert foreground(gt, scenes, "night")[masks > 0.5].all()
    assert foreground(test_a, scenes, "day")[masks > 0.5].all()


def test_prepare_data_is_idempotent(tmp_path):
    cfg = tiny_config(tmp_path)
    messages = []
    prepare_data(cfg, log=messages.append)
    root = synthetic_store_dir(cfg)
    stamps = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    assert stamps.keys() == {MANIFEST} | {f"{s}.npy" for s in SPLITS}
    store = prepare_data(cfg, log=messages.append)
    assert "up to date" in messages[-1] and "up to date" not in messages[0]
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == stamps
    assert store.root == root


def test_prepare_data_rebuilds_a_stale_store(tmp_path):
    cfg = tiny_config(tmp_path)
    prepare_data(cfg, log=quiet)
    manifest_path = synthetic_store_dir(cfg) / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["synthetic_version"] = 0  # written by an older generator
    manifest_path.write_text(json.dumps(manifest))
    messages = []
    prepare_data(cfg, log=messages.append)
    assert "prepared" in messages[0]
    assert json.loads(manifest_path.read_text())["synthetic_version"] != 0


def test_store_dir_depends_on_shape_counts_and_seed(tmp_path):
    base = synthetic_store_dir(tiny_config(tmp_path))
    others = [tiny_config(tmp_path, seed=1), tiny_config(tmp_path, synthetic_train_clips=5),
              tiny_config(tmp_path, input_shape=(T, H, W, 1))]
    assert len({base, *(synthetic_store_dir(c) for c in others)}) == 4


def test_prepare_data_one_channel(tmp_path):
    store = prepare_data(tiny_config(tmp_path, input_shape=(T, H, W, 1)), log=quiet)
    assert store.frame_shape == (1, H, W)
    assert store.videos("trainB")[0].shape == (T, 1, H, W)


def test_missing_store_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="prepare_data"):
        ClipStore(tmp_path / "nothing")


def test_unreadable_manifest_is_a_user_error(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match=MANIFEST):
        ClipStore(tmp_path)


def test_damaged_store_file_is_a_user_error(tmp_path):
    store = write_store(tmp_path, {"trainA": [4]})
    (tmp_path / "trainA.npy").write_bytes(b"not a numpy file")
    with pytest.raises(UserError, match="trainA.npy"):
        store.videos("trainA")


def test_store_views_follow_the_manifest(tmp_path):
    store = write_store(tmp_path, {"trainA": [4, 6], "trainB": [5]})
    videos = store.videos("trainA")
    assert [len(v) for v in videos] == [4, 6]
    assert labels(torch.from_numpy(np.array(videos[1]))) == [10, 11, 12, 13, 14, 15]
    assert store.has("trainB") and not store.has("testA_gt")
    assert store.videos("testA") == []


# --- datasets ----------------------------------------------------------------------------

def test_unpaired_items_are_uint8_clips(synthetic_store):
    dataset = UnpairedClips(synthetic_store, T)
    item = dataset[(1, 0, 2, 0)]
    assert set(item) == {"a", "b"}
    for key, split, video in (("a", "trainA", 1), ("b", "trainB", 2)):
        assert item[key].dtype == torch.uint8
        assert item[key].shape == (T, 3, H, W)
        assert np.array_equal(item[key].numpy(), synthetic_store.videos(split)[video])
    assert len(dataset) == N_TRAIN


def test_unpaired_clips_start_anywhere_in_long_videos(tmp_path):
    store = write_store(tmp_path, {"trainA": [4, 10], "trainB": [6]})
    dataset = UnpairedClips(store, T)
    assert len(dataset) == 8  # A has 1 + 7 start positions, B has 3: the larger domain sets the length
    item = dataset[(1, 5, 0, 2)]
    assert labels(item["a"]) == [15, 16, 17, 18]
    assert labels(item["b"]) == [102, 103, 104, 105] and item["a"].shape == (T, 3, 8, 8)


def test_sample_keys_are_uniform_over_clip_positions(tmp_path):
    store = write_store(tmp_path, {"trainA": [4, 10], "trainB": [6]})
    dataset = UnpairedClips(store, T)
    keys = dataset.sample_keys(4000, torch.Generator().manual_seed(0))
    positions_a = {(0, 0), *((1, s) for s in range(7))}
    counts_a = {p: sum((va, sa) == p for va, sa, _, _ in keys) for p in positions_a}
    counts_b = {s: sum((vb, sb) == (0, s) for _, _, vb, sb in keys) for s in range(3)}
    assert sum(counts_a.values()) == sum(counts_b.values()) == 4000  # no key outside the videos
    assert all(350 <= c <= 650 for c in counts_a.values()), counts_a  # 500 expected each
    assert all(1150 <= c <= 1520 for c in counts_b.values()), counts_b  # 1333 expected each


def test_hflip_keeps_the_clips_drawn_and_flips_each_domain_half_the_time(tmp_path):
    store = write_store(tmp_path, {"trainA": [4, 10], "trainB": [6]})
    plain, flipped = UnpairedClips(store, T), UnpairedClips(store, T, hflip=True)
    keys = flipped.sample_keys(2000, torch.Generator().manual_seed(0))
    # The same videos and starts as without flips, each clip mirrored with probability 1/2, per domain.
    assert [(va, sa, vb, sb) for va, sa, _, vb, sb, _ in keys] == plain.sample_keys(2000, torch.Generator().manual_seed(0))
    for i in (2, 5):
        share = sum(k[i] for k in keys) / len(keys)
        assert 0.45 < share < 0.55, share
    assert sum(k[2] != k[5] for k in keys) > 800  # the two domains flip independently


def test_hflip_mirrors_every_frame_of_a_clip(synthetic_store):
    plain, flipped = UnpairedClips(synthetic_store, T), UnpairedClips(synthetic_store, T, hflip=True)
    item, mirrored = flipped[(1, 0, 0, 2, 0, 1)], flipped[(1, 0, 1, 2, 0, 0)]
    assert torch.equal(item["a"], plain[(1, 0, 2, 0)]["a"]) and torch.equal(mirrored["b"], plain[(1, 0, 2, 0)]["b"])
    assert not torch.equal(item["a"], item["a"].flip(-1))  # frames that a mirror changes: the check can fail
    assert torch.equal(mirrored["a"], item["a"].flip(-1)) and torch.equal(item["b"], mirrored["b"].flip(-1))
    assert mirrored["a"].is_contiguous() and mirrored["a"].dtype == torch.uint8


def test_crop_scale_keeps_the_clips_and_flips_drawn_and_draws_sizes_and_places_in_range(tmp_path):
    store = write_store(tmp_path, {"trainA": [4, 10], "trainB": [6]})
    flipped, cropped = UnpairedClips(store, T, hflip=True), UnpairedClips(store, T, hflip=True, crop_scale=1.5)
    keys = cropped.sample_keys(2000, torch.Generator().manual_seed(0))
    assert [k[:3] + k[6:9] for k in keys] == flipped.sample_keys(2000, torch.Generator().manual_seed(0))
    for d in (0, 6):  # frames are 8 x 8: sizes 8..12, every window inside the zoomed frame
        sizes = [k[d + 3] for k in keys]
        assert set(sizes) == set(range(8, 13)), set(sizes)
        assert all(0 <= k[d + 4] <= k[d + 3] - 8 and 0 <= k[d + 5] <= k[d + 3] - 8 for k in keys)
        assert {k[d + 4] for k in keys if k[d + 3] == 12} == set(range(5))  # every place drawn
    assert sum(k[3] != k[9] for k in keys) > 1000  # the two domains draw their own sizes
    no_flip = UnpairedClips(store, T, crop_scale=1.5).sample_keys(200, torch.Generator().manual_seed(0))
    assert all(k[2] == k[8] == 0 for k in no_flip)  # flips off stay off with crops on


def test_crop_scale_zooms_and_crops_every_frame_of_a_clip_alike(synthetic_store):
    plain = UnpairedClips(synthetic_store, T)
    cropped = UnpairedClips(synthetic_store, T, hflip=True, crop_scale=1.5)
    h, w = cropped.frame_size
    assert torch.equal(cropped[(1, 0, 0, h, 0, 0, 2, 0, 1, h, 0, 0)]["a"], plain[(1, 0, 2, 0)]["a"])  # size H: no zoom
    key = (1, 0, 0, h + 6, 2, 5, 2, 0, 1, h + 3, 3, 0)
    item = cropped[key]
    for domain, (size, top, left, flip) in (("a", (h + 6, 2, 5, 0)), ("b", (h + 3, 3, 0, 1))):
        src = plain[(1, 0, 2, 0)][domain].float()
        src = src.flip(-1) if flip else src
        for t in range(T):  # each frame zoomed and cut with the clip's one size and place
            frame = torch.nn.functional.interpolate(src[t:t + 1], size=(size, size), mode="bilinear",
                                                    align_corners=False)[0, :, top:top + h, left:left + w]
            assert torch.equal(item[domain][t], frame.round().clamp(0, 255).to(torch.uint8))
        assert item[domain].shape == (T, 3, h, w) and item[domain].dtype == torch.uint8
        assert item[domain].is_contiguous()
    assert not torch.equal(item["a"], plain[(1, 0, 2, 0)]["a"])  # the crop changes the frames: the check can fail
    with pytest.raises(ValueError, match="4, 6 or 12"):
        cropped[(1, 0, 0, h, 0)]


def test_crop_scale_keeps_the_aspect_of_non_square_frames(tmp_path):
    store = write_store(tmp_path, {"trainA": [6], "trainB": [6]}, frame_shape=(3, 8, 12))
    cropped = UnpairedClips(store, T, crop_scale=1.5)
    keys = cropped.sample_keys(500, torch.Generator().manual_seed(0))
    for k in keys:  # height 8..12 zooms the width in proportion: 12..18; every window inside
        for size, top, left in (k[3:6], k[9:12]):
            assert 0 <= top <= size - 8 and 0 <= left <= (2 * size * 12 + 8) // 16 - 12
    assert max(k[5] for k in keys) == 6  # the widest zoom (18 columns) puts windows up to 6 in
    item = cropped[keys[0]]
    assert item["a"].shape == item["b"].shape == (T, 3, 8, 12)


def test_crop_scale_below_one_is_refused():
    with pytest.raises(ConfigError, match="--crop_scale must be at least 1"):
        make_config(crop_scale=0.9)


def test_max_videos_limits_the_videos(tmp_path):
    store = write_store(tmp_path, {"trainA": [4, 5, 6], "trainB": [4, 4]})
    dataset = UnpairedClips(store, T, max_videos_a=1)
    assert len(dataset.videos["a"]) == 1 and len(dataset.videos["b"]) == 2
    keys = dataset.sample_keys(200, torch.Generator().manual_seed(0))
    assert {va for va, _, _, _ in keys} == {0}
    assert {vb for _, _, vb, _ in keys} == {0, 1}
    assert len(UnpairedClips(store, T, max_videos_b=1).videos["b"]) == 1


def test_too_short_video_is_a_user_error(tmp_path):
    store = write_store(tmp_path, {"trainA": [4, 3], "trainB": [4]})
    with pytest.raises(UserError, match=r"trainA/video1\.mp4 has 3 frames, fewer than T=4"):
        UnpairedClips(store, T)
    UnpairedClips(store, 3)  # fine for shorter clips


def test_empty_training_split_is_a_user_error(tmp_path):
    store = write_store(tmp_path, {"trainA": [4]})
    with pytest.raises(UserError, match="trainB"):
        UnpairedClips(store, T)


def sampler_batches(dataset, seed=0, rank=0, start_step=0, num_steps=6, batch_size=4):
    return list(StepSampler(dataset, batch_size, seed=seed, rank=rank, start_step=start_step, num_steps=num_steps))


@pytest.fixture
def long_videos(tmp_path) -> UnpairedClips:
    return UnpairedClips(write_store(tmp_path, {"trainA": [12, 9, 20], "trainB": [15, 30]}), T)


def test_step_sampler_is_a_function_of_seed_rank_step(long_videos):
    batches = sampler_batches(long_videos)
    assert len(batches) == 6 and all(len(b) == 4 for b in batches)
    assert len(StepSampler(long_videos, 4, 0, 0, 0, 6)) == 6
    assert batches == sampler_batches(long_videos)
    assert len({tuple(b) for b in batches}) == 6  # each step its own batch
    assert sampler_batches(long_videos, rank=1) != batches
    assert all(a != b for a, b in zip(sampler_batches(long_videos, rank=1), batches))
    assert all(a != b for a, b in zip(sampler_batches(long_videos, seed=1), batches))


def test_step_sampler_resume_reproduces_the_run(long_videos):
    uninterrupted = sampler_batches(long_videos, num_steps=10)
    assert sampler_batches(long_videos, start_step=6, num_steps=4) == uninterrupted[6:]
    assert sampler_batches(long_videos, start_step=3, num_steps=2) == uninterrupted[3:5]


def test_step_sampler_is_the_same_in_another_process(tmp_path, long_videos):
    # A resumed run is a new process: the batches must not depend on Python's hash seed.
    code = ("import sys, torch; from rl_v2v_gan.data.store import ClipStore; "
            "from rl_v2v_gan.data.dataset import StepSampler, UnpairedClips; "
            "d = UnpairedClips(ClipStore(sys.argv[1]), 4); print(list(StepSampler(d, 4, 0, 0, 3, 3)))")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sampler_batches(long_videos, start_step=3, num_steps=3))


def test_dataloader_with_step_sampler(synthetic_store):
    dataset = UnpairedClips(synthetic_store, T)
    sampler = StepSampler(dataset, 2, seed=0, rank=0, start_step=0, num_steps=3)
    batches = list(DataLoader(dataset, batch_sampler=sampler))
    assert len(batches) == 3
    for batch, keys in zip(batches, sampler):
        assert batch["a"].shape == batch["b"].shape == (2, T, 3, H, W)  # [B,T,C,H,W]
        assert batch["a"].dtype == torch.uint8
        for i, key in enumerate(keys):
            assert torch.equal(batch["a"][i], dataset[key]["a"]) and torch.equal(batch["b"][i], dataset[key]["b"])


def test_test_clips_directions(synthetic_store):
    a2b = clips_dataset.TestClips(synthetic_store, "a2b", T)
    assert len(a2b) == N_TEST and a2b.has_ground_truth
    item = a2b[1]
    assert set(item) == {"a", "b_gt"}
    assert item["a"].dtype == item["b_gt"].dtype == torch.uint8 and item["a"].shape == (T, 3, H, W)
    assert np.array_equal(item["a"].numpy(), synthetic_store.videos("testA")[1])
    assert np.array_equal(item["b_gt"].numpy(), synthetic_store.videos("testA_gt")[1])

    b2a = clips_dataset.TestClips(synthetic_store, "b2a", T)
    item = b2a[2]
    assert set(item) == {"b", "a_gt"}
    assert np.array_equal(item["b"].numpy(), synthetic_store.videos("testB")[2])
    assert np.array_equal(item["a_gt"].numpy(), synthetic_store.videos("testB_gt")[2])


def test_test_clips_are_consecutive_chunks(tmp_path):
    store = write_store(tmp_path, {"testA": [9, 4, 3], "testA_gt": [9, 4, 3], "testB": [8]})
    a2b = clips_dataset.TestClips(store, "a2b", T)
    assert len(a2b) == 3  # 9 frames give two whole chunks, 4 one, 3 none
    assert [labels(a2b[i]["a"]) for i in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [10, 11, 12, 13]]
    assert labels(a2b[1]["b_gt"]) == [104, 105, 106, 107]
    b2a = clips_dataset.TestClips(store, "b2a", T)
    assert not b2a.has_ground_truth
    assert set(b2a[0]) == {"b"} and len(b2a) == 2


def test_test_clips_mismatched_ground_truth_is_a_user_error(tmp_path):
    store = write_store(tmp_path, {"testA": [8, 4], "testA_gt": [8, 5]})
    with pytest.raises(UserError, match="testA_gt"):
        clips_dataset.TestClips(store, "a2b", T)


def test_uint8_float_round_trip():
    clip = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = to_float(clip)
    assert x.dtype == torch.float32 and x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(to_uint8(x), clip)
    assert torch.equal(to_uint8(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))
