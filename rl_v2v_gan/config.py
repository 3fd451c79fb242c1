"""The one typed configuration: every flag, its default and its doc, and validation in one place.

Each field of :class:`Config` is a command-line flag of the same name (``--lambda_rr`` ...). The
seed's flags keep their names and defaults. Values come from, in increasing priority: the field
defaults, a preset or YAML file given with ``--config``, and the command line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

MODES = ("prepare_data", "train", "eval", "translate", "report", "export")
METHODS = ("rl_v2v_gan", "recycle_gan", "cycle_gan")
DATASETS = ("synthetic", "folder", "city", "flower", "artificial")
PRESETS_DIR = Path(__file__).parent / "presets"
# Flags that shape the networks: a checkpoint only loads into networks built with the same values.
ARCH_FLAGS = ("method", "input_shape", "context_frames", "ngf", "ndf", "n_res_blocks", "norm", "residual",
              "disc_patch", "spectral_norm", "ema_decay", "temporal_memory", "residual_space")
# Architecture flags added after runs were already being trained, with the value such a run had:
# its config.json (or an exported generator's metadata) lacks the key, and the new default (an EMA
# copy, say) would not match its weights.
LEGACY_ARCH = {"disc_patch": False, "spectral_norm": False, "ema_decay": 0.0, "temporal_memory": True,
               "residual_space": "tanh"}
# Flags that choose the data a run was trained on: eval and translate default to them too.
DATA_FLAGS = ("dataset", "data_root", "resize_mode", "frame_stride", "synthetic_train_clips",
              "synthetic_test_clips", "seed")


def _f(default: Any, doc: str, **meta: Any) -> Any:
    """A config field with its one-line doc (shown by ``--help``) and optional argparse metadata."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc, **meta})
    return field(default=default, metadata={"doc": doc, **meta})


