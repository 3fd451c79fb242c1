"""A trained translator on its own (DESIGN §9 "Inference"): read one generator, ``--mode export``.

Translate and export need one generator, not the run: :func:`run_generator` builds just that network
and reads just its tensors (``gen_ab.*``, or ``gen_ab_ema.*`` where the run keeps an EMA, which is
the one to use) from the checkpoint's ``networks.safetensors`` through ``safe_open``, after checking
the file against its manifest in one streaming pass (nothing else of the run is read or built).

``--mode export`` writes that generator alone to ``--output``, atomically (a temporary file beside
it, fsynced, then renamed):

- ``--format safetensors``: its weights, with the architecture flags, direction and source in the
  file's metadata. ``translate --model FILE`` takes it in place of a run folder.
- ``--format onnx``: an ONNX model ``(frames, h, c) -> (translated, h_out, c_out)``, frames
  ``[B,T,C,H,W]`` float32 in [-1, 1] with H and W multiples of 4, ConvLSTM state ``[B,hid,H/4,W/4]``
  (zeros for a new video); batch, T, H and W are dynamic, so a caller streams a video chunk by chunk
  and passes the state on. The time loop is an ONNX ``Scan``. Needs the ``export`` extra.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .config import ARCH_FLAGS, LEGACY_ARCH, Config
from .errors import UserError
from .models.blocks import ConvLSTM
from .models.generator import Generator
from .train.checkpoint import check_config, check_streamed, resolve, state_dict_mismatch
from .utils.fs import atomic_path

# The flags a generator's weights depend on (besides the channel count, input_shape's C); the rest of
# ARCH_FLAGS shape the other networks or the training size only.
GENERATOR_FLAGS = ("ngf", "n_res_blocks", "norm", "residual", "temporal_memory", "residual_space")
KIND_KEY, KIND = "rl_v2v_gan", "generator"  # metadata marking a file as ours
VERSION = "1"
EXTENSIONS = {"safetensors": ".safetensors", "onnx": ".onnx"}
ONNX_INPUTS, ONNX_OUTPUTS = ("frames", "h", "c"), ("translated", "h_out", "c_out")
ONNX_OPSET = 18


def generator_name(direction: str) -> str:
    return "gen_ab" if direction == "a2b" else "gen_ba"


def build_generator(flags: dict[str, Any]) -> Generator:
    """The generator ``build_networks`` makes for these (config) flags, weights not initialised
    (on the meta device): every tensor is then assigned from a file."""
    with torch.device("meta"):
        return Generator(channels=int(flags["input_shape"][3]), ngf=flags["ngf"], n_res_blocks=flags["n_res_blocks"],
                         norm=flags["norm"], residual=flags["residual"], temporal=flags["temporal_memory"],
                         residual_space=flags["residual_space"])


def _assign(gen: Generator, tensors: dict[str, torch.Tensor], what: str) -> Generator:
    """Load ``tensors`` into ``gen`` (built on meta); mismatched keys or shapes are listed in the error."""
    problem = state_dict_mismatch(gen.state_dict(), tensors)
    if problem:
        raise UserError(f"{what} does not match the generator: {problem}")
    gen.load_state_dict(tensors, assign=True)
    return gen.eval().requires_grad_(False)


def run_generator(cfg: Config, log=print) -> tuple[Generator, Path, str]:
    """The generator of ``--direction`` from ``cfg``'s checkpoint (``--checkpoint``, default the
    latest), its EMA where the run keeps one: (generator on CPU in eval mode, checkpoint, key prefix)."""
    ckpt = resolve(cfg.run_dir, cfg.checkpoint, log)
    check_config(ckpt, cfg.to_dict())
    check_streamed(ckpt, "networks.safetensors")
    name = generator_name(cfg.direction)
    key = f"{name}_ema" if cfg.ema_decay > 0 else name  # what models.networks.translator picks
    path = ckpt / "networks.safetensors"
    try:
        with safe_open(path, framework="pt") as f:
            tensors = {k[len(key) + 1:]: f.get_tensor(k) for k in f.keys() if k.startswith(f"{key}.")}
    except SafetensorError as e:
        raise UserError(f"checkpoint {ckpt}: unreadable networks.safetensors ({e})") from None
    if not tensors:
        raise UserError(f"checkpoint {ckpt} holds no {key} weights")
    return _assign(build_generator(cfg.to_dict()), tensors, f"checkpoint {ckpt} ({key})"), ckpt, key


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a generator file written by ``--mode export --format safetensors``, its
    ``config`` parsed; one-line errors for a missing file and for a file that is not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--model {path}: no such file")
    if path.suffix.lower() == ".onnx":
        raise UserError(f"--model {path}: an ONNX model runs in onnxruntime; translate takes the generator file of "
                        f"--mode export --format safetensors")
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise UserError(f"--model {path}: not a safetensors file ({str(e).strip().splitlines()[0]})") from None
    if meta.get(KIND_KEY) != KIND:
        raise UserError(f"--model {path}: not a generator exported by rl-v2v-gan (no '{KIND_KEY}: {KIND}' metadata); "
                        f"write one with --mode export, or use a run's checkpoint with --checkpoint_name")
    if meta.get("version") != VERSION:
        raise UserError(f"--model {path}: generator file version {meta.get('version')!r}, this version reads "
                        f"{VERSION!r}")
    try:
        # A file exported before an architecture flag existed was made with its legacy value.
        meta["config"] = {**LEGACY_ARCH, **json.loads(meta["config"])}
    except (KeyError, ValueError, TypeError):
        raise UserError(f"--model {path}: its metadata holds no readable architecture ('config')") from None
    return meta


def model_flags(path: str | Path) -> dict[str, Any]:
    """Flag values a generator file was exported with (architecture, resize mode, direction): what
    translate adopts where they are not given."""
    meta = read_model_metadata(path)
    return {**meta["config"], "direction": meta["direction"]}


def model_generator(cfg: Config) -> tuple[Generator, dict[str, Any]]:
    """The generator of ``--model FILE`` (on CPU, eval mode) and the file's metadata; refuses a file
    of other networks than ``cfg``'s or of the other direction, naming the difference."""
    path = Path(cfg.model)
    meta = read_model_metadata(path)
    saved, now = meta["config"], cfg.to_dict()
    diffs = [f"--{k} {saved.get(k)} (model) vs {now[k]} (now)" for k in GENERATOR_FLAGS if saved.get(k) != now[k]]
    channels = int(saved.get("input_shape", [0, 0, 0, 0])[3])
    if channels != cfg.channels:
        diffs.append(f"{channels} channels (model) vs {cfg.channels} (now, --input_shape C)")
    if diffs:
        raise UserError(f"--model {path} holds other networks: {'; '.join(diffs)}")
    if meta.get("direction") != cfg.direction:
        raise UserError(f"--model {path} translates {meta.get('direction')}, not --direction {cfg.direction} "
                        f"(export that one with --mode export --direction {cfg.direction})")
    try:
        with safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise UserError(f"--model {path}: unreadable ({e})") from None
    return _assign(build_generator({**saved, "input_shape": [0, 0, 0, channels]}), tensors, f"--model {path}"), meta


