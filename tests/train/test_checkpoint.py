"""train/checkpoint.py: exact resume, ``latest``, damaged and foreign checkpoints, no code in state.pt."""

import builtins
import hashlib
import json

import pytest
import torch

from rl_v2v_gan.errors import UserError
from rl_v2v_gan.models.networks import networks_from_config
from rl_v2v_gan.train import checkpoint as ckpt_io
from rl_v2v_gan.train.checkpoint import restore
from rl_v2v_gan.train.trainer import Trainer


def _save(trainer, cfg):
    return ckpt_io.save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), cfg.steps_per_epoch)


@pytest.fixture
def run(tiny_config, make_trainer, make_batch):
    """A tiny RL run with two checkpoints (after steps 1 and 2); returns (cfg, trainer)."""
    cfg = tiny_config(method="rl_v2v_gan", steps_per_epoch=2)
    trainer = make_trainer(cfg, seed=0)
    for step in range(2):
        trainer.train_step(make_batch(seed=step))
        _save(trainer, cfg)
    return cfg, trainer


def _fresh(cfg, seed=123) -> Trainer:
    torch.manual_seed(seed)  # other initial weights: only the checkpoint can make them equal
    return Trainer(cfg, networks_from_config(cfg), torch.device("cpu"))


def test_round_trip_gives_the_identical_next_step(run, make_batch):
    cfg, trainer = run
    assert len(trainer.replay["a"]) > 0
    nxt = make_batch(seed=7)
    continued = trainer.train_step(nxt)

    resumed = _fresh(cfg)
    ckpt = restore(cfg, resumed.nets, resumed, None)
    assert ckpt.name == "epoch_0001" and resumed.step == 2
    assert len(resumed.replay["a"]) == 2 * 2 * (4 - 2)
    again = resumed.train_step(nxt)
    assert again == continued
    for k, v in resumed.nets.state_dict().items():
        assert torch.equal(v, trainer.nets.state_dict()[k]), k


def test_latest_names_the_newest(run):
    cfg, _ = run
    assert (cfg.run_dir / "latest").read_text().strip() == "epoch_0001"
    assert [p.name for p in ckpt_io.list_checkpoints(cfg.run_dir)] == ["step_00000001", "epoch_0001"]
    assert ckpt_io.resolve(cfg.run_dir).name == "epoch_0001"
    manifest = json.loads((cfg.run_dir / "epoch_0001" / "manifest.json").read_text())
    assert manifest["step"] == 2 and set(manifest["sha256"]) >= {"networks.safetensors", "state.pt",
                                                                  "replay.safetensors", "config.json"}


def _flip_bytes(path, offset=-64, n=8):
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path, n=100):
    path.write_bytes(path.read_bytes()[:-n])


def test_damaged_latest_is_skipped_for_the_previous_intact_one(run):
    cfg, _ = run
    _truncate(cfg.run_dir / "epoch_0001" / "networks.safetensors")
    warnings = []
    assert ckpt_io.resolve(cfg.run_dir, log=warnings.append).name == "step_00000001"
    assert len(warnings) == 1 and "epoch_0001" in warnings[0] and "networks.safetensors" in warnings[0]
    resumed = _fresh(cfg)
    warnings.clear()
    restore(cfg, resumed.nets, resumed, None, log=warnings.append)
    assert resumed.step == 1
    # Only the newest checkpoint kept a replay buffer: the older one resumes with an empty one.
    assert len(resumed.replay["a"]) == 0 and any("no replay buffer" in w for w in warnings)


def test_damaged_checkpoint_named_explicitly_is_an_error(run):
    cfg, _ = run
    _truncate(cfg.run_dir / "epoch_0001" / "networks.safetensors")
    with pytest.raises(UserError, match="epoch_0001 is damaged: networks.safetensors has .* bytes, its manifest"):
        ckpt_io.resolve(cfg.run_dir, "epoch_0001")
    with pytest.raises(UserError, match="no checkpoint 'epoch_0009'.*available: step_00000001, epoch_0001"):
        ckpt_io.resolve(cfg.run_dir, "epoch_0009")


