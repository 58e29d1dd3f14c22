"""Shared pytest set-up: one torch thread per xdist worker, headless matplotlib, deterministic seeds."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global random state."""
    torch.manual_seed(0)
    yield
