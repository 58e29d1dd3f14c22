"""Shared pytest set-up: one torch thread per xdist worker, headless matplotlib, deterministic seeds.

The order of the tests is random (pytest-randomly, seed in the header and at the end of the run): no test may
rely on another having run before it. ``-p no:randomly`` keeps the file order, ``--randomly-seed=N`` repeats one.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # the workers share the cores already: a bundle run a test starts must not add threads of its own
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_terminal_summary(terminalreporter, config):
    """Repeat pytest-randomly's seed at the end, where ``-q`` (which drops the header) still shows it."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int):
        terminalreporter.write_line(f"random test order: rerun it with --randomly-seed={seed}")


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global random state."""
    torch.manual_seed(0)
    yield
