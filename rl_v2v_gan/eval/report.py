"""``report.html``: one self-contained page per run, rewritten after each epoch's evaluation.

The page holds the evaluation metrics over epochs and the loss curves of ``log.jsonl`` as inline
SVG charts, each epoch's sample videos as players that start and loop together (the PNG grid as
fallback), the ``metrics.json`` table of ``--mode eval`` and the run's config. It links only to
files of the run folder by relative paths, so the folder can be copied, zipped or served as is.

The per-epoch metrics of training are kept in ``epoch_metrics.jsonl`` (one line per evaluated
epoch; a repeated epoch, after a resume, replaces the earlier line when read).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from html import escape
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from ..errors import UserError
from ..utils.fs import atomic_write_text
from .svg import chart_grid, line_chart

REPORT = "report.html"
EPOCH_METRICS = "epoch_metrics.jsonl"
DIRECTIONS = ("a2b", "b2a")
PLOT_METRICS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "temporal_error": "temporal error",
                "flicker_ratio": "flicker ratio", "cycle_psnr": "cycle PSNR (dB)", "cycle_ssim": "cycle SSIM",
                "video_psnr": "video PSNR (dB), translate path", "video_ssim": "video SSIM, translate path",
                "swd": "SWD x 10^3 (no ground truth)", "fid": "FID", "kid": "KID"}
TABLE_KEYS = ("psnr", "ssim", "temporal_error", "cycle_psnr", "cycle_ssim", "flicker_ratio", "video_psnr",
              "video_ssim", "swd", "fid", "kid")
"""The metric columns of this page's table and of evaluator.format_table (kept here: this page needs no torch)."""
ROW_NAMES = {4: ("input", "translation", "ground truth", "cycle"), 3: ("input", "translation", "cycle")}
MAX_LOSS_POINTS = 400
OPEN_EPOCHS = 6  # sample players of the newest epochs load at once; older ones when unfolded

_SAMPLE = re.compile(r"^epoch_(\d+)_(a2b|b2a)\.(mp4|png)$")
_CHECKPOINT = re.compile(r"^(epoch|step)_(\d+)$")


# --- data of a run -------------------------------------------------------------------------------

def record_epoch(run_dir: Path, epoch: int, step: int, metrics: dict[str, Any]) -> None:
    """Append one epoch's evaluation ``{direction: {metric: value}}`` to ``epoch_metrics.jsonl``."""
    line = json.dumps({"epoch": epoch, "step": step, "metrics": metrics})
    with open(Path(run_dir) / EPOCH_METRICS, "a") as f:
        f.write(line + "\n")


def _jsonl(path: Path):
    """The parsed lines of a JSON-lines file; a line cut by a kill, or any unreadable one, is skipped."""
    if not path.is_file():
        return
    with open(path) as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def checkpoint_epoch(name: str, steps_per_epoch: int | None) -> float | None:
    """The epoch a checkpoint name stands for: ``epoch_0003`` is 3, ``step_00000150`` is 150/spe."""
    m = _CHECKPOINT.match(name)
    if not m:
        return None
    if m.group(1) == "epoch":
        return int(m.group(2))
    return int(m.group(2)) / steps_per_epoch if steps_per_epoch else None


def epoch_history(run_dir: Path, config: dict[str, Any] | None = None) -> dict[float, dict[str, Any]]:
    """``{epoch: {direction: metrics}}``: training's per-epoch evaluation, else ``metrics.json``'s
    checkpoints (a run trained before ``epoch_metrics.jsonl`` existed, evaluated with --all_checkpoints)."""
    history = {rec["epoch"]: rec["metrics"] for rec in _jsonl(run_dir / EPOCH_METRICS)
               if isinstance(rec, dict) and "epoch" in rec and isinstance(rec.get("metrics"), dict)}
    spe = (config or {}).get("steps_per_epoch")
    if not history and spe:
        history = _tensorboard_history(run_dir, spe)
    if history:
        return dict(sorted(history.items()))
    for result in (_load_json(run_dir / "metrics.json") or {}).get("results", []):
        epoch = checkpoint_epoch(result.get("checkpoint", ""), spe)
        if epoch is not None:
            history[epoch] = result.get("metrics", {})
    return dict(sorted(history.items()))


