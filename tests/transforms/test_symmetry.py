"""Symmetric modalities: registered mirror of an off-midline phantom, determinism, failure.

The method is that of Clèrigues et al. 2020, §3.1.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from strokeseg.errors import DataError
from strokeseg.transforms import symmetry
from strokeseg.transforms.symmetry import (
    RigidTransform,
    SymmetricModalities,
    SymmetricModalitiesd,
    left_right_axis,
    register_mirror,
)

SHAPE = (64, 72, 48)
SPACING = 2.0
LESION = (44, 40, 26)  # voxel centre of the lesion, right of the midline x = 31.5 in the canonical frame
DETERMINISM_ITERATIONS = 30  # enough for thread-order rounding to show in the transform (it did in every run)


def _ball(centre, radius, shape=SHAPE):
    grid = np.indices(shape, dtype=np.float32)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, np.broadcast_to(radius, 3), strict=True)) <= 1


def _symmetric_head():
    """A left-right symmetric head about x = 31.5 with asymmetric-free structure along y and z."""
    head = _ball((31.5, 36, 24), (26, 30, 20)) * 1.0
    head = head + _ball((31.5, 30, 24), (20, 16, 12)) * 0.5  # "white matter"
    for dx in (-9, 9):
        head = head - _ball((31.5 + dx, 44, 22), (4, 6, 5)) * 0.9  # ventricles, both sides
        head = head + _ball((31.5 + dx, 18, 30), (5, 4, 4)) * 0.6
    head = head + _ball((31.5, 56, 18), (8, 5, 5)) * 0.4  # a midline structure, breaks front/back symmetry
    return ndimage.gaussian_filter(head.astype(np.float32), 1.0)


def _move(volume, degrees, shift, order=1):
    """Rotate about z by ``degrees`` around the volume centre and shift by ``shift`` voxels."""
    t = np.radians(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    centre = (np.asarray(SHAPE) - 1) / 2
    offset = centre - rot @ (centre + np.asarray(shift))
    return ndimage.affine_transform(volume, rot, offset=offset, order=order)


@pytest.fixture(scope="module")
def moved_case():
    head = _symmetric_head()
    lesion = _ball(LESION, 4).astype(np.float32)
    mirror = _ball((63 - LESION[0], LESION[1], LESION[2]), 4).astype(np.float32)
    flair = head + 1.5 * lesion * (head > 0.5)
    t1 = 0.8 * head - 0.4 * lesion * (head > 0.5)
    image = np.stack([_move(flair, 8.0, (5, -3, 0)), _move(t1, 8.0, (5, -3, 0))])
    lesion_moved = _move(lesion, 8.0, (5, -3, 0), order=0) > 0.5
    mirror_moved = _move(mirror, 8.0, (5, -3, 0), order=0) > 0.5
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    img = MetaTensor(torch.from_numpy(image), affine=torch.from_numpy(affine), meta={"filename_or_obj": "case_7.nii"})
    return img, lesion_moved, mirror_moved, _move(head, 8.0, (5, -3, 0))


def _corr(a, b):
    return float(np.corrcoef(np.asarray(a).ravel(), np.asarray(b).ravel())[0, 1])


def test_registered_mirror_matches_original_and_mirrors_the_lesion(moved_case):
    img, lesion, mirror, head = moved_case
    sym = SymmetricModalities(reference_channel=0)
    out = sym(img)
    assert out.shape == (4, *SHAPE) and isinstance(out, MetaTensor)
    assert torch.equal(out[:2], img.as_tensor())
    assert torch.equal(out.affine, img.affine)
    healthy = _move(_symmetric_head(), 8.0, (5, -3, 0))
    naive = np.flip(head, axis=0)
    # the plain flip of an off-midline head is far from the original; the registered one matches it
    assert _corr(naive, healthy) < 0.8
    assert _corr(out[2].numpy(), img[0].numpy()) >= 0.95
    assert _corr(out[3].numpy(), img[1].numpy()) >= 0.95
    # twice the rotation (a flip doubles the offsets): 16 degrees
    assert sym.last_transform.rotation_degrees() == pytest.approx(16.0, abs=2.0)
    # the lesion appears mirrored: bright FLAIR at the contralateral site, healthy tissue over the lesion
    flair_mirror = out[2].numpy()
    assert flair_mirror[mirror].mean() > 1.5 * flair_mirror[lesion].mean()
    assert flair_mirror[lesion].mean() == pytest.approx(float(healthy[lesion].mean()), rel=0.2)


def test_deterministic_and_cached(moved_case, tmp_path):
    img = moved_case[0]
    a = SymmetricModalities(iterations=20)(img)
    b = SymmetricModalities(iterations=20)(img)
    assert torch.equal(a, b)
    cached = SymmetricModalities(iterations=20, cache_dir=tmp_path)
    c = cached(img)
    assert torch.equal(a, c) and len(list(tmp_path.glob("*.json"))) == 1
    d = SymmetricModalitiesd(keys="image", iterations=20, cache_dir=tmp_path)({"image": img})["image"]
    assert torch.equal(c, d)  # read back from the cache file
    threads = torch.get_num_threads()
    try:  # one mirror thread per channel or all in one: the same volume
        torch.set_num_threads(1)
        serial = cached(img)
        torch.set_num_threads(max(2, threads))
        threaded = cached(img)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(serial, threaded) and torch.equal(serial, c)


def _register_moved_head(iterations: int) -> np.ndarray:
    """The 12 numbers of the registration of the moved phantom's mirror (run in this or a forked process)."""
    rigid = register_mirror(_move(_symmetric_head(), 8.0, (5, -3, 0)), [SPACING] * 3, 0, iterations=iterations)
    return np.concatenate([rigid.matrix.ravel(), rigid.offset])


