"""Bad inputs through ``python -m monai.bundle run``, for every bundle: one last line, non-zero exit, no output.

Every input is built from the bundle's own description and configs, never from its name: a synthetic dataset
in the bundle's layout, the datalist entry its ``inputs`` (``strokeseg.runtime.inputs.InferenceCases``) picks
for the test case, and the keys and dimensionality its ``CheckNiftiHeadersd`` checks. From the good test
case the suite makes one bad copy per problem (NaN voxels, an all-zero image, a truncated file, a non-NIfTI
file with a NIfTI name, an empty file, a header that does not match its data, a header claiming 4000³
voxels, no valid spacing, a 4-D series where a volume is expected, a 3-D volume where a series is expected,
a file that does not exist, a second volume on another grid) and runs:

* one ``skip_bad_cases`` inference over all of them plus the good case: every bad case is listed with its
  file and problem, the good case is written, the bad ones are not, no temporary file is left, exit 1;
* one inference on a dataset tree with a missing modality: the last stderr line names the case and the
  problem, exit non-zero, no traceback;
* one inference into an unwritable output folder;
* a SIGKILL during batch inference, then the rerun: no half-written NIfTI, finished cases are not redone;
* two trainings: an empty label and a truncated image.

``make test`` runs each of these on one representative bundle (spread over the bundles, see ``conftest.py``),
``.ci/run`` on every bundle. The bundle setups (copy, random-weight checkpoints, datalist) are made once per session
by the :func:`bundle_setups` fixture and shared read-only; each test writes only into its own ``tmp_path``.
"""

from __future__ import annotations

import copy as copy_module
import gzip
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from strokeseg.data.datalist import build_datalist, write_datalist
from strokeseg.runtime.description import BundleDescription
from strokeseg.tools.runner import child_env, config_arg, monai_bundle_command

from .conftest import bundle_copy, run_config, smoke_args

ERROR = "strokeseg: error: "
BAD = "strokeseg: bad case: "


# --------------------------------------------------------------------------------------------- file edits


def _raw(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _write_raw(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload, compresslevel=1) if path.name.lower().endswith(".gz") else payload)


def _patch_header(src: Path, dst: Path, **fields) -> None:
    """Copy a NIfTI-1 file, overwriting header fields in place (the voxel bytes stay as they are)."""
    payload = bytearray(_raw(src))
    order = "<" if int.from_bytes(payload[:4], "little") == 348 else ">"
    header = np.frombuffer(bytes(payload[:348]), dtype=nib.Nifti1Header.template_dtype.newbyteorder(order))[0].copy()
    for name, value in fields.items():
        header[name] = value
    payload[:348] = header.tobytes()
    _write_raw(dst, bytes(payload))


def _save_like(src: Path, dst: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    img = nib.load(str(src))
    header = img.header.copy()
    header.set_data_dtype(data.dtype)
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine, header), str(dst))


def _volume(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj).astype(np.float32)


def _nan(src: Path, dst: Path) -> None:
    data = _volume(src)
    data[np.unravel_index([1, 5, 9], data.shape)] = np.nan
    _save_like(src, dst, data)


def _zero(src: Path, dst: Path) -> None:
    _save_like(src, dst, np.zeros_like(_volume(src)))


