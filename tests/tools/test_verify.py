"""`strokeseg verify`: the tiny fixture bundle passes every check, and each broken copy fails its own check."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from strokeseg.data.layouts import get_layout, isles2022_paths
from strokeseg.errors import BundleError
from strokeseg.tools import verify
from strokeseg.tools.cli import main
from strokeseg.tools.verify import CheckResult, VerifyReport, verify_bundle
from strokeseg.tools.verify import smoke as verify_smoke

FIXTURE = Path(__file__).resolve().parents[1] / "bundles" / "fixtures" / "tiny_bundle"


def write_isles2022_cases(root: Path, cases: int = 3, test_cases: int = 1, seed: int = 0) -> Path:
    """A tiny ISLES 2022 BIDS tree: DWI/ADC with one bright/dark cuboid lesion; test cases have no mask."""
    rng = np.random.default_rng(seed)
    layout = get_layout("isles2022")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    shape = (20, 18, 16)
    for n in range(1, cases + test_cases + 1):
        case = layout.train_case_pattern.format(n=n)
        paths = isles2022_paths(root, case)
        lesion = np.zeros(shape, np.uint8)
        lesion[5 + n : 10 + n, 5:10, 4:9] = 1
        volumes = {
            "dwi": rng.normal(1.0, 0.1, shape) + lesion,
            "adc": rng.normal(0.8, 0.05, shape) - 0.3 * lesion,
        }
        for key, volume in volumes.items():
            paths[key].parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), paths[key])
        if n <= cases:
            paths["label"].parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(lesion, affine), paths["label"])
    return root


@pytest.fixture(autouse=True)
def _fake_synthesizer(monkeypatch):
    """The phantom generator is not needed to test verify: the fixture bundle reads a hand-made tree."""
    calls = []

    def synthesize(layout: str, out: Path) -> Path:
        calls.append(layout)
        return write_isles2022_cases(Path(out))

    monkeypatch.setattr(verify_smoke, "_synthesize_dataset", synthesize)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return calls


@pytest.fixture
def no_export(monkeypatch):
    """Replace check 5 (two subprocesses, ~10 s) where a test is about another check."""
    checks = tuple(
        (name, (lambda ctx: "not run in this test") if name.startswith("5.") else check)
        for name, check in verify.CHECKS
    )
    monkeypatch.setattr(verify, "CHECKS", checks)


def bundle_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "bundle"))


def edit_json(path: Path, edit) -> None:
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content, indent=4) + "\n")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def failed(report: VerifyReport) -> list[int]:
    return [check.number for check in report.checks if not check.ok]


def test_tiny_bundle_passes_every_check_without_training(tmp_path, _fake_synthesizer):
    before = tree(FIXTURE)
    report = verify_bundle(FIXTURE, workdir=tmp_path / "work", train=False)
    assert report.ok, report.summary()
    assert [check.number for check in report.checks] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(not report.result(n).skipped for n in (1, 2, 3, 4, 5, 7, 8))
    assert report.result(6).skipped and "train=False" in report.result(6).message
    # the export check really ran both processes and compared numbers
    export = report.result(5).message
    assert "max abs diff" in export and "strokeseg not importable" in export
    assert float(export.split("max abs diff ")[1].split(" ")[0]) <= verify.EXPORT_TOLERANCE
    assert (tmp_path / "work" / "export" / "network_def.ts").is_file()
    assert "meta_schema_20240725.json" in report.result(2).message
    assert "synthetic dataset" in report.result(3).message and _fake_synthesizer == ["isles2022"]
    lines = report.summary().splitlines()
    assert len(lines) == 10 and lines[-1] == "all checks passed"
    assert sum(line.startswith("PASS") for line in lines) == 7 and lines[6].startswith("SKIP 6.")
    assert tree(FIXTURE) == before, "verify wrote into the bundle"


def test_missing_license_fails_check_1_only(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    (bundle / "LICENSE").unlink()
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert failed(report) == [1]
    assert "missing" in report.result(1).message and "LICENSE" in report.result(1).message
    assert not report.ok and "FAIL 1. required files" in report.summary()


def test_missing_metadata_skips_the_checks_that_need_it(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    (bundle / "configs" / "metadata.json").unlink()
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert "configs/metadata.json" in report.result(1).message
    for number in (2, 3, 4):
        result = report.result(number)
        assert not result.ok and result.skipped
        assert result.message == "skipped because configs/metadata.json is missing"
    assert report.result(7).ok


def test_version_not_in_changelog_fails_check_2(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    edit_json(bundle / "configs" / "metadata.json", lambda meta: meta.update(version="0.2.0"))
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert failed(report) == [2]
    assert "version '0.2.0' is not a key of 'changelog' (keys: 0.1.0)" in report.result(2).message


def test_schema_violation_fails_check_2(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)

    def edit(meta):
        meta["network_data_format"]["inputs"]["image"]["num_channels"] = "two"
        del meta["authors"]

    edit_json(bundle / "configs" / "metadata.json", edit)
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    message = report.result(2).message
    assert not report.result(2).ok
    assert "does not validate against meta_schema_20240725.json" in message


def test_unknown_schema_file_fails_check_2(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    url = "https://example.org/schemas/meta_schema_20990101.json"
    edit_json(bundle / "configs" / "metadata.json", lambda meta: meta.update(schema=url))
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert failed(report) == [2]
    assert "'meta_schema_20990101.json', of which no offline copy is carried" in report.result(2).message


def test_both_carried_schemas_validate_offline(tmp_path, monkeypatch, no_export):
    """No socket may connect: the metadata is validated against the carried copy, never downloaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("verify tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    bundle = bundle_copy(tmp_path)
    old = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"

    def to_old_schema(meta):
        meta["schema"] = old
        meta["optional_packages_version"] = meta.pop("required_packages_version")

    edit_json(bundle / "configs" / "metadata.json", to_old_schema)
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert report.result(2).ok, report.result(2).message
    assert "meta_schema_20220324.json" in report.result(2).message
    for name, md5 in verify.CARRIED_SCHEMAS.items():
        assert hashlib.md5((verify.SCHEMA_DIR / name).read_bytes()).hexdigest() == md5


def test_missing_required_property_fails_check_3(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)

    def rename_evaluator(config):
        config["engine"] = config.pop("evaluator")
        config["run"] = ["$@engine.run()"]

    edit_json(bundle / "configs" / "inference.json", rename_evaluator)
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert failed(report) == [3]
    message = report.result(3).message
    assert "configs/inference.json (workflow_type='infer'): required properties absent from the config: " in message
    assert "evaluator (id 'evaluator')" in message


def test_network_that_ignores_metadata_channels_fails_check_4(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    edit_json(
        bundle / "configs" / "metadata.json",
        lambda meta: meta["network_data_format"]["outputs"]["pred"].update(num_channels=3),
    )
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert failed(report) == [4]
    assert "output channel number `2` doesn't match: `3`" in report.result(4).message


def test_export_that_differs_from_the_eager_network_fails_check_5(tmp_path):
    """network_def chooses its activation by process: ReLU here, LeakyReLU in `python -m monai.bundle`."""
    bundle = bundle_copy(tmp_path)
    act = "$'leakyrelu' if 'monai' in __import__('sys').argv[0] else 'relu'"
    edit_json(bundle / "configs" / "inference.json", lambda config: config["network_def"].update(act=act))
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert failed(report) == [5]
    message = report.result(5).message
    assert "network_def: TorchScript output differs from the eager network: max abs diff" in message
    assert float(message.split("max abs diff ")[1].split(" >")[0]) > verify.EXPORT_TOLERANCE


def test_dangling_reference_in_an_overlay_fails_check_7(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    edit_json(bundle / "configs" / "evaluate.json", lambda config: config.update(run=["$@validate#judge.run()"]))
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert failed(report) == [7]
    message = report.result(7).message
    assert "configs/train.json + configs/evaluate.json: 'run#0' refers to @validate#judge" in message


def test_bad_indent_fails_check_7(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    path = bundle / "configs" / "train.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2))
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert failed(report) == [7]
    assert "configs/train.json is not pretty-printed with indent 4: line 2 is '  \"imports\": ['" in (
        report.result(7).message
    )


def test_absolute_path_and_oversized_file_fail_check_7(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    readme = bundle / "docs" / "README.md"
    readme.write_text(readme.read_text() + "\nTrained on /home/alice/isles22 for a week.\n")
    with open(bundle / "docs" / "weights.bin", "wb") as sparse:
        sparse.truncate(verify.MAX_FILE_BYTES + 1)
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert failed(report) == [7]
    message = report.result(7).message
    line = len(readme.read_text().splitlines())
    assert f"docs/README.md:{line}: absolute path 'Trained on /home/alice/isles22 for a week.'" in message
    assert "docs/weights.bin is 25.0 MB (limit 25 MB)" in message


def test_dangling_reference_in_multi_gpu_overlay_fails_check_8(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    edit_json(
        bundle / "configs" / "multi_gpu_train.json",
        lambda config: config.update({"train#dataloader#sampler": "@train#distributed_sampler"}),
    )
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert failed(report) == [8]
    assert "'train#dataloader#sampler' refers to @train#distributed_sampler" in report.result(8).message


def test_check_8_does_not_apply_without_multi_gpu_overlay(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    (bundle / "configs" / "multi_gpu_train.json").unlink()
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=False)
    assert report.ok, report.summary()
    assert report.result(8).skipped and report.result(8).line().startswith("SKIP 8.")


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("data in /root/isles", True),
        ('"dataset_dir": "/work/data/isles22"', True),
        ("see /tmp/out/case", True),
        ("from /Users/bob/Downloads", True),
        ('"C:\\\\data\\\\isles"', True),
        ("mounted at /mnt/nas/", True),
        ("https://example.org/home/page", False),
        ("relative data/tmp/x and ~/home/ and ./work/", False),
        ("$@bundle_root + '/models/model.pt'", False),
    ],
)
def test_machine_path_pattern(line, found):
    assert bool(verify.MACHINE_PATH.search(line)) is found


def test_indent_accepts_one_trailing_newline_and_non_ascii(tmp_path):
    content = {"authors": "Pérez Malla", "n": [1, 2]}
    for text in (json.dumps(content, indent=4), json.dumps(content, indent=4, ensure_ascii=False) + "\n"):
        (tmp_path / "a.json").write_text(text, encoding="utf-8")
        assert verify._indent_problem(tmp_path / "a.json", "a.json") is None
    (tmp_path / "a.json").write_text(json.dumps(content, indent=4) + "\n\n")
    assert "not pretty-printed" in verify._indent_problem(tmp_path / "a.json", "a.json")
    (tmp_path / "a.json").write_text('{"n": 1,}')
    assert "is not readable JSON" in verify._indent_problem(tmp_path / "a.json", "a.json")


def test_max_abs_difference_compares_every_output():
    a = (torch.zeros(1, 2, 4), [torch.ones(3)])
    b = (torch.zeros(1, 2, 4), [torch.tensor([1.0, 1.5, 1.0])])
    assert verify._max_abs_difference(a, b) == pytest.approx(0.5)
    with pytest.raises(BundleError, match="eager shape"):
        verify._max_abs_difference(torch.zeros(2), torch.zeros(3))
    with pytest.raises(BundleError, match="returns 2 tensor"):
        verify._max_abs_difference((torch.zeros(1), torch.zeros(1)), torch.zeros(1))


def test_report_is_ok_only_when_every_check_passes():
    report = VerifyReport(bundle=Path("b"))
    assert not report.ok
    report.checks = [CheckResult("1. a", True, "fine"), CheckResult("6. b", True, "skipped because x", 0.0, True)]
    assert report.ok and report.result(6).skipped
    report.checks.append(CheckResult("7. c", False, "broken"))
    assert not report.ok and report.summary().splitlines()[-1] == "1 check(s) failed: 7. c"
    with pytest.raises(KeyError):
        report.result(5)


def test_workdir_inside_the_bundle_is_refused(tmp_path):
    bundle = bundle_copy(tmp_path)
    with pytest.raises(BundleError, match="lies inside the bundle"):
        verify_bundle(bundle, workdir=bundle / "work")
    with pytest.raises(BundleError, match="not a bundle folder"):
        verify_bundle(tmp_path / "nothing")


def test_cli_verify_exit_codes(tmp_path, capsys, no_export):
    assert main(["verify", str(FIXTURE), "--train=False", f"--workdir={tmp_path / 'ok'}"]) == 0
    bundle = bundle_copy(tmp_path)
    (bundle / "LICENSE").unlink()
    assert main(["verify", str(bundle), "--train=False", f"--workdir={tmp_path / 'broken'}"]) == 2
    err = capsys.readouterr().err
    assert "strokeseg: error:" in err and "FAIL 1. required files" in err and "LICENSE" in err


def test_failing_training_reports_its_stderr(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    edit_json(bundle / "configs" / "train.json", lambda config: config.update(run=["$1 / 0"]))
    report = verify_bundle(bundle, workdir=tmp_path / "work", train=True)
    assert failed(report) == [6]
    message = report.result(6).message
    assert message.startswith("train exited with code 1")
    assert "exceptions: RuntimeError: Failed to evaluate ConfigExpression: <- ZeroDivisionError: division by zero" in (
        message
    )
    assert "last lines:" in message and "'$1 / 0'" in message  # the tail of the subprocess's stderr
    assert message.endswith("(later stages, evaluate and inference skipped)")
    assert (tmp_path / "work" / "logs" / "train.log").is_file()


@pytest.mark.slow  # four `python -m monai.bundle run` processes: ~30 s on an idle 2-core machine
def test_smoke_runs_train_stages_evaluate_and_infer(tmp_path, no_export):
    bundle = bundle_copy(tmp_path)
    (bundle / "configs" / "train_finetune.json").write_text(json.dumps({"learning_rate": 0.0001}, indent=4) + "\n")
    before = tree(bundle)
    work = tmp_path / "work"
    report = verify_bundle(bundle, workdir=work, train=True)
    assert report.ok, report.summary()
    message = report.result(6).message
    for run in ("train", "train_finetune", "evaluate", "inference"):
        assert f"{run} " in message
        assert (work / "logs" / f"{run}.log").is_file()
    assert "4 segmentation(s) written" in message
    assert (work / "bundle" / "models" / "model.pt").is_file()
    assert list((work / "out" / "evaluate").rglob("*.csv"))
    segs = sorted((work / "out" / "inference").rglob("*_seg.nii.gz"))
    assert len(segs) == 4 and nib.load(segs[0]).shape[:3] == (20, 18, 16)
    assert tree(bundle) == before, "the smoke runs wrote into the bundle"