def _tensorboard_history(run_dir: Path, steps_per_epoch: int) -> dict[float, dict[str, Any]]:
    """The ``eval/<direction>/<metric>`` scalars of the run's TensorBoard logs, by epoch (older runs)."""
    if not (run_dir / "tensorboard").is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 1})
    events.Reload()
    history: dict[float, dict[str, Any]] = {}
    for tag in events.Tags().get("scalars", []):
        parts = tag.split("/")
        if len(parts) == 3 and parts[0] == "eval" and parts[1] in DIRECTIONS:
            for event in events.Scalars(tag):
                epoch = event.step / steps_per_epoch
                history.setdefault(int(epoch) if epoch.is_integer() else epoch, {}) \
                    .setdefault(parts[1], {})[parts[2]] = event.value
    return history


def loss_curves(run_dir: Path, max_points: int = MAX_LOSS_POINTS) -> dict[str, list[tuple[float, float | None]]]:
    """``{key: [(step, value), ...]}`` of ``log.jsonl``, averaged into at most ``max_points`` bins
    (each at its last step).

    A step logged twice (steps repeated after a resume from an earlier checkpoint) keeps its last value.
    """
    by_step: dict[int, dict[str, Any]] = {}
    for rec in _jsonl(run_dir / "log.jsonl"):
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            by_step[rec["step"]] = rec
    steps = sorted(by_step)
    keys = list(dict.fromkeys(k for s in steps for k in by_step[s] if k != "step"))
    bins = max(1, math.ceil(len(steps) / max_points))
    curves = {}
    for key in keys:
        points = []
        for i in range(0, len(steps), bins):
            chunk = steps[i:i + bins]
            values = [by_step[s].get(key) for s in chunk]
            values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
            points.append((chunk[-1], sum(values) / len(values) if values else None))
        curves[key] = points
    return curves


def loss_groups(curves: dict[str, Any]) -> dict[str, list[str]]:
    """Keys drawn in one chart: ``loss/G/*`` together, ``rl/q_mean_a`` with ``rl/q_mean_b``, ..."""
    groups: dict[str, list[str]] = {}
    for key in curves:
        parts = key.split("/")
        group = "/".join(parts[:2]) if parts[0] == "loss" and len(parts) > 2 else re.sub(r"_[ab]$", "", key)
        groups.setdefault(group, []).append(key)
    return dict(sorted(groups.items(), key=lambda g: not g[0].startswith("loss/")))  # losses first


def metric_charts(history: dict[float, dict[str, Any]], x_label: str = "epoch") -> list[str]:
    """One chart per metric with a value somewhere in ``history``, a line per direction."""
    charts = []
    directions = [d for d in DIRECTIONS if any(d in m for m in history.values())]
    integer = all(float(e).is_integer() for e in history)
    for key, title in PLOT_METRICS.items():
        series = {d: [(float(e), m.get(d, {}).get(key)) for e, m in history.items()] for d in directions}
        if any(y is not None for s in series.values() for _, y in s):
            charts.append(line_chart(series, title, x_label, x_integer=integer))
    return charts


def metrics_svg(results: list[dict[str, Any]], steps_per_epoch: int | None) -> str | None:
    """``metrics.svg`` of ``--mode eval --all_checkpoints``: each metric against the epoch, per direction."""
    history = {}
    for result in results:
        epoch = checkpoint_epoch(result["checkpoint"], steps_per_epoch)
        if epoch is not None:
            history[epoch] = result["metrics"]
    charts = metric_charts(dict(sorted(history.items())))
    return chart_grid(charts) if charts else None


