"""``LearningRateTensorBoard``: one ``lr`` scalar per epoch, read back from the event file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from strokeseg.runtime.handlers import LearningRateTensorBoard


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def _engine_halving_lr(optimizer: torch.optim.Optimizer, handler: LearningRateTensorBoard) -> Engine:
    """Do-nothing engine; the learning rate is halved after each epoch, after the handler logged it."""
    engine = Engine(lambda engine, batch: None)
    handler.attach(engine)

    def halve(engine: Engine) -> None:
        for group in optimizer.param_groups:
            group["lr"] *= 0.5

    engine.add_event_handler(Events.EPOCH_COMPLETED, halve)
    return engine


def test_one_lr_value_per_epoch(tmp_path: Path) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    handler = LearningRateTensorBoard(str(tmp_path), optimizer)
    _engine_halving_lr(optimizer, handler).run([0, 1], max_epochs=3)

    assert list(tmp_path.glob("events.out.tfevents.*"))
    scalars = _scalars(tmp_path)
    assert set(scalars) == {"lr"}
    steps = [s for s, _ in scalars["lr"]]
    values = [v for _, v in scalars["lr"]]
    assert steps == [1, 2, 3]
    assert values == pytest.approx([0.1, 0.05, 0.025])
    assert handler._writer is None  # closed on COMPLETED


def test_parameter_groups_logged_separately(tmp_path: Path) -> None:
    optimizer = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.2}, {"params": [torch.nn.Parameter(torch.zeros(1))]}],
        lr=0.01,
    )
    _engine_halving_lr(optimizer, LearningRateTensorBoard(str(tmp_path), optimizer)).run([0], max_epochs=2)

    scalars = _scalars(tmp_path)
    assert set(scalars) == {"lr/group_0", "lr/group_1"}
    assert [v for _, v in scalars["lr/group_0"]] == pytest.approx([0.2, 0.1])
    assert [v for _, v in scalars["lr/group_1"]] == pytest.approx([0.01, 0.005])
    assert [s for s, _ in scalars["lr/group_1"]] == [1, 2]


def test_nothing_written_before_an_epoch_ends(tmp_path: Path) -> None:
    log_dir = tmp_path / "tb"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    handler = LearningRateTensorBoard(str(log_dir), optimizer)
    handler.close()  # closing an unopened writer is a no-op
    assert not log_dir.exists()
