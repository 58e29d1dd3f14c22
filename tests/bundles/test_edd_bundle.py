"""End-to-end runs of the EDD+MUSCLE bundle on tiny synthetic ISLES 2022 data, in-process.

The network is shrunk (``features``) and the slices coarsened (``pixdim``) through the bundle's own
top-level knobs, so one epoch of every stage runs in seconds; the configs themselves are the shipped ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from strokeseg.data.phantoms import synthesize_dataset
from strokeseg.errors import BundleError, DataError

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "stroke_dwi_edd_muscle"
TINY = {
    "epochs": 1,
    "val_interval": 1,
    "samples_per_case": 2,
    "train_batch_size": 2,
    "num_workers": 0,
    "cache_rate": 0.0,
    "num_folds": 3,
    "features": [4, 8, 16],
    "pixdim": [4.0, 4.0, -1],
    "patch_size": [32, 32],
    "muscle_epochs": 1,
    "muscle_iterations_per_epoch": 2,
    "muscle_batch_size": 8,
}


def _workflow(files: list[str], workflow_type: str, bundle: Path, **overrides) -> ConfigWorkflow:
    config = [str(bundle / "configs" / f) for f in files]
    wf = ConfigWorkflow(
        config_file=config if len(config) > 1 else config[0],
        workflow_type=workflow_type,
        logging_file=False,
        bundle_root=str(bundle),
        **overrides,
    )
    wf.initialize()
    return wf


def _run(files: list[str], workflow_type: str, bundle: Path, **overrides) -> None:
    wf = _workflow(files, workflow_type, bundle, **overrides)
    wf.run()
    wf.finalize()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Synthetic data + a bundle copy trained for one epoch of each stage (EDD, then MUSCLE)."""
    root = tmp_path_factory.mktemp("edd")
    data = synthesize_dataset("isles2022", root / "data", cases=3, test_cases=1, seed=3)
    bundle = root / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("*.pt", "eval"))
    common = {**TINY, "dataset_dir": str(data), "output_dir": str(root / "out"), "ckpt_dir": str(bundle / "models")}
    _run(["train.json"], "train", bundle, **common)
    _run(["train.json", "train_muscle.json"], "train", bundle, **common)
    return {"root": root, "data": Path(data), "bundle": bundle, "common": common}


def test_training_writes_checkpoints_and_tensorboard(trained):
    models = trained["bundle"] / "models"
    assert (models / "model.pt").is_file()
    assert (models / "muscle.pt").is_file()
    assert (models / "last_checkpoint_1.pt").is_file()
    state = torch.load(models / "model.pt", weights_only=True)
    assert isinstance(state, dict) and any(k.endswith("weight") for k in state)  # plain state_dict
    events = list((trained["root"] / "out" / "tb").glob("events.out.tfevents*"))
    assert events, "no TensorBoard event file written"


def test_resume_continues_from_last_epoch(trained, tmp_path):
    bundle = Path(shutil.copytree(trained["bundle"], tmp_path / "bundle"))  # the other tests read the epoch-1 state
    overrides = {**trained["common"], "epochs": 2, "ckpt_dir": str(bundle / "models"), "output_dir": str(tmp_path)}
    wf = _workflow(["train.json"], "train", bundle, **overrides)
    trainer = wf.parser.get_parsed_content("train#trainer")
    seen = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: seen.append(engine.state.epoch))
    wf.run()
    wf.finalize()
    assert seen == [2], f"resumed run should only run epoch 2, ran {seen}"
    assert (bundle / "models" / "last_checkpoint_2.pt").is_file()


