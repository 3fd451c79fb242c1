"""A phase whose update is skipped shows in that step's logs and progress bar, not only as a count."""

import math

import pytest
import torch

from rl_v2v_gan.train import loop
from rl_v2v_gan.train import trainer as trainer_mod


def test_skipped_phases_are_in_the_step_logs_and_the_progress_bar(tiny_config, make_trainer, make_batch,
                                                                   monkeypatch):
    trainer = make_trainer(tiny_config(method="rl_v2v_gan"))
    logs = trainer.train_step(make_batch())
    assert {k: v for k, v in logs.items() if k.startswith("skipped/")} == {"skipped/G": 0.0, "skipped/D": 0.0,
                                                                           "skipped/Q": 0.0}
    assert "skip" not in loop._postfix(logs)

    clean = trainer_mod.to_float
    monkeypatch.setattr(trainer_mod, "to_float", lambda x: clean(x) * math.nan)
    logs = trainer.train_step(make_batch(seed=1))
    assert logs["skipped/D"] == logs["skipped/Q"] == logs["skipped/G"] == 1.0
    assert loop._postfix(logs)["skip"] == "D,Q,G"


def test_only_the_non_finite_phase_is_marked(tiny_config, make_trainer, make_batch, monkeypatch):
    trainer = make_trainer(tiny_config(method="cycle_gan"))
    update = trainer._update

    def poison_d(role, loss):  # a D loss that overflowed; the G phase stays finite
        return update(role, loss * math.inf if role == "D" else loss)

    monkeypatch.setattr(trainer, "_update", poison_d)
    logs = trainer.train_step(make_batch())
    assert (logs["skipped/D"], logs["skipped/G"]) == (1.0, 0.0) and "skipped/Q" not in logs
    assert loop._postfix(logs)["skip"] == "D" and logs["nonfinite_steps"] == 1.0


def test_the_stop_names_the_skipped_phases(tiny_config, make_trainer, make_batch, monkeypatch):
    trainer = make_trainer(tiny_config(method="cycle_gan", max_nonfinite_steps=1))
    update = trainer._update
    monkeypatch.setattr(trainer, "_update", lambda role, loss: update(role, loss * math.inf if role == "D" else loss))
    with pytest.raises(trainer_mod.NonFiniteError, match="skipped updates: D\\)"):
        trainer.train_step(make_batch())
    assert all(torch.isfinite(p).all() for p in trainer.nets.parameters())
