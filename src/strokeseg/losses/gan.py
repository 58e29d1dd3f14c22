"""Losses of the CTP → DWI GAN (Pengbo Liu, BrainLes 2018, §2.3).

* :class:`CrossEntropyLogGeneralizedDiceLoss`: ``SegLoss = CE − log(GDS)`` (eq. 5), the class-weighted
  cross-entropy minus the log of the generalised Dice score (Sudre et al. 2017, doi:10.1007/978-3-319-67558-9_28).
  MONAI's ``GeneralizedDiceLoss`` returns ``1 − GDS``; MONAI has no CE − log(Dice) combination (its
  ``DiceCELoss`` adds the linear Dice loss), hence this class.
* :class:`LSGANDiscriminatorLoss` (eq. 2) and :class:`LSGANGeneratorLoss` (eq. 3): least-squares GAN losses
  (Mao et al. 2017, doi:10.1109/ICCV.2017.304), thin wrappers of MONAI's
  ``PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)`` (plain MSE to 1 / 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import GeneralizedDiceLoss, PatchAdversarialLoss
from torch.nn.modules.loss import _Loss

__all__ = [
    "CrossEntropyLogGeneralizedDiceLoss",
    "inverse_frequency_weights",
    "LSGANDiscriminatorLoss",
    "LSGANGeneratorLoss",
]


def inverse_frequency_weights(target: torch.Tensor, num_classes: int, cap: float) -> torch.Tensor:
    """Class weights ``n_0 / n_c`` of a label batch (background weight 1), capped at ``cap``.

    A class absent from the batch gets ``cap`` (it carries no CE term anyway). The paper only says
    "weighted cross-entropy"; inverse class frequency with a cap is our assumption (listed in the bundle's model card).
    """
    counts = torch.bincount(target.reshape(-1).long(), minlength=num_classes)[:num_classes].float()
    weights = counts[0].clamp(min=1.0) / counts.clamp(min=1.0)
    weights = torch.where(counts > 0, weights, torch.full_like(weights, cap))
    return weights.clamp(min=1.0, max=cap).to(target.device)


class CrossEntropyLogGeneralizedDiceLoss(_Loss):
    """``CE_w(logits, y) − log(GDS(softmax(logits), y) + eps)`` (P. Liu 2018, eq. 5).

    Args:
        weight_cap: largest class weight of the inverse-frequency CE weights (per batch); ``None`` or
            ``1``: unweighted CE.
        eps: added to the GDS inside the log (keeps the loss finite when the Dice score is 0).
        ce_weight, dice_weight: factors of the two terms (1, 1 in the paper).

    Shapes: ``input`` ``(B, C, *spatial)`` logits, ``target`` ``(B, 1, *spatial)`` class indices.

    Raises:
        ValueError: ``target`` does not have one channel or does not match ``input``'s batch and spatial shape.
    """

    def __init__(
        self, weight_cap: float | None = 10.0, eps: float = 1e-5, ce_weight: float = 1.0, dice_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.weight_cap = None if weight_cap is None else float(weight_cap)
        self.eps = float(eps)
        self.ce_weight, self.dice_weight = float(ce_weight), float(dice_weight)
        self.generalized_dice = GeneralizedDiceLoss(to_onehot_y=True, softmax=True)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[1] != 1 or target.shape[0] != input.shape[0] or target.shape[2:] != input.shape[2:]:
            raise ValueError(
                f"target must be (B, 1, *spatial) class indices matching input {tuple(input.shape)}, "
                f"got {tuple(target.shape)}."
            )
        labels = target[:, 0].long()
        weight = None
        if self.weight_cap is not None and self.weight_cap > 1:
            weight = inverse_frequency_weights(labels, input.shape[1], self.weight_cap).to(input.dtype)
        ce = F.cross_entropy(input, labels, weight=weight)
        gds = 1.0 - self.generalized_dice(input, target)
        return self.ce_weight * ce - self.dice_weight * torch.log(gds.clamp(min=0.0) + self.eps)


class LSGANDiscriminatorLoss(_Loss):
    """``MSE(D(fake), 0) + MSE(D(real), 1)`` (P. Liu 2018, eq. 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.adversarial = PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)

    def forward(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        fake = self.adversarial(fake_scores, target_is_real=False, for_discriminator=True)
        real = self.adversarial(real_scores, target_is_real=True, for_discriminator=True)
        return fake + real


class LSGANGeneratorLoss(_Loss):
    """``MSE(D(fake), 1)`` (P. Liu 2018, eq. 3): the generator (and segmentator) step wants fakes scored real."""

    def __init__(self) -> None:
        super().__init__()
        self.adversarial = PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)

    def forward(self, fake_scores: torch.Tensor) -> torch.Tensor:
        return self.adversarial(fake_scores, target_is_real=True, for_discriminator=False)