def _truncated(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: max(len(data) // 2, 400)])


def _not_nifti(src: Path, dst: Path) -> None:
    dst.write_text("patient notes, not an image\n" * 40)


def _empty_file(src: Path, dst: Path) -> None:
    dst.write_bytes(b"")


def _size_mismatch(src: Path, dst: Path) -> None:
    dim = nib.load(str(src)).header["dim"].copy()
    dim[3] = max(int(dim[3]) - 1, 1)
    _patch_header(src, dst, dim=dim)


def _absurd(src: Path, dst: Path) -> None:
    dim = nib.load(str(src)).header["dim"].copy()
    dim[0], dim[1], dim[2], dim[3] = 3, 4000, 4000, 4000
    _patch_header(src, dst, dim=dim)


def _no_spacing(src: Path, dst: Path) -> None:
    pixdim = nib.load(str(src)).header["pixdim"].copy()
    pixdim[1:4] = 0
    _patch_header(src, dst, qform_code=0, sform_code=0, pixdim=pixdim)


def _series(src: Path, dst: Path) -> None:
    data = _volume(src)
    _save_like(src, dst, np.stack([data, data], axis=-1))


def _single_volume(src: Path, dst: Path) -> None:
    _save_like(src, dst, _volume(src)[..., 0])


def _shifted(src: Path, dst: Path) -> None:
    affine = nib.load(str(src)).affine.copy()
    affine[:3, 3] += 5.0
    _save_like(src, dst, _volume(src), affine)


@dataclass(frozen=True)
class Problem:
    name: str
    edit: object  # callable(src, dst)
    words: tuple[str, ...]
    target: str = "first"  # which checked file: first 3-D file, a 4-D series ("series"), the last same-grid file


PROBLEMS = (
    Problem("nan", _nan, ("3 NaN",)),
    Problem("zero", _zero, ("empty",)),
    Problem("truncated", _truncated, ("truncated",)),
    Problem("notnifti", _not_nifti, ("not a NIfTI",)),
    Problem("emptyfile", _empty_file, ("empty (0 bytes)",)),
    Problem("sizemismatch", _size_mismatch, ("does not match",)),
    Problem("absurd", _absurd, ("4000×4000×4000",)),
    Problem("nospacing", _no_spacing, ("no valid voxel spacing",)),
    Problem("series", _series, ("4-D series",)),
    Problem("missingfile", None, ("does not exist",)),
    Problem("grid", _shifted, ("differs",), target="grid"),
    Problem("volume", _single_volume, ("4-D series is expected",), target="series"),
)


# ------------------------------------------------------------------------------------------ bundle setup


@dataclass
class Setup:
    """A bundle copy with random-weight checkpoints, its dataset, the good test entry and what it checks."""

    description: BundleDescription
    copy: Path
    work: Path
    data: Path
    datalist: dict
    num_folds: int
    good: dict
    checked: dict[str, int]  # key -> ndim, for the keys the inference preprocessing header-checks
    grid_keys: tuple[str, ...]

    def args(self, dataset: Path, out: Path, **extra) -> list[str]:
        return [*smoke_args(self.description, self.copy, dataset, **extra), "--output_dir", str(out)]


def _header_check(parser) -> object:
    from strokeseg.transforms.validation import CheckNiftiHeadersd

    compose = parser.get_parsed_content("preprocessing")
    for transform in getattr(compose, "transforms", ()):
        if isinstance(transform, CheckNiftiHeadersd):
            return transform
    raise AssertionError("inference preprocessing has no strokeseg.transforms.validation.CheckNiftiHeadersd")


def _setup(description: BundleDescription, work: Path, data: Path) -> Setup:
    import torch
    from monai.bundle import ConfigParser

    copy = bundle_copy(description, work / "bundle")
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / "inference.json"))
    parser.read_meta(str(copy / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(copy), **description.smoke_overrides})
    for network in description.networks:
        torch.manual_seed(0)
        net = parser.get_parsed_content(network.id)
        target = copy / network.checkpoint
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), target)
    num_folds = int(parser.get_parsed_content("inputs#num_folds", instantiate=False, eval_expr=True))
    datalist = build_datalist(description.layout, data, folds=num_folds)
    clean = write_datalist(datalist, work / "clean.json")
    parser["dataset_dir"] = str(clean)
    parser["output_dir"] = str(work / "probe")
    inputs = parser.get_parsed_content("inputs")
    assert inputs.pending, f"{description.name}: inference finds no test case in {clean}"
    good = inputs.pending[0]
    check = _header_check(parser)
    checked = {key: check.checkers[key].ndim for key in check.keys if key in good}
    return Setup(description, copy, work, data, datalist, num_folds, good, checked, tuple(check.same_grid_keys))


@pytest.fixture(scope="session")
def bundle_setups(tmp_path_factory, smoke_dataset) -> Callable[[BundleDescription], Setup]:
    """``bundle_setups(bundle)``: the bundle's :class:`Setup`, made once per session and shared read-only."""
    made: dict[str, Setup] = {}

    def setup(description: BundleDescription) -> Setup:
        if description.name not in made:
            work = tmp_path_factory.mktemp(f"bad-inputs-{description.name}")
            made[description.name] = _setup(description, work, smoke_dataset(description.layout))
        return made[description.name]

    return setup


@pytest.fixture
def setup(bundle, bundle_setups, tmp_path) -> Setup:
    """The bundle's shared :class:`Setup`, with ``work`` set to this test's own folder (every file it writes)."""
    shared = bundle_setups(bundle)
    return replace(shared, work=tmp_path)


def _files(entry: dict, key: str) -> list[str]:
    value = entry.get(key)
    return [value] if isinstance(value, str) else list(value or [])


