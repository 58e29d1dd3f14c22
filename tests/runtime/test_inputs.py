"""``inference_cases``: one file, a folder of files, a dataset root or a datalist → datalist entries."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from strokeseg.data.datalist import build_datalist, write_datalist
from strokeseg.errors import BundleError, DataError
from strokeseg.naming import case_name
from strokeseg.runtime.inputs import BAD_CASE_KEY, inference_cases, is_nifti


def _nifti(path: Path, value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 4, 3), value, dtype=np.float32), np.diag([1.5, 1.5, 3.0, 1.0])), str(path))
    return path


def _isles2022_subject(root: Path, n: int, label: bool) -> dict[str, Path]:
    """``rawdata/sub-strokecaseNNNN/ses-0001/dwi/*_{dwi,adc}.nii.gz`` (+ ``derivatives/.../*_msk.nii.gz``)."""
    case = f"sub-strokecase{n:04d}"
    stem = f"{case}_ses-0001"
    dwi_dir = root / "rawdata" / case / "ses-0001" / "dwi"
    paths = {"dwi": _nifti(dwi_dir / f"{stem}_dwi.nii.gz"), "adc": _nifti(dwi_dir / f"{stem}_adc.nii.gz", 800.0)}
    if label:
        paths["label"] = _nifti(root / "derivatives" / case / "ses-0001" / f"{stem}_msk.nii.gz", 0.0)
    return paths


def test_single_file_is_one_case_named_by_stem(tmp_path: Path) -> None:
    for name, case in (("scan.nii.gz", "scan"), ("patient.7.nii", "patient.7")):
        path = _nifti(tmp_path / name)
        assert inference_cases(path, "isles2022") == [{"image": [str(path.resolve())], "case": case}]


def test_relative_file_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _nifti(tmp_path / "sub" / "my_dwi.nii.gz")
    monkeypatch.chdir(tmp_path)
    [entry] = inference_cases("sub/my_dwi.nii.gz", "isles2022")
    assert entry["image"] == [str(tmp_path.resolve() / "sub" / "my_dwi.nii.gz")]
    assert Path(entry["image"][0]).is_absolute()


def test_folder_of_files_is_one_case_per_file(tmp_path: Path) -> None:
    b = _nifti(tmp_path / "b.nii")
    a = _nifti(tmp_path / "a.nii.gz")
    (tmp_path / "notes.txt").write_text("not an image")
    cases = inference_cases(tmp_path, "isles2017")
    assert cases == [
        {"image": [str(a.resolve())], "case": "a"},
        {"image": [str(b.resolve())], "case": "b"},
    ]


def test_missing_path_raises_data_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.nii.gz"
    with pytest.raises(DataError, match=rf"{missing} does not exist"):
        inference_cases(missing, "isles2022")


def test_dataset_root_delegates_to_cases_for(tmp_path: Path) -> None:
    labelled = _isles2022_subject(tmp_path, 1, label=True)
    unlabelled = _isles2022_subject(tmp_path, 2, label=False)

    test = inference_cases(tmp_path, "isles2022", split="test", num_folds=1)

    assert [e["case"] for e in test] == ["sub-strokecase0002"]
    assert test[0]["image"] == [str(unlabelled["dwi"].resolve()), str(unlabelled["adc"].resolve())]
    assert "label" not in test[0]

    everything = inference_cases(tmp_path, "isles2022", split="all", num_folds=1)
    assert [e["case"] for e in everything] == ["sub-strokecase0001", "sub-strokecase0002"]
    assert everything[0]["label"] == str(labelled["label"].resolve())

    adc_only = inference_cases(tmp_path, "isles2022", split="test", num_folds=1, modalities=["adc"])
    assert adc_only[0]["image"] == [str(unlabelled["adc"].resolve())]


def test_grid_tolerance_reaches_the_discovery_of_a_dataset_root(tmp_path: Path) -> None:
    paths = _isles2022_subject(tmp_path, 2, label=False)
    shifted = nib.load(str(paths["adc"]))
    affine = shifted.affine.copy()
    affine[0, 3] += 0.01  # 10 µm: an export's rounding
    nib.save(nib.Nifti1Image(np.asarray(shifted.dataobj), affine), str(paths["adc"]))
    with pytest.raises(DataError, match="grid mismatch"):
        inference_cases(tmp_path, "isles2022", split="test", num_folds=1)
    found = inference_cases(tmp_path, "isles2022", split="test", num_folds=1, grid_tolerance_mm=0.02)
    assert [e["case"] for e in found] == ["sub-strokecase0002"]


def test_datalist_json_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "isles"
    _isles2022_subject(root, 1, label=True)
    unlabelled = _isles2022_subject(root, 2, label=False)
    datalist = write_datalist(build_datalist("isles2022", root, folds=1), tmp_path / "datalist.json")

    test = inference_cases(datalist, "isles2022", split="test", num_folds=1)
    assert [e["case"] for e in test] == ["sub-strokecase0002"]
    assert test[0]["image"] == [str(unlabelled["dwi"].resolve()), str(unlabelled["adc"].resolve())]


def test_empty_split_suggests_infer_split(tmp_path: Path) -> None:
    _isles2022_subject(tmp_path, 1, label=True)
    with pytest.raises(DataError, match="no 'test' case.*--infer_split all"):
        inference_cases(tmp_path, "isles2022", split="test", num_folds=1)


def test_empty_folder_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no case folder"):
        inference_cases(tmp_path, "isles2022")


def test_name_helpers() -> None:
    assert is_nifti(Path("x.nii")) and is_nifti(Path("x.nii.gz"))
    assert not is_nifti(Path("x.json")) and not is_nifti(Path("x.nii.gz.bak"))
    assert case_name(Path("/d/sub-01_ses-1_dwi.nii.gz")) == "sub-01_ses-1_dwi"
    assert case_name(Path("/d/a.b.nii")) == "a.b"


def test_upper_case_nifti_names_are_recognised(tmp_path):
    path = tmp_path / "SCAN.NII.GZ"
    assert is_nifti(path)
    assert case_name(path) == "SCAN"
    path.touch()
    assert inference_cases(path, "isles2022")[0]["case"] == "SCAN"


# ------------------------------------------------------------------ batch bookkeeping: outputs, reruns, bad cases


def _bundle(root: Path, outputs: list[str] | None = None) -> Path:
    """A folder with just the ``configs/metadata.json`` description :class:`InferenceCases` reads."""
    import json

    spec = {
        "layout": "isles2022",
        "stages": ["train"],
        "networks": [{"id": "network_def", "checkpoint": "models/model.pt", "stage": "train"}],
        "inference_outputs": outputs or ["{case}/{case}_seg.nii.gz"],
    }
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text(json.dumps({"strokeseg": spec}))
    return root


def _scans(folder: Path, names: list[str]) -> Path:
    for name in names:
        _nifti(folder / f"{name}.nii.gz")
    return folder


def test_output_folder_is_created_and_must_be_writable(tmp_path: Path) -> None:
    from strokeseg.runtime.inputs import check_output_dir

    assert check_output_dir(tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe file is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"output folder .*file/out: not writable"):
        check_output_dir(tmp_path / "file" / "out")


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from strokeseg.runtime.inputs import remove_stale_partials

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / "c1" / f".partial-{dead_pid}-c1_seg.nii.gz"
    live = tmp_path / "c2" / f".partial-{os.getpid()}-c2_seg.nii.gz"
    other = tmp_path / "c2" / ".partial-notes.txt"
    for path in (stale, live, other):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    assert remove_stale_partials(tmp_path) == [stale]
    assert live.exists() and other.exists() and not stale.exists()
    assert remove_stale_partials(tmp_path / "absent") == []


def _record(out: Path, case: str, now, outputs: list[str]) -> None:
    (out / case).mkdir(parents=True, exist_ok=True)
    for name in outputs:
        (out / case / name).write_bytes(b"done")
    (out / case / f"{case}_provenance.json").write_text(now.to_json(outputs))


def _seg(case: str) -> list[Path]:
    return [Path(case) / f"{case}_seg.nii.gz"]


def test_rerun_skips_the_cases_this_run_made_and_runs_the_rest_unless_overwrite(tmp_path: Path) -> None:
    from strokeseg.runtime.inputs import InferenceCases
    from strokeseg.runtime.reruns import RunRecord

    bundle = _bundle(tmp_path / "bundle", ["{case}/{case}_seg.nii.gz"])
    scans = _scans(tmp_path / "scans", ["a", "b", "c"])
    out = tmp_path / "out"
    now = RunRecord("b", "1", {"models/model.pt": "0" * 64}, {"precision": "fp32"})
    _record(out, "a", now, ["a_seg.nii.gz", "a_prob.nii.gz"])
    _record(out, "b", now, ["b_seg.nii.gz"])
    (out / "b" / "b_seg.nii.gz").unlink()  # listed, then killed before it was written

    rerun = InferenceCases(scans, "isles2022", out, bundle, modalities=["dwi"])
    assert rerun.done == ["a"] and not rerun.planned  # a config writing its own files: by file names alone
    rerun.plan_rerun(now, _seg)
    assert rerun.done == ["a"]
    assert [c["case"] for c in rerun.pending] == ["b", "c"]

    with_prob = InferenceCases(scans, "isles2022", out, bundle, modalities=["dwi"])
    with_prob.plan_rerun(now, lambda case: [*_seg(case), Path(case) / f"{case}_prob.nii.gz"])
    assert with_prob.done == ["a"]  # its record lists the probability map

    _record(out, "c", RunRecord("b", "1", {"models/model.pt": "1" * 64}, {"precision": "fp32"}), ["c_seg.nii.gz"])
    again = InferenceCases(scans, "isles2022", out, bundle, modalities=["dwi"], overwrite=True)
    again.plan_rerun(now, _seg)
    assert again.done == [] and [c["case"] for c in again.pending] == ["a", "b", "c"]


def test_rerun_into_another_runs_outputs_is_refused_in_one_line(tmp_path: Path) -> None:
    from strokeseg.runtime.inputs import InferenceCases
    from strokeseg.runtime.reruns import RunRecord

    bundle = _bundle(tmp_path / "bundle")
    scans = _scans(tmp_path / "scans", ["a", "b", "c"])
    out = tmp_path / "out"
    now = RunRecord("b", "1", {"models/model.pt": "0" * 64}, {"precision": "fp32"})
    _record(out, "a", now, ["a_seg.nii.gz"])
    _record(out, "b", RunRecord("b", "1", {"models/model.pt": "0" * 64}, {"precision": "bf16"}), ["b_seg.nii.gz"])
    _record(out, "c", RunRecord("b", "1", {"models/model.pt": "0" * 64}, {"precision": "bf16"}), ["c_seg.nii.gz"])
    cases = InferenceCases(scans, "isles2022", out, bundle, modalities=["dwi"])
    with pytest.raises(DataError) as refused:
        cases.plan_rerun(now, _seg)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{out / 'b'}: case b was written by another run: precision bf16 then, fp32 now")
    assert "(1 more case(s) likewise)" in message and "--overwrite true" in message


class _Evaluator:
    def __init__(self) -> None:
        self.runs = 0

    def run(self) -> None:
        self.runs += 1


def test_nothing_to_run_does_not_start_the_evaluator(tmp_path: Path) -> None:
    from strokeseg.runtime.inputs import InferenceCases
    from strokeseg.runtime.reruns import RunRecord

    bundle = _bundle(tmp_path / "bundle")
    scans = _scans(tmp_path / "scans", ["a"])
    now = RunRecord("b", "1")
    _record(tmp_path / "out", "a", now, ["a_seg.nii.gz"])
    evaluator = _Evaluator()
    cases = InferenceCases(scans, "isles2022", tmp_path / "out", bundle, modalities=["dwi"])
    cases.plan_rerun(now, _seg)
    cases.run(evaluator)
    assert evaluator.runs == 0
    again = InferenceCases(scans, "isles2022", tmp_path / "out", bundle, modalities=["dwi"], overwrite=True)
    again.plan_rerun(now, _seg)
    again.run(evaluator)
    assert evaluator.runs == 1


class _Loading:
    """A dataset transform that fails like a bad input for some cases and like a bug for others."""

    def __init__(self, bad: dict[str, Exception]) -> None:
        self.bad = bad

    def __call__(self, entry: dict) -> dict:
        if entry["case"] in self.bad:
            raise RuntimeError("applying transform <CheckImaged>") from self.bad[entry["case"]]
        return {"image": torch.zeros(1), "case": entry["case"]}


def _loader(cases: list[dict], bad: dict[str, Exception], num_workers: int = 0, batch_size: int = 1):
    from monai.data import DataLoader, Dataset

    return DataLoader(Dataset(cases, transform=_Loading(bad)), batch_size=batch_size, num_workers=num_workers)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_skip_bad_cases_yields_the_good_ones_and_records_the_bad(num_workers: int) -> None:
    from strokeseg.runtime.inputs import SkipBadCases

    cases = [{"case": name} for name in ("a", "b", "c", "d")]
    bad = {"b": DataError("/x/b.nii.gz: contains 3 NaN voxel(s)"), "d": DataError("/x/d.nii.gz: file is empty")}
    found: list[tuple[str, str]] = []
    seen = [batch["case"][0] for batch in SkipBadCases(_loader(cases, bad, num_workers), cases, found)]
    assert seen == ["a", "c"]
    assert found == [("b", "/x/b.nii.gz: contains 3 NaN voxel(s)"), ("d", "/x/d.nii.gz: file is empty")]


def test_skip_bad_cases_lets_other_errors_through_and_needs_batch_size_1() -> None:
    from strokeseg.runtime.inputs import SkipBadCases

    cases = [{"case": "a"}, {"case": "b"}]
    with pytest.raises(RuntimeError, match="applying transform"):
        list(SkipBadCases(_loader(cases, {"a": ZeroDivisionError("bug")}), cases, []))
    with pytest.raises(BundleError, match="batch_size 1"):
        SkipBadCases(_loader(cases, {}, batch_size=2), cases, [])


def test_report_lists_every_bad_case_then_raises(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from strokeseg.runtime.inputs import InferenceCases

    bundle = _bundle(tmp_path / "bundle")
    scans = _scans(tmp_path / "scans", ["a", "b", "c"])
    inputs = InferenceCases(scans, "isles2022", tmp_path / "out", bundle, modalities=["dwi"], skip_bad_cases=True)
    from monai.data import DataLoader, Dataset

    loader = DataLoader(Dataset(inputs.pending, transform=_Loading({"b": DataError("/s/b.nii.gz: truncated")})))
    assert [batch["case"][0] for batch in inputs.loader(loader)] == ["a", "c"]
    assert inputs.loader(loader) is not loader

    with pytest.raises(DataError, match=r"1 of 3 case\(s\) had bad input .*2 case\(s\) have their outputs"):
        inputs.report()
    assert capsys.readouterr().err.splitlines() == ["strokeseg: bad case: b: /s/b.nii.gz: truncated"]

    strict = InferenceCases(scans, "isles2022", tmp_path / "out", bundle, modalities=["dwi"])
    assert strict.loader(loader) is loader
    strict.report()  # nothing bad: returns


def test_skip_bad_cases_discovers_a_tree_leniently(tmp_path: Path) -> None:
    good = _isles2022_subject(tmp_path, 1, label=False)
    broken = _isles2022_subject(tmp_path, 2, label=False)
    broken["adc"].unlink()

    with pytest.raises(DataError, match="sub-strokecase0002: missing adc"):
        inference_cases(tmp_path, "isles2022", split="test", num_folds=1)
    cases = inference_cases(tmp_path, "isles2022", split="test", num_folds=1, skip_bad_cases=True)
    assert cases[0]["case"] == "sub-strokecase0001" and cases[0]["image"][0] == str(good["dwi"].resolve())
    assert cases[1]["case"] == "sub-strokecase0002"
    assert "missing adc" in cases[1][BAD_CASE_KEY]


def test_bad_cases_found_by_discovery_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from strokeseg.runtime.inputs import InferenceCases

    _isles2022_subject(tmp_path / "tree", 1, label=False)
    broken = _isles2022_subject(tmp_path / "tree", 2, label=False)
    broken["dwi"].write_bytes(b"")
    inputs = InferenceCases(
        tmp_path / "tree", "isles2022", tmp_path / "out", _bundle(tmp_path / "b"), num_folds=1, skip_bad_cases=True
    )
    assert [c["case"] for c in inputs.pending] == ["sub-strokecase0001"]
    with pytest.raises(DataError, match=r"1 of 2 case\(s\) had bad input"):
        inputs.run(_Evaluator())
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("strokeseg: bad case: sub-strokecase0002: ") and "sub-strokecase0002_ses-0001_dwi" in line


def test_stand_alone_files_are_refused_for_a_multi_modality_bundle(tmp_path: Path) -> None:
    from strokeseg.runtime.inputs import InferenceCases

    bundle = _bundle(tmp_path / "bundle")
    scan = _nifti(tmp_path / "scans" / "scan.nii.gz")
    for source in (scan, scan.parent):
        with pytest.raises(
            DataError, match=r"one single-modality case, but this bundle reads 2 modalities \(dwi, adc\)"
        ):
            InferenceCases(source, "isles2022", tmp_path / "out", bundle)
    assert len(InferenceCases(scan, "isles2022", tmp_path / "out", bundle, modalities=["adc"]).pending) == 1