# --- the page ------------------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return format(value, ".4f")
    return str(value)


def _metrics_table(rows: dict[str, dict[str, Any]]) -> str:
    """The metrics of each (label, direction); an FID from too few frames is marked * with its
    warning as the cell's tooltip and in a note under the table."""
    head = "".join(f"<th>{escape(k)}</th>" for k in TABLE_KEYS)
    body, notes = [], []
    for label, report in rows.items():
        for direction, m in report.items():
            if not isinstance(m, dict):
                continue
            info = m.get("fid_info") if isinstance(m.get("fid_info"), dict) else {}
            warning = info.get("warning") if m.get("fid") is not None else None
            cells = []
            for k in TABLE_KEYS:
                reason = info.get("reason") if k in ("fid", "kid") and m.get(k) is None else None
                tip = reason or (warning if k == "fid" else None)
                title = f' title="{escape(tip)}"' if tip else ""
                mark = "*" if k == "fid" and warning else ""
                cells.append(f"<td{title}>{escape(_fmt(m.get(k)))}{mark}</td>")
            frames = f"{info['n_real']}/{info['n_fake']}" if info.get("n_real") or info.get("n_fake") else None
            body.append(f"<tr><th>{escape(label)}</th><td>{escape(direction)}</td>{''.join(cells)}"
                        f"<td>{escape(_fmt(m.get('n_clips')))}</td><td>{escape(_fmt(frames))}</td></tr>")
            if warning:
                notes.append(f"<li>{escape(label)} {escape(direction)}: {escape(warning)}</li>")
    note = f'<ul class="fid-notes">{"".join(notes)}</ul>' if notes else ""
    return (f'<table class="metrics"><thead><tr><th></th><th>direction</th>{head}<th>clips</th>'
            f'<th title="real/translated frames of FID and KID">fid frames</th></tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
            + (f"<p>* FID from too few frames:</p>{note}" if notes else ""))


def _config_table(config: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(json.dumps(v))}</td></tr>" for k, v in config.items())
    return f'<table class="config"><tbody>{rows}</tbody></table>'


def _samples(run_dir: Path) -> dict[int, dict[str, dict[str, str]]]:
    """``{epoch: {direction: {"mp4": relpath, "png": relpath}}}`` of the files in ``samples/``."""
    found: dict[int, dict[str, dict[str, str]]] = {}
    folder = run_dir / "samples"
    if folder.is_dir():
        for path in folder.iterdir():
            m = _SAMPLE.match(path.name)
            if m:
                found.setdefault(int(m.group(1)), {}).setdefault(m.group(2), {})[m.group(3)] = f"samples/{path.name}"
    return found


def _panels(run_dir: Path, mp4: str, frame_width: int) -> int:
    """How many clips side by side a sample video holds: 4 with ground truth, 3 without."""
    from ..data.video_io import probe  # PyAV: imported when a page has videos

    try:
        return max(1, round(probe(run_dir / mp4).width / frame_width))
    except UserError:
        return 4