@dataclass
class Config:
    # --- what to do -------------------------------------------------------------------------
    mode: str = _f("train", "what to do", choices=MODES)
    config: str | None = _f(None, "preset name (see rl_v2v_gan/presets) or YAML file of flag values")
    method: str = _f("rl_v2v_gan", "training method: full RL-V2V-GAN or an ablation", choices=METHODS)
    seed: int = _f(0, "random seed (data sampling, initialisation, exploration)")
    device: str = _f("auto", "compute device: auto picks cuda when available", choices=("auto", "cpu", "cuda"))

    # --- data --------------------------------------------------------------------------------
    dataset: str = _f("synthetic", "dataset: built-in synthetic day/night, a folder, or a seed preset folder",
                      choices=DATASETS)
    data_root: str | None = _f(None, "dataset folder (default data/<dataset>)")
    input_shape: tuple = _f((16, 64, 64, 3), "clip length and frame size: T H W C", nargs=4, type=int,
                            metavar=("T", "H", "W", "C"))
    context_frames: int = _f(2, "p: past frames a predictor sees (the RL state)")
    synthetic_train_clips: int = _f(256, "synthetic dataset: training clips per domain")
    synthetic_test_clips: int = _f(32, "synthetic dataset: test clips per domain (with ground truth)")
    resize_mode: str = _f("resize", "fit frames to H x W: plain resize, or short-side resize then centre crop",
                          choices=("resize", "crop"))
    frame_stride: int = _f(1, "keep every k-th frame when preparing videos")
    max_videos_a: int | None = _f(None, "use at most this many training videos of domain A (few-shot)")
    max_videos_b: int | None = _f(None, "use at most this many training videos of domain B (few-shot)")
    hflip: bool = _f(True, "augment training clips: mirror each clip left-right (all its frames alike) with "
                           "probability 1/2, as CycleGAN does (chosen on the validation curves, README "
                           "\"Looking for the stopping signal\"); --no-hflip: the clips as they are")
    crop_scale: float = _f(1.0, "augment training clips: zoom each clip (all its frames alike) by a random factor "
                                "in [1, S] and cut an H x W window at a random place, CycleGAN's resize-and-crop; "
                                "1: off")
    skip_bad_videos: bool = _f(False, "skip unreadable or too-short videos with a warning instead of stopping")
    num_workers: int = _f(0, "DataLoader worker processes")

    # --- networks ------------------------------------------------------------------------------
    ngf: int = _f(64, "generator / predictor base channels")
    ndf: int = _f(64, "discriminator / Q-network base channels")
    n_res_blocks: int = _f(2, "residual blocks at the generator bottleneck")
    norm: str = _f("instance", "normalisation layer", choices=("instance", "batch"))
    temporal_memory: bool = _f(True, "generators carry their ConvLSTM state from frame to frame; false: the "
                               "per-frame ablation (state reset every frame)")
    residual: bool = _f(True, "start from the identity: generators and predictors output a learned residual on "
                              "their input frame / last context frame (--no-residual: plain tanh output)")
    residual_space: str = _f("tanh", "where the residual is added: tanh = tanh(atanh(frame) + residual), output "
                             "bounded but a brightened frame's noise amplified; linear = frame + residual, the "
                             "input at gain 1; split = tanh on the frame's 5x5 blur, its fine detail and noise "
                             "added back at gain 1; split_capped = the same with the detail at tanh's gain, "
                             "capped at 1", choices=("tanh", "linear", "split", "split_capped"))

    # --- optimisation --------------------------------------------------------------------------
    learning_rate: float = _f(1e-4, "Adam learning rate of every network (the discriminators': see "
                              "--learning_rate_d)")
    learning_rate_d: float | None = _f(None, "Adam learning rate of the discriminators (TTUR); default "
                                       "--learning_rate")
    lr_decay: float = _f(0.0, "decay every learning rate linearly to 0 over this last fraction of the run "
                         "(CycleGAN: 0.5); 0 keeps it constant")
    ema_decay: float = _f(0.999, "keep an exponential moving average of the generators (decay per step, warmed "
                          "up as min(decay, (1+t)/(10+t))) and evaluate and translate with it; 0: none")
    pool_size: int = _f(0, "history pool of generated clips shown to the discriminators (CycleGAN: 50); 0: none")
    r1_gamma: float = _f(1.0, "weight of the R1 penalty gamma/2 |grad D(real)|^2 on the discriminators; 0: none")
    r1_every: int = _f(1, "lazy R1 (StyleGAN2): take the penalty on every N-th discriminator step only, weighted "
                          "N times, which saves its double backward on the other steps; 1: every step")
    spectral_norm: bool = _f(False, "spectral normalisation on every discriminator layer")
    disc_patch: bool = _f(False, "PatchGAN frame discriminator: a map of local logits instead of one per frame")
    diff_augment: str = _f("translation,cutout", "DiffAugment: differentiable transforms applied alike to real and generated "
                           "discriminator inputs, comma-separated (translation, cutout); empty: none")
    batch_size: int = _f(4, "clips per step (per rank under torchrun)")
    epochs: int = _f(10, "training epochs")
    steps_per_epoch: int = _f(100, "training steps per epoch")
    gan_mode: str = _f("vanilla", "adversarial loss: non-saturating BCE on logits, or least squares",
                       choices=("vanilla", "lsgan"))
    lambda_v: float = _f(0.1, "weight of the video adversarial loss L_v")
    lambda_rr: float = _f(10.0, "weight of the recurrent loss L_rr")
    lambda_rc: float = _f(10.0, "weight of the recycle loss L_rc")
    lambda_cyc: float | None = _f(None, "weight of the cycle loss (default: 3 for the video methods, chosen on the "
                                        "validation curves; 10 for cycle_gan, as published)")
    cycle_detach: bool = _f(False, "the cycle loss trains only the generator that maps back: gen_yx(gen_xy(x)) "
                                   "with gen_xy(x) detached, as back-translation does, so gen_xy is not asked to "
                                   "hide in its output what it should remove (e.g. noise)")
    lambda_pg: float = _f(0.1, "weight of the DDPG actor loss L_actor (scale-free: divided by its own mean |Q|)")
    lambda_idt: float = _f(0.0, "weight of the identity loss |gen_ab(b) - b| + |gen_ba(a) - a| (CycleGAN)")
    lambda_tc: float | None = _f(None, "weight of the temporal-consistency loss: consecutive translated frames differ "
                                       "only where the input's do (flow-free, Lai et al. 2018's visibility mask; "
                                       "default: 10 for the video methods, 0 for the per-frame cycle_gan)")
    tc_relative: bool = _f(False, "the temporal-consistency loss lets a translation flicker, where its input holds "
                                  "still, as much as real clips of its target domain do (e.g. their sensor noise), "
                                  "and penalises only the excess")

    # --- reinforcement learning ----------------------------------------------------------------
    gamma: float = _f(0.99, "discount factor of the TD target")
    tau: float = _f(0.001, "soft-update rate of the target networks (after n steps the initial networks weigh "
                    "(1-tau)^n: 0.55 after 600 steps at this seed default)")
    sigma1: float = _f(0.5, "probability that a minibatch element comes from the replay buffer")
    sigma2: float = _f(0.5, "probability of a random (exploring) choice between the two candidate actions")
    rl_episodes: int = _f(1, "episodes rolled out per domain and step: the first clips of the batch (at most all)")
    rl_batch: int = _f(8, "critic minibatch per domain: transitions drawn from the fresh rollouts and the buffer")
    actor_batch: int = _f(4, "actor states per domain: the first of the critic's minibatch states")
    actor_start_step: int = _f(50, "steps the actor term waits while the critic warms up on rollouts")
    buffer_size: int = _f(10000, "replay buffer capacity in transitions (split evenly between the domains)")
    replay_device: str = _f("auto", "where the replay buffer lives: auto = on the GPU when it takes at most a quarter of "
                            "its free memory, else pinned host memory (only minibatches are copied)",
                            choices=("auto", "cpu", "cuda"))

    # --- checkpoints, evaluation, logging ------------------------------------------------------
    checkpoint_dir: str = _f("checkpoints", "folder holding the runs")
    checkpoint_name: str = _f("rl_v2v_gan", "run name: the run folder is checkpoint_dir/checkpoint_name")
    checkpoint: str | None = _f(None, "checkpoint to load (epoch_NNNN or a path); default: the run's latest")
    resume: bool = _f(False, "continue training from the run's latest checkpoint")
    eval_batches: int = _f(5, "test batches evaluated after each epoch and in eval mode")
    all_checkpoints: bool = _f(False, "eval mode: evaluate every checkpoint of the run into one table")
    fid_weights: str | None = _f(None, "Inception weights file for FID (else RLV2V_FID_WEIGHTS or the torch hub cache)")
    log_every: int = _f(10, "steps between read-backs of the losses from the device (one transfer; "
                              "log.jsonl still gets every step) and TensorBoard scalar writes")
    keep_checkpoints: int | None = _f(None, "keep only the newest N checkpoints of the run (default: all); only the "
                                      "newest holds the replay buffer")
    save_every_steps: int | None = _f(None, "also checkpoint every N steps within an epoch (a killed run loses at most "
                                      "N steps); default: at epoch ends only")
    ddp_timeout_s: int = _f(7200, "torchrun: seconds a rank waits for the others (e.g. while rank 0 evaluates and "
                            "saves) before the run fails")
    max_nonfinite_steps: int = _f(5, "stop after this many consecutive steps with a non-finite loss or gradient "
                                   "(checked when the logs are read, every --log_every steps)")

    # --- speed ---------------------------------------------------------------------------------
    amp: str = _f("none", "mixed precision: auto = bf16 on CUDA, none on CPU; bf16 also on CPU (oneDNN, fast "
                  "with AVX-512 BF16 / AMX); fp16 on CUDA only",
                  choices=("none", "auto", "bf16", "fp16"))
    compile: bool = _f(False, "torch.compile the networks (made for CUDA; works on CPU too)")
    channels_last: bool = _f(False, "keep the 2-D networks' weights, hence their activations, in channels_last "
                             "layout (oneDNN and tensor cores run most of these convolutions faster so)")
    activation_checkpointing: str = _f("auto", "recompute the generators' and predictors' activations in the "
                                       "backward pass instead of storing them: on = all of them (least memory, "
                                       "about a third more generator compute), selective = all but the outputs of "
                                       "the dearest convolutions (more memory than on, less recompute); auto = "
                                       "selective or on where a CUDA device's memory would be short",
                                       choices=("auto", "on", "selective", "off"))

    # --- translate -----------------------------------------------------------------------------
    input: str | None = _f(None, "translate: input video file or frames folder")
    output: str | None = _f(None, "translate: output mp4 path; export: the file to write")
    direction: str = _f("a2b", "translate: a2b uses gen_ab, b2a uses gen_ba", choices=("a2b", "b2a"))
    side_by_side: bool = _f(False, "translate: write input and output side by side")
    output_size: str = _f("model", "translate: write at the model's H x W or back at the source size "
                          "(with --resize_mode crop: the crop, unstretched), or run the model at the source "
                          "size (native: no resize)", choices=("model", "source", "native"))
    # --- translate natively, export --------------------------------------------------------
    tile: int = _f(0, "translate --output_size native: run the full- and half-resolution layers on tiles of this "
                   "many pixels a side (a multiple of 4) to bound the memory of large frames; same result, 2.5-3.5x the "
                   "time; 0: whole frames")
    model: str | None = _f(None, "translate: a generator file written by --mode export --format safetensors, "
                           "used instead of the run's checkpoint")
    format: str = _f("safetensors", "export: the generator's weights with its architecture, or an ONNX model "
                     "with the ConvLSTM state as inputs and outputs; written to --output",
                     choices=("safetensors", "onnx"))

    # --- derived views -------------------------------------------------------------------------
    @property
    def clip_length(self) -> int:
        return int(self.input_shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.input_shape[1]), int(self.input_shape[2])

    @property
    def channels(self) -> int:
        return int(self.input_shape[3])

    @property
    def cycle_weight(self) -> float:
        """``--lambda_cyc`` resolved: 10 for the CycleGAN baseline, as published; 3 for rl_v2v_gan and
        recycle_gan, chosen on the validation curves (README "Training that converges"), where DESIGN §4 and the
        papers have 0: without it the sharpen change's test curve falls with training."""
        if self.lambda_cyc is not None:
            return self.lambda_cyc
        return 10.0 if self.method == "cycle_gan" else 3.0

    @property
    def tc_weight(self) -> float:
        """``--lambda_tc`` resolved: 10 for rl_v2v_gan and recycle_gan (chosen on the validation curves,
        README "Training that converges"), 0 for the per-frame CycleGAN baseline, which stays as published."""
        if self.lambda_tc is not None:
            return self.lambda_tc
        return 0.0 if self.method == "cycle_gan" else 10.0

    @property
    def lr_d(self) -> float:
        """``--learning_rate_d`` resolved: the discriminators' learning rate."""
        return self.learning_rate if self.learning_rate_d is None else self.learning_rate_d

    @property
    def resolved_data_root(self) -> Path:
        return Path(self.data_root) if self.data_root else Path("data") / self.dataset

    @property
    def run_dir(self) -> Path:
        return Path(self.checkpoint_dir) / self.checkpoint_name

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    # --- validation: the one place ----------------------------------------------------------
    def validate(self) -> "Config":
        """Check every value; raise :class:`ConfigError` naming the flag. Returns self."""

        def bad(flag: str, why: str, value: Any) -> None:
            raise ConfigError(f"--{flag} {why}, got {value!r}")

        for name, f in _FIELDS.items():
            choices = f.metadata.get("choices")
            value = getattr(self, name)
            if choices and value not in choices:
                bad(name, f"must be one of {', '.join(choices)}", value)
            if isinstance(value, float) and not math.isfinite(value):
                bad(name, "must be a finite number", value)
        if len(self.input_shape) != 4:
            bad("input_shape", "needs four values T H W C", self.input_shape)
        self.input_shape = tuple(int(v) for v in self.input_shape)
        t, h, w, c = self.input_shape
        if min(t, h, w, c) <= 0:
            bad("input_shape", "needs positive sizes", list(self.input_shape))
        if h % 4 or w % 4:
            bad("input_shape", "needs H and W divisible by 4 (the generator downsamples x4)", list(self.input_shape))
        if min(h, w) < 8:
            bad("input_shape", "needs H and W of at least 8", list(self.input_shape))
        if c not in (1, 3):
            bad("input_shape", "needs C = 1 or 3", list(self.input_shape))
        if self.context_frames <= 0:
            bad("context_frames", "must be positive", self.context_frames)
        if t <= self.context_frames:
            bad("input_shape", f"needs T greater than --context_frames ({self.context_frames})", list(self.input_shape))
        for name in ("batch_size", "epochs", "steps_per_epoch", "eval_batches", "ngf", "ndf", "buffer_size",
                     "synthetic_train_clips", "synthetic_test_clips", "frame_stride", "log_every",
                     "max_nonfinite_steps", "rl_batch", "actor_batch", "rl_episodes"):
            if getattr(self, name) <= 0:
                bad(name, "must be positive", getattr(self, name))
        for name in ("n_res_blocks", "num_workers", "actor_start_step"):
            if getattr(self, name) < 0:
                bad(name, "must be non-negative", getattr(self, name))
        for name in ("max_videos_a", "max_videos_b", "keep_checkpoints"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                bad(name, "must be positive", getattr(self, name))
        if self.save_every_steps is not None and self.save_every_steps <= 0:
            bad("save_every_steps", "must be positive", self.save_every_steps)
        if self.ddp_timeout_s <= 0:
            bad("ddp_timeout_s", "must be positive", self.ddp_timeout_s)
        if not self.learning_rate > 0:
            bad("learning_rate", "must be positive", self.learning_rate)
        if self.learning_rate_d is not None and not self.learning_rate_d > 0:
            bad("learning_rate_d", "must be positive", self.learning_rate_d)
        if not 0.0 <= self.lr_decay <= 1.0:
            bad("lr_decay", "must be in [0, 1]", self.lr_decay)
        if not 0.0 <= self.ema_decay < 1.0:
            bad("ema_decay", "must be in [0, 1)", self.ema_decay)
        if self.activation_checkpointing in ("on", "selective") and self.norm == "batch":
            bad("activation_checkpointing", "needs --norm instance (a recomputed batch norm would update its running "
                "statistics twice)", self.activation_checkpointing)
        if not self.crop_scale >= 1.0:
            bad("crop_scale", "must be at least 1", self.crop_scale)
        if self.pool_size < 0:
            bad("pool_size", "must be non-negative", self.pool_size)
        if not self.r1_gamma >= 0:
            bad("r1_gamma", "must be non-negative", self.r1_gamma)
        if self.r1_every < 1:
            bad("r1_every", "must be at least 1", self.r1_every)
        from .losses.augment import parse_policy  # here: the config module stays free of torch

        try:
            parse_policy(self.diff_augment)
        except ValueError as e:
            bad("diff_augment", str(e), self.diff_augment)
        for name in ("sigma1", "sigma2"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "must be in [0, 1]", getattr(self, name))
        if not 0.0 < self.tau <= 1.0:
            bad("tau", "must be in (0, 1]", self.tau)
        if not 0.0 <= self.gamma < 1.0:
            bad("gamma", "must be in [0, 1)", self.gamma)
        for name in ("lambda_v", "lambda_rr", "lambda_rc", "lambda_pg", "lambda_idt"):
            if not getattr(self, name) >= 0:
                bad(name, "must be non-negative", getattr(self, name))
        for name in ("lambda_cyc", "lambda_tc"):  # None: the method's default
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                bad(name, "must be non-negative", getattr(self, name))
        if self.tc_relative and self.tc_weight == 0:
            bad("tc_relative", "needs a temporal-consistency loss: --lambda_tc > 0", self.tc_relative)
        if self.cycle_detach and self.cycle_weight == 0:
            bad("cycle_detach", "needs a cycle loss: --lambda_cyc > 0", self.cycle_detach)
        if self.mode == "translate":
            if not self.input:
                raise ConfigError("--mode translate needs --input VIDEO_OR_FOLDER")
            if not self.output:
                raise ConfigError("--mode translate needs --output OUT.mp4")
        if self.mode == "export" and not self.output:
            raise ConfigError(f"--mode export needs --output FILE.{self.format}")
        if self.tile < 0 or self.tile % 4:
            bad("tile", "must be 0 or a positive multiple of 4", self.tile)
        if self.tile and self.output_size != "native":
            bad("tile", "needs --output_size native", self.tile)
        return self


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def field_docs() -> dict[str, dataclasses.Field]:
    """Every config field by name (the CLI builds its flags from these)."""
    return dict(_FIELDS)


def load_preset(name_or_path: str) -> dict[str, Any]:
    """Flag values from a named preset (``rl_v2v_gan/presets/<name>.yaml``) or a YAML file.

    Unknown keys are errors, so a typo in a preset never silently does nothing.
    """
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = PRESETS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise ConfigError(f"--config {name_or_path!r}: no such file or preset (presets: {presets})")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flag names to values")
    unknown = sorted(set(values) - set(_FIELDS) | ({"config"} & set(values)))
    if unknown:
        raise ConfigError(f"--config {path}: unknown keys {', '.join(unknown)}")
    for key, value in values.items():  # YAML reads 1e-4 (no dot) as a string
        if isinstance(value, str) and "float" in str(_FIELDS[key].type):
            try:
                values[key] = float(value)
            except ValueError:
                raise ConfigError(f"--config {path}: {key} must be a number, got {value!r}") from None
    return values


def make_config(**values: Any) -> Config:
    """Build and validate a Config from keyword values (a preset via ``config=`` is applied underneath)."""
    preset = load_preset(values["config"]) if values.get("config") else {}
    merged = {**preset, **values}
    if "input_shape" in merged:
        merged["input_shape"] = tuple(merged["input_shape"])
    try:
        return Config(**merged).validate()
    except TypeError as e:
        raise ConfigError(f"invalid configuration: {e}") from None
