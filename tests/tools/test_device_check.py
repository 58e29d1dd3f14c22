"""``strokeseg infer/train --device cuda`` on a machine without CUDA: one line, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from strokeseg.errors import BundleError
from strokeseg.tools.cli import main
from strokeseg.tools.frontdoor import check_device

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "bundles" / "fixtures" / "two_net_bundle"


@pytest.mark.parametrize("verb", ["infer", "train"])
def test_a_missing_cuda_device_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys, verb):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"")
    out = tmp_path / "out"
    where = ["--out", str(out)] if verb == "infer" else ["--ckpt_dir", str(out / "ckpt"), "--output_dir", str(out)]
    assert main([verb, str(FIXTURE), str(scan), *where, "--device", "cuda"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("strokeseg: error: --device cuda: no CUDA device on this machine")
    assert "Traceback" not in "\n".join(lines)
    assert not out.exists()


def test_device_names_that_cannot_work_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device({"device": "cuda:0"})
    check_device({"device": "cpu"})
    check_device({"device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')"})  # the bundle's own
    with pytest.raises(BundleError, match=r"^--device cuda:3: this machine has 1 CUDA device\(s\), cuda:0 to cuda:0$"):
        check_device({"device": "cuda:3"})
    with pytest.raises(BundleError, match="^--device cudaX: not a device name"):
        check_device({"device": "cudaX"})
