"""Small ignite handlers the bundles need and MONAI does not provide."""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events

__all__ = ["LearningRateTensorBoard"]


class LearningRateTensorBoard:
    """Write the learning rate of every parameter group to TensorBoard once per epoch.

    MONAI's ``TensorBoardStatsHandler`` logs the engine output and metrics but not the optimiser's
    learning rate, which the bundles' TensorBoard view must show.

    Args:
        log_dir: TensorBoard log folder.
        optimizer: the optimiser whose ``param_groups[i]["lr"]`` is logged as ``lr`` / ``lr/group_i``.
    """

    def __init__(self, log_dir: str, optimizer: torch.optim.Optimizer) -> None:
        self.log_dir = log_dir
        self.optimizer = optimizer
        self._writer = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.close)

    def __call__(self, engine: Engine) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        groups = self.optimizer.param_groups
        for i, group in enumerate(groups):
            tag = "lr" if len(groups) == 1 else f"lr/group_{i}"
            self._writer.add_scalar(tag, float(group["lr"]), engine.state.epoch)
        self._writer.flush()

    def close(self, engine: Engine | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
