"""Records of what made each case's outputs, and what a rerun does with a case: skip, run or refuse."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from strokeseg.errors import BundleError, DataError
from strokeseg.runtime.reruns import (
    RecordedWriters,
    RunRecord,
    bundle_identity,
    check_case,
    file_sha256,
    read_record,
    record_path,
    refusal,
)

NOW = RunRecord("EDD", "0.2.1", {"models/model.pt": "a" * 64}, {"precision": "fp32", "pixdim": (1.6, 1.6, -1)})


def _case(out: Path, case: str, record: RunRecord | None, outputs: list[str], present: list[str] | None = None) -> None:
    (out / case).mkdir(parents=True, exist_ok=True)
    for name in outputs if present is None else present:
        (out / case / name).write_bytes(b"nifti")
    if record is not None:
        record_path(out, case).write_text(record.to_json(outputs))


def test_differences_name_the_bundle_weights_and_options_that_changed() -> None:
    same = RunRecord("EDD", "0.2.1", {"models/model.pt": "a" * 64}, {"precision": "fp32", "pixdim": [1.6, 1.6, -1]})
    assert same.differences(NOW) == []  # a tuple knob reads back from JSON as a list
    other = RunRecord(
        "MSDCNN", "0.1.1", {"models/model.pt": "b" * 64, "models/muscle.pt": "c" * 64}, {"precision": "bf16"}
    )
    assert other.differences(NOW) == [
        "bundle 'MSDCNN' 0.1.1 made them, this is 'EDD' 0.2.1",
        f"weights models/model.pt differ (sha256 {'b' * 12}… then, {'a' * 12}… now)",
        "weights models/muscle.pt were used then, not now",
        "option pixdim is new",
        "precision bf16 then, fp32 now",
    ]


def test_a_record_reads_back_as_written(tmp_path: Path) -> None:
    record_file = tmp_path / "c" / "c_provenance.json"
    record_file.parent.mkdir()
    record_file.write_text(NOW.to_json(["c_seg.nii.gz"]))
    assert read_record(record_file) == (NOW, ["c_seg.nii.gz"])
    record_file.write_text('{"bundle": "EDD"}')
    with pytest.raises(DataError, match=r"c_provenance.json: not a readable inference record \(KeyError"):
        read_record(record_file)


def test_a_case_is_skipped_only_when_its_record_matches_and_lists_every_wanted_output(tmp_path: Path) -> None:
    seg, prob = "c_seg.nii.gz", "c_prob.nii.gz"
    assert check_case(tmp_path, "c", NOW, [seg]).action == "run"  # nothing there yet
    _case(tmp_path, "c", NOW, [seg])
    assert check_case(tmp_path, "c", NOW, [tmp_path / "c" / seg]).action == "skip"
    assert check_case(tmp_path, "c", NOW, [seg, prob]).action == "run"  # the probability map was not asked then
    (tmp_path / "c" / seg).unlink()
    _case(tmp_path, "c", NOW, [seg, prob], present=[prob])  # listed, killed before the mask was written
    assert check_case(tmp_path, "c", NOW, [seg]).action == "run"


def test_this_runs_record_is_made_only_for_a_case_with_a_record_to_compare(tmp_path: Path) -> None:
    def no_weights_yet() -> RunRecord:  # hashing would need weight files that a fresh bundle does not have
        raise BundleError("checkpoint models/model.pt not found")

    assert check_case(tmp_path, "c", no_weights_yet, ["c_seg.nii.gz"]).action == "run"
    _case(tmp_path, "c", NOW, ["c_seg.nii.gz"])
    assert check_case(tmp_path, "c", lambda: NOW, ["c_seg.nii.gz"]).action == "skip"
    with pytest.raises(BundleError, match="not found"):
        check_case(tmp_path, "c", no_weights_yet, ["c_seg.nii.gz"])


def test_another_runs_or_unrecorded_or_unreadable_outputs_are_refused(tmp_path: Path) -> None:
    other = RunRecord("EDD", "0.2.1", {"models/model.pt": "b" * 64}, NOW.options)
    _case(tmp_path, "c", other, ["c_seg.nii.gz"])
    check = check_case(tmp_path, "c", NOW, ["c_seg.nii.gz"])
    assert (check.action, check.reason) == ("refuse", other.differences(NOW)[0])

    _case(tmp_path, "old", None, ["old_seg.nii.gz"])  # written before records were kept
    check = check_case(tmp_path, "old", NOW, ["old_seg.nii.gz"])
    assert check.action == "refuse" and "no record" in check.reason

    _case(tmp_path, "bad", None, ["bad_seg.nii.gz"])
    record_path(tmp_path, "bad").write_text("{")
    check = check_case(tmp_path, "bad", NOW, ["bad_seg.nii.gz"])
    assert check.action == "refuse" and check.reason.startswith("its record bad_provenance.json is not a readable")

    error = refusal([check_case(tmp_path, case, NOW, []) for case in ("old", "c")], tmp_path)
    assert str(error).startswith(f"{tmp_path / 'old'}: case old was written by another run: its outputs have no")
    assert str(error).endswith(
        "(1 more case(s) likewise); pass --overwrite true to recompute, or write to another output folder"
    ) and "\n" not in str(error)


def test_weights_are_identified_by_sha256_and_a_missing_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"weights" * 1000)
    assert file_sha256(tmp_path / "model.pt") == hashlib.sha256(b"weights" * 1000).hexdigest()
    with pytest.raises(BundleError, match=r"checkpoint .*absent.pt not found: train the bundle first"):
        file_sha256(tmp_path / "absent.pt")


def test_the_bundle_is_named_by_its_metadata(tmp_path: Path) -> None:
    (tmp_path / "copy" / "configs").mkdir(parents=True)
    (tmp_path / "copy" / "configs" / "metadata.json").write_text(json.dumps({"name": "EDD", "version": "0.2.1"}))
    assert bundle_identity(tmp_path / "copy") == ("EDD", "0.2.1")
    assert bundle_identity(tmp_path / "bare") == ("bare", "")


class _Writer:
    """A writer that checks the record is on disk, listing its file, before it writes the file."""

    def __init__(self, out: Path, postfix: str, fail: bool = False) -> None:
        self.out, self.postfix, self.fail = out, postfix, fail

    def path(self, case: str) -> Path:
        return self.out / case / f"{case}_{self.postfix}.nii.gz"

    def __call__(self, data: dict) -> dict:
        case = data["case"]
        _, outputs = read_record(record_path(self.out, case))
        assert self.path(case).name in outputs and not self.path(case).exists()
        if self.fail:
            raise OSError("killed")
        self.path(case).write_bytes(self.postfix.encode())
        return {**data, f"{self.postfix}_path": str(self.path(case))}


def test_the_record_is_written_before_the_outputs_and_replaces_a_different_runs(tmp_path: Path) -> None:
    other = RunRecord("MSDCNN", "0.1.1")
    _case(tmp_path, "c", other, ["c_seg.nii.gz", "c_prob.nii.gz"])
    writers = RecordedWriters([_Writer(tmp_path, "seg")], tmp_path, lambda: NOW)
    out = writers({"case": "c", "pred": 1})
    assert out["seg_path"] == str(tmp_path / "c" / "c_seg.nii.gz")
    assert read_record(record_path(tmp_path, "c")) == (NOW, ["c_seg.nii.gz"])
    assert not (tmp_path / "c" / "c_prob.nii.gz").exists()  # the other run's map is not this run's
    assert check_case(tmp_path, "c", NOW, ["c_seg.nii.gz"]).action == "skip"


def test_a_matching_runs_other_outputs_stay_listed_and_a_killed_write_is_rerun(tmp_path: Path) -> None:
    _case(tmp_path, "c", NOW, ["c_seg.nii.gz", "c_prob.nii.gz"])
    (tmp_path / "c" / "c_seg.nii.gz").unlink()
    RecordedWriters([_Writer(tmp_path, "seg")], tmp_path, NOW)({"case": "c"})
    assert read_record(record_path(tmp_path, "c"))[1] == ["c_seg.nii.gz", "c_prob.nii.gz"]
    assert check_case(tmp_path, "c", NOW, ["c_seg.nii.gz", "c_prob.nii.gz"]).action == "skip"

    with pytest.raises(OSError, match="killed"):
        RecordedWriters([_Writer(tmp_path, "seg", fail=True)], tmp_path, NOW)({"case": "c"})
    assert check_case(tmp_path, "c", NOW, ["c_seg.nii.gz"]).action == "run"
    with pytest.raises(KeyError, match="no case name"):
        RecordedWriters([], tmp_path, NOW)({"pred": 1})
