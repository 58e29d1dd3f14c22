"""``strokeseg demo``: the data part end to end (every layout synthesised, datalists, previews, README)."""

from __future__ import annotations

import json

import pytest

import strokeseg.tools.demo as demo
from strokeseg.data.layouts import LAYOUT_NAMES
from strokeseg.errors import StrokesegError
from strokeseg.tools.cli import main


def test_demo_data_part_writes_every_layout_and_a_readme(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEFAULT_CASES", 1)
    monkeypatch.setattr(demo, "DEFAULT_TEST_CASES", 1)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--bundles", "none"]) == 0
    out = tmp_path / "demo"
    readme = (out / "README.md").read_text()
    assert "not clinical results" in readme
    for layout in LAYOUT_NAMES:
        datalist = json.loads((out / "datalists" / f"{layout}.json").read_text())
        assert datalist["layout"] == layout
        assert len(datalist["training"]) == 1 and len(datalist["testing"]) == 1
        assert all("label" in case for case in datalist["training"])
        assert all("label" not in case for case in datalist["testing"])
        assert len(list((out / "data" / layout / "preview").glob("*.png"))) == 2
        assert f"| {layout} |" in readme


def test_demo_refuses_an_unknown_bundle(tmp_path):
    with pytest.raises(StrokesegError, match="unknown bundle"):
        demo.run_demo(tmp_path, bundles="no_such_bundle")


@pytest.mark.slow
def test_full_demo_runs_the_edd_bundle(tmp_path):
    readme = demo.run_demo(tmp_path / "demo", bundles="stroke_dwi_edd_muscle")
    text = readme.read_text()
    assert "stroke_dwi_edd_muscle" in text and "model.ts" in text


@pytest.mark.parametrize(("text", "expected"), [("false", False), ("False", False), ("0", False), ("yes", True)])
def test_cli_flags_accept_textual_booleans(text, expected):
    from strokeseg.tools.cli import as_bool

    assert as_bool(text) is expected


def test_cli_flags_reject_nonsense():
    from strokeseg.tools.cli import as_bool

    with pytest.raises(StrokesegError, match="--train expects true or false"):
        as_bool("maybe", "train")


def test_summary_values_come_from_the_report_layout():
    summary = {"metrics": {"dice": {"mean": 0.8123, "std": 0.1}}, "lesionwise": {"m#FP": 1.5, "DR": None}}
    assert demo._summary_value(summary, "dice") == "0.812"
    assert demo._summary_value(summary, "m#FP") == "1.500"
    assert demo._summary_value(summary, "DR") == "n/a"
    assert demo._summary_value(summary, "hd95") == "n/a"
