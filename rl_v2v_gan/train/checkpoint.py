"""Checkpoints that resume exactly and never half-exist.

A checkpoint is a folder ``<run>/epoch_NNNN`` (end of an epoch) or ``<run>/step_NNNNNNNN`` (an
interrupted epoch) holding:

- ``networks.safetensors``  every network and target network (tensors only: no code can ride along);
- ``replay.safetensors``    the replay buffers (RL method), so a resumed run sees the same minibatches;
- ``state.pt``              optimizers, AMP scaler, step, RNG states; read with ``weights_only=True``;
- ``config.json``           the resolved configuration;
- ``manifest.json``         step, epoch, and the size and SHA-256 of every file above.

It is written to a temporary folder, fsynced and renamed into place; then ``<run>/latest`` (a
one-line file naming it) is replaced atomically. A kill at any moment leaves the previous
checkpoint as ``latest``; a checkpoint whose files do not match its manifest is never loaded.

Only the newest checkpoint keeps the replay buffer (the largest file by far); once a newer one is
in place, the older ones keep their networks, which is all eval and translate need
(``--keep_checkpoints`` also deletes the oldest). Loading reads each file once: the bytes are
checked against the manifest's SHA-256 and deserialised from memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from ..config import ARCH_FLAGS
from ..errors import UserError
from ..utils.fs import atomic_dir, atomic_write_text

LATEST = "latest"
REPLAY = "replay.safetensors"
CHECKPOINT_RE = re.compile(r"^(epoch_\d{4,}|step_\d{8,})$")
FILES = ("networks.safetensors", "state.pt", "config.json")


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


def save_checkpoint(run_dir: Path, trainer, config_json: str, steps_per_epoch: int, keep: int | None = None) -> Path:
    """Write a complete checkpoint of ``trainer`` and point ``latest`` at it; returns its folder.

    Then the older checkpoints give up their replay buffers and, with ``keep``, all but the newest
    ``keep`` checkpoints are deleted (see :func:`retire_older`)."""
    run_dir = Path(run_dir)
    name = checkpoint_name(trainer.step, steps_per_epoch)
    final = run_dir / name
    try:
        with atomic_dir(final) as tmp:
            save_file(_tensors(trainer.nets.state_dict()), tmp / "networks.safetensors")
            files = list(FILES)
            if trainer.replay:
                # Contiguous CPU tensors already (a host buffer's rows as views): no extra copy of a large buffer.
                replay = {f"{d}.{k}": v.contiguous() for d, buf in trainer.replay.items()
                          for k, v in buf.state_dict().items()}
                save_file(replay, tmp / REPLAY)
                files.append(REPLAY)
            with open(tmp / "state.pt", "wb") as f:  # through a Python file: a failed write is an OSError
                torch.save({"trainer": trainer.state_dict(), "rng": rng_state()}, f)
            (tmp / "config.json").write_text(config_json)
            manifest = {"name": name, "step": trainer.step, "epoch": trainer.step / steps_per_epoch,
                        "time": time.time(), "sha256": {f: _sha256(tmp / f) for f in files},
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


def retire_older(run_dir: Path, current: Path, keep: int | None = None) -> None:
    """Housekeeping after ``current`` was written and named ``latest``.

    Every other checkpoint loses its replay buffer: its manifest is first rewritten (atomically)
    without it, then the file is deleted, so a manifest never names a missing file. With ``keep``,
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
    path = ckpt / REPLAY
    try:
        manifest = json.loads((ckpt / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return  # a damaged checkpoint is left as it is
    if REPLAY in manifest.get("sha256", {}):
        for key in ("sha256", "bytes"):
            manifest.get(key, {}).pop(REPLAY, None)
        atomic_write_text(ckpt / "manifest.json", json.dumps(manifest, indent=1))
    path.unlink(missing_ok=True)


def _latest_name(run_dir: Path) -> str | None:
    try:
        return (run_dir / LATEST).read_text().strip() or None
    except OSError:
        return None


def _pause_for_tests(step: int) -> None:
    """Test hook: ``RLV2V_TEST_PAUSE_IN_SAVE=SECONDS`` sleeps inside a save (only the save at step
    ``RLV2V_TEST_PAUSE_AT_STEP`` when set) and touches ``RLV2V_TEST_SAVE_MARKER``, so a test can
    kill the process in the middle of writing a checkpoint."""
    pause = os.environ.get("RLV2V_TEST_PAUSE_IN_SAVE")
    at_step = os.environ.get("RLV2V_TEST_PAUSE_AT_STEP")
    if pause and (at_step is None or int(at_step) == step):
        marker = os.environ.get("RLV2V_TEST_SAVE_MARKER")
        if marker:
            Path(marker).touch()
        time.sleep(float(pause))


def verify(ckpt: Path) -> str | None:
    """None when ``ckpt`` is complete -- a readable manifest and every file it lists, at the size
    it records -- else what is wrong. The checksums are checked as the files are loaded
    (:func:`read_checked`), so each file is read once."""
    try:
        manifest = json.loads((ckpt / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "missing or unreadable manifest.json"
    sizes = manifest.get("bytes", {})
    for f in manifest.get("sha256", {}):
        if not (ckpt / f).is_file():
            return f"missing {f}"
        if f in sizes and (ckpt / f).stat().st_size != sizes[f]:
            return f"{f} has {(ckpt / f).stat().st_size} bytes, its manifest says {sizes[f]}"
    return None


def read_checked(ckpt: Path, name: str) -> bytes:
    """The bytes of ``ckpt/name``, read once and checked against the manifest's SHA-256."""
    try:
        digest = json.loads((ckpt / "manifest.json").read_text())["sha256"][name]
        data = (ckpt / name).read_bytes()
    except (OSError, json.JSONDecodeError, KeyError) as e:
        reason = getattr(e, "strerror", None) or f"{name} is not in its manifest"
        raise UserError(f"checkpoint {ckpt}: cannot read {name} ({reason})") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise UserError(f"checkpoint {ckpt} is damaged: {name} does not match its checksum "
                        f"(choose another with --checkpoint)")
    return data


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


def load_networks(ckpt: Path, nets: torch.nn.Module) -> None:
    """Load network weights (safetensors only); mismatched keys or shapes are listed in the error."""
    try:
        weights = load_safetensors(read_checked(ckpt, "networks.safetensors"))
    except SafetensorError as e:
        raise UserError(f"checkpoint {ckpt}: unreadable networks.safetensors ({e})") from None
    own = nets.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = sorted(f"{k} {list(weights[k].shape)} vs {list(own[k].shape)}" for k in set(own) & set(weights)
                    if weights[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{label} ({len(items)}): {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if items]
        raise UserError(f"checkpoint {ckpt} does not match the networks: {'; '.join(parts)}")
    nets.load_state_dict(weights)


def load_state(ckpt: Path) -> dict[str, Any]:
    """``state.pt`` with ``weights_only=True``: a file that carries pickled code is refused."""
    data = read_checked(ckpt, "state.pt")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"refusing to load {ckpt / 'state.pt'}: it is not plain tensor data ({first})") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise UserError(f"checkpoint {ckpt}: unreadable state.pt ({e})") from None


def restore(cfg, nets: torch.nn.Module, trainer=None, which: str | None = None, log=print) -> Path:
    """Load the checkpoint ``which`` (default: latest) of ``cfg``'s run into ``nets`` (and ``trainer``:
    optimizers, scaler, step, replay buffers, RNG states); returns its folder."""
    ckpt = resolve(cfg.run_dir, which, log)
    check_config(ckpt, cfg.to_dict())
    load_networks(ckpt, nets)
    if trainer is not None:
        state = load_state(ckpt)
        trainer.load_state_dict(state["trainer"], log)
        load_replay(ckpt, trainer.replay, log)
        set_rng_state(state["rng"], log)
    return ckpt


def load_replay(ckpt: Path, replay: dict, log=print) -> None:
    """Fill the replay buffers from ``ckpt``; one whose buffer was retired leaves them empty."""
    if not replay:
        return
    try:
        saved = REPLAY in json.loads((ckpt / "manifest.json").read_text())["sha256"]
    except (OSError, json.JSONDecodeError, KeyError):
        saved = False
    if not saved:
        log(f"warning: {ckpt.name} holds no replay buffer (only the newest checkpoint keeps one); "
            f"resuming with an empty buffer")
        return
    tensors = load_safetensors(read_checked(ckpt, REPLAY))
    for d, buf in replay.items():
        buf.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{d}.")})
