"""Weighted sum of cross-entropies over a deeply supervised network's outputs (Chen et al. 2017, Eq. 3).

EDD Net is trained on the sum of one cross-entropy per output map: every branch, the fused map and the
refined map, each with weight λ = 1 (Chen et al. 2017, §3.4). MONAI's ``DeepSupervisionLoss`` already sums a
wrapped loss over a list of outputs with given weights; what it lacks is a cross-entropy that takes MONAI's
``(B, 1, ...)`` label maps and an entry point for the stacked ``(B, K, C, ...)`` tensor that
:class:`strokeseg.networks.EDDNet` (like MONAI's ``DynUNet``) returns. This module adds those two pieces
around ``DeepSupervisionLoss`` and ``torch.nn.CrossEntropyLoss``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.losses import DeepSupervisionLoss
from torch.nn.modules.loss import _Loss

__all__ = ["DeepSupervisionCrossEntropy", "LabelMapCrossEntropy"]


class LabelMapCrossEntropy(_Loss):
    """``torch.nn.CrossEntropyLoss`` on logits ``(B, C, H, W[, D])`` and an integer label map ``(B, 1, H, W[, D])``.

    The label map may be float (as MONAI transforms deliver it); it is cast to ``int64``. Like Caffe's
    ``SoftmaxWithLoss`` the loss is averaged over all pixels; with ``class_weights`` torch's weighted mean
    (divided by the summed weights of the target pixels) is used.

    Args:
        class_weights: optional weight per class, length ``C``.
    """

    def __init__(self, class_weights: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.ce = nn.CrossEntropyLoss(weight=weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy.

        Args:
            input: logits ``(B, C, H, W[, D])``.
            target: labels ``(B, 1, H, W[, D])`` with values in ``[0, C)``.
        """
        return self.ce(input.float(), target[:, 0].long())


class DeepSupervisionCrossEntropy(_Loss):
    """Sum over a deeply supervised network's K outputs of ``weight_k * cross-entropy_k`` (Chen et al. 2017, Eq. 3).

    ``input`` is either a stacked tensor ``(B, K, C, H, W[, D])`` (final prediction first, then the auxiliary
    outputs) or plain logits ``(B, C, H, W[, D])``, the network's output in eval mode, whose loss is the
    unweighted cross-entropy of that one map whatever ``weights`` says. ``target`` is a label map
    ``(B, 1, H, W[, D])`` or ``(B, H, W[, D])``. Which case applies is read from the shapes. The only
    pair both readings fit -- ``input`` one dimension longer than ``target`` with ``target.shape[1] == 1`` --
    is settled by the class count: read as stacked, ``input.shape[2]`` would be C, and a cross-entropy needs
    C >= 2; so a stacked reading is taken only when ``input.shape[2] > 1`` (else it is plain logits with a
    first spatial size of 1).

    Args:
        weights: one weight per stacked output, in the network's output order; ``None``: all 1 (Chen et al.
            2017, Eq. 3 with λ = 1, §3.4). When given, its length must equal K for stacked input.
        class_weights: optional cross-entropy weight per class (length C).

    Raises:
        ValueError: at call time, when target and input shapes do not fit together, or ``weights`` does not
            have K entries.

    Example::

        loss = DeepSupervisionCrossEntropy()
        out = EDDNet(deep_supervision=True).train()(images)     # (B, 4, 2, H, W)
        value = loss(out, labels)                                # labels (B, 1, H, W)
    """

    def __init__(
        self, weights: Sequence[float] | None = None, class_weights: Sequence[float] | torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.weights = None if weights is None else [float(w) for w in weights]
        self.ds_loss = DeepSupervisionLoss(
            LabelMapCrossEntropy(class_weights), weight_mode="same", weights=self.weights
        )

    def _split(self, input: torch.Tensor, target: torch.Tensor) -> tuple[bool, torch.Tensor]:
        """Decide stacked vs plain input; return the label map with its channel dim ``(B, 1, ...)``."""
        n_in, n_t = input.dim(), target.dim()
        # a stacked reading needs C = input.shape[2] >= 2 classes, which settles the only ambiguous case
        stacked_with_channel = (
            n_t == n_in - 1 and target.shape[1] == 1 and target.shape[2:] == input.shape[3:] and input.shape[2] > 1
        )
        plain_without_channel = n_t == n_in - 1 and target.shape[1:] == input.shape[2:]
        if n_t == n_in and target.shape[1] == 1 and target.shape[2:] == input.shape[2:]:
            return False, target
        if stacked_with_channel:
            return True, target
        if plain_without_channel:
            return False, target.unsqueeze(1)
        if n_t == n_in - 2 and target.shape[1:] == input.shape[3:]:
            return True, target.unsqueeze(1)
        raise ValueError(
            f"DeepSupervisionCrossEntropy: input {tuple(input.shape)} and target {tuple(target.shape)} do not fit; "
            "expected input (B, C, *S) or (B, K, C, *S) and target (B, 1, *S) or (B, *S)."
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted sum of cross-entropies.

        Args:
            input: logits ``(B, C, H, W[, D])`` or stacked ``(B, K, C, H, W[, D])``.
            target: label map ``(B, 1, H, W[, D])`` or ``(B, H, W[, D])``, values in ``[0, C)``.

        Raises:
            ValueError: on shapes that do not fit, or a ``weights`` length that is not K.
        """
        if target.shape[0] != input.shape[0]:
            raise ValueError(
                f"DeepSupervisionCrossEntropy: batch sizes differ, input {tuple(input.shape)} vs "
                f"target {tuple(target.shape)}."
            )
        stacked, target = self._split(input, target)
        if not stacked:
            return self.ds_loss(input, target)
        outputs = list(torch.unbind(input, dim=1))
        if self.weights is not None and len(self.weights) != len(outputs):
            raise ValueError(
                f"DeepSupervisionCrossEntropy: {len(self.weights)} weights given for {len(outputs)} outputs "
                f"(input shape {tuple(input.shape)})."
            )
        return self.ds_loss(outputs, target)
