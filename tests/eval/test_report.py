"""report.html: its data, its self-containment, and the page in a real (headless Chromium) browser."""

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rl_v2v_gan.cli import main
from rl_v2v_gan.data import video_io
from rl_v2v_gan.eval import report
from rl_v2v_gan.eval.svg import line_chart, nice_ticks

T, H, W = 4, 32, 32
METRICS = {"psnr": 20.0, "ssim": 0.5, "temporal_error": 0.1, "cycle_psnr": 25.0, "cycle_ssim": 0.7,
           "flicker_ratio": 1.2, "fid": None, "fid_info": {"status": "unavailable", "reason": "no weights"},
           "n_clips": 2, "ground_truth": True}


def fake_run(run_dir: Path, tiny_config, epochs: int = 3) -> Path:
    """A run folder as training leaves it: config, log, per-epoch metrics, samples (real mp4s), metrics.json."""
    cfg = tiny_config(input_shape=(T, H, W, 3), checkpoint_name=run_dir.name, steps_per_epoch=10,
                      checkpoint_dir=str(run_dir.parent))
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(cfg.to_json())
    with open(run_dir / "log.jsonl", "w") as f:
        for step in range(1, 10 * epochs + 1):
            f.write(json.dumps({"step": step, "loss/D/frame": 1.4 - step / 100, "loss/G/total": 3 - step / 50,
                                "loss/G/rr": 1.5 / step, "rl/q_mean_a": step / 10, "rl/q_mean_b": step / 20}) + "\n")
    rng = np.random.default_rng(0)
    results = []
    for epoch in range(1, epochs + 1):
        metrics = {d: {k: (v + epoch if isinstance(v, float) and k != "ssim" else v) for k, v in METRICS.items()}
                   for d in ("a2b", "b2a")}
        report.record_epoch(run_dir, epoch, 10 * epoch, metrics)
        results.append({"checkpoint": f"epoch_{epoch:04d}", "metrics": metrics})
        for d in ("a2b", "b2a"):
            clip = rng.integers(0, 256, (T, 3, H, 4 * W), dtype=np.uint8)  # input | translation | gt | cycle
            video_io.write_video(run_dir / "samples" / f"epoch_{epoch:04d}_{d}.mp4", clip, fps=10.0)
            Image.fromarray(clip[0].transpose(1, 2, 0)).save(run_dir / "samples" / f"epoch_{epoch:04d}_{d}.png")
    (run_dir / "metrics.json").write_text(json.dumps({"eval_batches": 1, "results": results}))
    return run_dir


# --- data and markup -----------------------------------------------------------------------------

def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3.2, 47.0) == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    ticks = nice_ticks(5.0, 5.0)  # a constant series still gets an axis
    assert ticks[0] < 5.0 < ticks[-1]


def test_a_missing_value_breaks_the_line_instead_of_drawing_zero():
    svg = line_chart({"a2b": [(1, 1.0), (2, 2.0), (3, None), (4, 3.0), (5, 4.0)]}, "psnr", "epoch")
    assert svg.count("<path") == 2 and svg.count("<circle") == 4
    assert "no values" in line_chart({"a2b": [(1, None)]}, "fid", "epoch")


def test_loss_curves_keep_the_last_value_of_a_repeated_step_and_bin_long_logs(tmp_path):
    lines = [{"step": s, "loss/G/total": float(s)} for s in range(1, 11)] + [{"step": 10, "loss/G/total": 99.0}]
    (tmp_path / "log.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n{\"step\": 11, \"loss")  # cut line
    assert report.loss_curves(tmp_path)["loss/G/total"][-1] == (10, 99.0)
    binned = report.loss_curves(tmp_path, max_points=5)["loss/G/total"]
    assert binned == [(2, 1.5), (4, 3.5), (6, 5.5), (8, 7.5), (10, 54.0)]
    groups = report.loss_groups({"loss/G/total": 0, "loss/G/rr": 0, "rl/q_mean_a": 0, "rl/q_mean_b": 0, "rl/q_loss": 0})
    assert groups == {"loss/G": ["loss/G/total", "loss/G/rr"], "rl/q_mean": ["rl/q_mean_a", "rl/q_mean_b"],
                      "rl/q_loss": ["rl/q_loss"]}


