"""Flat frame folders (Recycle-GAN's released layout): frame images directly in trainA/ etc.,
grouped into videos by name prefix and cut at numbering gaps."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rl_v2v_gan.config import make_config
from rl_v2v_gan.data.flat_frames import group_frames
from rl_v2v_gan.data.folder import list_sources, prepare_folder
from rl_v2v_gan.errors import UserError

T, H, W = 4, 16, 16


def frame(value: int) -> np.ndarray:
    """A solid ``[H,W,3]`` frame whose red channel says which frame it is."""
    out = np.zeros((H, W, 3), np.uint8)
    out[..., 0], out[..., 1] = value, 255 - value
    return out


def write_frames(folder: Path, names_values: dict[str, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in names_values.items():
        Image.fromarray(frame(value)).save(folder / name)


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def names(folder: Path) -> dict[str, list[str]]:
    return {run.name: [f.name for f in run.files] for run in group_frames(folder)}


def test_frames_group_by_prefix_and_a_numbering_gap_starts_a_new_video(tmp_path):
    touch(tmp_path, *[f"city03_{i:06d}.png" for i in [*range(0, 5), *range(9, 12)]],
          *[f"city10_{i:06d}.png" for i in range(3)], "city03_000004.txt", ".city03_000005.png")
    assert names(tmp_path) == {
        "city03_000000-000004": [f"city03_{i:06d}.png" for i in range(0, 5)],
        "city03_000009-000011": [f"city03_{i:06d}.png" for i in range(9, 12)],
        "city10": ["city10_000000.png", "city10_000001.png", "city10_000002.png"],
    }
    assert [r.name for r in group_frames(tmp_path)] == ["city03_000000-000004", "city03_000009-000011", "city10"]


def test_numbers_only_are_one_video_in_numeric_order_and_a_regular_stride_is_no_gap(tmp_path):
    touch(tmp_path / "trainA", "10.png", "5.png", "0.png", "15.jpg")  # every 5th frame, not zero-padded
    assert names(tmp_path / "trainA") == {"trainA": ["0.png", "5.png", "10.png", "15.jpg"]}
    touch(tmp_path / "plain", "b.png", "a.png", "c.png")  # no numbers at all: one video in name order
    assert names(tmp_path / "plain") == {"plain": ["a.png", "b.png", "c.png"]}


def flat_dataset(root: Path) -> Path:
    """trainA: two prefixes, one cut by a gap; trainB: numbers only; testA with paired testA_gt."""
    write_frames(root / "trainA", {f"city03_{i:04d}.png": i for i in [*range(0, 6), *range(20, 25)]}
                 | {f"city07_{i:04d}.png": 100 + i for i in range(5)})
    write_frames(root / "trainB", {f"{i:05d}.png": 50 + i for i in range(8)})
    write_frames(root / "testA", {f"t1_{i}.png": 200 + i for i in range(1, 6)})
    write_frames(root / "testA_gt", {f"t1_{i}.png": 220 + i for i in range(1, 6)})
    return root


def config(root: Path, **flags):
    return make_config(dataset="folder", data_root=str(root), input_shape=(T, H, W, 3), **flags)


def test_a_flat_dataset_prepares_one_store_video_per_group(tmp_path):
    root = flat_dataset(tmp_path / "data")
    lines = []
    store = prepare_folder(config(root), log=lines.append)
    sources = {split: [Path(e["source"]).name for e in store.entries(split)] for split in ("trainA", "trainB")}
    assert sources == {"trainA": ["city03_0000-0005", "city03_0020-0024", "city07"], "trainB": ["trainB"]}
    videos = dict(zip(sources["trainA"], store.videos("trainA")))
    # Frames in numeric order, and the cut at 0005 -> 0020 splits the video: no clip spans it.
    assert videos["city03_0000-0005"][:, 0, 0, 0].tolist() == list(range(0, 6))
    assert videos["city03_0020-0024"][:, 0, 0, 0].tolist() == list(range(20, 25))
    assert videos["city07"].shape == (5, 3, H, W)
    np.testing.assert_array_equal(store.videos("trainB")[0][3].transpose(1, 2, 0), frame(53))
    assert store.entries("trainB")[0]["fps"] == 25.0
    assert [Path(e["source"]).name for e in store.entries("testA_gt")] == ["t1"]  # paired by group name
    assert store.videos("testA_gt")[0][0, 0, 0, 0] == 221

    # Up to date until a frame changes; then only its video is decoded again.
    lines.clear()
    prepare_folder(config(root), log=lines.append)
    assert "up to date" in lines[0]
    write_frames(root / "trainA", {"city07_0002.png": 0})
    lines.clear()
    store = prepare_folder(config(root), log=lines.append)
    assert "decoded 1 video" in lines[0]
    assert store.videos("trainA")[2][2, 0, 0, 0] == 0


def test_a_group_shorter_than_a_clip_is_named_or_skipped(tmp_path, capsys):
    root = flat_dataset(tmp_path / "data")
    write_frames(root / "trainA", {"city03_0040.png": 40, "city03_0041.png": 41})  # a third, 2-frame shot
    with pytest.raises(UserError, match=r"trainA/city03_0040-0041' has 2 frames .*fewer than T=4"):
        prepare_folder(config(root), log=lambda *_: None)
    store = prepare_folder(config(root, skip_bad_videos=True), log=print)
    assert len(store.entries("trainA")) == 3
    assert "warning: skipping video" in capsys.readouterr().out


def test_a_frame_folder_and_a_frame_prefix_of_one_name_are_refused(tmp_path):
    root = flat_dataset(tmp_path / "data")
    write_frames(root / "trainA" / "city07", {"f1.png": 1, "f2.png": 2})
    with pytest.raises(UserError, match="two videos named 'city07'"):
        list_sources(root / "trainA")
