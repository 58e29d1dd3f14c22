"""MetaTensor bookkeeping for transforms that compute on plain tensors: the output keeps the input's metadata."""

from __future__ import annotations

import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor

__all__ = ["with_meta_of"]


def with_meta_of(out: torch.Tensor, like: NdarrayOrTensor) -> torch.Tensor:
    """``out`` as a MetaTensor carrying the affine, metadata and applied operations of ``like`` (the metadata dict
    and the operations list are shallow copies); ``out`` unchanged when ``like`` is not a MetaTensor.

    Args:
        out: the computed tensor, same spatial grid as ``like``.
        like: the transform's input.
    """
    if isinstance(like, MetaTensor):
        return MetaTensor(
            out, affine=like.affine, meta=dict(like.meta), applied_operations=list(like.applied_operations)
        )
    return out
