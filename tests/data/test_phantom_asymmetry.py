"""Natural left-right asymmetry of the phantoms: asymmetric deformation and hemispheric gain."""

from __future__ import annotations

import numpy as np

from strokeseg.data.phantoms.anatomy import ASYMMETRY_MM, hemispheric_gain, random_deformation
from strokeseg.data.phantoms.grids import Grid


def _mirror_error(field: np.ndarray) -> float:
    """Largest deviation from the symmetric form (u_x odd, u_y and u_z even in x)."""
    odd = np.abs(field[0] + field[0][::-1]).max()
    even = np.abs(field[1:] - field[1:, ::-1]).max()
    return float(max(odd, even))


def test_asymmetric_component_added_without_changing_other_draws():
    centre = np.zeros(3)
    rng_sym, rng_asym = np.random.default_rng([0, 1, 2, 1]), np.random.default_rng([0, 1, 2, 1])
    symmetric = random_deformation(rng_sym, centre, asymmetry_mm=0.0)
    asymmetric = random_deformation(rng_asym, centre)
    assert _mirror_error(symmetric.elastic) < 1e-5
    assert 0.3 * ASYMMETRY_MM < _mirror_error(asymmetric.elastic) <= 2 * ASYMMETRY_MM + 1e-5
    np.testing.assert_array_equal(symmetric.rotation, asymmetric.rotation)
    assert rng_sym.random() == rng_asym.random()  # the patient's later draws (lesions, contrasts) are unchanged
    again = random_deformation(np.random.default_rng([0, 1, 2, 1]), centre)
    np.testing.assert_array_equal(again.elastic, asymmetric.elastic)


def test_hemispheric_gain_is_a_few_percent_and_opposite_across_the_midline():
    deformation = random_deformation(np.random.default_rng(3), np.zeros(3))
    affine = np.array([[2.0, 0, 0, -60], [0, 2.0, 0, -8], [0, 0, 2.0, -6], [0, 0, 0, 1]])  # x from -60 to 58 mm
    grid = Grid((60, 8, 6), affine)
    gain = hemispheric_gain(deformation, grid, np.random.default_rng(4))
    assert gain.shape == (60, 8, 6) and gain.dtype == np.float32
    deviation = gain - 1.0
    assert 0.005 < np.abs(deviation).max() <= 0.03 + 1e-6
    # the hemispheres deviate in opposite directions
    assert deviation[:5].mean() * deviation[-5:].mean() < 0
    np.testing.assert_array_equal(gain, hemispheric_gain(deformation, grid, np.random.default_rng(4)))
