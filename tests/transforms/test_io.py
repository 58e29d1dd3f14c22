"""``SaveCasePrediction(d)``: case-named path, affine and values preserved, atomic write."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, NibabelWriter

from strokeseg.atomic_io import temporary_path
from strokeseg.errors import DataError
from strokeseg.transforms.io import SaveCasePrediction, SaveCasePredictiond


def _oblique_affine() -> np.ndarray:
    """Rotated (0.3 rad about z), anisotropic, shifted voxel-to-world matrix."""
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([0.9, 1.1, 2.5])
    affine[:3, 3] = (-10.0, 20.0, 5.5)
    return affine


def _partials(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".partial-*"))


def test_mask_written_under_case_name_with_affine_and_values(tmp_path: Path) -> None:
    affine = _oblique_affine()
    values = torch.zeros(1, 4, 5, 3)
    values[0, 1:3, 2:4, 1] = 1.0
    values[0, 0, 0, 0] = 1.0
    img = MetaTensor(values, affine=torch.as_tensor(affine))

    path = SaveCasePrediction(tmp_path)(img, "sub-strokecase0007")

    expected = tmp_path / "sub-strokecase0007" / "sub-strokecase0007_seg.nii.gz"
    assert path == expected
    assert expected.is_file()
    assert _partials(tmp_path) == []
    nii = nib.load(str(expected))
    assert nii.shape == (4, 5, 3)  # the single channel is squeezed
    assert nii.get_data_dtype() == np.uint8
    np.testing.assert_allclose(nii.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(nii.dataobj), values[0].numpy().astype(np.uint8))


@pytest.mark.parametrize("channels", [1, 2])
def test_volume_stored_with_permuted_axes_keeps_its_grid_and_affine(tmp_path: Path, channels: int) -> None:
    # sagittal storage: voxel axis 0 runs along z; MONAI's writer used to fail with "Affine ... is not invertible"
    affine = np.array([[0.0, 0.0, -1.2, 10.0], [0.0, 1.1, 0.0, 5.0], [1.3, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 1.0]])
    values = torch.rand(channels, 5, 6, 7)
    img = MetaTensor(values, affine=torch.as_tensor(affine))

    path = SaveCasePrediction(tmp_path, postfix="prob", output_dtype=np.float32)(img, "sagittal")

    nii = nib.load(str(path))
    assert nii.shape == ((5, 6, 7) if channels == 1 else (5, 6, 7, channels))
    np.testing.assert_allclose(nii.affine, affine, atol=1e-5)
    expected = values[0].numpy() if channels == 1 else np.moveaxis(values.numpy(), 0, -1)
    np.testing.assert_allclose(np.asarray(nii.dataobj), expected, atol=1e-6)


def test_channel_selects_one_channel_of_a_probability_map(tmp_path: Path) -> None:
    affine = _oblique_affine()
    values = torch.rand(2, 4, 5, 3)
    img = MetaTensor(values, affine=torch.as_tensor(affine))

    path = SaveCasePrediction(tmp_path, postfix="prob", output_dtype=np.float32, channel=1)(img, "case1")

    assert path == tmp_path / "case1" / "case1_prob.nii.gz"
    nii = nib.load(str(path))
    assert nii.shape == (4, 5, 3)
    assert nii.get_data_dtype() == np.float32
    np.testing.assert_allclose(nii.affine, affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(nii.dataobj), values[1].numpy(), atol=1e-7)
    assert not np.allclose(np.asarray(nii.dataobj), values[0].numpy())


def test_failed_write_leaves_no_final_and_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def broken_write(self, filename, verbose=True, **kwargs):
        Path(filename).write_bytes(b"truncated")  # what a crash half-way through the encoding leaves
        seen.append(Path(filename))
        raise OSError("disk full")

    monkeypatch.setattr(NibabelWriter, "write", broken_write)
    img = MetaTensor(torch.ones(1, 2, 2, 2), affine=torch.eye(4))

    with pytest.raises(DataError, match=r"case1_seg\.nii\.gz: cannot be written \(disk full\)"):
        SaveCasePrediction(tmp_path)(img, "case1")

    final = tmp_path / "case1" / "case1_seg.nii.gz"
    assert seen == [temporary_path(final)]  # the writer was given the temporary name, not the final one
    assert not final.exists()
    assert _partials(tmp_path) == []


def test_failed_write_keeps_the_previous_prediction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saver = SaveCasePrediction(tmp_path)
    good = MetaTensor(torch.ones(1, 2, 2, 2), affine=torch.eye(4))
    final = saver(good, "case1")
    before = final.read_bytes()

    def broken_write(self, filename, verbose=True, **kwargs):
        Path(filename).write_bytes(b"truncated")
        raise RuntimeError("killed")

    monkeypatch.setattr(NibabelWriter, "write", broken_write)
    with pytest.raises(RuntimeError, match="killed"):
        saver(MetaTensor(torch.zeros(1, 2, 2, 2), affine=torch.eye(4)), "case1")
    assert final.read_bytes() == before
    assert _partials(tmp_path) == []


def test_plain_tensor_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="case1.*MetaTensor"):
        SaveCasePrediction(tmp_path)(torch.ones(1, 2, 2, 2), "case1")
    assert not (tmp_path / "case1" / "case1_seg.nii.gz").exists()


def test_dict_version_records_the_path(tmp_path: Path) -> None:
    affine = _oblique_affine()
    pred = MetaTensor(torch.ones(1, 3, 3, 2), affine=torch.as_tensor(affine))
    out = SaveCasePredictiond(keys="pred", output_dir=tmp_path)({"pred": pred, "case": "sub-01"})

    expected = tmp_path / "sub-01" / "sub-01_seg.nii.gz"
    assert out["pred_path"] == str(expected)
    assert out["pred"] is pred
    nii = nib.load(str(expected))
    np.testing.assert_allclose(nii.affine, affine, atol=1e-5)
    assert int(np.asarray(nii.dataobj).sum()) == 18


@pytest.mark.parametrize("data", [{}, {"case": ""}, {"case": 3}])
def test_dict_version_needs_a_case_name(tmp_path: Path, data: dict) -> None:
    pred = MetaTensor(torch.ones(1, 2, 2, 2), affine=torch.eye(4))
    with pytest.raises(KeyError, match="case"):
        SaveCasePredictiond(keys="pred", output_dir=tmp_path)({"pred": pred, **data})
    assert list(tmp_path.iterdir()) == []


def test_dict_version_custom_case_key(tmp_path: Path) -> None:
    pred = MetaTensor(torch.ones(1, 2, 2, 2), affine=torch.eye(4))
    saver = SaveCasePredictiond(keys="pred", output_dir=tmp_path, case_key="subject")
    with pytest.raises(KeyError, match="subject"):
        saver({"pred": pred, "case": "a"})
    out = saver({"pred": pred, "subject": "b"})
    assert Path(out["pred_path"]) == tmp_path / "b" / "b_seg.nii.gz"


_SLOW_WRITER = """
import sys, time
from pathlib import Path
import torch
from monai.data import MetaTensor, NibabelWriter
from strokeseg.transforms.io import SaveCasePrediction