# --- --mode export ---------------------------------------------------------------------------


def export_generator(cfg: Config, log=print) -> Path:
    """``--mode export``: the run's generator of ``--direction`` (its EMA where kept) to ``--output``
    as ``--format`` safetensors or onnx, written atomically."""
    out = Path(cfg.output)
    ext = EXTENSIONS[cfg.format]
    if out.suffix.lower() != ext:
        raise UserError(f"--output {out}: --format {cfg.format} writes a {ext} file")
    if out.is_dir():
        raise UserError(f"--output {out}: is a folder")
    gen, ckpt, key = run_generator(cfg, log)
    config = cfg.to_dict()
    meta = {KIND_KEY: KIND, "version": VERSION, "direction": cfg.direction, "weights": key,
            "checkpoint": str(ckpt), "config": json.dumps({k: config[k] for k in (*ARCH_FLAGS, "resize_mode")})}
    try:
        if cfg.format == "safetensors":
            with atomic_path(out) as tmp:
                save_file({k: v.contiguous() for k, v in gen.state_dict().items()}, tmp, metadata=meta)
        else:
            write_onnx(gen, out, meta, cfg.frame_size)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    log(f"exported {key} of {ckpt} ({cfg.direction}) -> {out} ({cfg.format}, {out.stat().st_size / 2**20:.1f} MiB)")
    return out