def test_history_comes_from_training_else_from_metrics_json(tmp_path, tiny_config):
    run = fake_run(tmp_path / "run", tiny_config, epochs=2)
    report.record_epoch(run, 2, 20, {"a2b": {"psnr": 99.0}})  # epoch 2 evaluated again after a resume
    history = report.epoch_history(run)
    assert list(history) == [1, 2] and history[2]["a2b"]["psnr"] == 99.0
    (run / report.EPOCH_METRICS).unlink()
    assert list(report.epoch_history(run)) == [1, 2]  # from metrics.json's epoch_NNNN checkpoints
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run / "tensorboard")) as writer:  # a run from before epoch_metrics.jsonl
        writer.add_scalar("eval/b2a/psnr", 21.5, 10)
        writer.add_scalar("eval/b2a/psnr", 22.5, 20)
        writer.add_scalar("loss/G/total", 1.0, 20)
    config = json.loads((run / "config.json").read_text())
    assert report.epoch_history(run, config) == {1: {"b2a": {"psnr": 21.5}}, 2: {"b2a": {"psnr": 22.5}}}
    assert report.checkpoint_epoch("step_00000015", 10) == 1.5


def test_the_page_is_self_contained(tmp_path, tiny_config):
    run = fake_run(tmp_path / "run", tiny_config)
    html = report.write_report(run).read_text()
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert links, "the page links its samples"
    for link in links:
        assert not re.match(r"^[a-z]+:|^/", link) or link == "data:,", link  # relative, no network, no CDN
        assert link.startswith("#") or link == "data:," or (run / link).is_file(), link
    assert html.count("<video") == 6 and html.count('class="plot"') >= 5 + 3
    for title in ("PSNR (dB)", "SSIM", "temporal error", "flicker ratio", "cycle PSNR (dB)", "loss/G"):
        assert f'aria-label="{title}"' in html
    assert "ground truth" in html and "epoch_0003" in html and "<th>input_shape</th><td>[4, 32, 32, 3]</td>" in html
    assert not list(run.glob(".*.tmp"))


def test_the_tables_show_kid_the_translate_path_and_a_warning_for_an_fid_from_few_frames(tmp_path, tiny_config):
    run = fake_run(tmp_path / "run", tiny_config, epochs=1)
    warning = "FID from 128 real and 128 generated frames, fewer than 2048 per side: biased"
    few = {**METRICS, "fid": 61.5, "kid": 0.0123, "kid_std": 0.001, "video_psnr": 19.5, "video_ssim": 0.45,
           "fid_info": {"status": "ok", "reason": None, "n_real": 128, "n_fake": 128, "warning": warning}}
    enough = {**few, "fid_info": {**few["fid_info"], "n_real": 4096, "n_fake": 4096, "warning": None}}
    (run / "metrics.json").write_text(json.dumps({"eval_batches": 1, "results": [
        {"checkpoint": "epoch_0001", "metrics": {"a2b": few, "b2a": enough}}]}))
    html = report.render(run)
    table = html[html.index('<section id="evaluation">'):]
    for column in ("<th>kid</th>", "<th>video_psnr</th>", "<th>video_ssim</th>", "fid frames"):
        assert column in table
    assert f'<td title="{warning}">61.5000*</td>' in table  # marked, the warning as its tooltip
    assert table.count("61.5000*") == 1 and "<td>61.5000</td>" in table  # 4096 frames: no mark
    assert "<td>128/128</td>" in table and "<td>4096/4096</td>" in table
    assert "<td>0.0123</td>" in table and "<td>19.5000</td>" in table
    assert f"<li>epoch_0001 a2b: {warning}</li>" in table  # and in a note under the table
    assert 'aria-label="video PSNR (dB), translate path"' not in html  # old epochs have no such values
    report.record_epoch(run, 2, 20, {"a2b": few})
    assert 'aria-label="video PSNR (dB), translate path"' in report.render(run)


def test_report_mode_rewrites_the_page_and_refuses_a_missing_run(tmp_path, tiny_config, capsys):
    run = fake_run(tmp_path / "run", tiny_config, epochs=1)
    assert main(["--mode", "report", "--checkpoint_dir", str(tmp_path), "--checkpoint_name", "run"]) == 0
    assert (run / "report.html").is_file()
    assert main(["--mode", "report", "--checkpoint_dir", str(tmp_path), "--checkpoint_name", "nope"]) == 1
    assert "no run at" in capsys.readouterr().err