def test_no_intact_checkpoint_is_an_error(run):
    cfg, _ = run
    for name in ("step_00000001", "epoch_0001"):
        _truncate(cfg.run_dir / name / "state.pt")
    with pytest.raises(UserError, match="no checkpoint in"):
        ckpt_io.resolve(cfg.run_dir, log=lambda *a: None)


def test_other_architecture_is_refused_naming_the_flag(run, tiny_config):
    cfg, _ = run
    other = tiny_config(method="rl_v2v_gan", steps_per_epoch=2, ngf=8)
    with pytest.raises(UserError, match=r"--ngf 4 \(checkpoint\) vs 8 \(now\)"):
        restore(other, networks_from_config(other), None, None)


def test_load_networks_lists_mismatched_keys(run, tiny_config):
    cfg, _ = run
    ckpt = ckpt_io.resolve(cfg.run_dir)
    wider = networks_from_config(tiny_config(method="rl_v2v_gan", ngf=8))
    with pytest.raises(UserError, match=r"does not match the networks: shape \(\d+\): .*gen_ab\."):
        ckpt_io.load_networks(ckpt, wider)
    fewer = networks_from_config(tiny_config(method="recycle_gan"))
    with pytest.raises(UserError, match=r"unexpected \(\d+\): gen_ab_target\."):
        ckpt_io.load_networks(ckpt, fewer)


