"""``strokeseg profile``: where end-to-end inference spends its time (strokeseg.tools.bench.profile)."""

from __future__ import annotations

import json
from pathlib import Path

from strokeseg.runtime.description import default_bundles_dir, describe_bundle
from strokeseg.tools.cli import main

EDD = default_bundles_dir() / "stroke_dwi_edd_muscle"


def test_profile_names_the_network_the_nifti_io_and_the_transforms(tmp_path: Path):
    smoke = describe_bundle(EDD).smoke_overrides
    flags = [f"--{key}={json.dumps(value)}" for key, value in smoke.items()]
    out = tmp_path / "profile.md"
    assert main(["profile", str(EDD), "--out", str(out), "--workdir", str(tmp_path), *flags]) == 0
    text = out.read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "network forward (network_def)" in rows
    assert any(stage.startswith("NIfTI write") for stage in rows)
    assert any(stage.startswith("NIfTI read") for stage in rows)
    assert "monai LoadImaged" in rows and "monai Invertd" in rows
    total = float(text.split("Profiled run ")[1].split(" s")[0])
    forward = float(rows["network forward (network_def)"].split(" | ")[1])
    assert 0 < forward <= total
    assert "cumulative" in out.with_suffix(".txt").read_text()  # the full pstats listing
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # the scratch folder is gone