def _sample_block(run_dir: Path, direction: str, files: dict[str, str], frame: tuple[int, int],
                  eager: bool) -> str:
    h, w = frame
    scale = max(1, 128 // w)
    title = {"a2b": "a &rarr; b (gen_ab on testA)", "b2a": "b &rarr; a (gen_ba on testB)"}[direction]
    png = files.get("png")
    fallback = f'<img src="{quote(png)}" alt="{direction} samples">' if png else "no sample files"
    if "mp4" not in files:
        return f'<div class="sample"><h4>{title}</h4>{fallback}</div>'
    panels = _panels(run_dir, files["mp4"], w)
    names = ROW_NAMES.get(panels, tuple(f"clip {i + 1}" for i in range(panels)))
    labels = "".join(f'<span style="width:{w * scale}px">{escape(n)}</span>' for n in names)
    attrs = 'autoplay preload="auto"' if eager else 'preload="none"'
    video = (f'<video src="{quote(files["mp4"])}" width="{panels * w * scale}" height="{h * scale}" muted loop '
             f'playsinline {attrs}>{fallback}</video>')
    grid = (f'<details class="grid"><summary>PNG grid (every clip, frame by frame)</summary>{fallback}</details>'
            if png else "")
    return f'<div class="sample"><h4>{title}</h4><div class="labels">{labels}</div>{video}{grid}</div>'


def _sample_section(run_dir: Path, config: dict[str, Any]) -> str:
    samples = _samples(run_dir)
    if not samples:
        return "<p>No samples yet (they are written after each epoch's evaluation).</p>"
    shape = config.get("input_shape") or [0, 64, 64, 3]
    frame = (int(shape[1]), int(shape[2]))
    blocks = []
    for i, epoch in enumerate(sorted(samples, reverse=True)):  # newest first
        eager = i < OPEN_EPOCHS
        inner = "".join(_sample_block(run_dir, d, samples[epoch][d], frame, eager)
                        for d in DIRECTIONS if d in samples[epoch])
        blocks.append(f'<details class="epoch"{" open" if eager else ""}><summary>epoch {epoch}</summary>'
                      f'<div class="sync">{inner}</div></details>')
    return "".join(blocks)


CSS = """
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{margin-bottom:.2em} .meta{color:#555;margin-top:0} nav a{margin-right:1em}
.plots{display:flex;flex-wrap:wrap;gap:8px} .plots svg{border:1px solid #ddd;font-family:sans-serif}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
table.config td,table.config th{text-align:left;font-family:monospace}
details.epoch{margin:.6em 0} details.epoch>summary{font-weight:bold;cursor:pointer}
.sync{display:flex;flex-wrap:wrap;gap:24px} .sample h4{margin:.4em 0}
.labels{display:flex;font-size:12px;color:#555} .labels span{text-align:center}
video,.sample img{image-rendering:pixelated;max-width:100%;height:auto;display:block;background:#000}
details.grid summary{font-size:12px;color:#555;cursor:pointer}
"""

# Each epoch's players start together once all can play, and restart together when all ended,
# so the input, translation, ground truth and cycle panels of both directions stay in step. A
# video that cannot be decoded is replaced by its PNG grid.
JS = """
"use strict";
for (const v of document.querySelectorAll("video")) {
  v.addEventListener("error", () => { const img = v.querySelector("img"); if (img) v.replaceWith(img); });
}
function startTogether(group) {
  const videos = [...group.querySelectorAll("video")];
  if (group.dataset.started || !videos.length) return;
  group.dataset.started = "1";
  const ready = v => v.readyState >= 2 || v.error || !v.isConnected;
  const restart = () => {
    for (const v of videos) if (v.isConnected && !v.error) { v.currentTime = 0; v.play().catch(() => {}); }
  };
  for (const v of videos) {
    v.loop = false;
    v.addEventListener("ended", () => { if (videos.every(x => x.ended || x.error || !x.isConnected)) restart(); });
    if (v.getAttribute("preload") === "none") { v.preload = "auto"; v.load(); }
  }
  const wait = () => (videos.every(ready) ? restart() : setTimeout(wait, 50));
  wait();
}
for (const d of document.querySelectorAll("details.epoch")) {
  if (d.open) startTogether(d);
  d.addEventListener("toggle", () => { if (d.open) startTogether(d); });
}
"""


def render(run_dir: Path) -> str:
    """The report page of ``run_dir`` as HTML text."""
    config = _load_json(run_dir / "config.json") or {}
    history = epoch_history(run_dir, config)
    curves = loss_curves(run_dir)
    name = config.get("checkpoint_name") or run_dir.name
    last_step = max((int(x) for c in curves.values() for x, _ in c[-1:]), default=0)
    meta = (f"method {config.get('method', '?')}, dataset {config.get('dataset', '?')}, "
            f"input_shape {config.get('input_shape', '?')}; {len(history)} evaluated epoch(s) of "
            f"{config.get('epochs', '?')}, last logged step {last_step}; written "
            f"{datetime.datetime.now().isoformat(timespec='seconds')}")

    charts = metric_charts(history)
    metrics_html = (f'<div class="plots">{"".join(charts)}</div>' if charts
                    else "<p>No evaluated epochs yet.</p>")
    groups = loss_groups(curves)
    loss_charts = [line_chart({k[len(g):].lstrip("/_") or k: curves[k] for k in keys}, g, "step")
                   for g, keys in groups.items()]
    losses_html = (f'<div class="plots">{"".join(loss_charts)}</div>' if loss_charts
                   else "<p>No steps logged yet.</p>")
    evaluation = _load_json(run_dir / "metrics.json")
    if evaluation and evaluation.get("results"):
        eval_html = (f"<p>From <a href=\"metrics.json\">metrics.json</a> (--mode eval, "
                     f"{escape(str(evaluation.get('eval_batches')))} test batches):</p>"
                     + _metrics_table({r["checkpoint"]: r["metrics"] for r in evaluation["results"]}))
    else:
        eval_html = "<p>No metrics.json yet: run <code>--mode eval [--all_checkpoints]</code> on this run.</p>"
    if history:
        eval_html += ("<h3>After each training epoch</h3>"
                      + _metrics_table({f"epoch {e:g}": m for e, m in reversed(history.items())}))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(name)} - RL-V2V-GAN run report</title>
