"""The hot loop's read-backs from the device (DESIGN §9), counted on CPU.

On a GPU every read of a tensor's value on the host (``.item()``, ``bool``, ``float``,
``.tolist()``, a data-dependent shape such as ``nonzero`` or a boolean mask) waits for the queued
work: a host-device sync. CPU has no queue, but the same operations pass through the dispatcher,
so counting them here counts the syncs a GPU step would make.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rl_v2v_gan.train.trainer import NonFiniteError

READ_BACK = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.is_nonzero.default",
             "aten.masked_select.default", "aten.equal.default"}


class ReadBacks(TorchDispatchMode):
    """Counts the operations that read a tensor's value back to the host."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        bool_index = name.startswith("aten.index") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 and
                                                                            isinstance(args[1], (list, tuple)) else []))
        if name in READ_BACK or bool_index:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def counted(monkeypatch):
    """``with counted() as c``: read-backs in ``c.seen`` (``.tolist()`` and ``.numpy()`` included,
    which do not go through the dispatcher)."""
    def make():
        mode = ReadBacks()
        for method in ("tolist", "numpy"):
            original = getattr(torch.Tensor, method)

            def counting(self, *a, _original=original, _name=method, **k):
                mode.seen.append(f"Tensor.{_name}")
                return _original(self, *a, **k)
            monkeypatch.setattr(torch.Tensor, method, counting)
        return mode
    return make


@pytest.mark.parametrize("method, allowed", [("rl_v2v_gan", 1), ("recycle_gan", 0), ("cycle_gan", 0)])
def test_steps_between_logging_read_nothing_back_but_the_rollout_flag(method, allowed, tiny_config, make_trainer,
                                                                     make_batch, counted):
    """≤ 1 read-back a step (rl_v2v_gan: whether its rollout was finite; the others: none), and
    one transfer for all the pending steps' logs when they are read."""
    trainer = make_trainer(tiny_config(method=method, rl_batch=4, buffer_size=8, pool_size=2))
    for i in range(3):  # fill the replay buffer and the history pool: their full-state paths are counted too
        trainer.train_step(make_batch(seed=i))
    steps = 3
    for i in range(steps):
        with counted() as mode:
            trainer.train_step(make_batch(seed=10 + i), read=False)
        assert len(mode.seen) <= allowed, mode.seen
    with counted() as mode:
        rows = trainer.read_logs()
    assert mode.seen == ["Tensor.tolist"]
    assert [step for step, _ in rows] == [4, 5, 6]
    assert all(isinstance(v, float) for _, logs in rows for v in logs.values())
    if method == "rl_v2v_gan":
        assert {"rl/q_loss", "rl/from_buffer_a", "rl/mean_reward_b", "loss/G/actor"} <= rows[-1][1].keys()


def test_read_logs_gives_what_an_immediate_read_gives(tiny_config, make_trainer, make_batch):
    """Deferred reading changes when the numbers arrive, not what they are."""
    cfg = tiny_config(method="rl_v2v_gan")
    now, later = make_trainer(cfg), make_trainer(cfg)
    torch.manual_seed(1)
    immediate = [now.train_step(make_batch(seed=i)) for i in range(3)]
    torch.manual_seed(1)
    for i in range(3):
        later.train_step(make_batch(seed=i), read=False)
    assert [logs for _, logs in later.read_logs()] == immediate


def test_unread_logs_refuse_a_checkpoint(tiny_config, make_trainer, make_batch):
    trainer = make_trainer(tiny_config(method="cycle_gan"))
    trainer.train_step(make_batch(), read=False)
    with pytest.raises(RuntimeError, match="read_logs"):
        trainer.state_dict()
    trainer.read_logs()
    assert trainer.state_dict()["step"] == 1


def test_a_non_finite_streak_is_found_when_the_logs_are_read(tiny_config, make_trainer, make_batch, monkeypatch):
    """Skipped steps (decided on the device) count; the limit raises at the step that reaches it."""
    trainer = make_trainer(tiny_config(method="cycle_gan", max_nonfinite_steps=2))
    trainer.train_step(make_batch())
    gen = trainer.nets.gen_ab
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    forward = type(gen).forward
    monkeypatch.setattr(type(gen), "forward", lambda self, x: forward(self, x) * float("nan"))
    trainer.train_step(make_batch(seed=1), read=False)
    trainer.train_step(make_batch(seed=2), read=False)
    with pytest.raises(NonFiniteError, match=r"2 consecutive steps .*step 3, skipped updates: D, G"):
        trainer.read_logs()
    assert all(torch.equal(v, before[k]) for k, v in gen.state_dict().items())  # no update was taken


def test_the_loop_writes_every_row_before_it_stops_on_a_non_finite_streak(tiny_config, monkeypatch):
    """Rows are read once per --log_every; the rows of a window that ends in the non-finite stop
    still reach log.jsonl (the skipped steps are what a user needs to see)."""
    import json

    from rl_v2v_gan.errors import UserError
    from rl_v2v_gan.train import loop, trainer as trainer_mod

    cfg = tiny_config(method="cycle_gan", epochs=1, steps_per_epoch=8, log_every=10, max_nonfinite_steps=2,
                      eval_batches=1)
    clean = trainer_mod.to_float
    step = trainer_mod.Trainer._step

    def poisoned_from_step_3(self, batch):
        monkeypatch.setattr(trainer_mod, "to_float", (lambda x: clean(x) * float("nan")) if self.step >= 2 else clean)
        return step(self, batch)

    monkeypatch.setattr(trainer_mod.Trainer, "_step", poisoned_from_step_3)
    with pytest.raises(UserError, match="2 consecutive steps .*step 4"):
        loop.train(cfg)
    rows = [json.loads(line) for line in (cfg.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))  # read at step 1, then at the epoch's end (8)
    assert [r["nonfinite_steps"] for r in rows[:4]] == [0.0, 0.0, 1.0, 2.0]
    assert rows[2]["skipped/D"] == 1.0 and rows[3]["skipped/G"] == 1.0
