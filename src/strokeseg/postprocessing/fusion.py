"""Fusion of an instance-level probability (MUSCLE Net) with pixel-level ones (EDD Net), Chen et al. 2017, §3.2.

Chen et al. 2017 say only that the two are combined "with Bayes' theorem". The formula here is our reading of it
(an assumption, listed in the EDD model card): the two probabilities are treated as independent evidence for the
same event with a uniform prior of 0.5, which gives the normalised product ``p_pix·p_inst / (p_pix·p_inst +
(1 − p_pix)(1 − p_inst))``. :func:`hard_reject` is the alternative reading, one decision per candidate: drop the
candidate when MUSCLE says ``p_inst < 0.5``, keep its pixels' ``p_pix`` otherwise.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type

__all__ = ["bayes_fusion", "hard_reject", "fuse_instance_probability", "FUSION_RULES", "BayesFusion", "BayesFusiond"]

# "product": bayes_fusion (per-pixel normalised product, prior 0.5); "hard_reject": per-candidate decision.
FUSION_RULES = ("product", "hard_reject")
# p_inst below which hard_reject drops a candidate (the classifier's own decision boundary).
REJECT_BELOW = 0.5

# Value where the two probabilities are contradictory certainties (p_pix, p_inst) = (1, 0) or (0, 1): the formula
# is 0 / 0 there, and 0.5 is its limit along every path p_pix = 1 - p_inst (p(1-p) / (2 p(1-p)) = 1/2).
CONTRADICTION_VALUE = 0.5


def bayes_fusion(p_pix: NdarrayOrTensor, p_inst: NdarrayOrTensor | float) -> NdarrayOrTensor:
    """Fuse two independent probabilities of the same event with Bayes' theorem (Chen et al. 2017, §3.2):

    ``p = p_pix·p_inst / (p_pix·p_inst + (1 − p_pix)(1 − p_inst))``.

    The formula is ours: Chen et al. 2017 name Bayes' theorem without one; this is the posterior of two conditionally
    independent pieces of evidence under a uniform prior of 0.5 (the per-pixel normalised product).

    ``p_inst = 0.5`` leaves ``p_pix`` unchanged (up to rounding); the result grows with both inputs. Where the
    denominator is 0 (one input is 1, the other 0) the result is defined as 0.5. Works element-wise with
    broadcasting on numpy arrays or torch tensors (the type of ``p_pix``; MetaTensor meta follow torch's rules).

    Args:
        p_pix: pixel probabilities in ``[0, 1]``, any shape, e.g. ``(H, W, D)``.
        p_inst: instance probabilities in ``[0, 1]``, broadcastable to ``p_pix`` (a float works).

    Raises:
        ValueError: a value lies outside ``[0, 1]`` or is NaN.
    """
    p, q = _checked_pair(p_pix, p_inst)
    if isinstance(p, torch.Tensor):
        positive = p * q
        total = positive + (1 - p) * (1 - q)
        safe_total = torch.where(total > 0, total, torch.ones_like(total))
        return torch.where(total > 0, positive / safe_total, torch.full_like(total, CONTRADICTION_VALUE))
    positive = p * q
    total = positive + (1 - p) * (1 - q)
    safe_total = np.where(total > 0, total, 1)
    return np.where(total > 0, positive / safe_total, CONTRADICTION_VALUE).astype(np.result_type(positive, total))


def hard_reject(
    p_pix: NdarrayOrTensor, p_inst: NdarrayOrTensor | float, threshold: float = REJECT_BELOW
) -> NdarrayOrTensor:
    """Per-candidate decision: 0 where ``p_inst < threshold`` (MUSCLE rejects the candidate), ``p_pix`` elsewhere.

    Not in Chen et al. 2017 (whose text says "Bayes' theorem"); the alternative to :func:`bayes_fusion` that the EDD
    model card reports beside it. Element-wise with broadcasting, on numpy arrays or torch tensors (the type of
    ``p_pix``).

    Args:
        p_pix: pixel probabilities in ``[0, 1]``.
        p_inst: instance probabilities in ``[0, 1]``, broadcastable to ``p_pix``.
        threshold: rejection threshold on ``p_inst`` (0.5).

    Raises:
        ValueError: a value lies outside ``[0, 1]`` or is NaN.
    """
    p, q = _checked_pair(p_pix, p_inst)
    if isinstance(p, torch.Tensor):
        return torch.where(q < threshold, torch.zeros_like(p), p)
    return np.where(q < threshold, np.zeros_like(p), p).astype(p.dtype)


def fuse_instance_probability(
    p_pix: NdarrayOrTensor, p_inst: NdarrayOrTensor | float, rule: str = "product"
) -> NdarrayOrTensor:
    """Combine pixel and instance probabilities with a rule of :data:`FUSION_RULES`.

    Args:
        p_pix: pixel probabilities in ``[0, 1]``.
        p_inst: instance probabilities in ``[0, 1]``, broadcastable to ``p_pix``.
        rule: ``"product"`` (:func:`bayes_fusion`) or ``"hard_reject"`` (:func:`hard_reject`).

    Raises:
        ValueError: unknown ``rule``, or values outside ``[0, 1]``.
    """
    if rule == "product":
        return bayes_fusion(p_pix, p_inst)
    if rule == "hard_reject":
        return hard_reject(p_pix, p_inst)
    raise ValueError(f"fusion rule must be one of {FUSION_RULES}, got {rule!r}.")


def _checked_pair(p_pix: NdarrayOrTensor, p_inst: NdarrayOrTensor | float) -> tuple:
    """``(p, q)``: float pixel probabilities in ``p_pix``'s type and instance probabilities of the same kind,
    both checked to lie in ``[0, 1]`` (one place for both fusion rules)."""
    if isinstance(p_pix, torch.Tensor):
        p, q = (p_pix if p_pix.is_floating_point() else p_pix.float()), torch.as_tensor(p_inst, device=p_pix.device)
    else:
        p = np.asarray(p_pix)
        p = p if np.issubdtype(p.dtype, np.floating) else p.astype(np.float32)
        q = np.asarray(p_inst.detach().cpu().numpy() if isinstance(p_inst, torch.Tensor) else p_inst)
    _check_probability(p, "p_pix")
    _check_probability(q, "p_inst")
    return p, q


def _check_probability(x: NdarrayOrTensor, name: str) -> None:
    """Raise ``ValueError`` unless every value of ``x`` lies in ``[0, 1]`` (NaN fails too)."""
    inside = ((x >= 0) & (x <= 1)).all()
    if not bool(inside):
        raise ValueError(f"bayes_fusion: {name} must hold probabilities in [0, 1] (no NaN).")


class BayesFusion(Transform):
    """Array transform: fuse a pixel-probability map with an instance-probability map (:func:`bayes_fusion`).

    Args:
        lesion_channel: when set, ``p_pix`` is a channel-first class map ``(C, H, W[, D])`` and only this channel
            is fused with ``p_inst`` ``(1, H, W[, D])``; for ``C == 2`` the other channel becomes its complement,
            so the output stays a two-class probability map. ``None`` fuses element-wise.

    Raises:
        ValueError: probabilities outside ``[0, 1]``; ``lesion_channel`` with ``C > 2``.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, lesion_channel: int | None = None) -> None:
        self.lesion_channel = lesion_channel

    def __call__(self, p_pix: NdarrayOrTensor, p_inst: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return the fused map, same type and meta as ``p_pix``."""
        if self.lesion_channel is None:
            fused = bayes_fusion(p_pix, p_inst)
        else:
            c = self.lesion_channel
            if p_pix.shape[0] > 2:
                raise ValueError(f"BayesFusion(lesion_channel={c}) needs 1 or 2 channels, got {p_pix.shape[0]}.")
            lesion = bayes_fusion(p_pix[c : c + 1], p_inst)
            if p_pix.shape[0] == 1:
                fused = lesion
            else:
                parts = [1 - lesion, lesion] if c in (1, -1) else [lesion, 1 - lesion]
                fused = torch.cat(parts) if isinstance(lesion, torch.Tensor) else np.concatenate(parts)
        return convert_to_dst_type(fused, p_pix, dtype=fused.dtype)[0]


class BayesFusiond(MapTransform):
    """Dictionary version of :class:`BayesFusion`: ``d[key] ← fuse(d[key], d[instance_key])`` for each key.

    Args:
        keys: keys of the pixel-probability maps (e.g. ``"pred"``).
        instance_key: key of the instance-probability map (0.5 outside instances leaves pixels unchanged).
        lesion_channel: see :class:`BayesFusion`.
        allow_missing_keys: do not fail on a missing key.

    Raises:
        KeyError: ``instance_key`` is missing.
    """

    backend = BayesFusion.backend

    def __init__(
        self,
        keys: KeysCollection,
        instance_key: str,
        lesion_channel: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.instance_key = instance_key
        self.fusion = BayesFusion(lesion_channel)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.instance_key not in d:
            raise KeyError(f"BayesFusiond: instance key '{self.instance_key}' not in the data (keys: {list(d)}).")
        for key in self.key_iterator(d):
            d[key] = self.fusion(d[key], d[self.instance_key])
        return d
