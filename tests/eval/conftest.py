"""Fixtures shared by the evaluation tests."""

import pytest

from rl_v2v_gan.eval import metrics


@pytest.fixture
def no_weights_anywhere(monkeypatch, tmp_path):
    """An empty torch hub cache and no environment variable, whatever the machine has."""
    monkeypatch.delenv(metrics.FID_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"
