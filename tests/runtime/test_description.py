"""The bundle self-description (``"strokeseg"`` in ``configs/metadata.json``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from strokeseg.errors import BundleError
from strokeseg.runtime.description import SMOKE_KNOBS, bundle_folders, describe_bundle

EDD = Path(__file__).resolve().parents[2] / "bundles" / "stroke_dwi_edd_muscle"


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "b"
    shutil.copytree(EDD / "configs", target / "configs")
    return target


def _edit(bundle: Path, **changes) -> None:
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["strokeseg"].update(changes)
    meta_file.write_text(json.dumps(meta, indent=4))


def test_edd_bundle_describes_its_two_stages_and_two_networks():
    desc = describe_bundle(EDD)
    assert desc.layout == "isles2022"
    assert desc.stages == ("train", "train_muscle")
    assert [(n.id, n.checkpoint_name, n.stage) for n in desc.networks] == [
        ("network_def", "model.pt", "train"),
        ("muscle_network_def", "muscle.pt", "train_muscle"),
    ]
    assert desc.stage_configs("train_muscle") == ["configs/train.json", "configs/train_muscle.json"]
    assert desc.outputs_for("c1") == ["c1/c1_seg.nii.gz"]
    args = desc.smoke_args()
    assert args[args.index("--epochs") + 1] == str(SMOKE_KNOBS["epochs"])


def test_every_bundle_folder_describes_itself():
    folders = bundle_folders()
    assert EDD in folders
    for folder in folders:
        assert describe_bundle(folder).networks[0].id == "network_def"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layout": "isles2099"}, "layout 'isles2099'"),
        ({"stages": ["train_muscle"]}, "starting with 'train'"),
        ({"stages": ["train", "muscle"]}, "must be named 'train_<x>'"),
        ({"stages": ["train", "train_muscle", "train_missing"]}, "no configs/train_missing.json"),
        ({"networks": []}, "non-empty list"),
        ({"networks": [{"id": "x", "checkpoint": "models/x.pt", "stage": "train"}]}, "must be 'network_def'"),
        ({"networks": [{"id": "network_def", "checkpoint": "m.pt", "stage": "train_x"}]}, "not in"),
        ({"inference_outputs": ["seg.nii.gz"]}, "containing '{case}'"),
    ],
)
def test_malformed_descriptions_are_refused_naming_the_field(tmp_path, change, message):
    bundle = _copy(tmp_path)
    _edit(bundle, **change)
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace("[", r"\[")):
        describe_bundle(bundle)


def test_missing_description_is_refused(tmp_path):
    bundle = _copy(tmp_path)
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    del meta["strokeseg"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="'strokeseg' description: missing"):
        describe_bundle(bundle)
