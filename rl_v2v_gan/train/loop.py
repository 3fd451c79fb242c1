"""``--mode train``: epochs of steps, logging, evaluation, checkpoints, signals, resume.

The step itself is :meth:`Trainer.train_step`; this loop holds the schedule. Only rank 0
writes logs, samples and checkpoints (every rank takes part in a save: it sends rank 0 its replay
buffer and RNG state).
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import Config
from ..data.dataset import StepSampler, UnpairedClips
from ..data.factory import prepare_data
from ..errors import UserError
from ..eval import report
from ..models.networks import networks_from_config
from ..utils.fs import atomic_write_text
from ..utils.memory import resolve_checkpointing
from . import checkpoint as ckpt_io
from .checkpoint import restore
from .distributed import DistInfo, any_rank, barrier, cleanup, init_distributed
from .trainer import NonFiniteError, Trainer

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopRequest:
    """SIGINT / SIGTERM set a flag; the loop finishes its step, checkpoints and exits."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        for s in EXIT_CODES:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def build_trainer(cfg: Config, device: torch.device, info: DistInfo) -> Trainer:
    """Networks (wrapped in DDP when distributed), optimizers and replay buffers.

    Seeded with ``--seed`` alone, so every rank starts from the same networks and targets; the
    global RNG is then offset by the rank, so ranks explore differently.
    """
    torch.manual_seed(cfg.seed)
    nets = networks_from_config(cfg).to(device)
    if cfg.channels_last:  # 4-D weights only; a convolution with a channels_last weight outputs that layout
        nets.to_channels_last()
    ddp = {}
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        ddp = {name: DDP(getattr(nets, name), device_ids=ids, broadcast_buffers=False)
               for name in nets.online_names()}
    if cfg.compile:
        for name in nets.online_names() + [f"{n}_target" for n in nets.target_names]:
            getattr(nets, name).compile()
    trainer = Trainer(cfg, nets, device, ddp)
    mode, why = resolve_checkpointing(cfg, device, trainer.amp_dtype)
    nets.set_checkpointing(mode)
    if info.is_main and (mode != "off" or cfg.activation_checkpointing != "auto"):
        print(f"activation checkpointing {mode} ({why})")
    torch.manual_seed(cfg.seed + info.rank)
    return trainer


def _loader(dataset: UnpairedClips, cfg: Config, info: DistInfo, start: int, steps: int, device) -> DataLoader:
    sampler = StepSampler(dataset, cfg.batch_size, cfg.seed, info.rank, start, steps)
    # Its own generator: creating the iterator must not draw from the global RNG (exact resume).
    return DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                      pin_memory=device.type == "cuda", generator=torch.Generator(),
                      persistent_workers=False)


def train(cfg: Config) -> int:
    info, device = init_distributed(cfg.device, cfg.ddp_timeout_s)
    try:
        return _train(cfg, info, device)
    except NonFiniteError as e:
        raise UserError(f"{e}; the last good checkpoint is kept in {cfg.run_dir}") from None
    finally:
        cleanup(info)


def _train(cfg: Config, info: DistInfo, device: torch.device) -> int:
    log = print if info.is_main else (lambda *a, **k: None)
    run_dir = cfg.run_dir
    if info.is_main:
        store = prepare_data(cfg, log)
    barrier(info)
    if not info.is_main:
        store = prepare_data(cfg, lambda *a, **k: None)
    dataset = UnpairedClips(store, cfg.clip_length, cfg.max_videos_a, cfg.max_videos_b, cfg.hflip,
                            cfg.crop_scale)
    if store.frame_shape != (cfg.channels, *cfg.frame_size):
        raise UserError(f"clip store {store.root} holds {store.frame_shape} frames, not the configured "
                        f"{(cfg.channels, *cfg.frame_size)}")

    trainer = build_trainer(cfg, device, info)
    existing = ckpt_io.list_checkpoints(run_dir)
    if cfg.resume:
        ckpt = restore(cfg, trainer.nets, trainer, cfg.checkpoint, log, info)
        log(f"resumed from {ckpt} at step {trainer.step}")
    elif existing:
        raise UserError(f"run {run_dir} already has checkpoints (newest: {existing[-1].name}): pass --resume to "
                        f"continue it, or choose another --checkpoint_name")
    log(trainer.nets.summary())
    if trainer.replay:
        mib = sum(r.nbytes for r in trainer.replay.values()) / 2**20
        buf = trainer.replay["a"]
        where = "pinned host memory" if buf.pinned else str(buf.device)
        log(f"replay buffer: {cfg.buffer_size} transitions (uint8 frames), {mib:.1f} MiB in {where}")
    log(f"device {device}, world size {info.world_size}, batch {cfg.batch_size} per rank, run dir {run_dir}")

    from ..eval.evaluator import Evaluator  # evaluation pulls in torchmetrics: import when needed

    writer = evaluator = None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*run_dir.glob(".*.tmp"), *run_dir.glob(".*.old-*")]:  # leftovers of a killed save
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        _truncate_log(run_dir / "log.jsonl", trainer.step)
        atomic_write_text(run_dir / "config.json", cfg.to_json())
        from torch.utils.tensorboard import SummaryWriter

        # Steps after the checkpoint were logged by the killed run and are about to be redone:
        # TensorBoard drops its events from purge_step on, as the JSONL drops its rows.
        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=trainer.step + 1)
        evaluator = Evaluator(cfg, store, device)

    spe, total = cfg.steps_per_epoch, cfg.epochs * cfg.steps_per_epoch
    config_json = cfg.to_json()
    try:
        with StopRequest() as stop:
            while trainer.step < total:
                epoch = trainer.step // spe
                steps = (epoch + 1) * spe - trainer.step
                loader = _loader(dataset, cfg, info, trainer.step, steps, device)
                bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           dynamic_ncols=True, file=sys.stdout, disable=None if info.is_main else True)
                stopping = False
                for batch in bar:
                    trainer.train_step(batch, read=False)  # logs stay on the device until read
                    stopping = any_rank(stop.signum is not None, info)
                    saving = bool(cfg.save_every_steps) and trainer.step % cfg.save_every_steps == 0
                    if (stopping or saving or trainer.step % cfg.log_every == 0 or trainer.step == 1
                            or trainer.step % spe == 0):
                        logs = _read_logs(trainer, writer, run_dir, cfg.log_every, bar, info)
                    if stopping and trainer.step % spe:  # mid-epoch: checkpoint and go
                        bar.close()
                        return _interrupted(cfg, trainer, info, config_json, stop.signum or signal.SIGTERM, log)
                    if stopping:  # the epoch's last step: finish it as usual (evaluation, samples) first
                        break
                    if saving and trainer.step % spe:
                        path = _save(cfg, trainer, info, config_json)
                        if info.is_main:
                            tqdm.write(f"saved checkpoint {path}", file=sys.stdout)
                bar.close()
                if info.is_main:
                    log(f"epoch {epoch + 1}/{cfg.epochs} done (step {trainer.step}); last losses: "
                        + ", ".join(f"{k}={v:.4f}" for k, v in logs.items() if k.startswith("loss/")))
                    metrics = evaluator.run_epoch(trainer.nets, epoch + 1, writer, trainer.step)
                    report.epoch_done(run_dir, epoch + 1, trainer.step, metrics, log)
                log(f"saved checkpoint {_save(cfg, trainer, info, config_json)}")
                barrier(info)
                if stopping:
                    signum = stop.signum or signal.SIGTERM
                    log(f"stopped by {signal.Signals(signum).name} at step {trainer.step}. "
                        f"Resume with the same flags plus --resume")
                    return EXIT_CODES.get(signum, 143)
    finally:
        if writer is not None:
            writer.close()
    log(f"training finished: {trainer.step} steps; checkpoints in {run_dir}")
    return 0


