"""MONAI / ignite integration of the metrics for bundle evaluators.

- :class:`LesionwiseMetric` is a MONAI ``CumulativeIterationMetric`` computing one per-case metric of
  :func:`~strokeseg.metrics.case.case_metrics` (``dice``, ``hd95``, ``n_fp``, ``lesion_f1``, …), so a
  bundle can use it as ``key_metric`` through ``monai.handlers.IgniteMetricHandler``. MONAI's own
  metrics have no lesion-wise quantity and no NaN-instead-of-inf contract, hence this class.
- :class:`CaseMetricsSaver` is an ignite handler for a ``SupervisedEvaluator``: it computes every metric
  per case from ``engine.state.output`` and writes the report (metrics.csv, summary, figures) when the
  run completes.

Example (bundle config)::

    "key_metric": {"val_lesion_f1": {
        "_target_": "IgniteMetricHandler",
        "metric_fn": {"_target_": "strokeseg.metrics.handlers.LesionwiseMetric", "metric_name": "lesion_f1"},
        "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}},
    "handlers": [{"_target_": "strokeseg.metrics.handlers.CaseMetricsSaver", "output_dir": "@output_dir"}]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from strokeseg.knobs import BoolKnob, as_bool
from strokeseg.metrics.case import METRIC_GROUPS, case_metrics
from strokeseg.metrics.report import ReportBuilder, write_report
from strokeseg.naming import OUTPUT_TAILS, entry_case_name

__all__ = ["LesionwiseMetric", "CaseMetricsSaver", "foreground", "spacing_from_meta"]


def foreground(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """The lesion channel of a channel-first ``(C, H, W[, D])`` prediction or label as a numpy array.

    Channel 1 of a 2-channel (one-hot / softmax) map, channel 0 of a single channel.

    Raises:
        ValueError: more than 2 channels (not a binary lesion task).
    """
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if arr.shape[0] not in (1, 2):
        raise ValueError(f"expected 1 or 2 channels (C, H, W[, D]), got shape {arr.shape}.")
    return arr[arr.shape[0] - 1]


def spacing_from_meta(t: Any, spatial_dims: int) -> tuple[float, ...] | None:
    """Voxel size (mm) from a MetaTensor's affine (column norms), ``None`` for a plain tensor/array."""
    if not isinstance(t, MetaTensor):
        return None
    affine = t.affine
    if affine.ndim == 3:
        affine = affine[0]
    affine = affine.detach().cpu().double().numpy()
    rows = min(affine.shape[0] - 1, 3)
    return tuple(float(np.linalg.norm(affine[:rows, k])) for k in range(spatial_dims))


def _soft(arr: np.ndarray) -> bool:
    return arr.dtype != bool and not bool(np.all((arr == 0) | (arr == 1)))


