"""The EDD + MUSCLE candidate cascade (Chen et al. 2017, §3.2): small candidates of the EDD probability map, their
multi-scale MUSCLE inputs, and the inferer that classifies them and fuses the two probabilities.

MONAI has no false-positive-reduction stage of this kind (candidate → instance classifier → fusion), hence this
module. Connected components use ``scipy.ndimage.label``; patches use one ``grid_sample`` call; the slices go
through :class:`strokeseg.inferers.slices.BatchedSliceInferer`. The MUSCLE training (candidate mining) lives in
:mod:`strokeseg.engines.muscle`.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type
from scipy import ndimage

from strokeseg.errors import BundleError, DataError
from strokeseg.inferers.slices import BatchedSliceInferer
from strokeseg.knobs import BoolKnob
from strokeseg.networks.weights import load_network_state
from strokeseg.postprocessing.fusion import FUSION_RULES, fuse_instance_probability

__all__ = [
    "SmallCandidates",
    "find_small_candidates",
    "multiscale_candidate_patches",
    "EddMuscleInferer",
    "CANDIDATE_THRESHOLD",
    "CANDIDATE_MAX_SIZE",
]

# the authors' public code (Chen et al. 2017; utils.muscle_input): EDD probability threshold and the small-candidate
# size cut (components of fewer than 60 pixels are evaluated; §5.4: 99 % of EDD false positives had <= 60 px).
CANDIDATE_THRESHOLD = 0.5
CANDIDATE_MAX_SIZE = 60
# the authors' code (Chen et al. 2017; utils.muscle_input): DWI patch sides 16, 24, 32 px, each resized to 16 × 16.
PATCH_SCALES = (16, 24, 32)
PATCH_SIZE = 16
# Instance probability that leaves a pixel unchanged in Bayes' formula (marks "not a candidate").
NEUTRAL_PROBABILITY = 0.5


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@dataclass(frozen=True)
class SmallCandidates:
    """Small 2-D connected components of a thresholded probability volume.

    Candidate ``i`` (0-based) carries the value ``i + 1`` in ``label_map``; 0 marks every other pixel.

    Attributes:
        label_map: ``(H, W, D)`` int32 map of the candidates.
        slice_index: ``(N,)`` int64 axial slice of each candidate.
        centroid: ``(N, 2)`` float64 (row, col) mean pixel position of each candidate in its slice.
        size: ``(N,)`` int64 pixel count of each candidate.
    """

    label_map: np.ndarray
    slice_index: np.ndarray
    centroid: np.ndarray
    size: np.ndarray

    def __len__(self) -> int:
        return int(self.size.shape[0])


def find_small_candidates(
    prob: np.ndarray | torch.Tensor,
    threshold: float = CANDIDATE_THRESHOLD,
    max_size: int = CANDIDATE_MAX_SIZE,
    connectivity: int = 2,
) -> SmallCandidates:
    """Find the per-slice connected components of ``prob > threshold`` with fewer than ``max_size`` pixels.

    Components are 2-D (never joined across slices): one ``scipy.ndimage.label`` call on the slice-major volume
    with a structuring element that is empty along the slice axis, then sizes and centroids by ``bincount``.
    ``connectivity=2`` is 8-connectivity, the default of ``skimage.measure.label`` that the authors' code relied
    on (``1`` = 4-connectivity). Candidates are numbered slice by slice, in raster order of their first pixel.

    Args:
        prob: ``(H, W, D)`` lesion probabilities (numpy or torch).
        threshold: a pixel is foreground when ``prob > threshold`` (0.5 in Chen et al. 2017).
        max_size: components with ``size < max_size`` are candidates (60 in Chen et al. 2017); larger ones are left out.
        connectivity: 1 (4-neighbours) or 2 (8-neighbours) within a slice.

    Raises:
        DataError: ``prob`` is not 3-D.
    """
    volume = _as_numpy(prob)
    if volume.ndim != 3:
        raise DataError(f"find_small_candidates expects an (H, W, D) probability map, got shape {volume.shape}.")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}.")
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, connectivity)
    foreground = np.moveaxis(volume > threshold, -1, 0)  # (D, H, W): labels numbered slice by slice
    labels, count = ndimage.label(foreground, structure=structure)
    size = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = np.flatnonzero(size < max_size)
    relabel = np.zeros(count + 1, dtype=np.int32)
    relabel[keep + 1] = np.arange(1, keep.size + 1, dtype=np.int32)
    small = relabel[labels]
    # Only the candidates' pixels are listed (an untrained or poor EDD Net can put half the volume above the
    # threshold in a few large components). Centroids from exact float64 sums of integer coordinates; the slice
    # of a component is the mean of identical integers, hence exact.
    z, row, col = np.nonzero(small)
    ids = small[z, row, col]
    sums = np.stack([np.bincount(ids, weights=c, minlength=keep.size + 1)[1:] for c in (z, row, col)], axis=1)
    means = sums / np.maximum(size[keep], 1)[:, None]
    label_map = np.ascontiguousarray(np.moveaxis(small, 0, -1))
    return SmallCandidates(
        label_map=label_map,
        slice_index=np.rint(means[:, 0]).astype(np.int64),
        centroid=means[:, 1:].astype(np.float64),
        size=size[keep].astype(np.int64),
    )


def multiscale_candidate_patches(
    image: np.ndarray | torch.Tensor,
    prob: np.ndarray | torch.Tensor,
    candidates: SmallCandidates,
    scales: Sequence[int] = PATCH_SCALES,
    patch_size: int = PATCH_SIZE,
) -> torch.Tensor:
    """Cut the MUSCLE Net input of every candidate: DWI patches at several scales and the probability patch.

    For a scale ``s`` the patch covers rows ``r0 … r0 + s − 1`` with ``r0 = floor(row) − s // 2 + 1``, columns
    likewise, in the candidate's slice — the window of the authors' ``utils.patch_extract`` (start
    ``mean − s/2 + 1`` truncated to an integer), so an integer centroid sits at index ``s // 2 − 1``; it is resized
    to ``patch_size`` with bilinear interpolation (``align_corners=False``, no antialiasing — a 32-px patch
    becomes exact 2 × 2 means, a 16-px patch is copied). Outside the image the patch is padded with 0, the
    background of EDD-normalised DWI and of the probability map. The probability patch is the ``scales[0]``
    patch of ``prob``. All candidates and scales are sampled by one ``torch.nn.functional.grid_sample`` call.

    Args:
        image: ``(H, W, D)`` DWI volume (or ``(H, W)`` slice, then every candidate must be on slice 0).
        prob: lesion probabilities, same shape as ``image``.
        candidates: from :func:`find_small_candidates` on ``prob``.
        scales: patch sides in pixels (16, 24, 32 in the authors' code of Chen et al. 2017).
        patch_size: output side (16).

    Returns:
        ``(N, len(scales) + 1, patch_size, patch_size)`` float32 tensor on ``image``'s device (CPU for numpy):
        channels are the DWI scales in order, then the probability patch.

    Raises:
        DataError: shapes of ``image`` and ``prob`` differ or a candidate lies outside the volume.
    """
    img = torch.as_tensor(_as_numpy(image) if not isinstance(image, torch.Tensor) else image.detach())
    img = img.as_tensor() if isinstance(img, MetaTensor) else img
    prb = torch.as_tensor(_as_numpy(prob) if not isinstance(prob, torch.Tensor) else prob.detach())
    prb = prb.as_tensor() if isinstance(prb, MetaTensor) else prb
    if img.ndim == 2:
        img, prb = img[..., None], prb[..., None]
    if img.ndim != 3 or tuple(img.shape) != tuple(prb.shape):
        raise DataError(
            f"multiscale_candidate_patches needs image and prob of one (H, W[, D]) shape, "
            f"got {tuple(img.shape)} and {tuple(prb.shape)}."
        )
    height, width, depth = img.shape
    n, k = len(candidates), len(scales)
    device = img.device
    if n == 0:
        return torch.zeros(0, k + 1, patch_size, patch_size, dtype=torch.float32, device=device)
    if candidates.slice_index.max() >= depth or candidates.slice_index.min() < 0:
        raise DataError(f"multiscale_candidate_patches: a candidate lies on a slice outside 0…{depth - 1}.")

    # the authors' public code (Chen et al. 2017; utils.patch_extract): start = int(mean - s/2 + 1); for the even
    # sides used here that is floor(mean) - s // 2 + 1. Its uint8 cast and shift back inside the image are not
    # replicated (zero padding).
    centre = torch.as_tensor(np.floor(candidates.centroid), dtype=torch.float64, device=device)  # (N, 2)
    side = torch.as_tensor(scales, dtype=torch.float64, device=device)  # (K,)
    start = centre[:, None, :] - torch.div(side, 2, rounding_mode="floor")[None, :, None] + 1  # (N, K, 2)
    # Output pixel j of a side-s patch reads patch coordinate (j + 0.5)·s/P − 0.5 (bilinear resize).
    j = torch.arange(patch_size, dtype=torch.float64, device=device) + 0.5
    offsets = j[None, :] * side[:, None] / patch_size - 0.5  # (K, P)
    rows = start[..., 0, None] + offsets[None]  # (N, K, P)
    cols = start[..., 1, None] + offsets[None]
    slices = torch.as_tensor(candidates.slice_index, dtype=torch.float64, device=device)

    # grid_sample (5-D, align_corners=False) wants (x, y, z) = (D, W, H) axes of a (1, C, H, W, D) input
    # normalised as (2·i + 1) / size − 1.
    def normalise(index: torch.Tensor, size: int) -> torch.Tensor:
        return (2 * index + 1) / size - 1

    grid_h = normalise(rows, height)[..., :, None].expand(n, k, patch_size, patch_size)
    grid_w = normalise(cols, width)[..., None, :].expand(n, k, patch_size, patch_size)
    grid_d = normalise(slices, depth)[:, None, None, None].expand(n, k, patch_size, patch_size)
    grid = torch.stack([grid_d, grid_w, grid_h], dim=-1).reshape(1, n * k, patch_size, patch_size, 3)
    volume = torch.stack([img, prb]).to(torch.float32)[None]  # (1, 2, H, W, D)
    sampled = F.grid_sample(volume, grid.to(torch.float32), mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled[0].reshape(2, n, k, patch_size, patch_size)
    return torch.cat([sampled[0], sampled[1, :, :1]], dim=1).contiguous()


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (it holds serialised code), not a ``torch.save`` state dict."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


class EddMuscleInferer(Inferer):
    """EDD Net over all slices, then MUSCLE Net on the small candidates, fused per candidate (Chen et al. 2017, §3.2).

    ``__call__(inputs (B, 1, H, W, D), network)`` runs the EDD Net slice-wise (:class:`BatchedSliceInferer`),
    takes the lesion softmax ``p_pix``, finds the small candidates per case, classifies them with
    ``muscle_network`` (``(N, 4, 16, 16) → (N, 2)`` logits) into ``p_inst`` and replaces ``p_pix`` inside each
    candidate's pixels by the fusion rule's result (:func:`strokeseg.postprocessing.fusion.fuse_instance_probability`:
    ``"product"``, our reading of the paper's "Bayes' theorem", or ``"hard_reject"``); every other pixel keeps
    ``p_pix`` exactly. Larger components are kept as they are. MUSCLE runs in eval mode without gradients (its
    training flag is restored afterwards), so the output is deterministic.

    Deployment: the inferer can load the MUSCLE weights itself from ``muscle_checkpoint`` — a TorchScript export
    (``models/muscle.ts``, then ``muscle_network`` may be ``None``) or a state dict (``models/muscle.pt``, loaded
    strictly into ``muscle_network``, ``weights_only``) — on its first call. A client that runs only the bundle's
    ``inferer`` and the exported EDD network (the MONAI Deploy App SDK's ``MonaiBundleInferenceOperator``, which
    never runs the bundle's handlers) thus gets the trained MUSCLE Net, not random weights.

    Args:
        muscle_network: MUSCLE Net, or ``None`` for EDD only (unless ``muscle_checkpoint`` is a TorchScript file).
        threshold: EDD probability threshold for candidates (0.5).
        max_size: candidates have fewer pixels than this (60).
        slice_batch_size: slices per EDD call.
        autocast_bf16: run the EDD Net under bfloat16 autocast (MUSCLE stays float32).
        channels_last: channels-last memory format for the EDD Net.
        return_edd_only: skip MUSCLE even when a network is given.
        spatial_divisor: pad slices to a multiple of this for the EDD Net (4: two pooling stages).
        fusion_rule: ``"product"`` (default) or ``"hard_reject"`` (drop a candidate whose ``p_inst < 0.5``).
        muscle_checkpoint: optional MUSCLE weights file (``.ts`` TorchScript or ``.pt`` state dict) loaded on the
            first call; ``None`` = use ``muscle_network`` as it is (e.g. loaded by a bundle handler).

    Raises:
        ValueError: unknown ``fusion_rule``.

    Returns (from ``__call__``):
        ``(B, 2, H, W, D)`` float32 probabilities (background, lesion); a MetaTensor input keeps its meta.
    """

    def __init__(
        self,
        muscle_network: torch.nn.Module | None = None,
        threshold: float = CANDIDATE_THRESHOLD,
        max_size: int = CANDIDATE_MAX_SIZE,
        slice_batch_size: int = 64,
        autocast_bf16: bool = False,
        channels_last: BoolKnob = False,
        return_edd_only: bool = False,
        spatial_divisor: int = 4,
        fusion_rule: str = "product",
        muscle_checkpoint: str | Path | None = None,
    ) -> None:
        super().__init__()
        if fusion_rule not in FUSION_RULES:
            raise ValueError(f"fusion_rule must be one of {FUSION_RULES}, got {fusion_rule!r}.")
        self.muscle_network = muscle_network
        self.threshold = threshold
        self.max_size = max_size
        self.return_edd_only = return_edd_only
        self.fusion_rule = fusion_rule
        self.muscle_checkpoint = None if muscle_checkpoint in (None, "") else Path(muscle_checkpoint)
        self._checkpoint_loaded = False
        self.slice_inferer = BatchedSliceInferer(
            slice_batch_size=slice_batch_size,
            spatial_divisor=spatial_divisor,
            autocast_bf16=autocast_bf16,
            channels_last=channels_last,
        )

    def load_muscle(self, device: torch.device | str = "cpu") -> None:
        """Load ``muscle_checkpoint`` (once): a TorchScript file replaces ``muscle_network``, a state dict is loaded
        into it strictly.

        Raises:
            BundleError: the file is missing or does not fit ``muscle_network`` (names the file); a state dict
                without a ``muscle_network`` to load it into.
        """
        if self._checkpoint_loaded or self.muscle_checkpoint is None:
            return
        path = self.muscle_checkpoint
        if not path.is_file():
            raise BundleError(f"{path}: MUSCLE weights not found (train the MUSCLE stage or export muscle.ts).")
        if _is_torchscript(path):
            self.muscle_network = torch.jit.load(str(path), map_location=device).eval()
        elif self.muscle_network is None:
            raise BundleError(f"{path}: a MUSCLE state dict needs muscle_network to load it into.")
        else:
            param = next(self.muscle_network.parameters(), None)
            load_network_state(self.muscle_network, path, map_location=param.device if param is not None else "cpu")
        self._checkpoint_loaded = True

    def instance_probabilities(self, image: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """Instance map ``(H, W, D)`` of one case: MUSCLE's lesion probability on candidate pixels, 0.5 elsewhere.

        Args:
            image: ``(H, W, D)`` input DWI.
            prob: ``(H, W, D)`` EDD lesion probabilities.
        """
        return self._instance_map(image, prob)[0]

    def _instance_map(self, image: torch.Tensor, prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(instance probabilities, candidate mask)``, both ``(H, W, D)``, of one case."""
        candidates = find_small_candidates(prob, self.threshold, self.max_size)
        lookup = torch.full((len(candidates) + 1,), NEUTRAL_PROBABILITY, dtype=torch.float32, device=prob.device)
        if len(candidates) and self.muscle_network is not None:
            patches = multiscale_candidate_patches(image, prob, candidates)
            param = next(self.muscle_network.parameters(), None)
            # The evaluator puts only the EDD network in eval mode; MUSCLE's dropout must be off as well.
            was_training = self.muscle_network.training
            self.muscle_network.eval()
            try:
                logits = self.muscle_network(patches.to(param.device if param is not None else patches.device))
            finally:
                self.muscle_network.train(was_training)
            lookup[1:] = torch.softmax(logits.float(), dim=1)[:, 1].to(prob.device)
        label_map = torch.as_tensor(candidates.label_map, dtype=torch.long, device=prob.device)
        return lookup[label_map], label_map > 0

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Segment ``inputs`` ``(B, 1, H, W, D)`` with the EDD ``network`` (+ MUSCLE) → ``(B, 2, H, W, D)``.

        Raises:
            DataError: ``inputs`` is not 5-D.
            BundleError: ``muscle_checkpoint`` cannot be loaded.
        """
        if inputs.ndim != 5:
            raise DataError(f"EddMuscleInferer expects (B, 1, H, W, D) inputs, got shape {tuple(inputs.shape)}.")
        source = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        logits = self.slice_inferer(source, network, *args, **kwargs)
        lesion = torch.softmax(logits, dim=1)[:, 1]  # (B, H, W, D)
        if not self.return_edd_only:
            self.load_muscle(source.device)
        if self.muscle_network is not None and not self.return_edd_only:
            with torch.no_grad():
                fused = []
                for image, prob in zip(source[:, 0], lesion, strict=True):
                    instance, is_candidate = self._instance_map(image, prob)
                    fused.append(
                        torch.where(is_candidate, fuse_instance_probability(prob, instance, self.fusion_rule), prob)
                    )
            lesion = torch.stack(fused)
        out = torch.stack([1 - lesion, lesion], dim=1)
        if isinstance(inputs, MetaTensor):
            return convert_to_dst_type(out, inputs, dtype=out.dtype)[0]
        return out
