"""The conformance suite: tests that every bundle inherits with no test code of its own.

Every test here that takes the ``bundle`` fixture runs once per folder of ``bundles/`` (a new bundle is
covered the day its folder appears) and once on the two-network fixture bundle
``tests/bundles/fixtures/two_net_bundle`` (a different layout, two stages, two exported networks), which
shows that nothing in the suite is shaped after the EDD bundle. Everything a test needs to know about a
bundle comes from its self-description (:mod:`strokeseg.runtime.description`).

Helpers for the test files:

- :func:`smoke_dataset` — a synthetic dataset in a layout (3 training + 1 test case), made once per process.
- :func:`bundle_copy` — a copy of a bundle without trained checkpoints, in which runs may write.
- :func:`smoke_args` — the ``--id value`` arguments of a smoke run of a bundle copy.
- :func:`run_config` — ``python -m monai.bundle run`` of some configs of a bundle copy.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from strokeseg.runtime.description import BundleDescription, bundle_folders, describe_bundle
from strokeseg.tools.runner import BundleRun, config_arg, run_monai_bundle

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "bundles" / "fixtures"
TWO_NET_FIXTURE = FIXTURES / "two_net_bundle"
RUN_TIMEOUT_S = 900

_DATA_ROOT: Path | None = None
_DATASETS: dict[str, Path] = {}


def conformance_bundles() -> list[Path]:
    """Every bundle folder of ``bundles/`` and the two-network fixture."""
    bundles = bundle_folders(ROOT / "bundles")
    if (TWO_NET_FIXTURE / "configs" / "metadata.json").is_file():
        bundles.append(TWO_NET_FIXTURE)
    return bundles


@pytest.fixture(params=conformance_bundles(), ids=lambda path: path.name)
def bundle(request) -> BundleDescription:
    """The description of one bundle of the suite (the test runs once per bundle)."""
    return describe_bundle(request.param)


def _data_root() -> Path:
    global _DATA_ROOT
    if _DATA_ROOT is None:
        _DATA_ROOT = Path(tempfile.mkdtemp(prefix="strokeseg-conformance-"))
    return _DATA_ROOT


def smoke_dataset(layout: str, cases: int = 3, test_cases: int = 1) -> Path:
    """A synthetic dataset in ``layout`` (seed 0), made once per test process and shared read-only."""
    from strokeseg.data.phantoms import synthesize_dataset

    key = f"{layout}_{cases}_{test_cases}"
    if key not in _DATASETS:
        out = _data_root() / key
        synthesize_dataset(layout, out, cases=cases, test_cases=test_cases, seed=0)
        _DATASETS[key] = out
    return _DATASETS[key]


def bundle_copy(description: BundleDescription, target: Path) -> Path:
    """A copy of the bundle in ``target`` without runtime outputs or trained checkpoints."""
    from strokeseg.tools.verify.smoke import copy_bundle

    return copy_bundle(description.root, target)


def smoke_args(description: BundleDescription, copy: Path, data_dir: Path, **extra) -> list[str]:
    """Arguments of a smoke run of ``copy``: shared smoke knobs, the bundle's overrides, folders, ``extra``."""
    args = [*description.smoke_args(), "--bundle_root", str(copy), "--dataset_dir", str(data_dir)]
    args += ["--ckpt_dir", str(copy / "models")]
    for key, value in extra.items():
        args += [f"--{key}", str(value)]
    return args


def run_config(
    copy: Path, configs: Sequence[str], args: Sequence[str], log: Path, timeout: float = RUN_TIMEOUT_S
) -> BundleRun:
    """``python -m monai.bundle run --config_file <configs> <args>`` in the bundle copy ``copy``."""
    return run_monai_bundle(
        "run", ["--config_file", config_arg(list(configs)), *args], log, cwd=copy, timeout=timeout, label=log.stem
    )


def pytest_sessionfinish(session, exitstatus):
    if _DATA_ROOT is not None:
        shutil.rmtree(_DATA_ROOT, ignore_errors=True)
