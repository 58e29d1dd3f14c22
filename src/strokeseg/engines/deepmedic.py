"""DeepMedic post-processing as a bundle uses it: THT0 / THT1 / FH fitted on the validation fold, written next to
the model, and read back by inference (Pérez Malla et al., 2019, doi:10.3389/fninf.2019.00033, §2.4).

:class:`PostprocessingFitter` is an ignite handler for an evaluator whose outputs hold the lesion probability
(``pred``, in the case's original space) and the reference (``label``): on completion it fits THT0 (max
precision x recall) and THT1 (max TPR - FPR) with :class:`strokeseg.metrics.curves.CurveAccumulator`
and FH's closing iterations with :func:`strokeseg.postprocessing.morphology.fit_closing_iterations` (the paper's
"average of the per-case best"), and writes ``postprocessing.json`` atomically. :func:`discretise_steps` turns a
step name and that file into the tensor transforms of inference's ``postprocessing``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import AsDiscreted, Lambdad, Transform

from strokeseg.atomic_io import write_text_atomic
from strokeseg.errors import DataError
from strokeseg.fitting.closing import fit_closing_iterations
from strokeseg.metrics.curves import CurveAccumulator
from strokeseg.postprocessing.argmax import ChannelArgmaxd
from strokeseg.postprocessing.morphology import FH_RADIUS, BinaryClosingd

__all__ = ["STEPS", "PostprocessingFitter", "read_fitted", "discretise_steps"]

#: post-processing steps of Pérez Malla et al. 2019, §2.4 ("none": argmax of the softmax, i.e. p >= 0.5)
STEPS = ("none", "tht0", "tht1", "fh")


def _lesion_channel(x: Any) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim >= 4 and arr.shape[0] == 2:
        return arr[1]
    return arr[0] if arr.ndim >= 4 else arr


class PostprocessingFitter:
    """Collect ``(probability, label)`` of every validation case and fit THT0, THT1 and FH's iterations.

    Args:
        output_file: the JSON written on completion (``models/postprocessing.json``).
        pred_key / label_key: keys of the output dicts (2-channel softmax or 1-channel lesion probability; a
            binary or 2-channel one-hot label).
        bins: threshold resolution of the curves.
        max_iterations: largest FH iteration count tried.
        radius: FH ball radius (Pérez Malla et al. 2019: 3).
        description: free text stored with the values (which fold, which model).
    """

    def __init__(
        self,
        output_file: str | Path,
        pred_key: str = "pred",
        label_key: str = "label",
        bins: int = 1000,
        max_iterations: int = 5,
        radius: int = FH_RADIUS,
        description: str = "",
    ) -> None:
        self.output_file = Path(output_file)
        self.pred_key, self.label_key = pred_key, label_key
        self.bins, self.max_iterations, self.radius = int(bins), int(max_iterations), int(radius)
        self.description = description
        self.reset()

    def reset(self, engine: Engine | None = None) -> None:
        self.curves = CurveAccumulator(self.bins)
        self.masks: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def __call__(self, engine: Engine) -> None:
        outputs = engine.state.output
        for item in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            prob = _lesion_channel(item[self.pred_key]).astype(np.float32)
            label = _lesion_channel(item[self.label_key]) > 0
            if prob.shape != label.shape:
                raise DataError(f"probability shape {prob.shape} differs from the label's {label.shape}")
            self.curves.update(np.clip(prob, 0.0, 1.0), label)
            self.masks.append(prob >= 0.5)
            self.labels.append(label)

    def fit(self) -> dict[str, Any]:
        """The fitted values (see the module docstring)."""
        if not self.labels:
            raise DataError("no validation case was seen: nothing to fit the post-processing on")
        iterations = fit_closing_iterations(
            self.masks, self.labels, max_iterations=self.max_iterations, radius=self.radius, strategy="per_case_average"
        )
        return {
            "tht0": float(self.curves.fit_pr()),
            "tht1": float(self.curves.fit_roc()),
            "fh_iterations": int(iterations),
            "fh_radius": self.radius,
            "cases": len(self.labels),
            "fitted_on": self.description,
        }

    def write(self, engine: Engine | None = None) -> Path:
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.output_file, json.dumps(self.fit(), indent=4) + "\n")
        return self.output_file


def read_fitted(path: str | Path) -> dict[str, Any]:
    """The values :class:`PostprocessingFitter` wrote.

    Raises:
        DataError: the file is missing or not such a JSON object; the message says how to make it.
    """
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(
            f"{path}: post-processing values cannot be read ({err}); fit them first with the fit_postprocessing "
            "overlay on the validation fold"
        ) from err
    if not isinstance(values, dict) or not {"tht0", "tht1", "fh_iterations"} <= set(values):
        raise DataError(f"{path}: expected tht0, tht1 and fh_iterations, got {values!r}")
    return values


def discretise_steps(step: str, fitted_file: str | Path | None = None, keys: str = "pred") -> list[Transform]:
    """Tensor transforms turning a 2-channel softmax ``pred`` into the 1-channel lesion mask of ``step``.

    ``none``: argmax; ``tht0`` / ``tht1``: lesion probability ``>=`` the fitted threshold; ``fh``: argmax then
    binary closing with the fitted iterations (the best step of Pérez Malla et al. 2019).

    Raises:
        ValueError: an unknown step.
        DataError: a fitted step without a readable ``fitted_file``.
    """
    if step not in STEPS:
        raise ValueError(f"postprocess must be one of {', '.join(STEPS)}, got {step!r}")
    if step == "none":
        return [ChannelArgmaxd(keys=keys)]
    if fitted_file is None:
        raise DataError(f"postprocess {step!r} needs the fitted values file (models/postprocessing.json)")
    values = read_fitted(fitted_file)
    if step in ("tht0", "tht1"):
        return [Lambdad(keys=keys, func=lambda x: x[1:2]), AsDiscreted(keys=keys, threshold=float(values[step]))]
    return [
        ChannelArgmaxd(keys=keys),
        BinaryClosingd(
            keys=keys, radius=int(values.get("fh_radius", FH_RADIUS)), iterations=int(values["fh_iterations"])
        ),
    ]
