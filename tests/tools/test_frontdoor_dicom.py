"""``strokeseg infer`` front door with DICOM input: a series folder is passed on, a lone slice file is refused
before any bundle starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from strokeseg.errors import DataError
from strokeseg.tools.frontdoor import infer_command

FIXTURE = Path(__file__).resolve().parents[1] / "bundles" / "fixtures" / "two_net_bundle"


def test_a_series_folder_is_passed_on_and_a_lone_slice_file_is_refused(tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(FIXTURE, tmp_path / "b", ignore=shutil.ignore_patterns("*.pt")))
    for network in ("model.pt", "aux.pt"):
        (bundle / "models").mkdir(exist_ok=True)
        (bundle / "models" / network).write_bytes(b"")
    series = tmp_path / "export" / "1.2.840.5"
    series.mkdir(parents=True)
    (series / "IM0001.dcm").write_bytes(b"\0" * 132)
    (series / "IM0002").write_bytes(b"\0" * 128 + b"DICM")  # no ending: recognised by its preamble

    command = infer_command(bundle, series, tmp_path / "out")
    assert command[command.index("--dataset_dir") + 1] == str(series.resolve())
    for slice_file in (series / "IM0001.dcm", series / "IM0002"):
        with pytest.raises(DataError) as error:
            infer_command(bundle, slice_file, tmp_path / "out")
        assert str(error.value) == (
            f"{slice_file}: is a single DICOM file (one slice of a series); give the folder that holds the series "
            f"({series}) instead"
        )
