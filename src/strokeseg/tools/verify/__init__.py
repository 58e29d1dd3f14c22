"""The offline checks every bundle passes (``strokeseg verify BUNDLE``), numbered as below.

1. ``configs/metadata.json``, ``LICENSE`` and ``configs/inference.json`` exist and the metadata's ``"strokeseg"``
   object describes the bundle (:mod:`strokeseg.runtime.description`: layout, stages, exported networks).
2. ``version`` is a key of ``changelog``; the metadata validates against the schema its ``"schema"`` URL
   names, read from the copy this package carries (nothing is downloaded).
3. ``ConfigWorkflow`` of ``inference.json`` (``infer``) and ``train.json`` (``train``) initialise and
   ``check_properties()`` finds nothing missing.
4. ``verify_net_in_out network_def`` passes.
5. ``ckpt_export`` of every exported network (freshly initialised); each TorchScript is loaded in a process
   where ``strokeseg`` cannot be imported and matches the eager network within :data:`EXPORT_TOLERANCE`.
6. One epoch of every training stage of the description, the evaluate overlay and inference run as
   subprocesses on a synthetic dataset in the bundle's layout; every stage writes its networks' checkpoints
   and inference writes the described outputs of every test case (skipped with ``train=False``).
7. Configs are pretty-printed with indent 4, every ``@reference`` resolves (standalone configs and overlay
   combinations), no file exceeds :data:`MAX_FILE_BYTES`, no text file holds an absolute path of a machine.
8. The ``multi_gpu_train.json`` overlay parses and its references resolve (when the file exists).

Every check runs even when an earlier one failed; a check that needs what an earlier one found missing
reports itself as skipped and says why. The MONAI bundle tools (``verify_metadata``, ``verify_net_in_out``,
``ckpt_export``, ``ConfigWorkflow``, ``python -m monai.bundle run``) do the work; this module only
orchestrates them, supplies the offline schema and synthetic data, and turns their failures into a report.
One module per check (``files``, ``metadata``, ``properties``, ``netio``, ``export``, ``smoke``, ``hygiene``,
``multigpu``); :mod:`~strokeseg.tools.verify.common` holds what they share.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from strokeseg import lazy_submodules
from strokeseg.errors import BundleError
from strokeseg.tools.verify.common import (
    CARRIED_SCHEMAS,
    EXPORT_TOLERANCE,
    MACHINE_PATH,
    MAX_FILE_BYTES,
    SCHEMA_DIR,
    SMOKE_OVERRIDES,
    SMOKE_TIMEOUT_S,
    CheckResult,
    VerifyReport,
    _Context,
    _describe,
    _Skipped,
    logger,
)
from strokeseg.tools.verify.export import _check_export, _max_abs_difference
from strokeseg.tools.verify.files import _check_files
from strokeseg.tools.verify.hygiene import _check_hygiene, _indent_problem
from strokeseg.tools.verify.metadata import _check_metadata
from strokeseg.tools.verify.multigpu import _check_multi_gpu
from strokeseg.tools.verify.netio import _check_net_io
from strokeseg.tools.verify.properties import _check_properties
from strokeseg.tools.verify.smoke import _check_smoke, _prepare_dataset

__all__ = [
    "CheckResult",
    "VerifyReport",
    "CHECKS",
    "verify_bundle",
    "SCHEMA_DIR",
    "CARRIED_SCHEMAS",
    "EXPORT_TOLERANCE",
    "MACHINE_PATH",
    "MAX_FILE_BYTES",
    "SMOKE_OVERRIDES",
    "SMOKE_TIMEOUT_S",
    "_indent_problem",
    "_max_abs_difference",
]

CHECKS: tuple[tuple[str, Callable[[_Context], str]], ...] = (
    ("1. required files", _check_files),
    ("2. metadata", _check_metadata),
    ("3. workflow properties", _check_properties),
    ("4. network input/output", _check_net_io),
    ("5. TorchScript export", _check_export),
    ("6. smoke runs", _check_smoke),
    ("7. configs and files", _check_hygiene),
    ("8. multi-GPU overlay", _check_multi_gpu),
)


def _run_check(name: str, check: Callable[[_Context], str], ctx: _Context) -> CheckResult:
    start = time.perf_counter()
    try:
        message, ok, skipped = check(ctx), True, False
    except _Skipped as skip:
        message, ok, skipped = str(skip), not skip.applies, True
    except BundleError as err:
        message, ok, skipped = str(err), False, False
    except Exception as err:  # a MONAI tool failing in an unforeseen way is still this check's failure
        message, ok, skipped = _describe(err), False, False
    seconds = time.perf_counter() - start
    if name.startswith("3."):
        seconds += ctx.data_seconds  # the dataset is made before the checks run; check 3 is its first user
    result = CheckResult(name=name, ok=ok, message=message, seconds=seconds, skipped=skipped)
    logger.info(result.line())
    return result


def verify_bundle(
    bundle: str | Path, workdir: str | Path | None = None, train: bool = True, small_export: bool = False
) -> VerifyReport:
    """Run every check listed in the module docstring on ``bundle`` offline and collect the results.

    Nothing is written into ``bundle``: exports, synthetic data, a copy of the bundle for the smoke runs
    (whose ``models/`` receives the checkpoints) and the subprocess logs go to ``workdir``.

    Args:
        bundle: bundle folder (the one holding ``configs/`` and ``LICENSE``).
        workdir: folder for everything the checks write; its sub-folders ``export``, ``data``, ``bundle``,
            ``out``, ``logs``, ``properties_*`` are replaced. Default: a temporary folder, removed afterwards.
        train: run check 6 (one epoch of training, evaluation and inference as subprocesses).
        small_export: check 5 exports the networks built with the description's ``smoke_overrides`` (the
            same code, smaller widths; the conformance suite uses it to stay fast). Default: the shipped sizes.

    Returns:
        The report; ``report.ok`` is true when every check passed, ``report.summary()`` has one line per check.

    Raises:
        BundleError: ``bundle`` is not a folder, or ``workdir`` lies inside it.
    """
    bundle_path = Path(bundle).expanduser().resolve()
    if not bundle_path.is_dir():
        raise BundleError(f"{bundle}: not a bundle folder (no such directory)")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="strokeseg-verify-") as tmp:
            return _verify(bundle_path, Path(tmp), train, small_export)
    work = Path(workdir).expanduser().resolve()
    if work == bundle_path or bundle_path in work.parents:
        raise BundleError(f"workdir {work} lies inside the bundle {bundle_path}; choose a folder outside it")
    work.mkdir(parents=True, exist_ok=True)
    return _verify(bundle_path, work, train, small_export)


def _verify(bundle: Path, work: Path, train: bool, small_export: bool = False) -> VerifyReport:
    ctx = _Context(bundle=bundle, work=work, train=train, small_export=small_export)
    _prepare_dataset(ctx)
    report = VerifyReport(bundle=bundle)
    for name, check in CHECKS:
        report.checks.append(_run_check(name, check, ctx))
    return report


__getattr__ = lazy_submodules(__name__)
