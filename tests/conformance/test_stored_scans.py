"""Scans as hospitals store them, through ``python -m monai.bundle run``, for every bundle.

Two behaviours, each one inference run per bundle over many cases made from the bundle's good test case
(:func:`tests.conformance.test_bad_inputs.bundle_setups`: a copy with seeded random-weight checkpoints):

* **any orientation in, the same grid out**: the case stored in each of the 6 axis permutations with two seeded
  flip patterns (12 of the 48 storages), one on the case's own axis-aligned affine and one on an oblique affine.
  Every written mask and probability map has exactly its input's shape and affine, and equals the prediction of the
  canonically stored case stored the same way (probabilities to :data:`PROB_ATOL`, masks by Dice);
* **any NIfTI data type and scaling**: the case stored as int8/16/32, uint8/16 and float32/64 (NIfTI has no
  float16 type; nibabel refuses to write one), each without and with ``scl_slope``/``scl_inter`` (a non-zero
  intercept whose decoded background is not exactly 0), gives the prediction of the same values stored as
  float32 (probabilities to :data:`PROB_ATOL`, masks by Dice).

The intensities are first quantised to the integers 0–127 (one reference case, stored as float32), so that every
type holds them exactly and a difference in the prediction comes from the bundle, not from the storage.
"""

from __future__ import annotations

import copy as copy_module
import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .conftest import TWO_NET_FIXTURE, run_config
from .test_bad_inputs import Setup, _datalist, _files, bundle_setups, setup  # noqa: F401  (the shared fixtures)

#: largest difference allowed between two lesion-probability maps of the same scan stored differently
PROB_ATOL = 1e-4
#: smallest Dice allowed between two masks of the same scan stored differently (two empty masks agree)
MIN_DICE = 0.99
#: 8 flip patterns of three axes, as signs
FLIPS = tuple(itertools.product((1, -1), repeat=3))
#: stored types and their scalings ``(slope, intercept)``; ``None``: no scaling. The scaled 16-bit, 32-bit and
#: float cases decode 0 to ±1e-8, not to 0; the 8-bit ones store the background as a non-zero integer.
STORED_TYPES: dict[str, tuple[tuple[float, float] | None, ...]] = {
    "int8": (None, (0.5, 63.5)),
    "uint8": (None, (0.5, -0.5)),
    "int16": (None, (0.1, -3.7)),
    "uint16": (None, (0.1, -3.7)),
    "int32": (None, (0.1, -3.7)),
    "float32": (None, (0.1, -3.7)),
    "float64": (None, (0.1, -3.7)),
}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _oblique(affine: np.ndarray) -> np.ndarray:
    """``affine`` rotated by 20° about x and 12° about z around the world origin."""
    ax, az = np.deg2rad(20.0), np.deg2rad(12.0)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rotation = np.eye(4)
    rotation[:3, :3] = rz @ rx
    return rotation @ affine


def _quantised(path: Path) -> np.ndarray:
    """The image's values mapped linearly onto the integers 0–127 (per file), as float32."""
    data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
    low, high = float(data.min()), float(data.max())
    return np.round((data - low) / max(high - low, 1e-12) * 127.0).astype(np.float32)


def _nifti_keys(entry: dict) -> list[str]:
    """Keys of ``entry`` that name NIfTI inputs (one file or a list), the lesion reference left out."""
    keys = []
    for key, value in entry.items():
        files = _files(entry, key) if isinstance(value, (str, list)) else []
        if key not in ("label", "reference") and files and all(str(f).endswith((".nii", ".nii.gz")) for f in files):
            keys.append(key)
    return keys


def _entry_like(shared: Setup, case: str, folder: Path, write) -> dict:
    """A copy of the good entry whose input files are rewritten by ``write(src, dst)`` into ``folder/case``."""
    entry = copy_module.deepcopy(shared.good)
    entry["case"] = entry["patient"] = case
    (folder / case).mkdir(parents=True, exist_ok=True)
    for key in _nifti_keys(shared.good):
        files = []
        for src in _files(shared.good, key):
            dst = folder / case / Path(src).name
            write(Path(src), dst)
            files.append(str(dst))
        entry[key] = files if isinstance(shared.good[key], list) else files[0]
    return entry


def _outputs(run_dir: Path, case: str) -> tuple[Path, Path]:
    return run_dir / case / f"{case}_seg.nii.gz", run_dir / case / f"{case}_prob.nii.gz"


def _compare(out: Path, case: str, reference: str, inputs: Path, reorient: np.ndarray | None) -> list[str]:
    """Problems of ``case``'s outputs against ``reference``'s (reoriented by ``reorient``) and its input grid."""
    problems = []
    grid = nib.load(str(inputs))
    for got_path, ref_path in zip(_outputs(out, case), _outputs(out, reference), strict=True):
        if not got_path.is_file():
            problems.append(f"{case}: {got_path.name} not written")
            continue
        got, ref = nib.load(str(got_path)), nib.load(str(ref_path))
        if reorient is not None:
            ref = ref.as_reoriented(reorient)
        if got.shape[:3] != grid.shape[:3]:
            problems.append(f"{case}: {got_path.name} shape {got.shape} != input {grid.shape}")
            continue
        if not np.allclose(got.affine, grid.affine, atol=1e-5):
            problems.append(f"{case}: {got_path.name} affine\n{got.affine}\n!= input\n{grid.affine}")
        a, b = np.asarray(got.dataobj, dtype=np.float64), np.asarray(ref.dataobj, dtype=np.float64)
        if got_path.name.endswith("_prob.nii.gz"):
            worst = float(np.abs(a - b).max())
            if worst > PROB_ATOL:
                problems.append(f"{case}: probability differs by up to {worst:.2e} (> {PROB_ATOL})")
        elif _dice(a, b) < MIN_DICE:
            problems.append(f"{case}: mask Dice {_dice(a, b):.3f} against {reference} (< {MIN_DICE})")
    return problems


