import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rl_v2v_gan import cli
from rl_v2v_gan.cli import build_parser, main, parse_config
from rl_v2v_gan.config import PRESETS_DIR, Config, field_docs, make_config
from rl_v2v_gan.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# Every flag of the seed README and its default there. The loss weights lambda_v, lambda_rr and
# lambda_rc are the seed's when given (its README command passes them), but their defaults were
# chosen by measurement on the quality benchmark's validation split (README): MEASURED_DEFAULTS.
MEASURED_DEFAULTS = {"lambda_v": 0.1, "lambda_rr": 10.0, "lambda_rc": 10.0}
SEED_DEFAULTS = {
    "input_shape": (16, 64, 64, 3),
    "learning_rate": 1e-4,
    "batch_size": 4,
    "epochs": 10,
    "steps_per_epoch": 100,
    "gamma": 0.99,
    "tau": 0.001,
    "lambda_v": 1.0,
    "lambda_rr": 0.1,
    "lambda_rc": 0.1,
    "sigma1": 0.5,
    "sigma2": 0.5,
    "checkpoint_dir": "checkpoints",
    "checkpoint_name": "rl_v2v_gan",
    "eval_batches": 5,
}

README_TRAIN = ("--mode train --dataset synthetic --input_shape 16 64 64 3 --learning_rate 0.0001 --batch_size 4 "
                "--epochs 10 --steps_per_epoch 100 --gamma 0.99 --tau 0.001 --lambda_v 1.0 --lambda_rr 0.1 "
                "--lambda_rc 0.1 --sigma1 0.5 --sigma2 0.5 --checkpoint_dir checkpoints --checkpoint_name rl_v2v_gan "
                "--eval_batches 5")
README_EVAL = ("--mode eval --dataset synthetic --input_shape 16 64 64 3 --checkpoint_dir checkpoints "
               "--checkpoint_name rl_v2v_gan --eval_batches 5")
README_PREPARE = "--mode prepare_data --dataset synthetic"
README_MINIMAL = "--mode train --dataset synthetic --input_shape 4 32 32 3 --batch_size 2 --epochs 2 --steps_per_epoch 5"


@pytest.fixture
def no_run(monkeypatch):
    """A config that unexpectedly validates must fail the test, not start a training run."""

    def refuse(cfg):
        raise AssertionError(f"config was accepted: {cfg}")

    monkeypatch.setattr(cli, "run", refuse)


