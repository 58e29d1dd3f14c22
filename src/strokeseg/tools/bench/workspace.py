"""What every bench measurement of a bundle runs on: a synthetic case of its layout and a copy of the bundle.

The copy carries the bundle's own configs and either trained checkpoints or freshly initialised networks, so the
numbers describe what a user's ``python -m monai.bundle run`` does. The bench (:mod:`strokeseg.tools.bench.bundle`),
the variant agreement check (:mod:`strokeseg.tools.bench.agreement`) and the profiler
(:mod:`strokeseg.tools.bench.profile`) build theirs here and read its ``inference.json`` through the helpers below.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from strokeseg.data.phantoms import synthesize_dataset
from strokeseg.errors import BundleError
from strokeseg.naming import entry_case_name
from strokeseg.networks.weights import load_network_state
from strokeseg.runtime.description import describe_bundle

__all__ = [
    "UNTRAINED_NOTE",
    "configs_dir",
    "prepare_bundle_copy",
    "bench_copy",
    "inference_parser",
    "inference_workflow",
    "loaded_evaluator",
    "first_item",
    "first_case",
    "case_of",
]

UNTRAINED_NOTE = (
    "freshly initialised weights (seed 0): FLOPs, forward time and memory do not depend on the weights, but any "
    "data-dependent step of inference does, so end-to-end times with trained weights may differ"
)


def configs_dir(bundle: Path) -> Path:
    """The ``configs`` folder of a bundle folder."""
    return bundle / "configs"


def prepare_bundle_copy(
    bundle_dir: str | Path,
    dest: str | Path,
    ckpt_dir: str | Path | None = None,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """Copy the bundle (without weights or outputs) to ``dest`` and put every exported network's checkpoint there.

    Args:
        bundle_dir: the bundle folder.
        dest: where the copy goes (must not exist).
        ckpt_dir: folder holding trained checkpoints under the file names of the description's networks;
            ``None`` writes freshly initialised networks built from ``inference.json`` under
            ``torch.manual_seed(seed)``.
        seed: seed of the fresh initialisation.
        overrides: config ids applied before the fresh networks are built (e.g. a smoke run's tiny widths).

    Returns:
        A description of the weights used.

    Raises:
        BundleError: the bundle does not describe itself, has no ``configs/inference.json``, or ``ckpt_dir``
            lacks a checkpoint.
    """
    bundle_dir, dest = Path(bundle_dir), Path(dest)
    description = describe_bundle(bundle_dir)
    if not (configs_dir(bundle_dir) / "inference.json").is_file():
        raise BundleError(f"{bundle_dir} has no configs/inference.json; is it a bundle folder?")
    shutil.copytree(bundle_dir, dest, ignore=shutil.ignore_patterns("*.pt", "*.ts", "eval", "data", "models"))
    if ckpt_dir is not None:
        for network in description.networks:
            source = Path(ckpt_dir) / network.checkpoint_name
            if not source.is_file():
                names = ", ".join(n.checkpoint_name for n in description.networks)
                raise BundleError(f"checkpoint folder {ckpt_dir} has no {network.checkpoint_name} (need {names}).")
            (dest / network.checkpoint).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / network.checkpoint)
        return f"trained weights from {ckpt_dir}"
    parser = ConfigParser()
    parser.read_config(str(configs_dir(dest) / "inference.json"))
    parser.update({"bundle_root": str(dest), **dict(overrides or {})})
    torch.manual_seed(seed)
    for network in description.networks:
        (dest / network.checkpoint).parent.mkdir(parents=True, exist_ok=True)
        torch.save(parser.get_parsed_content(network.id).state_dict(), dest / network.checkpoint)
    return f"untrained: {UNTRAINED_NOTE}"


def bench_copy(
    bundle_dir: str | Path,
    work: Path,
    layout: str,
    name: str,
    seed: int = 0,
    ckpt_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Path, Path, str]:
    """The synthetic data and the bundle copy every bench measurement runs on.

    Two training cases (they fill a training batch of two and leave one for training under any fold split) and
    one test case of ``layout`` under ``work/data``; the bundle copied to ``work/<name>`` with its weights
    (:func:`prepare_bundle_copy`).

    Returns:
        ``(data_root, bundle copy, description of the weights)``.
    """
    data_root = synthesize_dataset(layout, work / "data", cases=2, test_cases=1, seed=seed)
    bundle = work / name
    weights = prepare_bundle_copy(bundle_dir, bundle, ckpt_dir=ckpt_dir, seed=seed, overrides=dict(overrides or {}))
    return data_root, bundle, weights


def inference_parser(bundle: Path, overrides: Mapping[str, Any]) -> ConfigParser:
    """A ``ConfigParser`` of the bundle's ``inference.json`` and ``metadata.json`` with ``overrides`` applied."""
    parser = ConfigParser()
    parser.read_config(str(configs_dir(bundle) / "inference.json"))
    parser.read_meta(str(configs_dir(bundle) / "metadata.json"))
    parser.update(dict(overrides))
    return parser


def inference_workflow(bundle: Path, data_root: Path, out_dir: Path, overrides: Mapping[str, Any]) -> ConfigWorkflow:
    """The bundle's ``inference.json`` as an initialised ``monai.bundle.ConfigWorkflow``."""
    values = {**dict(overrides), "bundle_root": str(bundle), "dataset_dir": str(data_root), "output_dir": str(out_dir)}
    workflow = ConfigWorkflow(
        config_file=str(configs_dir(bundle) / "inference.json"),
        meta_file=str(configs_dir(bundle) / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        **values,
    )
    workflow.initialize()
    return workflow


def loaded_evaluator(parser: ConfigParser, description, bundle: Path) -> tuple[Any, torch.nn.Module]:
    """The ``evaluator`` of ``parser`` with every exported network's checkpoint of ``bundle`` loaded, and its
    network (in eval mode)."""
    evaluator = parser.get_parsed_content("evaluator")
    for exported in description.networks:
        load_network_state(parser.get_parsed_content(exported.id), bundle / exported.checkpoint)
    evaluator.network.eval()
    return evaluator, evaluator.network


def case_of(item: Mapping[str, Any]) -> str:
    """Name of the case of a datalist entry or a preprocessed item."""
    return entry_case_name(item, index=0)


def first_item(parser: ConfigParser) -> Any:
    """The first case of ``parser``'s inference dataset, preprocessed (a multi-sample case: its first sample)."""
    item = parser.get_parsed_content("dataset")[0]
    return item[0] if isinstance(item, list) else item


def first_case(parser: ConfigParser) -> str:
    """Name of the first case of ``parser``'s inference dataset (from its datalist entry: nothing preprocessed)."""
    dataset = parser.get_parsed_content("dataset")
    data = getattr(dataset, "data", None)
    return case_of(data[0]) if isinstance(data, Sequence) and data else case_of(first_item(parser))