def test_evaluate_overlay_writes_metrics(trained):
    out = trained["root"] / "eval_out"
    _run(["train.json", "evaluate.json"], "train", trained["bundle"], **{**trained["common"], "output_dir": str(out)})
    report = out / "evaluation"
    rows = (report / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("case") and len(rows) >= 2
    assert "n_fp" in rows[0] and "dice" in rows[0]
    summary = json.loads((report / "summary.json").read_text())
    assert summary, "empty summary"
    assert list((report / "pred").rglob("*_seg.nii.gz"))


def _infer(trained, dataset_dir: Path, out: Path, **extra) -> None:
    overrides = {
        "dataset_dir": str(dataset_dir),
        "output_dir": str(out),
        "features": TINY["features"],
        "pixdim": TINY["pixdim"],
        **extra,
    }
    _run(["inference.json"], "infer", trained["bundle"], **overrides)


def test_inference_writes_masks_in_input_space(trained):
    out = trained["root"] / "pred"
    _infer(trained, trained["data"], out, save_prob=True)
    segs = sorted(out.rglob("*_seg.nii.gz"))
    assert [p.parent.name for p in segs] == ["sub-strokecase0004"]
    seg = nib.load(segs[0])
    dwi = nib.load(next(trained["data"].rglob("sub-strokecase0004_ses-0001_dwi.nii.gz")))
    assert seg.shape == dwi.shape
    np.testing.assert_allclose(seg.affine, dwi.affine, atol=1e-4)  # oblique affine kept
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
    prob = nib.load(out / "sub-strokecase0004" / "sub-strokecase0004_prob.nii.gz").get_fdata()
    assert prob.shape == dwi.shape and prob.min() >= 0.0 and prob.max() <= 1.0
    assert not list(out.rglob(".partial-*")), "a temporary file was left behind"


def test_inference_on_a_single_file_without_muscle(trained):
    dwi = next(trained["data"].rglob("sub-strokecase0001_ses-0001_dwi.nii.gz"))
    out = trained["root"] / "pred_single"
    _infer(trained, dwi, out, use_muscle=False)
    assert (out / "sub-strokecase0001_ses-0001_dwi" / "sub-strokecase0001_ses-0001_dwi_seg.nii.gz").is_file()


def _error_chain(err: BaseException | None) -> list[BaseException]:
    """The exception and its causes (MONAI wraps errors raised inside config expressions)."""
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def _bad_input(tmp: Path, data: np.ndarray, name: str) -> Path:
    path = tmp / name
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [("series", "4-D series"), ("nan", "NaN"), ("empty", "empty"), ("volume2d", "3-D")],
)
def test_bad_inputs_fail_with_the_file_name_and_write_nothing(trained, tmp_path, kind, message):
    rng = np.random.default_rng(0)
    shapes = {"series": (32, 32, 8, 2), "nan": (32, 32, 8), "empty": (32, 32, 8), "volume2d": (32, 32)}
    data = rng.uniform(1, 100, shapes[kind]).astype(np.float32)
    if kind == "nan":
        data[3, 3, 3] = np.nan
    if kind == "empty":
        data[:] = 0
    path = _bad_input(tmp_path, data, f"bad_{kind}.nii.gz")
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        _infer(trained, path, out)
    chain = _error_chain(info.value)
    data_errors = [e for e in chain if isinstance(e, DataError)]
    assert data_errors, f"expected a DataError in the chain, got {[type(e).__name__ for e in chain]}"
    assert path.name in str(data_errors[0]) and message in str(data_errors[0])
    assert not list(out.rglob("*.nii.gz")) if out.exists() else True


@pytest.mark.parametrize("checkpoint", ["model.pt", "muscle.pt"])
def test_checkpoint_of_another_network_is_refused(trained, tmp_path, checkpoint):
    """Both networks' weights are really loaded at inference: a foreign file for either one is refused."""
    bundle = tmp_path / "bundle"
    shutil.copytree(trained["bundle"], bundle)
    torch.save(torch.nn.Conv2d(1, 2, 3).state_dict(), bundle / "models" / checkpoint)
    wf = _workflow(
        ["inference.json"],
        "infer",
        bundle,
        dataset_dir=str(trained["data"]),
        output_dir=str(tmp_path / "out"),
        features=TINY["features"],
        pixdim=TINY["pixdim"],
        use_muscle=True,
    )
    with pytest.raises(Exception) as info:
        wf.run()
    errors = [e for e in _error_chain(info.value) if isinstance(e, BundleError)]
    assert errors and checkpoint in str(errors[0]) and "missing key" in str(errors[0])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.nii.gz"))
