"""``strokeseg train`` / ``strokeseg infer``: the bundle's own configs through ``python -m monai.bundle run``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from strokeseg.errors import BundleError, DataError
from strokeseg.runtime.description import describe_bundle
from strokeseg.tools.frontdoor import infer_command, resolve_bundle, train_commands

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "bundles" / "fixtures" / "two_net_bundle"


def test_a_bundle_is_found_by_name_or_by_folder():
    assert resolve_bundle("stroke_dwi_edd_muscle").name == "stroke_dwi_edd_muscle"
    assert resolve_bundle(FIXTURE).root == FIXTURE.resolve()
    with pytest.raises(BundleError, match="no_such_bundle: not a bundle folder or bundle name .*stroke_dwi_edd_muscle"):
        resolve_bundle("no_such_bundle")


def test_train_runs_every_stage_with_its_overlay(tmp_path):
    commands = train_commands(FIXTURE, tmp_path, quick=False, ckpt_dir=tmp_path / "ckpt", overrides={"epochs": 2})
    assert len(commands) == len(describe_bundle(FIXTURE).stages) == 2
    assert commands[0][1:4] == ["-m", "monai.bundle", "run"]
    assert "train_aux.json" not in commands[0][5] and "train_aux.json" in commands[1][5]
    for command in commands:
        assert command[command.index("--ckpt_dir") + 1] == str((tmp_path / "ckpt").resolve())
        assert command[command.index("--epochs") + 1] == "2"
    with pytest.raises(DataError, match="no such dataset"):
        train_commands(FIXTURE, tmp_path / "missing")


def test_infer_refuses_an_untrained_bundle_and_a_missing_input(tmp_path):
    bundle = Path(shutil.copytree(FIXTURE, tmp_path / "b", ignore=shutil.ignore_patterns("*.pt")))
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"")
    with pytest.raises(BundleError, match="models/model.pt does not exist; train the bundle first"):
        infer_command(bundle, scan, tmp_path / "out")
    with pytest.raises(DataError, match="no such file or folder"):
        infer_command(bundle, tmp_path / "nothing.nii.gz", tmp_path / "out")


def test_strokeseg_train_then_infer_end_to_end(tmp_path):
    """Through folders whose names hold what hospital exports do: quotes, an apostrophe, spaces, a comma, ü."""
    from strokeseg.data.phantoms import synthesize_dataset

    work = tmp_path / 'it\'s a "dir" ü, [1]'
    data = synthesize_dataset("isles2015_siss", work / "data 'x'", cases=3, test_cases=1, seed=0)
    bundle = Path(shutil.copytree(FIXTURE, work / 'bundle "copy"'))
    smoke = ["--epochs", "1", "--samples_per_case", "2", "--num_workers", "0", "--cache_rate", "0"]
    cli = [sys.executable, "-m", "strokeseg.tools.cli"]
    trained = subprocess.run(
        [*cli, "train", str(bundle), str(data), "--output_dir", str(work / "logs"), *smoke],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "aux.pt").is_file()
    out = work / "pred ü"
    inferred = subprocess.run(
        [*cli, "infer", str(bundle), str(data), "--out", str(out)], capture_output=True, text=True
    )
    assert inferred.returncode == 0, inferred.stderr[-3000:]
    assert list(out.glob("*/*_seg.nii.gz"))
