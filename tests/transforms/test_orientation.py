"""``ApplyInOrientationd``: a slice-wise step sees axial slices whatever the storage, results back on the input grid."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import CopyItemsd, Lambdad

from strokeseg.transforms.orientation import ApplyInOrientationd, reorient

LPS = np.diag([-2.0, -1.5, 4.0, 1.0])  # how the ISLES releases store a scan: axial slices along the last axis


def _slice_means(d: dict) -> dict:
    """A slice-wise step: every axial slice (last axis) replaced by its mean."""
    x = torch.as_tensor(d["pred"])
    return {**d, "pred": x.mean(dim=(1, 2), keepdim=True).expand_as(x).clone()}


@pytest.mark.parametrize(
    "ornt",
    [
        np.array([[p[a], f[a]] for a in range(3)])
        for p, f in zip(itertools.permutations(range(3)), itertools.product((1, -1), repeat=3), strict=False)
    ],
)
def test_slice_step_sees_axial_slices_and_results_keep_the_input_grid(ornt: np.ndarray) -> None:
    values = torch.rand(1, 5, 6, 4, generator=torch.Generator().manual_seed(0))
    canonical = nib.Nifti1Image(values[0].numpy(), LPS)
    stored = canonical.as_reoriented(ornt)  # e.g. sagittal storage of the same scan
    pred = MetaTensor(torch.from_numpy(np.asarray(stored.dataobj)[None].copy()), affine=torch.as_tensor(stored.affine))
    step = ApplyInOrientationd(
        "pred", lambda d: _slice_means(CopyItemsd("pred", names="prob")(d)), axcodes="LPS", out_keys=["pred", "prob"]
    )

    out = step({"pred": pred})

    expected = _slice_means({"pred": values})["pred"][0].numpy()  # the step on the canonical storage
    expected_stored = np.asarray(nib.Nifti1Image(expected, LPS).as_reoriented(ornt).dataobj)
    assert isinstance(out["pred"], MetaTensor) and isinstance(out["prob"], MetaTensor)
    assert out["pred"].shape == pred.shape
    np.testing.assert_allclose(out["pred"][0].numpy(), expected_stored, atol=1e-6)
    np.testing.assert_allclose(out["prob"][0].numpy(), np.asarray(stored.dataobj), atol=1e-6)
    np.testing.assert_allclose(out["pred"].affine.numpy(), stored.affine)
    np.testing.assert_allclose(out["prob"].affine.numpy(), stored.affine)


def test_reorient_matches_nibabel_and_plain_input_is_refused() -> None:
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    ornt = np.array([[2, -1], [0, 1], [1, -1]])
    got = reorient(torch.from_numpy(data)[None], ornt)[0].numpy()
    np.testing.assert_array_equal(got, nib.orientations.apply_orientation(data, ornt))
    with pytest.raises(TypeError, match="MetaTensor"):
        ApplyInOrientationd("pred", Lambdad("pred", lambda x: x))({"pred": torch.zeros(1, 2, 2, 2)})
