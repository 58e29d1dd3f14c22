"""Fit the (T_h, S_min) post-processing of Clèrigues et al. 2020 on validation cases and store it for inference.

Clèrigues A et al. 2020, doi:10.1016/j.cmpb.2020.105521, §3.5: the lesion probability is thresholded at T_h and
connected components smaller than S_min voxels are removed; both are grid-searched on validation folds. The
search itself is :func:`strokeseg.fitting.lesion_size.grid_search_threshold_size`; this module adds the
ignite handler that collects one evaluator run's probabilities and labels, writes the result as JSON
(atomically), and :func:`tuned_value` that an inference config uses to read it back (with the paper's values
as fallback when nothing was fitted).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ignite.engine import Engine, Events

from strokeseg.atomic_io import write_text_atomic
from strokeseg.errors import DataError
from strokeseg.fitting.lesion_size import DEFAULT_SIZES, DEFAULT_THRESHOLDS, grid_search_threshold_size

__all__ = ["ThresholdSizeSearch", "tuned_value"]


def tuned_value(path: str | Path, key: str, default: float):
    """``key`` of a JSON written by :class:`ThresholdSizeSearch`, or ``default`` when the file does not exist.

    Raises:
        DataError: the file exists but is not such a JSON.
    """
    path = Path(path)
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))[key]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: not a post-processing file with {key!r} ({err})") from err


class ThresholdSizeSearch:
    """Collect ``(lesion probability, label)`` of every evaluated case, grid-search (T_h, S_min), write JSON.

    Args:
        output_file: JSON written at the end of the run: ``threshold``, ``min_size``, ``score`` and the grid.
        thresholds, sizes: the grid (defaults: ``DEFAULT_THRESHOLDS`` and ``DEFAULT_SIZES`` of
            :mod:`strokeseg.fitting.lesion_size`).
        pred_key, label_key: keys of ``engine.state.output`` items (``pred`` = ``(2, ...)`` softmax or
            ``(1, ...)`` lesion probability; ``label`` = ``(1, ...)`` reference).
    """

    def __init__(
        self,
        output_file: str | Path,
        thresholds=DEFAULT_THRESHOLDS,
        sizes=DEFAULT_SIZES,
        pred_key: str = "pred",
        label_key: str = "label",
    ) -> None:
        self.output_file = Path(output_file)
        self.thresholds = [float(t) for t in thresholds]
        self.sizes = [int(s) for s in sizes]
        self.pred_key, self.label_key = pred_key, label_key
        self.probs: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.spacings: list[tuple[float, ...]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: (self.probs.clear(), self.labels.clear()))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._fit)

    def _collect(self, engine: Engine) -> None:
        for item in engine.state.output:
            pred, label = item[self.pred_key], item[self.label_key]
            prob = pred[1] if pred.shape[0] == 2 else pred[0]
            self.probs.append(np.asarray(prob.detach().cpu().numpy(), dtype=np.float32))
            self.labels.append(np.asarray(label[0].detach().cpu().numpy()) > 0)
            affine = getattr(pred, "affine", None)
            spacing = (1.0,) * prob.ndim
            if affine is not None:
                a = np.asarray(affine.detach().cpu().numpy() if hasattr(affine, "detach") else affine, dtype=float)
                spacing = tuple(float(np.linalg.norm(a[:3, k])) for k in range(prob.ndim))
            self.spacings.append(spacing)

    def _fit(self, engine: Engine) -> None:
        if not self.probs:
            raise DataError("threshold search: the evaluator produced no case to fit (T_h, S_min) on")
        threshold, min_size, table = grid_search_threshold_size(
            self.probs, self.labels, self.thresholds, self.sizes, spacing=self.spacings
        )
        i, j = self.thresholds.index(threshold), self.sizes.index(min_size)
        result = {
            "threshold": threshold,
            "min_size": min_size,
            "score": float(table[i, j]),
            "cases": len(self.probs),
            "thresholds": self.thresholds,
            "sizes": self.sizes,
            "score_table": np.asarray(table, dtype=float).round(6).tolist(),
        }
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.output_file, json.dumps(result, indent=4) + "\n")
        engine.logger.info(f"(T_h, S_min) = ({threshold}, {min_size}) fitted on {len(self.probs)} validation cases")
