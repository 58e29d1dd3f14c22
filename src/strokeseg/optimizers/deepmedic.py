"""DeepMedic's optimiser: RMSProp with ε inside the square root and normalised Nesterov momentum, L1 + L2 on the
convolution weights, and its per-epoch learning-rate / momentum schedule (Pérez Malla et al., 2019,
doi:10.3389/fninf.2019.00033, §2.2; Kamnitsas et al., 2017, doi:10.1016/j.media.2016.10.004).

``torch.optim.RMSprop`` divides by ``sqrt(v) + ε`` (DeepMedic: ``sqrt(v + ε)``, with ε = 1e-4 a large
difference) and has neither Nesterov nor normalised momentum, hence this class. One step, per parameter ``θ`` with
gradient ``g`` (``RmsPropOptimizer`` of DeepMedic v0.6.1)::

    g <- g + l1 * sign(θ) + 2 * l2 * θ                        (weights of groups with l1 / l2 only)
    v <- ρ v + (1 - ρ) g²
    step = (1 - μ) * lr * g / sqrt(v + ε)                     (normalised momentum; without it the factor is 1)
    u <- μ u - step
    θ <- θ + μ u - step                                       (Nesterov; classic momentum: θ <- θ + u)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn
from ignite.engine import Engine, Events

__all__ = ["DeepMedicRMSprop", "deepmedic_parameter_groups", "DeepMedicSchedule"]


class DeepMedicRMSprop(torch.optim.Optimizer):
    """RMSProp with ε inside the square root and normalised Nesterov momentum (module docstring).

    Args:
        params: parameters or parameter groups (see :func:`deepmedic_parameter_groups` for L1 / L2 groups).
        lr: learning rate (Pérez Malla et al. 2019, §2.2: 1e-3 at the start).
        rho: decay of the squared-gradient average (0.9).
        eps: added to the squared-gradient average inside the square root (1e-4).
        momentum: μ (0.6 at the start, raised to 0.9 by :class:`DeepMedicSchedule`).
        nesterov: Nesterov momentum (DeepMedic's ``classicMomentum0OrNesterov1 = 1``).
        normalised: scale the gradient step by ``1 - μ`` (``momentumTypeNONNormalized0orNormalized1 = 1``).
        l1: L1 regularisation weight of the cost (Pérez Malla et al. 2019: 1e-6).
        l2: L2 regularisation weight of the cost ``l2 * Σ θ²`` (Pérez Malla et al. 2019: 1e-4).

    Raises:
        ValueError: a negative rate, ρ outside [0, 1), μ outside [0, 1) or a non-positive ε.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        rho: float = 0.9,
        eps: float = 1e-4,
        momentum: float = 0.6,
        nesterov: bool = True,
        normalised: bool = True,
        l1: float = 0.0,
        l2: float = 0.0,
    ) -> None:
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0 <= rho < 1:
            raise ValueError(f"rho must be in [0, 1), got {rho}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if l1 < 0 or l2 < 0:
            raise ValueError(f"l1 and l2 must be >= 0, got {l1}, {l2}")
        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "momentum": momentum,
            "nesterov": bool(nesterov),
            "normalised": bool(normalised),
            "l1": l1,
            "l2": l2,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer.step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            mu, rho, lr, eps = group["momentum"], group["rho"], group["lr"], group["eps"]
            factor = (1.0 - mu) if group["normalised"] else 1.0
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["l1"] or group["l2"]:
                    grad = grad + group["l1"] * torch.sign(param) + 2.0 * group["l2"] * param
                state = self.state[param]
                if not state:
                    state["square_avg"] = torch.zeros_like(param)
                    state["velocity"] = torch.zeros_like(param)
                square_avg, velocity = state["square_avg"], state["velocity"]
                square_avg.mul_(rho).addcmul_(grad, grad, value=1.0 - rho)
                step = grad / torch.sqrt(square_avg + eps) * (factor * lr)
                velocity.mul_(mu).sub_(step)
                if group["nesterov"]:
                    param.add_(velocity * mu - step)
                else:
                    param.add_(velocity)
        return loss


def deepmedic_parameter_groups(network: nn.Module, l1: float = 1e-6, l2: float = 1e-4) -> list[dict[str, Any]]:
    """Two groups of the trainable parameters: convolution weights with ``l1`` / ``l2``, the rest (BatchNorm,
    PReLU, biases) without, as DeepMedic regularises only its layers' weights ``W``."""
    weights, others = [], []
    for module in network.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            is_weight = isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and name == "weight"
            (weights if is_weight else others).append(param)
    groups = [{"params": weights, "l1": float(l1), "l2": float(l2)}]
    if others:
        groups.append({"params": others, "l1": 0.0, "l2": 0.0})
    return groups


class DeepMedicSchedule:
    """Set every group's learning rate and momentum at the start of each epoch: the rate decays exponentially from
    its initial value to ``lr_end`` at the last epoch, the momentum rises linearly to ``momentum_end`` (Pérez Malla et
    al. 2019, §2.2: 1e-3 -> 1e-4, 0.6 -> 0.9, "started to lower at epoch 1").

    The values follow from ``engine.state.epoch`` alone, so a resumed run continues the schedule. The initial
    values are the groups' values when the schedule is built (or ``lr_start`` / ``momentum_start``).

    Args:
        optimizer: a :class:`DeepMedicRMSprop` (any optimiser with ``lr``; ``momentum`` is set where present).
        epochs: epochs of the run (the last one gets the end values); 1 keeps the initial values.
        lr_end: learning rate of the last epoch.
        momentum_end: momentum of the last epoch.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        epochs: int,
        lr_end: float = 1e-4,
        momentum_end: float = 0.9,
        lr_start: float | None = None,
        momentum_start: float | None = None,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.optimizer = optimizer
        self.epochs = int(epochs)
        self.lr_end = float(lr_end)
        self.momentum_end = float(momentum_end)
        self.lr_start = [float(g["lr"]) if lr_start is None else float(lr_start) for g in optimizer.param_groups]
        self.momentum_start = [
            float(g.get("momentum", 0.0)) if momentum_start is None else float(momentum_start)
            for g in optimizer.param_groups
        ]

    def values(self, epoch: int) -> list[tuple[float, float]]:
        """``(lr, momentum)`` of each group in epoch ``epoch`` (1-indexed)."""
        fraction = 0.0 if self.epochs == 1 else min(max(epoch - 1, 0) / (self.epochs - 1), 1.0)
        out = []
        for lr0, mu0 in zip(self.lr_start, self.momentum_start, strict=True):
            lr = lr0 * math.exp(fraction * math.log(self.lr_end / lr0)) if lr0 > 0 and self.lr_end > 0 else lr0
            out.append((lr, mu0 + fraction * (self.momentum_end - mu0)))
        return out

    def apply(self, epoch: int) -> None:
        for group, (lr, mu) in zip(self.optimizer.param_groups, self.values(epoch), strict=True):
            group["lr"] = lr
            if "momentum" in group:
                group["momentum"] = mu

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.apply(e.state.epoch))
