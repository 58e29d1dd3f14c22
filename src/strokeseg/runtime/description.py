"""A bundle describes itself once: the ``"strokeseg"`` object of its ``configs/metadata.json``.

``verify``, ``demo``, ``bench``, the ``infer``/``train`` front door and the conformance tests read a bundle's
stages, exported networks, layout and inference outputs from here; none of them hard-codes a bundle's names.
The MONAI metadata schemas allow extra top-level keys, so the object travels with the bundle and
``verify_metadata`` still passes. Example (the EDD + MUSCLE bundle)::

    "strokeseg": {
        "layout": "isles2022",
        "stages": ["train", "train_muscle"],
        "networks": [
            {"id": "network_def", "checkpoint": "models/model.pt", "stage": "train"},
            {"id": "muscle_network_def", "checkpoint": "models/muscle.pt", "stage": "train_muscle",
             "input": {"num_channels": 4, "spatial_shape": [32, 32]}}
        ],
        "inference_outputs": ["{case}/{case}_seg.nii.gz"],
        "smoke_overrides": {"features": [8, 16, 32]},
        "bench_hook": "strokeseg.tools.bench.hooks.edd_muscle"
    }

Fields:
    layout: the ISLES layout the bundle reads (one of :data:`strokeseg.data.layouts.LAYOUT_NAMES`).
    stages: training stages in the order they run; ``"train"`` is ``configs/train.json`` and comes first,
        any other ``"train_x"`` is the overlay ``configs/train_x.json`` applied on top of ``train.json``.
    networks: every network the bundle exports, ``network_def`` first: its config id in ``inference.json``,
        its checkpoint file relative to the bundle root (a plain ``state_dict``), the stage that writes it,
        and optionally ``input`` (``num_channels`` + ``spatial_shape`` in MONAI's ``"16*n"`` style) for a
        network whose input is not the metadata's ``network_data_format`` image.
    inference_outputs: files inference writes per case, relative to ``output_dir`` (``{case}`` is replaced).
    smoke_overrides: extra top-level ids of a smoke run (tiny networks or windows), on top of the shared
        knobs of :data:`SMOKE_KNOBS`; applied to every stage and to inference, like ``quick.json``.
    bench_hook: optional module with ``bench_hook(context) -> dict`` for a special mode the generic bench
        harness does not cover.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strokeseg.data.layouts import LAYOUT_NAMES
from strokeseg.errors import BundleError

__all__ = [
    "BundleDescription",
    "ExportedNetwork",
    "describe_bundle",
    "bundle_folders",
    "default_bundles_dir",
    "SMOKE_KNOBS",
]

SMOKE_KNOBS: dict[str, Any] = {
    "epochs": 1,
    "val_interval": 1,
    "samples_per_case": 4,
    "num_workers": 0,
    "cache_rate": 0,
}
"""Shared top-level knobs (``configs/knobs.json``) and their values in a smoke run of any bundle."""


@dataclass(frozen=True)
class ExportedNetwork:
    """One network a bundle exports.

    Args:
        id: config id in ``inference.json`` (``network_def``, ``muscle_network_def``, ...).
        checkpoint: ``state_dict`` file relative to the bundle root (``models/model.pt``).
        stage: training stage that writes the checkpoint.
        input: ``{"num_channels": C, "spatial_shape": [...]}``; ``None`` for the metadata's ``image`` input.
    """

    id: str
    checkpoint: str
    stage: str
    input: dict | None = None

    @property
    def checkpoint_name(self) -> str:
        """File name of the checkpoint (``model.pt``)."""
        return Path(self.checkpoint).name


@dataclass(frozen=True)
class BundleDescription:
    """What one bundle says about itself (see the module docstring)."""

    root: Path
    layout: str
    stages: tuple[str, ...]
    networks: tuple[ExportedNetwork, ...]
    inference_outputs: tuple[str, ...] = ("{case}/{case}_seg.nii.gz",)
    smoke_overrides: dict[str, Any] = field(default_factory=dict)
    bench_hook: str | None = None

    @property
    def name(self) -> str:
        """The bundle's folder name."""
        return self.root.name

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    def stage_configs(self, stage: str) -> list[str]:
        """Config files (relative to the bundle root) of ``stage``: ``train.json`` plus its overlay."""
        if stage not in self.stages:
            raise BundleError(f"{self.name}: no training stage {stage!r} (stages: {', '.join(self.stages)})")
        return ["configs/train.json"] + ([] if stage == "train" else [f"configs/{stage}.json"])

    def network(self, net_id: str) -> ExportedNetwork:
        for network in self.networks:
            if network.id == net_id:
                return network
        raise BundleError(f"{self.name}: exports no network {net_id!r} ({', '.join(n.id for n in self.networks)})")

    def outputs_for(self, case: str) -> list[str]:
        """Inference outputs of ``case``, relative to ``output_dir``."""
        return [pattern.replace("{case}", case) for pattern in self.inference_outputs]

    def smoke_args(self) -> list[str]:
        """``--id value`` pairs of a smoke run (shared knobs + the bundle's own overrides)."""
        values = {**SMOKE_KNOBS, **self.smoke_overrides}
        args: list[str] = []
        for key, value in values.items():
            args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
        return args