class _Payload:
    """Unpickling this creates a file: the side effect a malicious checkpoint would rely on."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


def test_state_with_pickled_code_is_refused_without_running_it(run, tmp_path):
    cfg, _ = run
    ckpt = ckpt_io.resolve(cfg.run_dir)
    marker = tmp_path / "pwned"
    state_pt = ckpt / "state.pt"
    torch.save({"trainer": _Payload(marker), "rng": {}}, state_pt)
    # An attacker can rewrite the manifest as well: the refusal must not rely on the checksum.
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["sha256"]["state.pt"] = hashlib.sha256(state_pt.read_bytes()).hexdigest()
    manifest["bytes"]["state.pt"] = state_pt.stat().st_size
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    assert ckpt_io.verify(ckpt) is None

    resumed = _fresh(cfg)
    with pytest.raises(UserError, match="refusing to load .*state.pt"):
        restore(cfg, resumed.nets, resumed, None)
    assert not marker.exists()

    # The payload is live: a plain unpickler would have run it (so the assertion above can fail).
    torch.load(state_pt, weights_only=False)
    assert marker.exists()


def test_resume_on_fewer_gpus_restores_the_states_that_exist_and_warns(monkeypatch):
    restored, lines = {}, []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.__setitem__(device, state))
    state = ckpt_io.rng_state()
    state["cuda"] = [torch.full((4,), i, dtype=torch.uint8) for i in range(4)]  # saved on 4 GPUs
    ckpt_io.set_rng_state(state, log=lines.append)
    assert list(restored) == [0] and torch.equal(restored[0], state["cuda"][0])
    assert len(lines) == 1 and "4 GPUs" in lines[0] and "1 are visible" in lines[0]


def test_only_io_failures_say_cannot_write_checkpoint(run, monkeypatch):
    cfg, trainer = run
    monkeypatch.setattr(trainer, "step", 4)

    def cuda_failure(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(ckpt_io, "rng_state", cuda_failure)
    with pytest.raises(RuntimeError, match="illegal memory access"):  # its own error, not a disk problem
        _save(trainer, cfg)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_io, "rng_state", lambda: {})
    monkeypatch.setattr(builtins, "open", disk_full)
    with pytest.raises(UserError, match="cannot write checkpoint .*No space left on device"):
        _save(trainer, cfg)
    monkeypatch.undo()
    assert (cfg.run_dir / "latest").read_text().strip() == "epoch_0001"
    assert sorted(p.name for p in cfg.run_dir.iterdir()) == ["epoch_0001", "latest", "step_00000001"]


def test_checkpoint_loading_lives_below_the_loop_and_the_evaluator():
    import ast
    import inspect

    from rl_v2v_gan.eval import evaluator

    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(evaluator)))
                if isinstance(node, ast.ImportFrom)}
    assert "train.loop" not in {m.removeprefix("..") for m in imported if m}  # no evaluator <-> loop circle


@pytest.mark.parametrize("name", ["networks.safetensors", "state.pt", "replay.safetensors"])
def test_same_size_damage_is_caught_on_load_naming_the_file(run, name):
    cfg, _ = run
    _flip_bytes(cfg.run_dir / "epoch_0001" / name)
    assert ckpt_io.verify(cfg.run_dir / "epoch_0001") is None  # complete: sizes match
    with pytest.raises(UserError, match=f"epoch_0001 is damaged: {name} does not match its checksum"):
        restore(cfg, _fresh(cfg).nets, _fresh(cfg), None)


def test_load_reads_each_file_once(run, monkeypatch):
    """networks.safetensors and state.pt are read once, checked and deserialised from memory; the
    replay file (as large as the buffers) is never read whole: one hashing pass in blocks, then
    safe_open copies it into the buffers a chunk at a time."""
    cfg, _ = run
    reads, hashed = [], []
    original = ckpt_io.Path.read_bytes
    original_sha256 = ckpt_io._sha256

    def counting(path):
        reads.append(path.name)
        return original(path)

    def hashing(path):
        if path.name != "replay.safetensors":
            pytest.fail(f"{path} hashed by a second read")
        hashed.append(path.name)
        return original_sha256(path)

    monkeypatch.setattr(ckpt_io.Path, "read_bytes", counting)
    monkeypatch.setattr(ckpt_io, "_sha256", hashing)
    monkeypatch.setattr(builtins, "open", _no_open_of({"networks.safetensors", "state.pt"}))
    resumed = _fresh(cfg)
    restore(cfg, resumed.nets, resumed, None)
    assert sorted(reads) == ["networks.safetensors", "state.pt"]
    assert hashed == ["replay.safetensors"]
    assert len(resumed.replay["a"]) > 0


def _no_open_of(names):
    original = builtins.open

    def guarded(file, *args, **kwargs):
        if str(file).rsplit("/", 1)[-1] in names:
            pytest.fail(f"{file} opened outside read_checked")
        return original(file, *args, **kwargs)

    return guarded


def test_only_the_newest_checkpoint_keeps_the_replay_buffer(run):
    cfg, trainer = run
    older, newest = (cfg.run_dir / n for n in ("step_00000001", "epoch_0001"))
    assert (newest / "replay.safetensors").is_file() and not (older / "replay.safetensors").exists()
    manifest = json.loads((older / "manifest.json").read_text())
    assert "replay.safetensors" not in manifest["sha256"] and "replay.safetensors" not in manifest["bytes"]
    assert ckpt_io.verify(older) is None
    # The networks stay loadable from the older checkpoint (eval and translate need no more).
    nets = networks_from_config(cfg)
    ckpt_io.load_networks(older, nets)


def test_keep_checkpoints_prunes_the_oldest_never_the_newest(tiny_config, make_trainer, make_batch):
    cfg = tiny_config(method="cycle_gan", steps_per_epoch=1)
    trainer = make_trainer(cfg)
    for step in range(4):
        trainer.step = step + 1
        ckpt_io.save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), 1, keep=2)
    assert [p.name for p in ckpt_io.list_checkpoints(cfg.run_dir)] == ["epoch_0003", "epoch_0004"]
    assert sorted(p.name for p in cfg.run_dir.iterdir()) == ["epoch_0003", "epoch_0004", "latest"]
    trainer.step = 5
    ckpt_io.save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), 1, keep=1)
    assert [p.name for p in ckpt_io.list_checkpoints(cfg.run_dir)] == ["epoch_0005"]
    assert ckpt_io.resolve(cfg.run_dir).name == "epoch_0005"


def test_retire_never_touches_what_latest_names(tiny_config, make_trainer):
    cfg = tiny_config(method="rl_v2v_gan", steps_per_epoch=1)
    trainer = make_trainer(cfg)
    paths = []
    for step in range(3):
        trainer.step = step + 1
        paths.append(ckpt_io.save_checkpoint(cfg.run_dir, trainer, cfg.to_json(), 1))
    (cfg.run_dir / "latest").write_text("epoch_0001\n")  # e.g. a user pointed it back
    ckpt_io.retire_older(cfg.run_dir, paths[2], keep=1)
    assert [p.name for p in ckpt_io.list_checkpoints(cfg.run_dir)] == ["epoch_0001", "epoch_0003"]


def _log_rows(run_dir):
    return {row["step"]: row for row in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())}


def test_save_every_steps_checkpoints_mid_epoch_and_resumes_exactly(tiny_config, monkeypatch):
    from rl_v2v_gan.train import loop

    flags = dict(method="rl_v2v_gan", epochs=1, steps_per_epoch=4, save_every_steps=2, eval_batches=1)
    reference = tiny_config(checkpoint_name="reference", **flags)
    assert loop.train(reference) == 0
    assert [p.name for p in ckpt_io.list_checkpoints(reference.run_dir)] == ["step_00000002", "epoch_0001"]
    want = _log_rows(reference.run_dir)

    class Killed(Exception):
        pass

    train_step = Trainer.train_step

    def dies_in_step_3(self, batch, **kw):
        if self.step == 2:
            raise Killed
        return train_step(self, batch, **kw)

    cfg = tiny_config(checkpoint_name="killed", **flags)
    monkeypatch.setattr(Trainer, "train_step", dies_in_step_3)
    with pytest.raises(Killed):
        loop.train(cfg)
    monkeypatch.undo()
    assert (cfg.run_dir / "latest").read_text().strip() == "step_00000002"
    assert "replay.safetensors" in json.loads((cfg.run_dir / "step_00000002" / "manifest.json").read_text())["sha256"]

    assert loop.train(tiny_config(checkpoint_name="killed", resume=True, **flags)) == 0
    got = _log_rows(cfg.run_dir)
    assert sorted(got) == [1, 2, 3, 4]
    for step in (3, 4):  # the steps after the mid-epoch checkpoint, exactly as without the kill
        assert got[step] == want[step], step


def test_streamed_replay_file_round_trips_in_small_chunks(run, monkeypatch):
    """The replay file is written (and sent between ranks) a chunk at a time and loaded a chunk of
    rows at a time; with chunks of a few bytes every field crosses many chunk boundaries."""
    from rl_v2v_gan.rl import replay_buffer

    cfg, trainer = run
    monkeypatch.setattr(ckpt_io, "CHUNK_BYTES", 7)
    monkeypatch.setattr(replay_buffer, "LOAD_CHUNK_BYTES", 5)
    trainer.step = 3
    ckpt = _save(trainer, cfg)
    from safetensors.torch import load_file

    on_disk = load_file(ckpt / "replay.safetensors")
    for d, buf in trainer.replay.items():
        for k, v in buf.state_dict().items():
            assert torch.equal(on_disk[f"{d}.{k}"], v), (d, k)
    resumed = _fresh(cfg)
    restore(cfg, resumed.nets, resumed, None)
    for d, buf in trainer.replay.items():
        other = resumed.replay[d]
        assert (other.pos, other.size) == (buf.pos, buf.size)
        for k, v in buf.state_dict().items():
            assert torch.equal(other.state_dict()[k], v), (d, k)