class ScanConvLSTM(nn.Module):
    """A :class:`ConvLSTM`'s computation with its time loop as one ``scan`` (exported as an ONNX
    ``Scan``, so the number of frames stays dynamic); shares the original's parameters."""

    def __init__(self, lstm: ConvLSTM):
        super().__init__()
        self.hidden, self.conv_x, self.cell = lstm.hidden, lstm.conv_x, lstm.cell

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        from torch._higher_order_ops.scan import scan

        b, t, _, h, w = x.shape
        gates = self.conv_x(x.flatten(0, 1)).unflatten(0, (b, t)).transpose(0, 1)  # [T,B,4hid,h,w]
        if state is None:
            state = (x.new_zeros(b, self.hidden, h, w), x.new_zeros(b, self.hidden, h, w))

        def step(carry, gate):
            h_t, c_t = self.cell(gate, carry)
            return (h_t, c_t), h_t.clone()  # a scan's output may not alias its carry

        state, hidden = scan(step, tuple(state), gates)
        return hidden.transpose(0, 1), state  # [B,T,hid,h,w], ((h, c) each [B,hid,h,w])


class StreamingGenerator(nn.Module):
    """``(frames, h, c) -> (translated, h_out, c_out)``: :meth:`Generator.run` with its ConvLSTM state
    as plain tensors in and out (what ONNX exports), the time loop as a scan."""

    def __init__(self, gen: Generator):
        super().__init__()
        self.gen = copy.deepcopy(gen)
        self.gen.lstm = ScanConvLSTM(self.gen.lstm)

    def forward(self, frames: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        out, (h_out, c_out) = self.gen.run(frames, (h, c))
        return out, h_out, c_out


def write_onnx(gen: Generator, out: Path, meta: dict[str, str], frame_size: tuple[int, int]) -> None:
    """Export ``gen`` as an ONNX model (see the module doc) with ``meta`` in its metadata, atomically."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx.export builds the graph with it)
    except ImportError as e:
        raise UserError(f"--format onnx needs the export extra ({e.name} is missing): "
                        f"pip install 'rl-v2v-gan[export]'") from None
    from torch.export import Dim

    h, w = frame_size
    hidden = gen.lstm.hidden
    # Examples of 2 frames of batch 2: a size of 1 would be fixed into the graph.
    frames = torch.zeros(2, 2, gen.channels, h, w)
    state = (torch.zeros(2, hidden, h // 4, w // 4), torch.zeros(2, hidden, h // 4, w // 4))
    batch, time, h4, w4 = Dim("batch"), Dim("time"), Dim("height_4"), Dim("width_4")
    dynamic = {"frames": {0: batch, 1: time, 3: 4 * h4, 4: 4 * w4}, "h": {0: batch, 2: h4, 3: w4},
               "c": {0: batch, 2: h4, 3: w4}}
    module = StreamingGenerator(gen).eval().requires_grad_(False)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (frames, *state), dynamo=True, input_names=list(ONNX_INPUTS),
                                    output_names=list(ONNX_OUTPUTS), dynamic_shapes=dynamic, opset_version=ONNX_OPSET,
                                    external_data=False, verbose=False)
    model = program.model_proto
    model.doc_string = (f"rl-v2v-gan generator ({meta['direction']}): frames [B,T,C,H,W] float32 in [-1, 1], H and W "
                        f"multiples of 4; h, c [B,{hidden},H/4,W/4] float32, zeros for a new video -> translated "
                        f"[B,T,C,H,W], h_out, c_out (pass them as h, c with the next chunk)")
    _drop_unused_initializers(model.graph)
    for k, v in {**meta, "hidden": str(hidden)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    with atomic_path(out) as tmp:
        onnx.save_model(model, str(tmp))


def _names_used(graph) -> set[str]:
    """Every value name a graph's nodes (and their subgraphs, which may read outer names) or outputs read."""
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                used |= _names_used(sub)
    return used


def _drop_unused_initializers(graph) -> None:
    """Remove initializers nothing reads (the exporter leaves a constant or two; onnxruntime warns)."""
    used = _names_used(graph)
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