def _fail(meta: Path, what: str) -> BundleError:
    return BundleError(f"{meta}: 'strokeseg' description: {what}")


def describe_bundle(bundle: str | Path) -> BundleDescription:
    """Read and check the ``"strokeseg"`` object of ``bundle/configs/metadata.json``.

    Raises:
        BundleError: the file or the object is missing or malformed; the message says which field.
    """
    root = Path(bundle).expanduser().resolve()
    meta = root / "configs" / "metadata.json"
    try:
        content = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{meta}: cannot be read as JSON ({err})") from err
    spec = content.get("strokeseg") if isinstance(content, dict) else None
    if not isinstance(spec, dict):
        raise _fail(meta, "missing; every bundle names its layout, stages and networks there")
    layout = spec.get("layout")
    if layout not in LAYOUT_NAMES:
        raise _fail(meta, f"layout {layout!r} is not one of {', '.join(LAYOUT_NAMES)}")
    stages = spec.get("stages", ["train"])
    if not isinstance(stages, list) or not stages or stages[0] != "train":
        raise _fail(meta, f"stages must be a list starting with 'train', got {stages!r}")
    for stage in stages[1:]:
        if not isinstance(stage, str) or not stage.startswith("train_"):
            raise _fail(meta, f"stage {stage!r} must be named 'train_<x>' (configs/train_<x>.json)")
    raw_networks = spec.get("networks")
    if not isinstance(raw_networks, list) or not raw_networks:
        raise _fail(meta, "networks must be a non-empty list")
    networks = []
    for item in raw_networks:
        if not isinstance(item, dict) or not {"id", "checkpoint", "stage"} <= set(item):
            raise _fail(meta, f"each network needs 'id', 'checkpoint' and 'stage': {item!r}")
        if item["stage"] not in stages:
            raise _fail(meta, f"network {item['id']!r} is written by stage {item['stage']!r}, not in {stages}")
        extra = item.get("input")
        if extra is not None and not (isinstance(extra, dict) and {"num_channels", "spatial_shape"} <= set(extra)):
            raise _fail(meta, f"network {item['id']!r}: 'input' needs 'num_channels' and 'spatial_shape'")
        networks.append(ExportedNetwork(item["id"], item["checkpoint"], item["stage"], extra))
    if networks[0].id != "network_def":
        raise _fail(meta, "the first network must be 'network_def' (what inference and ckpt_export use)")
    outputs = spec.get("inference_outputs", ["{case}/{case}_seg.nii.gz"])
    if not isinstance(outputs, list) or not all(isinstance(o, str) and "{case}" in o for o in outputs):
        raise _fail(meta, f"inference_outputs must be a list of patterns containing '{{case}}', got {outputs!r}")
    overrides = spec.get("smoke_overrides", {})
    if not isinstance(overrides, dict):
        raise _fail(meta, "smoke_overrides must be an object of top-level ids")
    hook = spec.get("bench_hook")
    if hook is not None and not isinstance(hook, str):
        raise _fail(meta, "bench_hook must be a module name")
    for stage in stages[1:]:
        if not (root / "configs" / f"{stage}.json").is_file():
            raise _fail(meta, f"stage {stage!r} has no configs/{stage}.json")
    return BundleDescription(
        root=root,
        layout=layout,
        stages=tuple(stages),
        networks=tuple(networks),
        inference_outputs=tuple(outputs),
        smoke_overrides=dict(overrides),
        bench_hook=hook,
    )


def default_bundles_dir() -> Path:
    """``bundles/`` of the source checkout (the package is installed editable from it), else of the cwd."""
    here = Path(__file__).resolve().parents[3] / "bundles"
    return here if here.is_dir() else Path.cwd() / "bundles"


def bundle_folders(bundles_dir: str | Path | None = None) -> list[Path]:
    """Every bundle folder (one with ``configs/metadata.json``) under ``bundles_dir``, sorted by name."""
    root = Path(bundles_dir) if bundles_dir is not None else default_bundles_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())