def _bad_entry(setup: Setup, problem: Problem, folder: Path) -> tuple[dict, str] | None:
    """A copy of the good entry with one checked file replaced by a bad one, and that file's path."""
    good = setup.good
    volumes = [(k, i) for k, nd in setup.checked.items() if nd == 3 for i, _ in enumerate(_files(good, k))]
    series = [(k, i) for k, nd in setup.checked.items() if nd == 4 for i, _ in enumerate(_files(good, k))]
    grid = [(k, i) for k in setup.grid_keys if k in setup.checked for i, _ in enumerate(_files(good, k))]
    if problem.target == "series":
        choice = series[0] if series else None
    elif problem.target == "grid":
        choice = grid[-1] if len(grid) > 1 else None
    else:
        choice = volumes[0] if volumes else None
    if choice is None:
        return None
    case = f"bad-{problem.name}"
    folder = folder / case
    folder.mkdir(parents=True, exist_ok=True)
    entry = copy_module.deepcopy(good)
    entry["case"] = entry["patient"] = case
    key, index = choice
    src = Path(_files(good, key)[index])
    dst = folder / src.name
    if problem.edit is None:
        dst = folder / ("absent_" + src.name)
    else:
        problem.edit(src, dst)
    files = _files(good, key)
    files[index] = str(dst)
    entry[key] = files if isinstance(good[key], list) else files[0]
    return entry, str(dst)


def _datalist(setup: Setup, testing: list[dict], path: Path) -> Path:
    """A datalist JSON whose ``testing`` cases are ``testing`` (entries as the bundle selected them)."""
    original = next(e for e in setup.datalist["testing"] if e["case"] == setup.good["case"])
    full = []
    for entry in testing:
        # the bundle's entry holds the modalities it selected; a datalist lists all of the layout's
        images = list(original["image"])
        for position, image in zip(_selected_positions(setup), entry["image"], strict=True):
            images[position] = image
        full.append({**entry, "image": images})
    path.write_text(json.dumps(dict(setup.datalist, testing=full, skipped=[]), indent=1))
    return path


def _selected_positions(setup: Setup) -> list[int]:
    original = next(e for e in setup.datalist["testing"] if e["case"] == setup.good["case"])
    return [original["image"].index(p) for p in setup.good["image"]]


def _no_partials(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".partial-*")) if folder.exists() else []


def _outputs(setup: Setup, out: Path, case: str) -> list[Path]:
    return [out / name for name in setup.description.outputs_for(case)]


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.representative("stroke_mri_deepmedic")
def test_skip_bad_cases_lists_every_bad_input_and_writes_the_good_case(setup):
    folder = setup.work / "variants"
    entries, expected = [], {}
    for problem in PROBLEMS:
        made = _bad_entry(setup, problem, folder)
        if made is not None:
            entries.append(made[0])
            expected[made[0]["case"]] = (Path(made[1]).name, problem.words)
    assert len(expected) >= 10, f"only {sorted(expected)} could be built for {setup.description.name}"
    good = dict(setup.good)
    datalist = _datalist(setup, [good, *entries], setup.work / "skip.json")
    out = setup.work / "out_skip"

    run = run_config(
        setup.copy,
        ["configs/inference.json"],
        setup.args(datalist, out, skip_bad_cases="true"),
        setup.work / "skip.log",
    )

    assert run.returncode not in (0, None), run.failure()
    assert run.last_line().startswith(ERROR) and "bad input" in run.last_line(), run.failure()
    listed = {
        line.strip()[len(BAD) :].split(": ", 1)[0]: line
        for line in run.stderr.splitlines()
        if line.strip().startswith(BAD)
    }
    problems = []
    for case, (name, words) in expected.items():
        line = listed.get(case)
        if line is None:
            problems.append(f"{case}: not listed")
        elif name not in line or not all(w in line for w in words):
            problems.append(f"{case}: listed as {line.strip()!r}, expected {name} and {words}")
        for output in _outputs(setup, out, case):
            if output.exists():
                problems.append(f"{case}: {output} was written")
    assert not problems, "\n".join(problems) + "\n" + run.failure()
    assert good["case"] not in listed
    reference = nib.load(setup.good["image"][0])
    for output in _outputs(setup, out, good["case"]):
        assert output.is_file(), f"good case output {output} missing\n{run.failure()}"
        written = nib.load(str(output))  # the prediction overlays its input: same grid, same affine
        assert written.shape[:3] == reference.shape[:3], output
        np.testing.assert_allclose(written.affine, reference.affine, atol=1e-4, err_msg=str(output))
    assert not _no_partials(out)
    assert "Traceback" not in run.stderr + run.stdout, run.failure()


