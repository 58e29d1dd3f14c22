"""The conformance suite: tests that every bundle inherits with no test code of its own.

Every test here that takes the ``bundle`` fixture runs once per folder of ``bundles/`` (a new bundle is
covered the day its folder appears) and once on the two-network fixture bundle
``tests/bundles/fixtures/two_net_bundle`` (a different layout, two stages, two exported networks), which
shows that nothing in the suite is shaped after the EDD bundle. Everything a test needs to know about a
bundle comes from its self-description (:mod:`strokeseg.runtime.description`).

Bundle × behaviour matrices: a test that costs several ``python -m monai.bundle run`` launches per bundle carries
``@pytest.mark.representative("<bundle>")``. ``make test`` runs it on that bundle only; every other bundle's
case is marked ``matrix``, which only ``.ci/run`` selects. The representatives are spread so that each bundle
is the representative of some behaviour, and the cheap tests (knobs, precision, verify) run on every bundle.

Fixtures and helpers for the test files:

- :func:`smoke_dataset` — a synthetic dataset in a layout (3 training + 1 test case), made once per session.
- :func:`bundle_copy` — a copy of a bundle without trained checkpoints, in which runs may write.
- :func:`smoke_args` — the ``--id value`` arguments of a smoke run of a bundle copy.
- :func:`run_config` — ``python -m monai.bundle run`` of some configs of a bundle copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from strokeseg.runtime.description import BundleDescription, bundle_folders, describe_bundle
from strokeseg.tools.runner import BundleRun, config_arg, run_monai_bundle

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "bundles" / "fixtures"
TWO_NET_FIXTURE = FIXTURES / "two_net_bundle"
RUN_TIMEOUT_S = 900


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


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects: the ``matrix`` marks must be on by then
def pytest_collection_modifyitems(config, items):
    """Mark ``matrix`` every bundle case of a ``representative`` test but the representative's."""
    names = {path.name for path in conformance_bundles()}
    for item in items:
        marker = item.get_closest_marker("representative")
        params = getattr(getattr(item, "callspec", None), "params", {})
        if marker is None or "bundle" not in params:
            continue
        chosen = marker.args[0]
        if chosen not in names:
            raise pytest.UsageError(f"{item.nodeid}: representative bundle {chosen!r} is none of {sorted(names)}")
        if Path(params["bundle"]).name != chosen:
            item.add_marker(pytest.mark.matrix)


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory) -> Callable[..., Path]:
    """``smoke_dataset(layout, cases=3, test_cases=1)``: a synthetic dataset in ``layout`` (seed 0).

    Each dataset is made once per session (per xdist worker) and shared read-only.
    """
    from strokeseg.data.phantoms import synthesize_dataset

    made: dict[str, Path] = {}

    def dataset(layout: str, cases: int = 3, test_cases: int = 1) -> Path:
        key = f"{layout}_{cases}_{test_cases}"
        if key not in made:
            out = tmp_path_factory.mktemp("conformance-data") / key
            synthesize_dataset(layout, out, cases=cases, test_cases=test_cases, seed=0)
            made[key] = out
        return made[key]

    return dataset


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