def _run(shared: Setup, entries: list[dict], name: str) -> tuple[Path, object]:
    datalist = _datalist(shared, entries, shared.work / f"{name}.json")
    out = shared.work / f"out_{name}"
    run = run_config(
        shared.copy,
        ["configs/inference.json"],
        shared.args(datalist, out, save_prob="true"),
        shared.work / f"{name}.log",
    )
    return out, run


def _skip_fixture(shared: Setup) -> None:
    if shared.description.root.resolve() == TWO_NET_FIXTURE.resolve():
        pytest.skip("the two-network fixture bundle is a test double (no probability output, no stored-scan promise)")


def _first_volume(shared: Setup, entry: dict) -> Path:
    key = next(k for k, nd in shared.checked.items() if nd == 3)
    return Path(_files(entry, key)[0])


@pytest.mark.representative("stroke_mri_deepmedic")
def test_any_orientation_in_gives_the_same_prediction_on_the_input_grid(setup):  # noqa: F811
    _skip_fixture(setup)
    folder = setup.work / "orientations"

    def stored(affine_of, ornt=None):
        def write(src: Path, dst: Path) -> None:
            img = nib.load(str(src))
            img = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), affine_of(img.affine), img.header)
            if ornt is not None:
                img = img.as_reoriented(ornt)
            nib.save(img, str(dst))

        return write

    rng = np.random.default_rng(0)
    flips = {perm: rng.choice(len(FLIPS), size=2, replace=False) for perm in itertools.permutations(range(3))}
    entries, variants = [], []
    for k, (kind, affine_of) in enumerate((("aligned", lambda a: a), ("oblique", _oblique))):
        reference = f"{kind}-canonical"
        entries.append(_entry_like(setup, reference, folder, stored(affine_of)))
        for p, (perm, pair) in enumerate(flips.items()):  # every permutation, two flip patterns (one per affine)
            f = int(pair[k])
            ornt = np.array([[perm[axis], FLIPS[f][axis]] for axis in range(3)])
            case = f"{kind}-p{p}-f{f}"
            entries.append(_entry_like(setup, case, folder, stored(affine_of, ornt)))
            variants.append((case, reference, ornt))

    out, run = _run(setup, entries, "orientations")

    assert run.ok, run.failure()
    problems = []
    for case, reference, ornt in variants:
        entry = next(e for e in entries if e["case"] == case)
        problems += _compare(out, case, reference, _first_volume(setup, entry), ornt)
    for reference in ("aligned-canonical", "oblique-canonical"):
        entry = next(e for e in entries if e["case"] == reference)
        problems += _compare(out, reference, reference, _first_volume(setup, entry), None)
        prob = np.asarray(nib.load(str(_outputs(out, reference)[1])).dataobj)
        if np.ptp(prob) < 10 * PROB_ATOL:  # a flat map would agree with any reorientation of itself
            problems.append(f"{reference}: probability map nearly constant ({np.ptp(prob):.2e}), the test is vacuous")
    assert not problems, "\n".join(problems) + "\n" + run.failure()


def _stored_as(dtype: str, scaling: tuple[float, float] | None):
    def write(src: Path, dst: Path) -> None:
        img = nib.load(str(src))
        values = _quantised(src)
        header = img.header.copy()
        header.set_data_dtype(np.dtype(dtype))
        if scaling is None:
            out = nib.Nifti1Image(values.astype(dtype), img.affine, header)
        else:
            slope, inter = scaling
            stored = np.round((values.astype(np.float64) - inter) / slope).astype(dtype)
            out = nib.Nifti1Image(stored, img.affine, header)
            out.header.set_slope_inter(slope, inter)
        nib.save(out, str(dst))

    return write


@pytest.mark.representative("stroke_ctp_msdcnn")
def test_every_nifti_data_type_and_scaling_gives_the_float32_prediction(setup):  # noqa: F811
    _skip_fixture(setup)
    folder = setup.work / "types"
    entries = [_entry_like(setup, "reference-float32", folder, _stored_as("float32", None))]
    cases = []
    for dtype, scalings in STORED_TYPES.items():
        for scaling in scalings:
            case = f"{dtype}-{'raw' if scaling is None else 'scaled'}"
            entries.append(_entry_like(setup, case, folder, _stored_as(dtype, scaling)))
            cases.append(case)
    # the test is not vacuous: the scaled 16-bit case decodes its background to a value that is not exactly 0
    decoded = np.asarray(nib.load(str(_first_volume(setup, entries[cases.index("int16-scaled") + 1]))).dataobj)
    reference = np.asarray(nib.load(str(_first_volume(setup, entries[0]))).dataobj)
    assert np.all(decoded[reference == 0] != 0)

    out, run = _run(setup, entries, "types")

    assert run.ok, run.failure()
    problems = []
    for case in cases:
        entry = next(e for e in entries if e["case"] == case)
        problems += _compare(out, case, "reference-float32", _first_volume(setup, entry), None)
    assert not problems, "\n".join(problems) + "\n" + run.failure()
