"""Every bundle's inference asks only for the files it reads: a case folder holding just the modalities the
bundle's ``inputs`` selects and the extras its configs name (no 4-D series it does not read, no other map) is
found and runs; the layout's other files are not required. Cheap (no bundle run): the bundle's own ``inputs``
(``strokeseg.runtime.inputs.InferenceCases``) is parsed and pointed at a tree of tiny volumes, which a bundle that
declares a ``min_input_shape`` reports as too small in one warning line."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from strokeseg.data.layouts import get_layout, isles2022_paths, isles_legacy_name
from strokeseg.runtime.description import BundleDescription


def _volume(path: Path, frames: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (8, 8, 4, frames) if frames else (8, 8, 4)
    data = np.random.default_rng(0).random(shape, dtype=np.float32) + 1.0
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 4.0, 1.0])), str(path))


def _test_case(layout_name: str, root: Path, tokens: list[str], extras: list[str]) -> str:
    """One unlabelled case holding only ``tokens`` and the ``extras`` keys; its case name."""
    layout = get_layout(layout_name)
    if layout.bids:
        name = layout.test_case_pattern.format(n=1)
        paths = isles2022_paths(root, name)
        for token in tokens:
            _volume(paths[token.lower()])
        for key in extras:
            _volume(paths[key])
        return name
    name = layout.test_case_pattern.format(n=1)
    files = list(tokens) + [e.token for e in layout.extras if e.key in extras]
    for number, token in enumerate(files):
        stem = isles_legacy_name(layout, token, 1000 + number)
        frames = 3 if "4D" in token.upper() else 0
        _volume(root / name / stem.removesuffix(layout.suffix) / stem, frames)
    return name


def test_inference_asks_only_for_the_files_it_reads(bundle: BundleDescription, tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    config = bundle.configs / "inference.json"
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.read_meta(str(bundle.configs / "metadata.json"))
    parser.update({"bundle_root": str(bundle.root), **bundle.smoke_overrides})
    layout = get_layout(bundle.layout)
    tokens = list(parser.get_parsed_content("inputs#modalities", instantiate=False, eval_expr=True))
    text = json.dumps(json.loads(config.read_text()))
    extras = [e.key for e in layout.extras if f'"{e.key}"' in text]  # the extras its configs name

    name = _test_case(bundle.layout, tmp_path / "data", tokens, extras)
    parser["dataset_dir"] = str(tmp_path / "data")
    parser["output_dir"] = str(tmp_path / "out")
    parser["infer_split"] = "test"
    inputs = parser.get_parsed_content("inputs")

    assert [case["case"] for case in inputs.pending] == [name]
    assert len(inputs.pending[0]["image"]) == len(tokens)
    for key in extras:
        assert key in inputs.pending[0], f"{bundle.name}: reads {key} but inference did not find it"
    # the 8 × 8 × 4 case is smaller than any network declares it needs: one warning line naming it
    declared = "min_input_shape" in json.loads(config.read_text())
    assert len(inputs.grid_warnings) >= declared and all(w.startswith(f"{name}: ") for w in inputs.grid_warnings)
    assert any("smaller than the" in w for w in inputs.grid_warnings) == declared
