"""EDD intensity normalisation against a hand-computed volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from strokeseg.errors import DataError
from strokeseg.transforms.intensity import EDDNormaliseIntensity, EDDNormaliseIntensityd


def _volume() -> np.ndarray:
    """(1, 10, 10, 2): 200 voxels, 100 brain voxels 1…100 in slice 0, background 0 elsewhere."""
    vol = np.zeros((1, 10, 10, 2), dtype=np.float32)
    vol[0, :, :, 0] = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    return vol


def test_hand_computed_statistics():
    vol = _volume()
    out = EDDNormaliseIntensity()(vol)
    # int(0.99 * 100) = 99 darkest brain voxels: 1…99 → mean 50, population std sqrt((99² − 1) / 12).
    mean, std = 50.0, np.sqrt((99**2 - 1) / 12.0)
    expected = np.where(vol > 0, vol - mean, 0.0) / std
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert np.all(out[0, :, :, 1] == 0.0)  # background stays exactly 0
    assert out[0, 4, 9, 0] == pytest.approx(0.0, abs=1e-6)  # value 50 = the mean


def test_per_channel_and_meta_kept():
    vol = np.concatenate([_volume(), 3.0 * _volume() + 7.0 * (_volume() > 0)], axis=0)
    affine = torch.diag(torch.tensor([1.6, 1.6, 5.0, 1.0], dtype=torch.float64))
    img = MetaTensor(torch.as_tensor(vol), affine=affine, meta={"filename_or_obj": "sub-1_dwi.nii.gz"})
    out = EDDNormaliseIntensityd(keys="image")({"image": img})["image"]
    assert isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == "sub-1_dwi.nii.gz"
    torch.testing.assert_close(out.affine, affine)
    # An affine change of the brain intensities (3·v + 7) normalises to the same brain values.
    torch.testing.assert_close(out[1], out[0], rtol=1e-5, atol=1e-5)


def test_empty_brain_raises_with_file_name():
    img = MetaTensor(torch.zeros(1, 4, 4, 3), meta={"filename_or_obj": "case_7_dwi.nii.gz"})
    with pytest.raises(DataError, match="case_7_dwi.nii.gz.*empty brain"):
        EDDNormaliseIntensity()(img)


def test_nan_raises_with_file_name():
    vol = torch.as_tensor(_volume())
    vol[0, 0, 0, 1] = float("nan")
    with pytest.raises(DataError, match="case_9.nii.gz.*NaN"):
        EDDNormaliseIntensity()(MetaTensor(vol, meta={"filename_or_obj": "case_9.nii.gz"}))


def test_constant_brain_raises():
    vol = (_volume() > 0).astype(np.float32) * 5.0
    with pytest.raises(DataError, match="constant brain intensity"):
        EDDNormaliseIntensity()(vol)
