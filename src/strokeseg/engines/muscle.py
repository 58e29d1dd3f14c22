"""MUSCLE Net training around the EDD Net (Chen et al. 2017, §3.2): training-sample mining and class balancing.

The candidate cascade used at inference (small candidates, multi-scale patches, the EDD + MUSCLE inferer) lives
in :mod:`strokeseg.inferers.cascade`; its names are re-exported here for :mod:`strokeseg.engines`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer

from strokeseg.errors import DataError
from strokeseg.inferers.cascade import (
    CANDIDATE_MAX_SIZE,
    CANDIDATE_THRESHOLD,
    EddMuscleInferer,
    SmallCandidates,
    find_small_candidates,
    multiscale_candidate_patches,
)
from strokeseg.inferers.slices import BatchedSliceInferer
from strokeseg.naming import entry_case_name

__all__ = [
    "SmallCandidates",
    "find_small_candidates",
    "multiscale_candidate_patches",
    "mine_muscle_samples",
    "balanced_sample_weights",
    "require_samples",
    "EddMuscleInferer",
]

logger = logging.getLogger(__name__)


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _case_name(entry: dict, item: dict, index: int) -> str:
    """:func:`strokeseg.naming.entry_case_name` of the datalist entry, else of the preprocessed item (an in-memory
    entry's image carries no file name, its loaded version may), else ``case_<index>``."""
    try:
        return entry_case_name(entry)
    except ValueError:
        return entry_case_name(item, index)


def mine_muscle_samples(
    network: torch.nn.Module,
    data: Sequence[dict],
    preprocessing: Callable[[dict], dict],
    device: str | torch.device = "cpu",
    inferer: Inferer | None = None,
    threshold: float = CANDIDATE_THRESHOLD,
    max_size: int = CANDIDATE_MAX_SIZE,
) -> list[dict[str, Any]]:
    """Build the MUSCLE Net training set: run the trained EDD Net over training cases and label its small candidates.

    Each case is preprocessed, segmented slice by slice (eval mode, no gradients: the mining is not
    differentiable, Chen et al. 2017 train MUSCLE separately), thresholded; every small candidate gets the label 1 if
    any of its pixels lies in the reference lesion, else 0, and its ``(4, 16, 16)`` multi-scale input.

    Args:
        network: trained EDD Net, ``(N, 1, H, W) → (N, 2, H, W)`` logits.
        data: datalist entries (``{"image": …, "label": …, "case": …}``).
        preprocessing: transform giving ``image`` ``(1, H, W, D)`` and ``label`` ``(1, H, W, D)`` from an entry.
        device: where the network runs.
        inferer: slice inferer (default :class:`BatchedSliceInferer` padding slices to a multiple of 4).
        threshold: EDD probability threshold (0.5).
        max_size: candidates have fewer pixels than this (60).

    Returns:
        ``[{"image": float32 (4, 16, 16) array, "label": 0 | 1, "case": str}]`` in case order, then candidate
        order — ready for ``monai.data.Dataset``.

    Raises:
        DataError: a preprocessed case lacks ``image``/``label`` or their shapes do not match.
    """
    inferer = inferer if inferer is not None else BatchedSliceInferer(spatial_divisor=4)
    was_training = network.training
    network.eval()
    samples: list[dict[str, Any]] = []
    try:
        for index, entry in enumerate(data):
            item = preprocessing(entry)
            if isinstance(item, (list, tuple)):
                raise DataError(f"case {index}: preprocessing returned {len(item)} samples; it must return one dict.")
            case = _case_name(entry, item, index)
            if "image" not in item or "label" not in item:
                raise DataError(f"{case}: preprocessing must give 'image' and 'label'; got keys {sorted(item)}.")
            image = torch.as_tensor(item["image"])
            label = _as_numpy(item["label"])
            if image.ndim != 4 or label.ndim != 4 or tuple(image.shape[1:]) != tuple(label.shape[1:]):
                raise DataError(
                    f"{case}: expected image and label (1, H, W, D) of one spatial shape, "
                    f"got {tuple(image.shape)} and {tuple(label.shape)}."
                )
            with torch.inference_mode():
                logits = inferer(image[None].to(device), network)
                prob = torch.softmax(logits.float(), dim=1)[0, 1].cpu()
            candidates = find_small_candidates(prob.numpy(), threshold, max_size)
            if len(candidates) == 0:
                continue
            hits = np.bincount(candidates.label_map[(label > 0).any(axis=0)], minlength=len(candidates) + 1)[1:]
            patches = multiscale_candidate_patches(image[0].cpu(), prob, candidates).numpy()
            samples.extend(
                {"image": patch.astype(np.float32), "label": int(hit > 0), "case": case}
                for patch, hit in zip(patches, hits, strict=True)
            )
    finally:
        network.train(was_training)
    return samples


def balanced_sample_weights(samples: Sequence[dict[str, Any]]) -> list[float]:
    """Per-sample weights ``1 / count(class)`` for a ``WeightedRandomSampler``: each class is drawn equally often.

    An assumption of ours: class balancing is attributed to the authors' code, but none of their Caffe files
    (``MUSCLE/net.prototxt``, ``solver.prototxt``, ``utils.py``) holds it, and Chen et al. 2017 do not describe it.

    Args:
        samples: items with an integer ``label``.
    """
    labels = np.asarray([int(s["label"]) for s in samples], dtype=np.int64)
    if labels.size == 0:
        return []
    if labels.min() < 0:
        raise ValueError("balanced_sample_weights: labels must be non-negative class indices.")
    counts = np.bincount(labels)
    return (1.0 / counts[labels]).tolist()


def require_samples(samples: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """Return ``samples`` unchanged, or fail clearly when the mining found nothing to train MUSCLE on.

    Raises:
        DataError: no candidate was mined (the EDD Net produced no component smaller than the size cut on
            any training case), so MUSCLE Net has nothing to learn.
    """
    if len(samples) == 0:
        raise DataError(
            "MUSCLE mining found no small EDD candidate on the training cases, so MUSCLE Net has nothing to learn; "
            "train the EDD Net longer, or run inference without MUSCLE (--use_muscle false)."
        )
    labels = [int(s["label"]) for s in samples]
    logger.info(
        "MUSCLE mining: %d candidates (%d true lesions, %d false positives)",
        len(labels),
        sum(labels),
        len(labels) - sum(labels),
    )
    return samples
