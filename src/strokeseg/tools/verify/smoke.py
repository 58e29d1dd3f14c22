"""Check 6: one epoch of every training stage, the evaluate overlay and inference on synthetic data.

Stages, checkpoints and inference outputs come from the bundle's description; every run is a real
``python -m monai.bundle run`` subprocess in a copy of the bundle (nothing is written into the bundle itself),
with the smoke knobs of :data:`strokeseg.runtime.description.SMOKE_KNOBS` plus the bundle's ``smoke_overrides``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from strokeseg.data.phantoms import synthesize_dataset
from strokeseg.errors import BundleError
from strokeseg.runtime.description import BundleDescription, describe_bundle
from strokeseg.runtime.inputs import inference_cases
from strokeseg.tools.runner import BundleRun, config_arg, run_monai_bundle
from strokeseg.tools.verify.common import (
    RUNTIME_FOLDERS,
    SMOKE_CASES,
    SMOKE_TEST_CASES,
    SMOKE_TIMEOUT_S,
    _Context,
    _describe,
    _load_json,
    _Skipped,
)


def _synthesize_dataset(layout: str, out: Path) -> Path:
    """Write the smoke run's synthetic dataset in ``layout`` into ``out`` (the phantom generator)."""
    synthesize_dataset(layout, out, cases=SMOKE_CASES, test_cases=SMOKE_TEST_CASES, seed=0)
    return out


def _read_description(ctx: _Context) -> None:
    """Read the bundle's self-description into ``ctx`` (a failure is kept for check 1 to report)."""
    try:
        ctx.description = describe_bundle(ctx.bundle)
    except Exception as err:
        ctx.description, ctx.description_error = None, _describe(err)
        return
    if ctx.train_config.is_file():
        train = _load_json(ctx.train_config, "configs/train.json")
        layout = train.get("layout") if isinstance(train, dict) else None
        if layout != ctx.description.layout:
            ctx.description_error = (
                f"configs/train.json: top-level 'layout' is {layout!r} but the description says "
                f"{ctx.description.layout!r}"
            )
            ctx.description = None


def _prepare_dataset(ctx: _Context) -> None:
    """Read the description and synthesise the dataset of checks 3 and 6; failures are kept for the checks.

    Check 3 needs data even without the smoke runs: a training ``DataLoader`` with ``shuffle=True`` cannot be
    built over an empty dataset.
    """
    _read_description(ctx)
    if ctx.description is None:
        ctx.data_error = f"the bundle's description cannot be read ({ctx.description_error})"
        return
    start = time.perf_counter()
    try:
        ctx.layout = ctx.description.layout
        ctx.data_dir = _synthesize_dataset(ctx.layout, ctx.workdir("data"))
    except Exception as err:
        ctx.data_error = _describe(err)
        ctx.data_dir = None
    ctx.data_seconds = time.perf_counter() - start


def copy_bundle(bundle: Path, target: Path) -> Path:
    """Copy ``bundle`` to ``target`` without runtime outputs or trained checkpoints (``models/*.pt``)."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        skipped = [name for name in names if name in RUNTIME_FOLDERS]
        if Path(folder).resolve() == (bundle / "models").resolve():
            skipped += [name for name in names if name.endswith((".pt", ".ts"))]
        return skipped

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(bundle, target, ignore=ignore)
    (target / "models").mkdir(exist_ok=True)
    return target


def test_case_names(description: BundleDescription, data_dir: Path) -> list[str]:
    """Names of the cases a default inference run over ``data_dir`` processes (split ``test``)."""
    return [str(case["case"]) for case in inference_cases(data_dir, description.layout, "test")]


def run_stage(
    description: BundleDescription, bundle: Path, stage: str, args: list[str], out: Path, log: Path
) -> BundleRun:
    """One training stage of a bundle copy as ``python -m monai.bundle run``."""
    configs = description.stage_configs(stage)
    command = ["--config_file", config_arg(configs), *args, "--output_dir", str(out)]
    return run_monai_bundle("run", command, log, cwd=bundle, timeout=SMOKE_TIMEOUT_S, label=stage)


def _check_smoke(ctx: _Context) -> str:
    if not ctx.train:
        raise _Skipped("skipped because train=False", applies=False)
    ctx.require(ctx.train_config, ctx.inference)
    description = ctx.describe()
    if ctx.data_dir is None:
        raise BundleError(f"the synthetic dataset could not be made: {ctx.data_error}")
    bundle = copy_bundle(ctx.bundle, ctx.work / "bundle")
    out, logs = ctx.workdir("out"), ctx.workdir("logs")
    models = bundle / "models"
    common = [*description.smoke_args(), "--dataset_dir", str(ctx.data_dir), "--ckpt_dir", str(models)]
    common += ["--bundle_root", str(bundle)]

    timings = [f"synthetic {ctx.layout} data {ctx.data_seconds:.1f} s"]
    problems: list[str] = []
    for stage in description.stages:
        result = run_stage(description, bundle, stage, common, out / stage, logs / f"{stage}.log")
        timings.append(f"{stage} {result.seconds:.1f} s")
        if not result.ok:
            raise BundleError(f"{result.failure()}\n(later stages, evaluate and inference skipped)")
        for network in description.networks:
            if network.stage == stage and not (models / network.checkpoint_name).is_file():
                problems.append(
                    f"stage {stage} ran but wrote no {network.checkpoint_name} for {network.id} into ckpt_dir"
                )

    def run(label: str, *configs: str) -> BundleRun:
        command = ["--config_file", config_arg([f"configs/{c}" for c in configs]), *common]
        command += ["--output_dir", str(out / label)]
        return run_monai_bundle("run", command, logs / f"{label}.log", cwd=bundle, timeout=SMOKE_TIMEOUT_S, label=label)

    if not (bundle / "configs" / "evaluate.json").is_file():
        problems.append("configs/evaluate.json is missing")
    else:
        evaluate = run("evaluate", "train.json", "evaluate.json")
        timings.append(f"evaluate {evaluate.seconds:.1f} s")
        if not evaluate.ok:
            problems.append(evaluate.failure())
        elif not list((out / "evaluate").rglob("*.csv")):
            problems.append(f"the evaluate overlay wrote no metrics CSV under {out / 'evaluate'}")

    inference = run("inference", "inference.json")
    timings.append(f"inference {inference.seconds:.1f} s")
    if not inference.ok:
        problems.append(inference.failure())
    else:
        expected = [
            name for case in test_case_names(description, ctx.data_dir) for name in description.outputs_for(case)
        ]
        missing = [name for name in expected if not (out / "inference" / name).is_file()]
        if missing:
            problems.append(f"inference did not write {', '.join(missing)} under {out / 'inference'}")
        else:
            timings.append(f"{len(expected)} output file(s) written")
    if problems:
        raise BundleError("\n".join(problems))
    return (
        f"one epoch of {', '.join(description.stages)}, evaluate and inference on synthetic data: {'; '.join(timings)}"
    )
