"""Fit of the FH closing's iteration count on validation cases."""

from __future__ import annotations

import numpy as np
import pytest

from strokeseg.fitting.closing import fit_closing_iterations
from strokeseg.postprocessing.morphology import binary_closing


def _sphere(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def test_fit_closing_iterations():
    shape = (40, 40, 40)
    ref = _sphere(shape, (20, 20, 20), 12)
    pred = ref & ~_sphere(shape, (20, 20, 20), 5)  # a cavity a radius-3 ball fits into
    assert not binary_closing(pred, 3, 1)[20, 20, 20]
    assert binary_closing(pred, 3, 2)[20, 20, 20]
    assert fit_closing_iterations([pred], [ref], max_iterations=3) == 2
    probs = pred.astype(np.float32) * 0.9
    assert fit_closing_iterations([probs, ref], [ref, ref], threshold=0.5, max_iterations=3) == 2
    # the per-case rule of Pérez Malla et al. 2019: best counts 2 and 0 ⇒ average 1
    assert fit_closing_iterations([pred, ref], [ref, ref], max_iterations=3, strategy="per_case_average") == 1
    with pytest.raises(ValueError, match="strategy"):
        fit_closing_iterations([pred], [ref], strategy="median")
