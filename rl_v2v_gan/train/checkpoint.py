"""Checkpoints that resume exactly and never half-exist.

A checkpoint is a folder ``<run>/epoch_NNNN`` (end of an epoch) or ``<run>/step_NNNNNNNN`` (an
interrupted epoch) holding:

- ``networks.safetensors``  every network and target network (tensors only: no code can ride along);
- ``replay.safetensors``    the replay buffers (RL method), so a resumed run sees the same minibatches;
- ``state.pt``              optimizers, AMP scaler, step, RNG states, the base learning rates and the
                            resolved loss weights (a resume under other values says so); read with
                            ``weights_only=True``;
- ``replay.rankN.safetensors``, ``rng.rankN.pt``  under torchrun, the replay buffers and RNG states
  of rank N > 0 (DESIGN §9: each rank keeps its own buffer and exploration; rank 0's are above);
- ``config.json``           the resolved configuration;
- ``manifest.json``         step, epoch, world size, and the size and SHA-256 of every file above.

Only rank 0 writes: the other ranks send it their buffers and RNG states (a chunk at a time). The
checkpoint is written to a temporary folder, fsynced and renamed into place; then ``<run>/latest``
(a one-line file naming it) is replaced atomically. A kill at any moment leaves the previous
checkpoint as ``latest``; a checkpoint whose files do not match its manifest, or whose manifest
lacks a rank's file, is never loaded. Resuming with another world size than saved warns and gives
every rank rank 0's buffer and RNG state (ranks > 0 then reseeded).

Only the newest checkpoint keeps the replay buffers (the largest files by far); once a newer one
is in place, the older ones keep their networks, which is all eval and translate need
(``--keep_checkpoints`` also deletes the oldest). Loading reads ``networks.safetensors`` and
``state.pt`` once each: the bytes are checked against the manifest's SHA-256 and deserialised from
memory. A replay file, which can approach the free memory in size, is hashed in one streaming pass
and then copied into the buffers a chunk at a time (``safe_open``), never held whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import random
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from ..config import ARCH_FLAGS
from ..errors import UserError
from ..utils.fs import atomic_dir, atomic_write_text
from .distributed import DistInfo, cpu_group, released

LATEST = "latest"
REPLAY = "replay.safetensors"
CHECKPOINT_RE = re.compile(r"^(epoch_\d{4,}|step_\d{8,})$")
FILES = ("networks.safetensors", "state.pt", "config.json")
REPLAY_RE = re.compile(r"^replay(\.rank\d+)?\.safetensors$")
CHUNK_BYTES = 64 << 20  # of a replay buffer, held in memory at a time while it is sent or written
_DTYPES = {torch.uint8: "U8", torch.int8: "I8", torch.bool: "BOOL", torch.int16: "I16", torch.int32: "I32",
           torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32",
           torch.float64: "F64"}  # safetensors' names
_ITEMSIZE = {name: dtype.itemsize for dtype, name in _DTYPES.items()}


def rank_files(rank: int) -> tuple[str, str]:
    """The files holding ``rank``'s replay buffers and RNG state."""
    return (REPLAY, "state.pt") if rank == 0 else (f"replay.rank{rank}.safetensors", f"rng.rank{rank}.pt")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any], log=print) -> None:
    torch.set_rng_state(state["torch"])
    saved = state["cuda"]
    if saved and torch.cuda.is_available():
        visible = torch.cuda.device_count()
        for device, cuda_state in enumerate(saved[:visible]):
            torch.cuda.set_rng_state(cuda_state, device)
        if len(saved) > visible:  # resumed on fewer GPUs than it was saved on
            log(f"warning: the checkpoint holds CUDA RNG states of {len(saved)} GPUs but {visible} are visible; "
                f"restored the first {visible} (the random stream differs from the original run's)")
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def checkpoint_name(step: int, steps_per_epoch: int) -> str:
    """``epoch_NNNN`` at an epoch boundary (NNNN = epochs completed), else ``step_NNNNNNNN``."""
    if step % steps_per_epoch == 0:
        return f"epoch_{step // steps_per_epoch:04d}"
    return f"step_{step:08d}"


def _tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous, unshared CPU tensors.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}


