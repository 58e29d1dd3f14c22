"""Check 3: the infer and train workflows initialise and ``check_properties()`` finds nothing."""

from __future__ import annotations

from typing import Any

from strokeseg.errors import BundleError
from strokeseg.tools.verify.common import _Context, _describe, _rel

# ---------------------------------------------------------------------------------------------- check 3


def _check_properties(ctx: _Context) -> str:
    from monai.bundle import ConfigWorkflow

    ctx.require(ctx.meta)
    if ctx.data_dir is not None:
        data_dir, data_note = ctx.data_dir, "the synthetic dataset"
    else:
        data_dir = ctx.workdir("empty_dataset")
        data_note = f"an empty folder, as no synthetic dataset could be made ({ctx.data_error})"
    problems: list[str] = []
    for config, workflow_type in ((ctx.inference, "infer"), (ctx.train_config, "train")):
        label = f"{_rel(ctx, config)} (workflow_type={workflow_type!r})"
        if not config.is_file():
            problems.append(f"{_rel(ctx, config)} is missing")
            continue
        out = ctx.workdir(f"properties_{workflow_type}")
        overrides: dict[str, Any] = {
            "bundle_root": str(ctx.bundle),
            "dataset_dir": str(data_dir),
            "output_dir": str(out / "out"),
        }
        if workflow_type == "train":
            # nothing may be written into the user's bundle, and nothing cached before a run
            overrides.update(ckpt_dir=str(out / "models"), num_workers=0, cache_rate=0.0)
        try:
            # logging_file=False: the bundle's logging.conf would reconfigure this process's loggers
            workflow = ConfigWorkflow(
                config_file=str(config),
                meta_file=str(ctx.meta),
                logging_file=False,
                workflow_type=workflow_type,
                **overrides,
            )
        except Exception as err:
            problems.append(f"{label} cannot be loaded: {_describe(err)}")
            continue
        # MONAI's check_properties raises (KeyError) at the first absent required id; list them all instead
        absent = _absent_required_properties(workflow)
        if absent:
            problems.append(f"{label}: required properties absent from the config: {', '.join(absent)}")
            continue
        try:
            workflow.initialize()  # check_properties reads parsed content, which needs initialisation
        except Exception as err:
            problems.append(f"{label}: initialize() failed with dataset_dir={data_note}: {_describe(err)}")
            continue
        try:
            missing = workflow.check_properties()  # instantiates every property (datasets, engines, ...)
        except Exception as err:
            problems.append(f"{label}: check_properties() failed with dataset_dir={data_note}: {_describe(err)}")
            continue
        if missing:
            problems.append(f"{label}: check_properties() reports missing or wrongly referenced {sorted(missing)}")
    if problems:
        raise BundleError("; ".join(problems))
    return f"infer and train workflows initialise (dataset_dir: {data_note}); check_properties() returns nothing"


def _absent_required_properties(workflow: Any) -> list[str]:
    """``name (id 'x')`` of every required property of ``workflow`` whose config id is not in its config."""
    from monai.utils import BundleProperty, BundlePropertyConfig

    absent = []
    for name, prop in (workflow.properties or {}).items():
        prop_id = prop.get(BundlePropertyConfig.ID)
        if prop.get(BundleProperty.REQUIRED, False) and prop_id is not None and prop_id not in workflow.parser:
            absent.append(f"{name} (id '{prop_id.replace('::', '#')}')")
    return sorted(absent)
