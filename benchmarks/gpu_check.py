"""Everything that needs a GPU, in one command that stays under 8 minutes on one H100 / H200.

    python benchmarks/gpu_check.py --out gpu_check_out             # on the GPU machine
    python benchmarks/gpu_check.py --out /tmp/smoke --smoke        # every part, tiny, on CPU (tests)

Parts, in this order (each in its own forked process with a time cap; the whole run has a
deadline, ``--budget_s``, default 450 s; a part that does not fit is cut or skipped, and says so):

1. ``conv3d``    bf16 vs fp32 Conv3d gradients at the VideoDiscriminator's shapes
                 (``repro_bf16_conv3d.py``: on CPU oneDNN's bf16 weight gradient is garbage at
                 depth 2; this checks cuDNN).
2. ``tests``     ``pytest tests/train/test_gpu.py`` and ``pytest tests -k cuda``.
3. ``bench``     a training step of rl_v2v_gan, recycle_gan and cycle_gan at 16x256x256x3, batch 4,
                 ngf = ndf = 64, in fp32 (TF32 convolutions, PyTorch's default) and bf16 autocast:
                 median step time, MFU against the device's dense peak (H100 / H200: 989 TFLOP/s
                 bf16, 494 TFLOP/s TF32; FLOPs from ``torch.utils.flop_counter``), peak memory.
4. ``curves``    bf16 against fp32 on the same batches over short horizons: rl_v2v_gan trains
                 200 steps in fp32 (synthetic dataset, 8x64x64x3, batch 4, ngf = ndf = 32); every 25
                 steps a copy of its whole state runs the next 3 batches in fp32 and another in bf16,
                 from the same random seed. Each loss of each of those steps must agree, |bf16 -
                 fp32| <= max(10 % of |fp32|, 1/255), and no update may be skipped. (Comparing two
                 whole GAN trajectories cannot tell precision from the trajectories drifting apart.)
5. ``translate`` frames/s at 256x256 (ngf 64, T = 16 chunks): the generator alone (upload, model,
                 download) and the whole ``--mode translate`` command on a synthetic mp4 (decode,
                 model, H.264 encode); the latter needs PyAV and is reported unavailable without.
6. ``memory``    checkpoint size, host and device memory of a default run at 256x256, from the
                 parameter counts and the replay buffer's size.
7. ``compile``   step 3 again in bf16 with ``--compile`` (compilation time reported apart).

Writes ``gpu_check.json`` (everything) and ``gpu_check.md`` (a short table) to ``--out``,
rewritten after every part. Exit status 0 when every check that ran passed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

METHODS = ("rl_v2v_gan", "recycle_gan", "cycle_gan")
# Dense peaks in FLOP/s by device-name fragment: bf16 tensor cores and TF32 (fp32 convolutions).
PEAKS = {"H100": {"bf16": 989e12, "tf32": 494e12}, "H200": {"bf16": 989e12, "tf32": 494e12}}
# ABS_TOL: one grey level of the uint8 frames. bf16 rounds a frame value in [-1, 1] by up to 2^-8,
# so an L1 term near 0 (the cycle loss of the identity start, ~5e-5 in fp32) reads ~1e-3 in bf16.
WINDOW, HORIZON, REL_TOL, ABS_TOL = 25, 3, 0.10, 1 / 255

FULL = SimpleNamespace(
    bench_shape=(16, 256, 256, 3), bench_batch=4, bench_width=64, bench_steps=10, bench_warmup=2,
    bench_seconds=8.0, curve_shape=(8, 64, 64, 3), curve_batch=4, curve_width=32, curve_steps=200,
    curve_clips=64, window=WINDOW, horizon=HORIZON, translate_size=256, translate_width=64, translate_frames=96, test_k_paths=["tests"],
    compile_methods=METHODS, threads=None,
    caps={"conv3d": 30, "tests": 90, "bench": 50, "curves": 100, "translate": 45, "memory": 30, "compile": 80})
SMOKE = SimpleNamespace(
    bench_shape=(4, 16, 16, 3), bench_batch=2, bench_width=4, bench_steps=1, bench_warmup=1,
    bench_seconds=1.0, curve_shape=(4, 16, 16, 3), curve_batch=2, curve_width=4, curve_steps=4,
    curve_clips=4, window=2, horizon=2, translate_size=16, translate_width=4, translate_frames=8,
    test_k_paths=["tests/rl/test_replay_device.py"],
    compile_methods=("cycle_gan",), threads=1,  # dynamo's tracing of every network would take minutes on CPU
    caps={"conv3d": 60, "tests": 90, "bench": 60, "curves": 60, "translate": 60, "memory": 60, "compile": 90})


# --- the parts: each runs in a forked child and reports through ``report(dict)`` -------------------

def part_conv3d(sizes, report) -> None:
    from repro_bf16_conv3d import TOLERANCE, run

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = run(device)
    bad = [r for r in rows if r["onednn"] and not r["grad_w"] < TOLERANCE]
    note = f"bf16 weight gradients within {TOLERANCE:.0%} of fp32 at every shape"
    if bad:
        note = f"{len(bad)} of {len(rows)} bf16 weight gradients off by > {TOLERANCE:.0%}"
        if device == "cpu":  # known oneDNN fault; the VideoDiscriminator runs in fp32 on CPU
            note += " (the known CPU oneDNN fault, worked around by conv3d_fp32_where_unsafe)"
    report({"device": device, "rows": rows, "ok": not bad or device == "cpu", "note": note})


def part_bench(sizes, report, amps=("none", "bf16"), compile_=False, method="rl_v2v_gan",
               checkpointing="off") -> None:
    from bench_train import measure

    rows = []
    for amp in amps:
        args = SimpleNamespace(input_shape=list(sizes.bench_shape), batch_size=sizes.bench_batch,
                               ngf=sizes.bench_width, ndf=sizes.bench_width, buffer_size=10000, amp=amp,
                               compile=compile_, device="auto", steps=sizes.bench_steps, warmup=sizes.bench_warmup,
                               activation_checkpointing=checkpointing)
        row: dict = {"method": method, "amp": amp, "compile": compile_, "activation_checkpointing": checkpointing}
        rows.append(row)
        try:
            # FLOPs are the same in every precision: counted once, on the eager fp32 step.
            measure(method, args, sizes.bench_seconds, count_flops=amp == "none" and not compile_,
                    progress=lambda r: (row.update(r), report({"rows": rows})))
        except torch.OutOfMemoryError:
            row["error"] = "out of memory"
            torch.cuda.empty_cache()
        report({"rows": rows})


def part_compile(sizes, report, method="rl_v2v_gan") -> None:
    if sizes is SMOKE:  # the plumbing, not inductor: a C++ build per network would take minutes on CPU
        original = torch.nn.Module.compile
        torch.nn.Module.compile = lambda self, **kw: original(self, backend="eager", **kw)
    part_bench(sizes, report, amps=("bf16",), compile_=True, method=method)


def part_curves(sizes, report) -> None:
    from rl_v2v_gan.config import make_config
    from rl_v2v_gan.data.dataset import UnpairedClips
    from rl_v2v_gan.data.factory import prepare_data
    from rl_v2v_gan.train.distributed import DistInfo, resolve_device
    from rl_v2v_gan.train.loop import _loader, build_trainer

    device = resolve_device("auto")
    config = (f"rl_v2v_gan {'x'.join(map(str, sizes.curve_shape))} b{sizes.curve_batch} ngf=ndf={sizes.curve_width}, "
              f"synthetic data, seed 0, a fork every {sizes.window} steps, {sizes.horizon} steps per fork")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(method="rl_v2v_gan", input_shape=sizes.curve_shape, batch_size=sizes.curve_batch,
                          ngf=sizes.curve_width, ndf=sizes.curve_width, seed=0, data_root=tmp,
                          synthetic_train_clips=sizes.curve_clips, synthetic_test_clips=1,
                          checkpoint_dir=tmp, buffer_size=1000)
        store = prepare_data(cfg, log=lambda *a: None)
        trainer = build_trainer(cfg, device, DistInfo())
        batches = list(_loader(UnpairedClips(store, cfg.clip_length, None, None), cfg, DistInfo(), 0,
                               sizes.curve_steps, device))
        deadline = time.perf_counter() + sizes.caps["curves"] - 10
        pairs = paired_horizons(trainer, batches, sizes.window, sizes.horizon, torch.bfloat16,
                                until=lambda: time.perf_counter() > deadline,
                                progress=lambda n: report({"config": config, "forks_done": n}))
    report({**compare_forks(pairs), "config": config})


def paired_horizons(trainer, batches: list, window: int, horizon: int, dtype: torch.dtype, until=lambda: False,
                    progress=lambda n: None) -> list[tuple[int, list[dict], list[dict]]]:
    """Train ``trainer`` (fp32) on ``batches``; before every ``window``-th step, a copy of its whole
    state (networks, optimizers, replay, pools) runs the next ``horizon`` batches in fp32 and another
    copy in ``dtype`` autocast, each from the same random seed; the trajectory itself is the one
    training without forks would take. Returns ``(step, fp32 logs, dtype logs)`` per fork; stops
    early once ``until()``."""
    pairs = []
    for i, batch in enumerate(batches):
        if until():
            break
        if i % window == 0 and i + horizon <= len(batches):
            runs = []
            cuda = [trainer.device] if trainer.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):  # the forks' draws leave the trajectory's alone
                for amp in (None, dtype):
                    fork = copy.deepcopy(trainer)
                    fork.amp_dtype = amp
                    torch.manual_seed(10_000 + i)
                    runs.append([fork.train_step(b) for b in batches[i:i + horizon]])
                    del fork
            pairs.append((i, *runs))
            progress(len(pairs))
        trainer.train_step(batch)
    return pairs


def compare_forks(pairs: list[tuple[int, list[dict], list[dict]]]) -> dict:
    """Every ``loss/*`` and ``rl/q_loss`` of every forked step: |other - fp32| <= max(REL_TOL |fp32|,
    ABS_TOL); no step of either fork may have skipped an update."""
    worst: dict[str, float] = {}
    failures, skipped, steps = [], 0.0, 0
    for start, ref, other in pairs:
        for j, (a, b) in enumerate(zip(ref, other)):
            steps += 1
            skipped += sum(v for logs in (a, b) for k, v in logs.items() if k.startswith("skipped/"))
            for key in sorted(k for k in a if (k.startswith("loss/") or k == "rl/q_loss") and k in b):
                tol = max(REL_TOL * abs(a[key]), ABS_TOL)
                ratio = abs(b[key] - a[key]) / tol if math.isfinite(b[key]) else math.inf
                worst[key] = max(worst.get(key, 0.0), ratio)
                if not ratio <= 1.0:
                    failures.append(f"{key} step {start + j + 1}: {b[key]:.4g} vs {a[key]:.4g} (tolerance {tol:.3g})")
    ok = bool(pairs) and bool(worst) and not failures and skipped == 0
    return {"ok": ok, "forks": len(pairs), "steps_compared": steps, "keys": sorted(worst), "worst_ratio": worst,
            "failures": failures[:10], "skipped_updates": skipped,
            "tolerance": f"each forked step: |bf16 - fp32| <= max({REL_TOL:.0%} of |fp32|, {ABS_TOL:g}); "
                         f"no skipped update"}


def part_translate(sizes, report) -> None:
    from rl_v2v_gan.config import make_config
    from rl_v2v_gan.data import synthetic
    from rl_v2v_gan.data.dataset import to_float, to_uint8
    from rl_v2v_gan.models.networks import networks_from_config
    from rl_v2v_gan.train.distributed import resolve_device

    device = resolve_device("auto")
    side, t = sizes.translate_size, 16
    shape = (t, side, side, 3)
    flags = dict(method="cycle_gan", input_shape=shape, ngf=sizes.translate_width, ndf=sizes.translate_width)
    cfg = make_config(**flags)
    torch.manual_seed(0)
    nets = networks_from_config(cfg).to(device).eval()
    frames = synthetic.generate("testA", 1, (sizes.translate_frames, side, side, 3), 0, "day")[0]  # [F,3,H,W]
    out = {"size": f"{side}x{side}", "ngf": sizes.translate_width, "frames": len(frames), "device": str(device),
           "precision": "fp32 (translate runs without autocast)"}

    def model_only() -> None:  # translate_stream's work: upload, generator with carried state, download
        state = None
        with torch.no_grad():
            for i in range(0, len(frames), t):
                x = torch.from_numpy(frames[i:i + t]).to(device)
                y, state = nets.gen_ab.run(to_float(x)[None], state)
                to_uint8(y[0]).cpu()

    model_only()  # warm-up
    start = time.perf_counter()
    model_only()
    out["model_fps"] = len(frames) / (time.perf_counter() - start)
    report(out)
    try:
        import av  # noqa: F401  (the whole command decodes and encodes with PyAV)
    except ImportError:
        out["command_fps"] = None
        out["command_note"] = "unavailable: PyAV (av) is not installed"
        report(out)
        return
    from rl_v2v_gan.cli import main as cli_main
    from rl_v2v_gan.data import video_io
    from rl_v2v_gan.train import checkpoint as ckpt_io
    from rl_v2v_gan.train.distributed import DistInfo
    from rl_v2v_gan.train.loop import build_trainer

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "synthetic.mp4", Path(tmp) / "out.mp4"
        video_io.write_video(src, frames, 25.0)
        cfg = make_config(**flags, checkpoint_dir=tmp, checkpoint_name="untrained")
        ckpt_io.save_checkpoint(cfg.run_dir, build_trainer(cfg, device, DistInfo()), cfg.to_json(), 1)
        argv = ["--mode", "translate", "--method", "cycle_gan", "--input_shape", *map(str, shape), "--ngf",
                str(sizes.translate_width), "--ndf", str(sizes.translate_width), "--checkpoint_dir", tmp,
                "--checkpoint_name", "untrained", "--input", str(src), "--output", str(dst)]
        start = time.perf_counter()
        code = cli_main(argv)
        seconds = time.perf_counter() - start
        out["command_fps"] = len(frames) / seconds if code == 0 else None
        out["command_note"] = ("decode + model + H.264 encode, in a warm process" if code == 0 else
                               f"translate exited with {code}")
    report(out)


def part_memory(sizes, report) -> None:
    """A default run at 256x256 (rl_v2v_gan, ngf = ndf = 64, buffer 10000, p = 2), from sizes alone."""
    from rl_v2v_gan.config import make_config
    from rl_v2v_gan.models.networks import networks_from_config
    from rl_v2v_gan.rl.replay_buffer import AUTO_DEVICE_SHARE, replay_nbytes, replay_placement

    cfg = make_config(input_shape=(16, 256, 256, 3))
    with torch.device("meta"):  # shapes only: nothing is allocated
        nets = networks_from_config(cfg)
    online = sum(p.numel() for name in nets.online_names() for p in getattr(nets, name).parameters())
    every = sum(t.numel() * t.element_size() for t in nets.state_dict().values())  # online + targets + buffers
    t, h, w, c = cfg.input_shape
    replay = 2 * replay_nbytes(cfg.buffer_size // 2, (cfg.context_frames, c, h, w))
    adam = 2 * online * 4  # exp_avg and exp_avg_sq, fp32
    gib = 2**30
    out = {"config": "rl_v2v_gan 16x256x256x3, ngf=ndf=64, buffer_size 10000, p 2 (defaults)",
           "online_params_M": online / 1e6, "networks_gib": every / gib, "optimizer_gib": adam / gib,
           "replay_gib": replay / gib,
           "checkpoint_gib": (every + adam + replay) / gib,
           "checkpoint_note": "networks.safetensors + state.pt (Adam) + replay.safetensors (newest checkpoint "
                              "only; older ones keep networks + state)",
           "device_static_gib": (every + online * 4 + adam) / gib,
           "device_static_note": "weights + targets + gradients + Adam, before activations and the replay buffer"}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        where, pinned = replay_placement("auto", replay, torch.device("cuda"), free)
        out.update(device_free_gib=free / gib, device_total_gib=total / gib,
                   replay_auto=("pinned host" if pinned else "device") +
                   f" (buffer {replay / gib:.1f} GiB vs {AUTO_DEVICE_SHARE:.0%} of {free / gib:.1f} GiB free)")
    report(out)


PARTS = {"conv3d": part_conv3d, "bench": part_bench, "curves": part_curves, "translate": part_translate,
         "memory": part_memory, "compile": part_compile}


# --- the orchestrator ----------------------------------------------------------------------------

def _child(fn, sizes, kwargs, result_path: str) -> None:
    def report(data: dict) -> None:
        tmp = result_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, default=str)
        os.replace(tmp, result_path)

    if sizes.threads:  # a shared CPU: intra-op spin-waits make tiny steps 50x slower
        torch.set_num_threads(sizes.threads)
    try:
        fn(sizes, report, **kwargs)
    except BaseException as e:  # the parent reads the error from the result file
        data = json.loads(Path(result_path).read_text()) if Path(result_path).is_file() else {}
        data["error"] = f"{type(e).__name__}: {e}"
        data["traceback"] = traceback.format_exc()[-2000:]
        report(data)
        os._exit(1)
    os._exit(0)


def run_forked(fn, sizes, timeout: float, **kwargs) -> dict:
    """``fn`` in a forked process (this one has not touched CUDA), killed after ``timeout``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result.json")
        proc = multiprocessing.get_context("fork").Process(target=_child, args=(fn, sizes, kwargs, path))
        start = time.perf_counter()
        proc.start()
        proc.join(timeout)
        timed_out = proc.is_alive()
        if timed_out:
            proc.kill()
            proc.join()
        data = json.loads(Path(path).read_text()) if os.path.isfile(path) else {}
    data["seconds"] = round(time.perf_counter() - start, 1)
    if timed_out:
        data["error"] = f"cut at its time cap ({timeout:.0f} s); figures above are what it measured before"
    return data


def run_tests(sizes, timeout: float) -> dict:
    out = {}
    start = time.perf_counter()
    commands = {"test_gpu": ["tests/train/test_gpu.py"], "k_cuda": [*sizes.test_k_paths, "-k", "cuda"]}
    for name, args in commands.items():
        left = timeout - (time.perf_counter() - start)
        if left < 5:
            out[name] = {"ok": False, "summary": "skipped: out of time"}
            continue
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfE", *args],
                                  cwd=REPO, capture_output=True, text=True, timeout=left)
            lines = proc.stdout.strip().splitlines()
            # 5: nothing collected (no test of that name yet) is not a failure
            out[name] = {"ok": proc.returncode in (0, 5), "rc": proc.returncode, "summary": lines[-1] if lines else "",
                         "failures": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:20]}
        except subprocess.TimeoutExpired:
            out[name] = {"ok": False, "summary": f"cut at {left:.0f} s"}
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def plan(sizes) -> list[tuple[str, str, dict]]:
    """(key, part, kwargs) in the order they run: the checks first, compilation (the slowest) last."""
    steps = [("conv3d", "conv3d", {}), ("tests", "tests", {})]
    steps += [(f"bench/{m}", "bench", {"method": m}) for m in METHODS]
    # Peak memory and step time with activation checkpointing (the 24 GiB target of DESIGN §9).
    steps += [("bench/rl_v2v_gan+checkpointing", "bench", {"method": "rl_v2v_gan", "checkpointing": "on"}),
              ("bench/rl_v2v_gan+selective", "bench", {"method": "rl_v2v_gan", "checkpointing": "selective"})]
    steps += [("curves", "curves", {}), ("translate", "translate", {}), ("memory", "memory", {})]
    steps += [(f"compile/{m}", "compile", {"method": m}) for m in sizes.compile_methods]
    return steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--budget_s", type=float, default=450.0, help="deadline of the whole run in seconds")
    p.add_argument("--smoke", action="store_true", help="every part at tiny sizes (CPU): tests the script")
    p.add_argument("--cap", nargs="+", default=[], metavar="PART=SECONDS",
                   help="override a part's time cap (e.g. compile=150)")
    p.add_argument("--only", nargs="+", help="run only these keys (e.g. bench/cycle_gan curves)")
    args = p.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    for item in args.cap:
        part, _, seconds = item.partition("=")
        if part not in sizes.caps or not seconds:
            p.error(f"--cap {item!r}: expected PART=SECONDS with PART one of {', '.join(sizes.caps)}")
        sizes = SimpleNamespace(**{**vars(sizes), "caps": {**sizes.caps, part: float(seconds)}})
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    deadline = start + args.budget_s
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
                     "smoke": args.smoke, "budget_s": args.budget_s, "parts": {}}
    for key, part, kwargs in plan(sizes):
        if args.only and key not in args.only and part not in args.only:
            continue
        left = deadline - time.perf_counter()
        cap = min(sizes.caps[part], left)
        if cap < 10:
            results["parts"][key] = {"error": "skipped: the run's time budget is spent"}
        elif part == "tests":
            results["parts"][key] = run_tests(sizes, cap)
        else:
            results["parts"][key] = run_forked(PARTS[part], sizes, cap, **kwargs)
        print(f"[{time.perf_counter() - start:6.1f} s] {key}: {_one_line(key, results['parts'][key])}", flush=True)
        results["seconds"] = round(time.perf_counter() - start, 1)
        _write(out_dir, results)
    results["ok"] = all(_ok(k, v) for k, v in results["parts"].items())
    _write(out_dir, results)
    print((out_dir / "gpu_check.md").read_text())
    return 0 if results["ok"] else 1


def _ok(key: str, part: dict) -> bool:
    if part.get("error", "").startswith("skipped"):
        return True  # not run is not failed; the table says so
    if key == "tests":
        return all(v.get("ok") for k, v in part.items() if isinstance(v, dict))
    if key in ("conv3d", "curves"):
        return bool(part.get("ok"))
    if key.startswith(("bench/", "compile/")):
        return all("error" not in r and not r.get("skipped_updates") for r in part.get("rows", [])) \
            and "error" not in part
    return "error" not in part


def _one_line(key: str, part: dict) -> str:
    if "error" in part:
        return part["error"].splitlines()[0]
    return "ok" if _ok(key, part) else "FAILED"


def _peak(device_name: str | None, amp: str) -> float | None:
    for fragment, peaks in PEAKS.items():
        if device_name and fragment in device_name:
            return peaks["bf16" if amp in ("bf16", "auto", "fp16") else "tf32"]
    return None


def _write(out_dir: Path, results: dict) -> None:
    parts = results["parts"]
    flops = {r["method"]: r["flops_per_step"] for k, v in parts.items() if k.startswith("bench/")
             for r in v.get("rows", []) if "flops_per_step" in r}
    for key, part in parts.items():  # MFU of every row from its method's counted FLOPs
        for r in part.get("rows", []) if key.startswith(("bench/", "compile/")) else []:
            peak = _peak(r.get("device_name"), r["amp"])
            if r.get("step_s") and r["method"] in flops:
                r["tflops_per_s"] = flops[r["method"]] / r["step_s"] / 1e12
                r["mfu"] = r["tflops_per_s"] * 1e12 / peak if peak else None
                r["peak_tflops"] = peak / 1e12 if peak else None
    tmp = out_dir / ".gpu_check.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, out_dir / "gpu_check.json")
    (out_dir / "gpu_check.md").write_text(_markdown(results))


def _markdown(results: dict) -> str:
    parts = results["parts"]
    device = next((r.get("device_name") or r.get("device") for k, v in parts.items() if k.startswith("bench/")
                   for r in v.get("rows", [])), "?")
    lines = [f"# gpu_check {'(smoke, CPU sizes) ' if results['smoke'] else ''}{results['started']}", "",
             f"device {device}, torch {results['torch']}, {results.get('seconds', 0):.0f} s of a "
             f"{results['budget_s']:.0f} s budget; overall: {'ok' if results.get('ok', True) else 'FAILED'}", ""]
    lines += ["| part | result | seconds |", "|---|---|---|"]
    for key, part in parts.items():
        if key.startswith(("bench/", "compile/")):
            continue
        lines.append(f"| {key} | {_summary(key, part)} | {part.get('seconds', '')} |")
    lines += ["", "| method | precision | step s | steps | warm-up s | TFLOP/s | MFU | peak GiB | skipped | syncs/step |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for key, part in parts.items():
        if not key.startswith(("bench/", "compile/")):
            continue
        if not part.get("rows"):
            lines.append(f"| {key} | | {part.get('error', '')} | | | | | | | |")
        for r in part.get("rows", []):
            fp32 = "fp32 (TF32 conv)" if r.get("device_name") else "fp32"
            prec = {"none": fp32}.get(r["amp"], r["amp"]) + (" + compile" if r.get("compile") else "")
            prec += {"on": " + checkpointing", "selective": " + selective checkpointing"}.get(
                r.get("activation_checkpointing"), "")
            step = f"{r['step_s']:.3f}" if r.get("step_s") else (r.get("error") or part.get("error", "")).split(";")[0]
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "n/a"
            tflops = f"{r['tflops_per_s']:.1f}" if r.get("tflops_per_s") else "n/a"
            peak = f"{r['peak_mem_mib'] / 1024:.1f}" if r.get("peak_mem_mib") else ""
            lines.append(f"| {r['method']} | {prec} | {step} | {r.get('steps_timed', '')} | "
                         f"{r.get('warmup_s', 0):.1f} | {tflops} | {mfu} | {peak} | {r.get('skipped_updates', '')} | "
                         f"{r.get('syncs_per_step', 'n/a')} |")
    return "\n".join(lines) + "\n"


def _summary(key: str, part: dict) -> str:
    if key == "tests":
        return "; ".join(f"{k}: {v.get('summary', '')}" for k, v in part.items() if isinstance(v, dict))
    if "error" in part and not part.get("ok"):
        return part["error"].splitlines()[0]
    if key == "conv3d":
        return f"{part.get('device')}: {part.get('note')}"
    if key == "curves":
        worst = max(part.get("worst_ratio", {}).values(), default=float("nan"))
        verdict = "agree" if part.get("ok") else "DISAGREE: " + "; ".join(part.get("failures", [])[:2])
        return (f"{part.get('config')}: {part.get('forks')} forks, {part.get('steps_compared')} paired steps, "
                f"{verdict} (worst |diff|/tolerance {worst:.2f}), skipped updates {part.get('skipped_updates')}")
    if key == "translate":
        cmd = f"{part['command_fps']:.1f}" if part.get("command_fps") else part.get("command_note", "n/a")
        model = f"{part['model_fps']:.1f}" if part.get("model_fps") else "n/a"
        return f"{part.get('size')} ngf {part.get('ngf')}: model {model} frames/s, whole command {cmd} frames/s"
    if key == "memory":
        return (f"checkpoint {part.get('checkpoint_gib', 0):.2f} GiB (replay {part.get('replay_gib', 0):.2f}); "
                f"device static {part.get('device_static_gib', 0):.2f} GiB; replay auto: {part.get('replay_auto', 'n/a')}")
    return json.dumps(part)[:200]


if __name__ == "__main__":
    sys.exit(main())