class LesionwiseMetric(CumulativeIterationMetric):
    """One per-case metric of :func:`~strokeseg.metrics.case.case_metrics` as a MONAI metric.

    Inputs are batch-first ``(B, C, H, W[, D])`` tensors or lists of channel-first tensors (as from
    ``decollate_batch``); the lesion channel is channel 1 of 2 channels, else channel 0; soft values are
    binarised with ``>= threshold``. The spacing comes from ``spacing`` or the MetaTensor affine.
    ``aggregate`` reduces over cases with NaNs (undefined metrics) left out.

    Args:
        metric_name: a column of ``CASE_COLUMNS`` (e.g. ``"dice"``, ``"hd95"``, ``"n_fp"``, ``"lesion_f1"``).
        connectivity: lesion connectivity (``None`` = full).
        per_slice: lesion-wise metrics on 2-D components per axial slice.
        spacing: fixed voxel size in mm (default: from the MetaTensor, else 1).
        threshold: binarisation of soft predictions.
        reduction: MONAI reduction over the buffered cases (default mean).
        get_not_nans: ``aggregate`` also returns the number of non-NaN cases.

    Raises:
        ValueError: unknown ``metric_name``.
    """

    def __init__(
        self,
        metric_name: str = "dice",
        connectivity: int | None = None,
        per_slice: BoolKnob = False,
        spacing: Sequence[float] | None = None,
        threshold: float = 0.5,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        if metric_name not in METRIC_GROUPS:
            raise ValueError(f"metric_name must be one of {sorted(METRIC_GROUPS)}, got {metric_name!r}.")
        self.metric_name = metric_name
        self.connectivity = connectivity
        self.per_slice = as_bool(per_slice, "per_slice")
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.threshold = threshold
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("LesionwiseMetric needs the reference y.")
        if y_pred.shape[0] != y.shape[0]:
            raise ValueError(f"batch sizes differ: y_pred {tuple(y_pred.shape)}, y {tuple(y.shape)}.")
        values = []
        for b in range(y_pred.shape[0]):
            pred, ref = foreground(y_pred[b]), foreground(y[b]) != 0
            pred = pred >= self.threshold if _soft(pred) else pred != 0
            spacing = self.spacing or spacing_from_meta(y_pred[b], pred.ndim) or spacing_from_meta(y[b], pred.ndim)
            row = case_metrics(
                pred,
                ref,
                spacing or (1.0,) * pred.ndim,
                self.connectivity,
                self.per_slice,
                metrics=[self.metric_name],
            )
            values.append(float(row[self.metric_name]))
        return torch.tensor(values, dtype=torch.float32, device=y_pred.device).reshape(-1, 1)

    def aggregate(self, reduction: MetricReduction | str | None = None):
        """Reduce the buffered per-case values (NaNs excluded); returns ``f`` or ``(f, not_nans)``."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the buffer holds no per-case values yet.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f


class CaseMetricsSaver:
    """Ignite handler: per-case metrics of an evaluator's outputs and the report at the end of the run.

    Each iteration reads ``engine.state.output`` (a list of per-case dicts after decollation, or a batch
    dict that is decollated here), takes the lesion channel of ``pred_key``/``label_key`` (channel 1 of
    a 2-channel one-hot, else channel 0; soft values binarised with ``>= threshold`` and added to the
    PR/ROC curves), the spacing from the MetaTensor affine and the case name from ``case_key`` in the
    output or batch dict, else from that meta key, else from the label's/prediction's
    ``filename_or_obj``. On ``Events.COMPLETED`` it writes the report into ``output_dir``. In a
    distributed run the rows are gathered and rank 0 writes.

    Args:
        output_dir: report folder.
        pred_key / label_key: keys of the prediction and the reference in the output dicts.
        case_key: key (or meta key) holding the case name.
        image_key: key of the input image for the overlay background (channel 0), ``None`` for none.
        connectivity / per_slice: lesion-wise settings (see :func:`case_metrics`).
        threshold: binarisation of soft predictions.
        small_lesion_voxels: small/large split of the summary (default the cohort mean).
        figures: write the PNG figures.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        pred_key: str = "pred",
        label_key: str = "label",
        case_key: str = "case",
        image_key: str | None = "image",
        connectivity: int | None = None,
        per_slice: BoolKnob = False,
        threshold: float = 0.5,
        small_lesion_voxels: float | None = None,
        figures: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.pred_key, self.label_key, self.case_key, self.image_key = pred_key, label_key, case_key, image_key
        self.connectivity, self.threshold = connectivity, threshold
        self.per_slice = as_bool(per_slice, "per_slice")
        self.small_lesion_voxels = small_lesion_voxels
        self.figures = figures
        self.builder = self._new_builder()
        self.report_path: Path | None = None

    def _new_builder(self) -> ReportBuilder:
        return ReportBuilder(threshold=self.threshold, connectivity=self.connectivity, per_slice=self.per_slice)

    def attach(self, engine) -> None:
        """Register on ``EPOCH_STARTED`` (reset), ``ITERATION_COMPLETED`` (collect) and ``COMPLETED`` (write)."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine=None) -> None:
        """Forget the cases of a previous run."""
        self.builder = self._new_builder()

    def _case_name(self, item: Mapping, batch_item: Mapping | None, index: int) -> str:
        """:func:`strokeseg.naming.entry_case_name` of the output, the batch or the label's / prediction's meta
        data (``case_key``), else of the label's or prediction's file (without the writers' tails), else
        ``case_<index>``."""
        metas = [getattr(item.get(key), "meta", None) or {} for key in (self.label_key, self.pred_key)]
        for source in (item, batch_item or {}, *metas):
            value = source.get(self.case_key)
            if isinstance(value, str) and value:
                return value
        keys = (self.label_key, self.pred_key)
        return entry_case_name(item, index, key=self.case_key, image_keys=keys, tails=OUTPUT_TAILS)

    def __call__(self, engine) -> None:
        """Collect the cases of the current iteration."""
        output, batch = engine.state.output, getattr(engine.state, "batch", None)
        items = decollate_batch(output) if isinstance(output, Mapping) else list(output)
        if isinstance(batch, Mapping):
            batch = decollate_batch(batch)
        batch_items = batch if isinstance(batch, Sequence) and len(batch) == len(items) else [None] * len(items)
        for item, batch_item in zip(items, batch_items, strict=True):
            self.add(item, batch_item)

    def add(self, item: Mapping, batch_item: Mapping | None = None) -> dict[str, Any]:
        """Add one decollated case dict; returns its metric row."""
        name = self._case_name(item, batch_item, len(self.builder.rows))
        base, n = name, 1
        while any(r["case"] == name for r in self.builder.rows):  # repeated file names: keep every case
            n += 1
            name = f"{base}#{n}"
        pred_t, label_t = item[self.pred_key], item[self.label_key]
        pred, ref = foreground(pred_t), foreground(label_t)
        spacing = spacing_from_meta(label_t, pred.ndim) or spacing_from_meta(pred_t, pred.ndim) or (1.0,) * pred.ndim
        background = None
        if self.image_key is not None and isinstance(item.get(self.image_key), (torch.Tensor, np.ndarray)):
            image = item[self.image_key]
            image = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
            background = image[0] if image.ndim == pred.ndim + 1 and image.shape[1:] == pred.shape else None
        return self.builder.add_case(name, pred, ref, spacing, background=background)

    def write(self, engine=None) -> Path | None:
        """Write the report (rank 0 in a distributed run); returns the report folder or ``None``."""
        rows, world = self.builder.rows, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
        if world > 1:
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, rows)
            if torch.distributed.get_rank() != 0:
                return None
            rows = [r for part in gathered for r in part]
            return self._write_rows(rows)
        if not rows:
            return None
        self.report_path = self.builder.write(self.output_dir, self.small_lesion_voxels, self.figures)
        return self.report_path

    def _write_rows(self, rows: list[dict]) -> Path | None:
        if not rows:
            return None
        # curves and overlays stay per rank; the gathered report has the metric tables and row figures
        self.report_path = write_report(
            rows, self.output_dir, figures=self.figures, small_lesion_voxels=self.small_lesion_voxels
        )
        return self.report_path