@pytest.mark.representative("stroke_mri_uresnet_focal")
def test_missing_modality_ends_with_one_line_naming_the_case(setup):
    tree = setup.work / "tree_missing"
    shutil.copytree(setup.data, tree)
    relative = Path(setup.good["image"][0]).relative_to(setup.data)
    (tree / relative).unlink()
    out = setup.work / "out_missing"

    run = run_config(setup.copy, ["configs/inference.json"], setup.args(tree, out), setup.work / "missing.log")

    last = run.last_line()
    assert run.returncode not in (0, None), run.failure()
    assert last.startswith(ERROR) and setup.good["case"] in last and "missing" in last, run.failure()
    assert "Traceback" not in run.stderr + run.stdout, run.failure()
    assert not any(o.exists() for o in _outputs(setup, out, setup.good["case"]))
    assert not _no_partials(out)
    assert len([line for line in run.stderr.splitlines() if line.strip()]) < 15, run.failure()


@pytest.mark.representative("stroke_ctp_dwi_gan")
def test_unwritable_output_folder_is_one_line(setup):
    blocker = setup.work / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    datalist = _datalist(setup, [dict(setup.good)], setup.work / "good.json")

    run = run_config(
        setup.copy, ["configs/inference.json"], setup.args(datalist, blocker / "out"), setup.work / "unwritable.log"
    )

    assert run.returncode not in (0, None), run.failure()
    assert run.last_line().startswith(ERROR) and "not_a_folder" in run.last_line(), run.failure()
    assert "not writable" in run.last_line(), run.failure()
    assert "Traceback" not in run.stderr + run.stdout, run.failure()


def _complete(path: Path) -> bool:
    try:
        np.asarray(nib.load(str(path)).dataobj)
    except Exception:
        return False
    return True


@pytest.mark.representative("stroke_ctp_dwi_gan")
def test_sigkill_during_batch_inference_leaves_no_half_written_file_and_rerun_skips_finished(setup):
    cases = [dict(setup.good, case=f"copy{i}", patient=f"copy{i}") for i in range(2)]
    datalist = _datalist(setup, cases, setup.work / "three.json")
    out = setup.work / "out_kill"
    command = monai_bundle_command(
        "run", "--config_file", config_arg(["configs/inference.json"]), *setup.args(datalist, out)
    )
    proc = subprocess.Popen(
        command,
        cwd=setup.copy,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first = _outputs(setup, out, "copy0")
    deadline = time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if all(p.exists() for p in first):
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finals = [p for c in cases for p in _outputs(setup, out, c["case"]) if p.exists()]
    assert all(p.exists() for p in first), "the first case was not written before the kill"
    assert all(_complete(p) for p in finals), "a half-written NIfTI under its final name"
    before = {p: p.stat().st_mtime_ns for p in finals}

    run = run_config(setup.copy, ["configs/inference.json"], setup.args(datalist, out), setup.work / "rerun.log")

    assert run.ok, run.failure()
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten by the rerun (overwrite is off)"
    for case in cases:
        assert all(_complete(p) for p in _outputs(setup, out, case["case"]))
    assert not _no_partials(out), _no_partials(out)
    assert "already have their outputs" in run.stdout + run.stderr


def _training_datalist(setup: Setup, problem: str) -> tuple[Path, str]:
    training = copy_module.deepcopy(setup.datalist["training"])
    victim = training[0]
    folder = setup.work / f"train_{problem}"
    folder.mkdir(parents=True, exist_ok=True)
    if problem == "empty_label":
        src = Path(victim["label"])
        dst = folder / src.name
        _zero(src, dst)
        victim["label"] = str(dst)
    else:
        src = Path(victim["image"][_selected_positions(setup)[0]])
        dst = folder / src.name
        _truncated(src, dst)
        victim["image"][_selected_positions(setup)[0]] = str(dst)
    path = setup.work / f"train_{problem}.json"
    path.write_text(json.dumps(dict(setup.datalist, training=training), indent=1))
    return path, dst.name


@pytest.mark.parametrize(
    ("problem", "words"),
    [
        pytest.param("empty_label", "empty", marks=pytest.mark.representative("two_net_bundle")),
        pytest.param("truncated_image", "truncated", marks=pytest.mark.representative("stroke_dwi_edd_muscle")),
    ],
)
def test_bad_training_input_is_one_line(bundle, setup, problem, words):
    datalist, name = _training_datalist(setup, problem)
    out = setup.work / f"out_train_{problem}"
    args = smoke_args(bundle, setup.copy, datalist, output_dir=out, num_folds=1)
    args[args.index("--ckpt_dir") + 1] = str(out / "models")  # keep the copy's checkpoints for inference

    run = run_config(setup.copy, bundle.stage_configs("train"), args, setup.work / f"train_{problem}.log")

    last = run.last_line()
    assert run.returncode not in (0, None), run.failure()
    assert last.startswith(ERROR) and name in last and words in last, run.failure()
    assert "Traceback" not in run.stderr + run.stdout, run.failure()
    assert not _no_partials(out), _no_partials(out)