def test_registration_is_bitwise_reproducible_in_one_process_and_across_processes():
    # ITK's Mattes metric summed its work units' histograms in thread order: the transform's last digits changed
    # from call to call, the mirrored channels with them, and two trainings with one seed gave different weights.
    first = _register_moved_head(DETERMINISM_ITERATIONS)
    np.testing.assert_array_equal(_register_moved_head(DETERMINISM_ITERATIONS), first)
    # a forked process inherits the loaded ITK modules (a fresh interpreter would spend seconds loading them)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        other = pool.submit(_register_moved_head, DETERMINISM_ITERATIONS).result(timeout=120)
    np.testing.assert_array_equal(other, first)


def test_each_case_is_registered_once_per_object_and_once_per_cache_folder(moved_case, tmp_path, monkeypatch):
    img = moved_case[0]
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return register_mirror(*args, **kwargs)

    monkeypatch.setattr(symmetry, "register_mirror", counted)
    in_memory = SymmetricModalities(iterations=5)
    first = in_memory(img)
    assert torch.equal(in_memory(img), first) and len(calls) == 1  # a second epoch re-uses the transform
    other = img.clone()
    other[0, 10, 10, 10] += 1.0  # another case (any voxel of the reference channel)
    in_memory(other)
    assert len(calls) == 2
    on_disk = SymmetricModalities(iterations=5, cache_dir=tmp_path / "registration")
    assert torch.equal(on_disk(img), first) and len(calls) == 3
    (cache_file,) = (tmp_path / "registration").glob("*.json")
    again = SymmetricModalities(iterations=5, cache_dir=tmp_path / "registration")  # a rerun, a worker process
    assert torch.equal(again(img), first) and len(calls) == 3
    cache_file.write_text('{"matrix": [[1, 0')  # cut short: registered again, the file rewritten
    assert torch.equal(SymmetricModalities(iterations=5, cache_dir=tmp_path / "registration")(img), first)
    assert len(calls) == 4 and RigidTransform.from_json(cache_file.read_text()).offset.shape == (3,)


def test_left_right_axis_from_affine():
    assert left_right_axis(np.diag([-1.0, 1, 1, 1])) == 0
    swapped = np.array([[0, 0, 2.0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    assert left_right_axis(swapped) == 2


def test_failed_registration_names_the_case():
    empty = MetaTensor(torch.zeros(2, 16, 16, 12), affine=torch.eye(4), meta={"filename_or_obj": "case_3/flair.nii"})
    with pytest.raises(DataError, match=r"case_3/flair.nii.*registration failed"):
        SymmetricModalities(iterations=5)(empty)
    with pytest.raises(DataError, match="case_3/flair.nii"):
        SymmetricModalities(reference_channel=4)(empty)