# --- in a browser --------------------------------------------------------------------------------

def find_chromium() -> str | None:
    for name in (os.environ.get("RLV2V_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


PIPE_EXEC = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
             "os.execv(sys.argv[3], sys.argv[3:])")


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3 in, fd 4 out).

    A pipe needs no free port and no websocket client: messages are JSON separated by NUL bytes.
    """

    def __init__(self, executable: str, profile: Path, log: Path):
        # The child's ends go to fds >= 10 first, so that placing them on 3 and 4 never clobbers one
        # with the other, nor dup2s an fd onto itself (which would keep its close-on-exec flag).
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child, from_child)]
        for fd in (to_child, from_child):
            os.close(fd)
        args = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000", "about:blank"]
        # A tiny Python puts them on 3 and 4 and execs Chromium: no preexec_fn, which is unsafe with threads.
        self._log = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", PIPE_EXEC, *map(str, ends), *args],
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, pass_fds=ends)
        for fd in ends:
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            if select.select([self._in], [], [], left)[0]:
                data = os.read(self._in, 1 << 20)
                if not data:
                    raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
                self._buffer += data
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 15.0, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(self._read_message(deadline))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._in, self._out):
            os.close(fd)
        self._log.close()


# Waits (at most 10 s) until every video has decoded a frame and played, then describes the page.
PAGE_CHECK = """
(async () => {
  const played = v => v.readyState >= 2 && v.played.length > 0 && v.played.end(v.played.length - 1) > 0;
  const deadline = Date.now() + 10000;
  const videos = () => [...document.querySelectorAll("video")];
  while (Date.now() < deadline && !(videos().length && videos().every(played)))
    await new Promise(r => setTimeout(r, 50));
  const visible = e => {
    const r = e.getBoundingClientRect(), s = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && s.visibility === "visible" && s.display !== "none";
  };
  return {
    videos: videos().map(v => ({src: v.getAttribute("src"), readyState: v.readyState, played: played(v),
                                error: v.error && v.error.message, width: v.videoWidth, height: v.videoHeight})),
    plots: [...document.querySelectorAll("svg.plot")].map(s => ({title: s.getAttribute("aria-label"),
              visible: visible(s), lines: s.querySelectorAll("path").length})),
    groups: [...document.querySelectorAll("details.epoch[open]")].map(d => d.dataset.started === "1"),
    size: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
  };
})()
"""


def console_errors(events: list[dict]) -> list[str]:
    errors = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif e.get("method") == "Runtime.exceptionThrown":
            errors.append(json.dumps(p.get("exceptionDetails")))
        elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}")
    return errors


def test_the_page_plays_in_headless_chromium(tmp_path, tiny_config):
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set RLV2V_CHROMIUM); .ci/run installs it")
    run = fake_run(tmp_path / "run", tiny_config)
    page = report.write_report(run)
    browser = Chromium(executable, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            browser.call(f"{domain}.enable", session)
        browser.call("Page.navigate", session, url=page.as_uri())
        browser.wait_event("Page.loadEventFired")
        state = browser.call("Runtime.evaluate", session, timeout=20, expression=PAGE_CHECK, awaitPromise=True,
                             returnByValue=True)["result"]["value"]
        width, height = state["size"]
        shot = browser.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot["data"]))
    except (TimeoutError, RuntimeError, OSError) as e:
        log = (tmp_path / "chromium.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"{e}; Chromium's log ends:\n{log}")
    finally:
        browser.close()
    assert console_errors(browser.events) == []
    assert len(state["videos"]) == 6
    for v in state["videos"]:  # H.264 yuv420p at 4 x 32 by 32: decoded and played
        assert v["error"] is None and v["readyState"] >= 2 and v["played"], v
        assert (v["width"], v["height"]) == (4 * W, H)
    assert state["groups"] == [True, True, True]  # each epoch's players were started together
    titles = {p["title"] for p in state["plots"]}
    assert {"PSNR (dB)", "SSIM", "temporal error", "flicker ratio", "cycle PSNR (dB)", "loss/G"} <= titles
    assert all(p["visible"] and p["lines"] >= 1 for p in state["plots"]), state["plots"]
    with Image.open(tmp_path / "report.png") as shot:
        assert shot.size == (width, height) and height > 1000