def save_checkpoint(run_dir: Path, trainer, config_json: str, steps_per_epoch: int, keep: int | None = None,
                    info: DistInfo = DistInfo()) -> Path:
    """Write a complete checkpoint of ``trainer`` and point ``latest`` at it; returns its folder.

    Under torchrun every rank calls it: rank 0 writes, the others send it their replay buffers and
    RNG states and return (a failed write ends rank 0, which ends their waits). Then the older
    checkpoints give up their replay buffers and, with ``keep``, all but the newest ``keep``
    checkpoints are deleted (see :func:`retire_older`)."""
    run_dir = Path(run_dir)
    name = checkpoint_name(trainer.step, steps_per_epoch)
    final = run_dir / name
    if not info.is_main:
        _send_rank_state(trainer)
        return final
    try:
        with atomic_dir(final) as tmp:
            save_file(_tensors(trainer.nets.state_dict()), tmp / "networks.safetensors")
            files = list(FILES)
            if trainer.replay:
                replay = _replay_tensors(trainer)
                specs = _specs(replay)
                _write_safetensors(tmp / REPLAY, specs, _chunks(replay, specs))
                files.append(REPLAY)
            with open(tmp / "state.pt", "wb") as f:  # through a Python file: a failed write is an OSError
                torch.save({"trainer": trainer.state_dict(), "rng": rng_state()}, f)
            (tmp / "config.json").write_text(config_json)
            files += _receive_rank_states(tmp, info.world_size)
            manifest = {"name": name, "step": trainer.step, "epoch": trainer.step / steps_per_epoch,
                        "world_size": info.world_size, "time": time.time(),
                        "sha256": {f: _sha256(tmp / f) for f in files},
                        "bytes": {f: (tmp / f).stat().st_size for f in files}}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
            for f in files + ["manifest.json"]:
                with open(tmp / f, "rb") as fh:
                    os.fsync(fh.fileno())
            _pause_for_tests(trainer.step)
        atomic_write_text(run_dir / LATEST, name + "\n")
    except (OSError, SafetensorError) as e:  # I/O only: a CUDA or programming error keeps its own traceback
        reason = getattr(e, "strerror", None) or str(e).strip().splitlines()[0]
        raise UserError(f"cannot write checkpoint {final}: {reason} "
                        f"(the run's earlier checkpoints are intact)") from None
    retire_older(run_dir, final, keep)
    return final


def _replay_tensors(trainer) -> dict[str, torch.Tensor]:
    # Contiguous CPU tensors already (a host buffer's rows as views): no extra copy of a large buffer.
    return {f"{d}.{k}": v.contiguous() for d, buf in trainer.replay.items() for k, v in buf.state_dict().items()}


def _specs(tensors: dict[str, torch.Tensor]) -> list[list]:
    """``[name, dtype, shape]`` of each tensor in file order: the widest types first, so every
    tensor's data starts aligned to its element size."""
    return [[k, _DTYPES[v.dtype], list(v.shape)]
            for k, v in sorted(tensors.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))]


def _nbytes(spec: list) -> int:
    return math.prod(spec[2]) * _ITEMSIZE[spec[1]]


def _chunks(tensors: dict[str, torch.Tensor], specs: list[list]) -> Iterator[torch.Tensor]:
    """The bytes of ``tensors`` in the order of ``specs``, as uint8 views of at most CHUNK_BYTES each."""
    for name, _, _ in specs:
        flat = tensors[name].reshape(-1).view(torch.uint8)
        for i in range(0, flat.numel(), CHUNK_BYTES):
            yield flat[i:i + CHUNK_BYTES]


def _write_safetensors(path: Path, specs: list[list], chunks: Iterable[torch.Tensor]) -> None:
    """Write a safetensors file from ``specs`` (see :func:`_specs`) and the tensors' bytes in that
    order, a uint8 chunk at a time: another rank's buffers arrive that way, never whole."""
    header, offset = {}, 0
    for spec in specs:
        header[spec[0]] = {"dtype": spec[1], "shape": spec[2], "data_offsets": [offset, offset + _nbytes(spec)]}
        offset += _nbytes(spec)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    written = 0
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for chunk in chunks:
            f.write(chunk.numpy())
            written += chunk.numel()
    if written != offset:
        raise RuntimeError(f"{path.name}: wrote {written} bytes of tensor data, its header says {offset}")


def _send_bytes(data: bytes, group) -> None:
    for t in (torch.tensor([len(data)]), torch.frombuffer(bytearray(data), dtype=torch.uint8)):
        dist.send(t, dst=0, group=group)
        released(t, group=group)


def _recv_bytes(src: int, group) -> bytes:
    n = torch.zeros(1, dtype=torch.int64)
    dist.recv(n, src=src, group=group)
    released(n, group=group)
    data = torch.empty(int(n), dtype=torch.uint8)
    dist.recv(data, src=src, group=group)
    released(data, group=group)
    return data.numpy().tobytes()