<link rel="icon" href="data:,"><style>{CSS}</style></head>
<body>
<h1>Run {escape(name)}</h1>
<p class="meta">{escape(meta)}</p>
<nav><a href="#metrics">metrics</a><a href="#losses">losses</a><a href="#samples">samples</a>
<a href="#evaluation">evaluation table</a><a href="#config">config</a></nav>
<section id="metrics"><h2>Evaluation metrics over epochs</h2>{metrics_html}</section>
<section id="losses"><h2>Training curves (log.jsonl)</h2>{losses_html}</section>
<section id="samples"><h2>Samples</h2>{_sample_section(run_dir, config)}</section>
<section id="evaluation"><h2>Evaluation table</h2>{eval_html}</section>
<section id="config"><h2>Config</h2>{_config_table(config) if config else "<p>no config.json</p>"}</section>
<script>{JS}</script>
</body></html>
"""
    return page.encode("ascii", "xmlcharrefreplace").decode("ascii")


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` atomically (a reader sees the old page or the new one)."""
    path = Path(run_dir) / REPORT
    atomic_write_text(path, render(Path(run_dir)))
    return path


def epoch_done(run_dir: Path, epoch: int, step: int, metrics: dict[str, Any], log: Callable = print) -> None:
    """The training loop's hook after each epoch's evaluation: record the metrics, rewrite the page.

    A report that cannot be written is a warning: it must not stop a training run.
    """
    try:
        if metrics:
            record_epoch(run_dir, epoch, step, metrics)
        path = write_report(run_dir)
    except OSError as e:
        log(f"warning: could not write {Path(run_dir) / REPORT}: {e}")
        return
    log(f"report: {path}")


def report_run(cfg) -> Path:
    """``--mode report``: (re)write report.html of the existing run ``checkpoint_dir/checkpoint_name``."""
    run_dir = cfg.run_dir
    if not run_dir.is_dir() or not any((run_dir / f).exists() for f in ("config.json", "log.jsonl", "metrics.json")):
        raise UserError(f"no run at {run_dir} (expected config.json or log.jsonl there; "
                        f"check --checkpoint_dir and --checkpoint_name)")
    try:
        path = write_report(run_dir)
    except OSError as e:
        raise UserError(f"cannot write {run_dir / REPORT}: {e.strerror or e}") from None
    print(f"wrote {path}")
    return path
