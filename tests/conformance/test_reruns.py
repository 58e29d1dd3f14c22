"""Reruns into an output folder: a bundle skips what it made itself, computes what is missing, and refuses in one
line to mix its outputs with another run's, unless ``--overwrite true``.

One bundle copy with random-weight checkpoints (no training), the smoke dataset's test case, five inference runs
into one folder: first run, rerun (skipped), rerun with ``--save_prob true`` (probability maps computed), rerun
with other weights (refused, nothing touched), rerun with other weights and ``--overwrite true`` (recomputed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strokeseg.runtime.description import BundleDescription
from strokeseg.runtime.reruns import file_sha256, read_record, record_path

from .conftest import bundle_copy, run_config, smoke_args

ERROR = "strokeseg: error: "
WIRING = "strokeseg.runtime.wiring.CaseInference"


def _save_random_weights(description: BundleDescription, copy: Path, seed: int) -> None:
    """Random weights (``seed``) in every exported network's checkpoint of ``copy``, smoke-sized."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / "inference.json"))
    parser.read_meta(str(copy / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(copy), **description.smoke_overrides})
    for network in description.networks:
        torch.manual_seed(seed)
        target = copy / network.checkpoint
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(parser.get_parsed_content(network.id).state_dict(), target)


def _state(out: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.representative("stroke_ctp_msdcnn")
def test_rerun_skips_its_own_outputs_computes_missing_ones_and_refuses_another_runs(bundle, smoke_dataset, tmp_path):
    inference = json.loads((bundle.configs / "inference.json").read_text()).get("inference", {})
    if inference.get("_target_") != WIRING:
        pytest.skip(f"{bundle.name} writes its files without the shared wiring ({WIRING}), which keeps the records")
    copy = bundle_copy(bundle, tmp_path / "bundle")
    _save_random_weights(bundle, copy, seed=0)
    out = tmp_path / "out"
    args = [*smoke_args(bundle, copy, smoke_dataset(bundle.layout)), "--output_dir", str(out)]

    def run(name: str, *extra: str):
        return run_config(copy, ["configs/inference.json"], [*args, *extra], tmp_path / f"{name}.log")

    first = run("first")
    assert first.ok, first.failure()
    cases = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert cases, f"no case written in {out}"
    masks = [out / name for case in cases for name in bundle.outputs_for(case)]
    assert all(p.is_file() for p in masks)
    made = _state(out)

    skipped = run("skipped")
    assert skipped.ok, skipped.failure()
    assert _state(out) == made, "a rerun rewrote outputs it made itself"
    assert "already have their outputs" in skipped.stdout + skipped.stderr

    with_prob = run("with_prob", "--save_prob", "true")
    assert with_prob.ok, with_prob.failure()
    for case in cases:
        prob = out / case / f"{case}_prob.nii.gz"
        assert prob.is_file(), f"--save_prob true into a folder of masks wrote no {prob.name}"
        assert prob.name in read_record(record_path(out, case))[1]
    kept = _state(out)

    checkpoint = copy / bundle.networks[0].checkpoint
    _save_random_weights(bundle, copy, seed=1)
    refused = run("refused")
    last = refused.last_line()
    assert refused.returncode not in (0, None), refused.failure()
    assert last.startswith(ERROR) and f"case {cases[0]} " in last and str(out) in last, refused.failure()
    assert f"weights {bundle.networks[0].checkpoint} differ" in last and "--overwrite true" in last, last
    assert "Traceback" not in refused.stdout + refused.stderr, refused.failure()
    assert _state(out) == kept, "a refused rerun touched the outputs"

    recomputed = run("recomputed", "--overwrite", "true")
    assert recomputed.ok, recomputed.failure()
    now = _state(out)
    for case in cases:
        record, outputs = read_record(record_path(out, case))
        assert record.weights[bundle.networks[0].checkpoint] == file_sha256(checkpoint)
        assert outputs == [name for name in (f"{case}_seg.nii.gz",) if (out / case / name).is_file()]
        assert not (out / case / f"{case}_prob.nii.gz").exists(), "a stale probability map of the other weights"
    assert all(now[p][0] != kept[p][0] for p in masks), "--overwrite true did not recompute the masks"