def _read_logs(trainer: Trainer, writer, run_dir: Path, log_every: int, bar, info: DistInfo) -> dict[str, float]:
    """Read the pending steps' logs back (one transfer) and write them: every step to
    ``log.jsonl``, every ``--log_every``-th (and the first) to TensorBoard; the bar shows the
    last. Returns the last step's logs."""
    rows = trainer.read_logs(check=False)  # write every row first, then stop on a non-finite streak
    if writer is not None:
        with open(run_dir / "log.jsonl", "a") as f:  # every step; a resumed run appends
            f.write("".join(json.dumps({"step": step, **logs}) + "\n" for step, logs in rows))
        for step, logs in rows:
            if step % log_every == 0 or step == 1:
                for k, v in logs.items():
                    writer.add_scalar(k, v, step)
    for step, logs in rows:
        skipped = _skipped(logs)
        if skipped and info.is_main:  # said also where the bar is off (no tty)
            tqdm.write(f"step {step}: skipped the non-finite update of {', '.join(skipped)}", file=sys.stdout)
    bar.set_postfix(_postfix(rows[-1][1]))
    trainer.check_finite()
    return rows[-1][1]


def _skipped(logs: dict[str, float]) -> list[str]:
    """The roles (D, Q, G) whose update this step skipped."""
    return [k.split("/", 1)[1] for k, v in logs.items() if k.startswith("skipped/") and v]


def _postfix(logs: dict[str, float]) -> dict[str, str]:
    """The progress bar's few numbers, and ``skip=D,Q`` while updates are being skipped."""
    postfix = {k.split("/")[-1]: f"{v:.3f}" for k, v in logs.items()
               if k in ("loss/D/frame", "loss/G/total", "loss/G/rr", "rl/q_loss")}
    if _skipped(logs):
        postfix["skip"] = ",".join(_skipped(logs))
    return postfix


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log rows of steps up to ``step``, where the run (re)starts.

    A resumed run redoes the steps between its checkpoint and the kill, which the killed run had
    already logged; a kill in the middle of a write leaves half a line. Both are cut (atomically)
    before appending again.
    """
    if not path.is_file():
        return
    data = path.read_bytes()
    kept = []
    for line in data.splitlines(keepends=True):
        try:
            row = json.loads(line) if line.endswith(b"\n") else None
        except json.JSONDecodeError:
            row = None
        if row is None or row.get("step", 0) > step:
            break
        kept.append(line)
    if len(kept) != len(data.splitlines(keepends=True)):
        atomic_write_text(path, b"".join(kept).decode())


def _save(cfg: Config, trainer: Trainer, info: DistInfo, config_json: str) -> Path:
    """A checkpoint now (on every rank: see :func:`~.checkpoint.save_checkpoint`)."""
    return ckpt_io.save_checkpoint(cfg.run_dir, trainer, config_json, cfg.steps_per_epoch,
                                   keep=cfg.keep_checkpoints, info=info)


def _interrupted(cfg: Config, trainer: Trainer, info: DistInfo, config_json: str, signum: int, log) -> int:
    path = _save(cfg, trainer, info, config_json)
    log(f"stopped by {signal.Signals(signum).name} at step {trainer.step}; saved {path}. "
        f"Resume with the same flags plus --resume")
    barrier(info)
    return EXIT_CODES.get(signum, 143)
