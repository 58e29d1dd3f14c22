"""Everything EDD + MUSCLE inference needs travels with the export: a client that parses only the bundle's
``inference.json`` from ``model.ts`` (as the MONAI Deploy App SDK's ``MonaiBundleInferenceOperator`` does: its
``preprocessing``, ``inferer`` and ``postprocessing``, never its handlers) gets the trained MUSCLE Net, because the
cascade inferer loads ``models/muscle.pt`` itself.

The first test emulates that client with MONAI's own loaders; the second (skipped without the SDK package
``monai-deploy-app-sdk``, which is not a dependency) parses the export with the SDK's ``get_bundle_config`` and
``filter_compose``, the functions its operator uses; the holoscan operator graph itself is not started.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor, load_net_with_metadata, save_net_with_metadata
from monai.transforms import Compose, LoadImage

from strokeseg.inferers.cascade import EddMuscleInferer
from strokeseg.networks.musclenet import MuscleNet

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "stroke_dwi_edd_muscle"


class ThresholdEDD(torch.nn.Module):
    """Scriptable stand-in EDD Net: lesion logit 4·(x − 1.5) on EDD-normalised DWI (bright blobs are lesions)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 4.0 * (x - 1.5)], dim=1)


def _deployable_bundle(root: Path) -> tuple[Path, Path, MuscleNet]:
    """A bundle folder with ``models/model.ts`` (configs embedded, as ckpt_export writes it) and ``muscle.pt``."""
    bundle = root / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    torch.manual_seed(3)
    muscle = MuscleNet(in_channels=4, out_channels=2).eval()
    torch.save(muscle.state_dict(), bundle / "models" / "muscle.pt")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    extra = {"inference.json": (bundle / "configs" / "inference.json").read_bytes()}
    model_ts = bundle / "models" / "model.ts"
    save_net_with_metadata(torch.jit.script(ThresholdEDD()), str(model_ts), meta_values=meta, more_extra_files=extra)
    rng = np.random.default_rng(0)
    image = np.abs(rng.normal(20, 3, (48, 48, 6))) * (np.hypot(*np.mgrid[:48, :48] - 24) < 20)[..., None]
    image[20:23, 14:17, 2] = 90.0  # a small bright candidate (9 px)
    image[30:32, 28:31, 3] = 70.0  # another (6 px)
    scan = root / "scan_dwi.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.diag([1.6, 1.6, 4.0, 1.0])), str(scan))
    return bundle, scan, muscle


def _run_like_the_sdk(parser: ConfigParser, model: torch.nn.Module, scan: Path, filter_compose) -> torch.Tensor:
    """The operator's steps: filtered pre/post-processing, ``inferer(inputs, network)``, invert + discretise."""
    inferer = parser.get_parsed_content("inferer")
    preprocessing = filter_compose(parser.get_parsed_content("preprocessing"), ["LoadImage", "SaveImage"])
    postprocessing = filter_compose(parser.get_parsed_content("postprocessing"), ["LoadImage", "SaveImage"])
    image = LoadImage(image_only=True)(str(scan))  # the SDK hands the operator an in-memory image with its meta
    inputs = preprocessing({"image": image})
    with torch.no_grad():
        pred = inferer(inputs=inputs["image"][None], network=model)
    out = postprocessing({"pred": pred[0], "image": inputs["image"]})
    return out["pred"], inferer, pred


def _filter_compose(compose: Compose, disallowed) -> Compose:
    compose.transforms = tuple(t for t in compose.transforms if not any(d in type(t).__name__ for d in disallowed))
    return compose


def _check(bundle: Path, scan: Path, muscle: MuscleNet, parser: ConfigParser, filter_compose) -> None:
    model = torch.jit.load(str(bundle / "models" / "model.ts")).eval()
    parser["device"] = "$torch.device('cpu')"  # the stand-in export and the reference run on the CPU
    seg, inferer, fused = _run_like_the_sdk(parser, model, scan, filter_compose)
    # the inferer the client parsed runs the trained MUSCLE Net (muscle.pt), not the config's random init
    for name, value in muscle.state_dict().items():
        torch.testing.assert_close(inferer.muscle_network.state_dict()[name], value)
    reference = EddMuscleInferer(muscle_network=muscle, slice_batch_size=8)
    edd_only = EddMuscleInferer(muscle_network=None, slice_batch_size=8)
    prep = filter_compose(parser.get_parsed_content("preprocessing", instantiate=True), ["LoadImage"])
    x = prep({"image": LoadImage(image_only=True)(str(scan))})["image"][None]
    with torch.no_grad():
        torch.testing.assert_close(fused.as_tensor(), reference(x, model).as_tensor())
        assert not torch.equal(reference(x, model).as_tensor(), edd_only(x, model).as_tensor())  # MUSCLE acted
    # the mask is on the input's grid, with the input's affine
    source = nib.load(str(scan))
    assert isinstance(seg, MetaTensor) and tuple(seg.shape[1:]) == source.shape
    np.testing.assert_allclose(seg.affine.numpy(), source.affine, atol=1e-4)


def test_export_plus_muscle_checkpoint_is_all_a_config_only_client_needs(tmp_path, monkeypatch):
    bundle, scan, muscle = _deployable_bundle(tmp_path)
    monkeypatch.chdir(bundle)  # the embedded config's bundle_root is "."
    _, _, extra = load_net_with_metadata(str(bundle / "models" / "model.ts"), more_extra_files=("inference.json",))
    parser = ConfigParser()
    parser.read_config(json.loads(extra["inference.json"]))
    _check(bundle, scan, muscle, parser, _filter_compose)


def test_monai_deploy_sdk_parses_and_runs_the_export(tmp_path, monkeypatch):
    operator = pytest.importorskip("monai.deploy.operators.monai_bundle_inference_operator")
    bundle, scan, muscle = _deployable_bundle(tmp_path)
    monkeypatch.chdir(bundle)
    parser = operator.get_bundle_config(str(bundle / "models" / "model.ts"), "inference")
    _check(bundle, scan, muscle, parser, operator.filter_compose)
