"""Every bundle's grid checks read one top-level ``grid_tolerance_mm`` (train, evaluate over train, inference)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from strokeseg.grids import GRID_TOLERANCE_MM

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "bundles").glob("*/configs/*.json") if p.name in ("train.json", "inference.json"))


def _header_checks(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        if node.get("_target_") == "strokeseg.transforms.validation.CheckNiftiHeadersd":
            yield node
        for value in node.values():
            yield from _header_checks(value)
    elif isinstance(node, list):
        for value in node:
            yield from _header_checks(value)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parents[1].name}/{p.name}")
def test_every_grid_check_reads_the_top_level_knob(config):
    data = json.loads(config.read_text())
    assert data.get("grid_tolerance_mm") == GRID_TOLERANCE_MM, "no top-level grid_tolerance_mm (default 0.001)"
    checks = list(_header_checks(data))
    assert checks, "no CheckNiftiHeadersd"
    assert all(c.get("grid_tolerance_mm") == "@grid_tolerance_mm" for c in checks), checks