real_write = NibabelWriter.write

def slow_write(self, filename, verbose=True, **kwargs):
    real_write(self, filename, verbose=verbose, **kwargs)
    data = Path(filename).read_bytes()
    Path(filename).write_bytes(data[: len(data) // 2])  # half of the file is on disk ...
    print("writing", flush=True)
    time.sleep(60)  # ... when the process is killed

NibabelWriter.write = slow_write
SaveCasePrediction(sys.argv[1])(MetaTensor(torch.rand(1, 24, 24, 24), affine=torch.eye(4)), "case1")
"""


def test_sigkill_while_writing_leaves_no_final_file_and_the_rerun_cleans_up(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from strokeseg.runtime.inputs import remove_stale_partials

    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        lines = iter(proc.stdout.readline, "")  # MONAI's writer logs a line of its own first
        assert any(line.strip() == "writing" for line in lines)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    final = tmp_path / "case1" / "case1_seg.nii.gz"
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists()
    [partial] = _partials(tmp_path)
    assert partial.name == f".partial-{proc.pid}-case1_seg.nii.gz"

    assert remove_stale_partials(tmp_path) == [partial]
    assert _partials(tmp_path) == []
    SaveCasePrediction(tmp_path)(MetaTensor(torch.ones(1, 2, 2, 2), affine=torch.eye(4)), "case1")
    assert int(np.asarray(nib.load(str(final)).dataobj).sum()) == 8
