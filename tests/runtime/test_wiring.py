"""The shared inference wiring: writers behind ``save_prob`` in any spelling, strict weight loaders relative to
the bundle, and one real evaluator run that writes a case's mask."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from strokeseg.errors import BundleError
from strokeseg.runtime.checkpoint import StrictCheckpointLoader
from strokeseg.runtime.reruns import RunRecord, read_record
from strokeseg.runtime.wiring import CaseInference


class _Cases:
    """What :class:`CaseInference` needs of :class:`~strokeseg.runtime.inputs.InferenceCases`."""

    def __init__(self, pending, output_dir):
        self.pending, self.output_dir, self.ran, self.planned = pending, output_dir, None, None

    def plan_rerun(self, now, outputs_for):
        self.planned = (now, [outputs_for(c["case"]) for c in self.pending])

    def loader(self, dataloader):
        return dataloader

    def run(self, evaluator):
        self.ran = evaluator
        evaluator.run()


class _Threshold(torch.nn.Module):
    """Two logits per voxel: lesion where the image is above 0.5 (after a 1 × 1 × 1 convolution)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, -0.5]))

    def forward(self, x):
        return self.conv(x)


def _inference(tmp_path, **kwargs) -> tuple[CaseInference, _Cases]:
    image = np.zeros((6, 5, 4), dtype=np.float32)
    image[2:4, 1:3, 1:3] = 1.0
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "c1.nii.gz")
    cases = _Cases([{"case": "c1", "image": str(tmp_path / "c1.nii.gz")}], tmp_path / "out")
    (tmp_path / "out").mkdir()
    pre = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])
    post = Compose([lambda d: {**d, "prob": d["pred"].softmax(0), "pred": d["pred"].argmax(0, keepdim=True)}])
    wiring = CaseInference(cases, tmp_path, pre, "cpu", inferer=SimpleInferer(), postprocessing=post, **kwargs)
    return wiring, cases


@pytest.mark.parametrize(("spelling", "written"), [("false", ["seg"]), (0, ["seg"]), ("True", ["prob", "seg"])])
def test_save_prob_in_any_spelling_adds_the_probability_writer(tmp_path, spelling, written):
    wiring, _ = _inference(tmp_path, save_prob=spelling, prob_channel=1)
    assert [w.saver.postfix for w in wiring.writers] == written
    assert [w.saver.output_dtype for w in wiring.writers][-1] == np.uint8


def test_weights_load_strictly_from_the_bundle_and_none_skips_a_file(tmp_path):
    net = _Threshold()
    wiring, _ = _inference(tmp_path, network=net, weights={"models/model.pt": {"model": net}, "models/x.pt": None})
    loaders = [h for h in wiring.handlers if isinstance(h, StrictCheckpointLoader)]
    assert [h.load_path for h in loaders] == [str(tmp_path / "models" / "model.pt")]
    with pytest.raises(BundleError, match="model.pt not found"):  # the run's record hashes it before anything runs
        wiring.run()


def test_one_case_is_inferred_and_its_mask_written(tmp_path):
    (tmp_path / "models").mkdir()
    torch.save(_Threshold().state_dict(), tmp_path / "models" / "model.pt")
    net = _Threshold()
    with torch.no_grad():  # zeroed: only the loaded weights can find the lesion
        net.conv.weight.zero_()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps({"name": "threshold", "version": "1.0"}))
    weights = {"models/model.pt": {"model": net}, "models/unused.pt": None}
    wiring, cases = _inference(tmp_path, network=net, weights=weights, options={"threshold": (0.5,)})
    wiring.run()
    assert cases.ran is wiring.evaluator
    mask = nib.load(tmp_path / "out" / "c1" / "c1_seg.nii.gz").get_fdata()
    assert mask.sum() == 8 and mask[2:4, 1:3, 1:3].all()
    assert not (tmp_path / "out" / "c1" / "c1_prob.nii.gz").exists()
    sha = hashlib.sha256((tmp_path / "models" / "model.pt").read_bytes()).hexdigest()
    now = RunRecord("threshold", "1.0", {"models/model.pt": sha}, {"threshold": [0.5]})
    planned_record, planned_outputs = cases.planned
    assert planned_record() == now  # lazy: the weights are hashed only where a case has a record to compare with
    assert planned_outputs == [[tmp_path / "out" / "c1" / "c1_seg.nii.gz"]]
    assert read_record(tmp_path / "out" / "c1" / "c1_provenance.json") == (now, ["c1_seg.nii.gz"])


def test_an_overlay_without_a_network_must_bring_its_evaluator(tmp_path):
    wiring, _ = _inference(tmp_path)
    with pytest.raises(ValueError, match="no network"):
        wiring.evaluator  # noqa: B018
    assert len(wiring.dataset) == 1