def _send_rank_state(trainer) -> None:
    """A rank > 0's part of a save: its RNG state (``rng.rankN.pt``'s bytes), the specs of its
    replay buffers, then their bytes chunk by chunk, to rank 0 (:func:`_receive_rank_states`)."""
    group = cpu_group()
    rng = io.BytesIO()
    torch.save({"rng": rng_state()}, rng)
    replay = _replay_tensors(trainer) if trainer.replay else {}
    specs = _specs(replay)
    _send_bytes(rng.getvalue(), group)
    _send_bytes(json.dumps(specs).encode(), group)
    for chunk in _chunks(replay, specs):
        dist.send(chunk, dst=0, group=group)
        released(chunk, group=group)


def _receive_rank_states(tmp: Path, world_size: int) -> list[str]:
    """Rank 0's side of :func:`_send_rank_state`: each other rank's files, written into ``tmp``
    through one chunk of memory; returns their names."""
    files = []
    group = cpu_group() if world_size > 1 else None
    for rank in range(1, world_size):
        replay_name, rng_name = rank_files(rank)
        (tmp / rng_name).write_bytes(_recv_bytes(rank, group))
        files.append(rng_name)
        specs = json.loads(_recv_bytes(rank, group))
        if specs:
            _write_safetensors(tmp / replay_name, specs, _received_chunks(specs, rank, group))
            files.append(replay_name)
    return files


def _received_chunks(specs: list[list], src: int, group) -> Iterator[torch.Tensor]:
    scratch = torch.empty(min(CHUNK_BYTES, max(map(_nbytes, specs))), dtype=torch.uint8)
    for spec in specs:
        nbytes = _nbytes(spec)
        for i in range(0, nbytes, CHUNK_BYTES):
            chunk = scratch[:min(CHUNK_BYTES, nbytes - i)]
            dist.recv(chunk, src=src, group=group)
            released(chunk, group=group)
            yield chunk


def retire_older(run_dir: Path, current: Path, keep: int | None = None) -> None:
    """Housekeeping after ``current`` was written and named ``latest``.

    Every other checkpoint loses its replay buffers: its manifest is first rewritten (atomically)
    without them, then the files are deleted, so a manifest never names a missing file. With ``keep``,
    the oldest checkpoints beyond the newest ``keep`` are deleted -- each is renamed to a hidden
    name first, so none is ever half there. Neither ``current`` nor what ``latest`` names is
    touched. A failure here leaves consistent checkpoints behind and is not an error.
    """
    run_dir = Path(run_dir)
    protected = {current.name, _latest_name(run_dir)}
    found = list_checkpoints(run_dir)  # oldest first
    doomed = set(found[:-keep]) - {run_dir / n for n in protected if n} if keep else set()
    for ckpt in found:
        if ckpt.name in protected:
            continue
        with contextlib.suppress(OSError):
            if ckpt in doomed:
                hidden = run_dir / f".{ckpt.name}.old-{os.getpid()}"  # the loop clears such leftovers
                os.replace(ckpt, hidden)
                shutil.rmtree(hidden, ignore_errors=True)
            else:
                _drop_replay(ckpt)