def cli_error(capsys, argv) -> str:
    """Run the CLI expecting a configuration error; return its one stderr line."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rl-v2v-gan: error:")
    return lines[0]


# --- defaults and the seed README ------------------------------------------------------------

def test_defaults_are_the_seeds():
    cfg = parse_config([])
    for name, value in SEED_DEFAULTS.items():
        assert getattr(cfg, name) == MEASURED_DEFAULTS.get(name, value), name
    seed = parse_config(README_TRAIN.split())  # the seed's command gets the seed's weights
    for name in MEASURED_DEFAULTS:
        assert getattr(seed, name) == SEED_DEFAULTS[name], name
    assert cfg.mode == "train" and cfg.dataset == "synthetic" and cfg.method == "rl_v2v_gan"
    assert cfg.context_frames == 2


@pytest.mark.parametrize("command, changes", [
    (README_TRAIN, {"mode": "train", **{k: SEED_DEFAULTS[k] for k in MEASURED_DEFAULTS}}),
    (README_EVAL, {"mode": "eval"}),
    (README_PREPARE, {"mode": "prepare_data"}),
    (README_MINIMAL, {"mode": "train", "input_shape": (4, 32, 32, 3), "batch_size": 2, "epochs": 2,
                      "steps_per_epoch": 5}),
], ids=["train", "eval", "prepare_data", "minimal_train"])
def test_seed_readme_commands_parse(command, changes):
    cfg = parse_config(command.split())
    # Every field not named in `changes` keeps its default.
    assert cfg == dataclasses.replace(Config(), **changes)


def test_input_shape_views():
    cfg = parse_config(["--input_shape", "6", "32", "48", "1"])
    assert cfg.input_shape == (6, 32, 48, 1)
    assert (cfg.clip_length, cfg.frame_size, cfg.channels) == (6, (32, 48), 1)


def test_derived_paths_and_cycle_weight():
    cfg = parse_config(["--checkpoint_dir", "runs", "--checkpoint_name", "x", "--dataset", "flower"])
    assert cfg.run_dir == Path("runs/x")
    assert cfg.resolved_data_root == Path("data/flower")
    assert parse_config(["--data_root", "/d"]).resolved_data_root == Path("/d")
    assert parse_config(["--method", "cycle_gan"]).cycle_weight == 10.0
    assert parse_config(["--method", "recycle_gan"]).cycle_weight == 3.0
    assert parse_config(["--method", "rl_v2v_gan"]).cycle_weight == 3.0
    assert parse_config(["--method", "rl_v2v_gan", "--lambda_cyc", "0"]).cycle_weight == 0.0  # the papers' objective
    assert parse_config(["--method", "cycle_gan", "--lambda_cyc", "2.5"]).cycle_weight == 2.5


def test_temporal_consistency_weight_per_method():
    assert parse_config(["--method", "rl_v2v_gan"]).tc_weight == 10.0
    assert parse_config(["--method", "recycle_gan"]).tc_weight == 10.0
    assert parse_config(["--method", "cycle_gan"]).tc_weight == 0.0  # the per-frame baseline as published
    assert parse_config(["--method", "cycle_gan", "--lambda_tc", "3"]).tc_weight == 3.0
    assert parse_config(["--lambda_tc", "0"]).tc_weight == 0.0
    with pytest.raises(ConfigError):
        parse_config(["--lambda_tc", "-1"])


def test_json_round_trip():
    cfg = parse_config(README_MINIMAL.split() + ["--resume", "--max_videos_b", "3", "--amp", "bf16"])
    assert cfg.resume is True and cfg.max_videos_b == 3
    assert make_config(**json.loads(cfg.to_json())) == cfg


def test_every_field_is_a_documented_flag():
    help_text = build_parser().format_help()
    unwrapped = "".join(help_text.split())  # argparse wraps lines, also at hyphens
    for name, f in field_docs().items():
        assert f"--{name}" in help_text, name
        assert "".join(f.metadata["doc"].split()) in unwrapped, name


def test_boolean_flags_are_positive_with_a_negation():
    assert parse_config(["--side_by_side"]).side_by_side is True
    assert parse_config(["--side_by_side", "--no-side_by_side"]).side_by_side is False
    assert parse_config([]).side_by_side is False


# --- invalid values -----------------------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["--input_shape", "2", "32", "32", "3"], "--input_shape"),  # T <= context frames
    (["--input_shape", "4", "32", "32", "3", "--context_frames", "4"], "--input_shape"),
    (["--input_shape", "4", "30", "32", "3"], "--input_shape"),  # H not divisible by 4
    (["--input_shape", "4", "32", "34", "3"], "--input_shape"),  # W not divisible by 4
    (["--input_shape", "4", "32", "32", "2"], "--input_shape"),  # C not in {1, 3}
    (["--input_shape", "4", "32", "32", "4"], "--input_shape"),
    (["--input_shape", "4", "32", "32"], "--input_shape"),  # three values
    (["--sigma1", "-0.1"], "--sigma1"),
    (["--sigma1", "1.5"], "--sigma1"),
    (["--sigma2", "-0.5"], "--sigma2"),
    (["--sigma2", "1.01"], "--sigma2"),
    (["--tau", "0"], "--tau"),
    (["--tau", "1.5"], "--tau"),
    (["--gamma", "1.0"], "--gamma"),
    (["--gamma", "-0.1"], "--gamma"),
    (["--batch_size", "0"], "--batch_size"),
    (["--epochs", "0"], "--epochs"),
    (["--steps_per_epoch", "-1"], "--steps_per_epoch"),
    (["--buffer_size", "0"], "--buffer_size"),
    (["--ngf", "0"], "--ngf"),
    (["--learning_rate", "0"], "--learning_rate"),
    (["--batch_size", "two"], "--batch_size"),  # not an int
    (["--no_such_flag", "1"], "--no_such_flag"),  # unknown flag
    (["--method", "foo"], "--method"),  # bad choice
    (["--mode", "translate"], "--input"),  # translate needs its input
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_invalid_flag_is_one_line_exit_2(capsys, no_run, argv, flag):
    line = cli_error(capsys, argv)
    assert flag in line


@pytest.mark.parametrize("argv", [
    ["--sigma1", "0", "--sigma2", "1"],
    ["--sigma1", "1", "--sigma2", "0"],
    ["--tau", "1"],
    ["--gamma", "0"],
    ["--input_shape", "3", "8", "8", "1"],  # T = p + 1 is the shortest clip with a prediction target
    ["--lr_decay", "1", "--ema_decay", "0", "--pool_size", "0", "--r1_gamma", "0"],
])
def test_boundary_values_are_accepted(argv):
    """Each boundary value is accepted and arrives as given (not clamped or replaced)."""
    cfg = parse_config(argv)
    if argv[0] == "--input_shape":
        assert cfg.input_shape == (3, 8, 8, 1)
        return
    for flag, text in zip(argv[::2], argv[1::2]):
        value = getattr(cfg, flag.removeprefix("--"))
        assert value == type(value)(text), flag


def test_invalid_value_raises_config_error():
    with pytest.raises(ConfigError, match="--tau"):
        parse_config(["--tau", "0"])
    with pytest.raises(ConfigError, match="--gamma"):
        make_config(gamma=1.0)


# --- presets and YAML files -----------------------------------------------------------------

def test_named_preset_tiny():
    preset = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    cfg = parse_config(["--config", "tiny"])
    for name, value in preset.items():
        expected = tuple(value) if name == "input_shape" else value
        assert getattr(cfg, name) == expected, name
    assert cfg.input_shape == (4, 16, 16, 3)
    # Flags not in the preset keep their defaults.
    assert cfg.learning_rate == SEED_DEFAULTS["learning_rate"]


def test_cli_flags_override_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("batch_size: 2\nepochs: 7\ninput_shape: [4, 32, 32, 1]\nsigma1: 0.25\n")
    cfg = parse_config(["--config", str(path), "--batch_size", "3", "--input_shape", "8", "16", "16", "3"])
    assert cfg.batch_size == 3  # CLI wins
    assert cfg.input_shape == (8, 16, 16, 3)
    assert cfg.epochs == 7 and cfg.sigma1 == 0.25  # the file's values where the CLI is silent
    assert cfg.gamma == SEED_DEFAULTS["gamma"]  # defaults where both are silent


def test_cli_flags_override_named_preset():
    cfg = parse_config(["--config", "tiny", "--ngf", "8"])
    assert cfg.ngf == 8 and cfg.ndf == 4


def test_yaml_unknown_key_names_it(tmp_path, capsys, no_run):
    path = tmp_path / "typo.yaml"
    path.write_text("batch_size: 2\nlamda_rr: 0.5\n")
    line = cli_error(capsys, ["--config", str(path)])
    assert "lamda_rr" in line and str(path) in line


def test_yaml_invalid_value_exits_2(tmp_path, capsys, no_run):
    path = tmp_path / "bad.yaml"
    path.write_text("tau: 0\n")
    assert "--tau" in cli_error(capsys, ["--config", str(path)])


@pytest.mark.parametrize("text", ["batch_size: [1\n", "- 1\n- 2\n"], ids=["invalid_yaml", "not_a_mapping"])
def test_yaml_malformed_exits_2(tmp_path, capsys, no_run, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert str(path) in cli_error(capsys, ["--config", str(path)])


def test_missing_preset_lists_the_presets(capsys, no_run):
    line = cli_error(capsys, ["--config", "no_such_preset"])
    assert "no_such_preset" in line and "tiny" in line


# --- entry points ----------------------------------------------------------------------------

def console_script() -> Path:
    return Path(sys.executable).parent / "rl-v2v-gan"


@pytest.mark.parametrize("command", [
    [sys.executable, "main.py"],
    [sys.executable, "-m", "rl_v2v_gan"],
    [str(console_script())],
], ids=["main.py", "python -m", "console script"])
def test_entry_point_help(command):
    result = subprocess.run(command + ["--help"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--input_shape" in result.stdout and "--lambda_rr" in result.stdout


def test_entry_point_error_exit_code():
    result = subprocess.run([sys.executable, "main.py", "--tau", "0"], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("rl-v2v-gan: error: --tau")


def store_files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_ino) for p in root.rglob("*") if p.is_file()}


def test_prepare_data_command_is_idempotent(tmp_path):
    command = [sys.executable, "main.py", "--mode", "prepare_data", "--dataset", "synthetic",
               "--data_root", str(tmp_path), "--input_shape", "4", "16", "16", "3",
               "--synthetic_train_clips", "4", "--synthetic_test_clips", "2"]
    first = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    manifests = list(tmp_path.rglob("manifest.json"))
    assert len(manifests) == 1
    store = manifests[0].parent
    manifest = json.loads(manifests[0].read_text())
    assert set(manifest["splits"]) == {"trainA", "trainB", "testA", "testB", "testA_gt", "testB_gt"}
    assert len(list(store.glob("*.npy"))) == 6
    before = store_files(store)
    assert "up to date" not in first.stdout

    second = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    assert store_files(store) == before  # nothing rewritten
    assert list(tmp_path.rglob("manifest.json")) == manifests


def test_a_run_saved_before_the_new_architecture_flags_is_read_with_the_values_it_had(tmp_path):
    """Its config.json lacks ema_decay & co.: the new defaults (an EMA copy) would not match its
    weights, so eval / translate take the values such a run was trained with."""
    import json

    run = tmp_path / "old"
    run.mkdir()
    saved = make_config(ngf=8).to_dict()
    for key in ("ema_decay", "disc_patch", "spectral_norm", "temporal_memory", "residual_space"):
        saved.pop(key)
    (run / "config.json").write_text(json.dumps(saved))
    argv = ["--mode", "eval", "--checkpoint_dir", str(tmp_path), "--checkpoint_name", "old"]
    cfg = parse_config(argv)
    assert (cfg.ema_decay, cfg.disc_patch, cfg.spectral_norm, cfg.temporal_memory, cfg.ngf) == (0.0, False, False,
                                                                                                 True, 8)
    assert cfg.residual_space == "tanh"
    assert parse_config(argv + ["--ema_decay", "0.99"]).ema_decay == 0.99  # given on the command line: it wins
    saved["ema_decay"] = 0.999  # a run that has the key keeps its value
    (run / "config.json").write_text(json.dumps(saved))
    assert parse_config(argv).ema_decay == 0.999