def _drop_replay(ckpt: Path) -> None:
    try:
        manifest = json.loads((ckpt / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return  # a damaged checkpoint is left as it is
    listed = [f for f in manifest.get("sha256", {}) if REPLAY_RE.match(f)]
    if listed:
        for key in ("sha256", "bytes"):
            for f in listed:
                manifest.get(key, {}).pop(f, None)
        atomic_write_text(ckpt / "manifest.json", json.dumps(manifest, indent=1))
    for path in ckpt.glob("replay*.safetensors"):
        if REPLAY_RE.match(path.name):
            path.unlink(missing_ok=True)


def _latest_name(run_dir: Path) -> str | None:
    try:
        return (run_dir / LATEST).read_text().strip() or None
    except OSError:
        return None


def _pause_for_tests(step: int) -> None:
    """Test hook: ``RLV2V_TEST_PAUSE_IN_SAVE=SECONDS`` sleeps inside a save (only the save at step
    ``RLV2V_TEST_PAUSE_AT_STEP`` when set) and touches ``RLV2V_TEST_SAVE_MARKER``, so a test can
    kill the process in the middle of writing a checkpoint, or keep the other ranks waiting."""
    pause = os.environ.get("RLV2V_TEST_PAUSE_IN_SAVE")
    at_step = os.environ.get("RLV2V_TEST_PAUSE_AT_STEP")
    if pause and (at_step is None or int(at_step) == step):
        marker = os.environ.get("RLV2V_TEST_SAVE_MARKER")
        if marker:
            Path(marker).touch()
        time.sleep(float(pause))


def verify(ckpt: Path) -> str | None:
    """None when ``ckpt`` is complete -- a readable manifest listing every rank's files, and every
    file it lists, at the size it records -- else what is wrong. The checksums are checked as the
    files are loaded (:func:`read_checked`, :func:`check_streamed`)."""
    try:
        manifest = json.loads((ckpt / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "missing or unreadable manifest.json"
    listed, sizes = manifest.get("sha256", {}), manifest.get("bytes", {})
    world = manifest.get("world_size", 1)
    for rank in range(1, world):
        replay, rng = rank_files(rank)
        for f in (rng, replay) if REPLAY in listed else (rng,):
            if f not in listed:
                return f"its manifest lists no {f} (saved by {world} processes)"
    for f in listed:
        if not (ckpt / f).is_file():
            return f"missing {f}"
        if f in sizes and (ckpt / f).stat().st_size != sizes[f]:
            return f"{f} has {(ckpt / f).stat().st_size} bytes, its manifest says {sizes[f]}"
    return None


def _digest(ckpt: Path, name: str) -> str:
    try:
        return json.loads((ckpt / "manifest.json").read_text())["sha256"][name]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        reason = getattr(e, "strerror", None) or f"{name} is not in its manifest"
        raise UserError(f"checkpoint {ckpt}: cannot read {name} ({reason})") from None


def _check_digest(ckpt: Path, name: str, got: str, want: str) -> None:
    if got != want:
        raise UserError(f"checkpoint {ckpt} is damaged: {name} does not match its checksum "
                        f"(choose another with --checkpoint)")


def read_checked(ckpt: Path, name: str) -> bytes:
    """The bytes of ``ckpt/name``, read once and checked against the manifest's SHA-256."""
    digest = _digest(ckpt, name)
    try:
        data = (ckpt / name).read_bytes()
    except OSError as e:
        raise UserError(f"checkpoint {ckpt}: cannot read {name} ({e.strerror})") from None
    _check_digest(ckpt, name, hashlib.sha256(data).hexdigest(), digest)
    return data


def check_streamed(ckpt: Path, name: str) -> None:
    """Check ``ckpt/name`` against the manifest's SHA-256, reading it in blocks (not into memory)."""
    digest = _digest(ckpt, name)
    try:
        got = _sha256(ckpt / name)
    except OSError as e:
        raise UserError(f"checkpoint {ckpt}: cannot read {name} ({e.strerror})") from None
    _check_digest(ckpt, name, got, digest)


def _step_of(ckpt: Path) -> int:
    try:
        return int(json.loads((ckpt / "manifest.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name)]
    return sorted(found, key=lambda p: (_step_of(p), p.name))


def resolve(run_dir: Path, which: str | None = None, log=print) -> Path:
    """The checkpoint to load: ``which`` (a name in the run or a path), else ``latest``.

    A damaged ``latest`` is skipped (with a warning) for the newest intact checkpoint; a damaged
    explicitly named one is an error.
    """
    run_dir = Path(run_dir)
    if which:
        ckpt = Path(which) if Path(which).is_dir() else run_dir / which
        if not ckpt.is_dir():
            have = ", ".join(p.name for p in list_checkpoints(run_dir)) or "none"
            raise UserError(f"no checkpoint {which!r} in {run_dir} (available: {have})")
        problem = verify(ckpt)
        if problem:
            raise UserError(f"checkpoint {ckpt} is damaged: {problem}")
        return ckpt
    candidates = list_checkpoints(run_dir)
    latest = run_dir / LATEST
    if latest.is_file():
        named = run_dir / latest.read_text().strip()
        candidates = [c for c in candidates if c != named] + [named]
    for ckpt in reversed(candidates):
        problem = verify(ckpt)
        if problem is None:
            return ckpt
        log(f"warning: skipping damaged checkpoint {ckpt}: {problem}")
    raise UserError(f"no checkpoint in {run_dir} (train first, or pass --checkpoint_dir/--checkpoint_name)")


def check_config(ckpt: Path, config: dict[str, Any]) -> None:
    """Refuse a checkpoint whose architecture flags differ from ``config``, listing them."""
    try:
        saved = json.loads((ckpt / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"checkpoint {ckpt}: unreadable config.json ({e})") from None
    diffs = [f"--{k} {saved.get(k)} (checkpoint) vs {config.get(k)} (now)" for k in ARCH_FLAGS
             if k in saved and saved.get(k) != config.get(k)]
    if diffs:
        raise UserError(f"checkpoint {ckpt} was trained with other networks: {'; '.join(diffs)}")


def state_dict_mismatch(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> str | None:
    """None when ``tensors`` has exactly the keys and shapes of ``own``, else the differences in one line
    (missing, unexpected and mis-shaped keys, the first five of each)."""
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    shapes = sorted(f"{k} {list(tensors[k].shape)} vs {list(own[k].shape)}" for k in set(own) & set(tensors)
                    if tensors[k].shape != own[k].shape)
    parts = [f"{label} ({len(items)}): {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
             for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if items]
    return "; ".join(parts) or None


def load_networks(ckpt: Path, nets: torch.nn.Module) -> None:
    """Load network weights (safetensors only); mismatched keys or shapes are listed in the error."""
    try:
        weights = load_safetensors(read_checked(ckpt, "networks.safetensors"))
    except SafetensorError as e:
        raise UserError(f"checkpoint {ckpt}: unreadable networks.safetensors ({e})") from None
    problem = state_dict_mismatch(nets.state_dict(), weights)
    if problem:
        raise UserError(f"checkpoint {ckpt} does not match the networks: {problem}")
    nets.load_state_dict(weights)


def load_state(ckpt: Path, name: str = "state.pt") -> dict[str, Any]:
    """``state.pt`` (or a rank's ``rng.rankN.pt``) with ``weights_only=True``: a file that carries
    pickled code is refused."""
    data = read_checked(ckpt, name)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"refusing to load {ckpt / name}: it is not plain tensor data ({first})") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise UserError(f"checkpoint {ckpt}: unreadable {name} ({e})") from None


def restore(cfg, nets: torch.nn.Module, trainer=None, which: str | None = None, log=print,
            info: DistInfo = DistInfo()) -> Path:
    """Load the checkpoint ``which`` (default: latest) of ``cfg``'s run into ``nets`` (and ``trainer``:
    optimizers, scaler, step, and this rank's replay buffers and RNG states); returns its folder."""
    ckpt = resolve(cfg.run_dir, which, log)
    check_config(ckpt, cfg.to_dict())
    load_networks(ckpt, nets)
    if trainer is not None:
        state = load_state(ckpt)
        trainer.load_state_dict(state["trainer"], log)
        rank = info.rank
        saved = json.loads((ckpt / "manifest.json").read_text()).get("world_size", 1)
        if saved != info.world_size:
            log(f"warning: {ckpt.name} was saved by {saved} process(es), this run has {info.world_size}: every rank "
                f"resumes with rank 0's replay buffer and random state (ranks > 0 reseeded)")
            rank = 0
        replay_name, rng_name = rank_files(rank)
        load_replay(ckpt, trainer.replay, log, replay_name)
        set_rng_state(state["rng"] if rank == 0 else load_state(ckpt, rng_name)["rng"], log)
        if rank != info.rank:  # rank 0's state: explore differently from it
            _reseed(hash((cfg.seed, info.rank, trainer.step)) & 0x7FFF_FFFF_FFFF)
    return ckpt


def _reseed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def load_replay(ckpt: Path, replay: dict, log=print, name: str = REPLAY) -> None:
    """Fill the replay buffers from ``ckpt/name``; one whose buffers were retired leaves them empty.

    The file is checked in one hashing pass, then copied in a chunk at a time (RAM: the buffers
    plus one chunk, not the file's size again)."""
    if not replay:
        return
    try:
        saved = name in json.loads((ckpt / "manifest.json").read_text())["sha256"]
    except (OSError, json.JSONDecodeError, KeyError):
        saved = False
    if not saved:
        log(f"warning: {ckpt.name} holds no replay buffer (only the newest checkpoint keeps one); "
            f"resuming with an empty buffer")
        return
    check_streamed(ckpt, name)
    path = ckpt / name
    try:
        with safe_open(path, framework="pt") as f:
            heads = {d: (f.get_tensor(f"{d}.pos_size").clone(), f.get_slice(f"{d}.states").get_shape())
                     for d in replay}
        for d, buf in replay.items():
            pos_size, shape = heads[d]
            buf.load_rows(pos_size, shape[1:], lambda field, start, stop, d=d: _rows(path, f"{d}.{field}", start, stop))
    except SafetensorError as e:
        raise UserError(f"checkpoint {ckpt}: unreadable {name} ({e})") from None


def _rows(path: Path, key: str, start: int, stop: int) -> torch.Tensor:
    # Mapped anew for each chunk: the pages read leave the process with the mapping, which would
    # otherwise keep the whole file resident (and counted in its memory) until the end.
    with safe_open(path, framework="pt") as f:
        return f.get_slice(key)[start:stop]
