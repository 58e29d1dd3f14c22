"""Tests of ``strokeseg bench``: peak and FLOP counting, section names, report logic, quick end-to-end runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from strokeseg.bench import conv_peak, count_flops, resolve_sections, run_bench
from strokeseg.bench.edd_muscle import brain_slice_batch, child_peak_rss
from strokeseg.bench.machine import bf16_support, cpu_flags, cpu_model
from strokeseg.bench.report import TARGETS, collect_ratios, judge, render_markdown
from strokeseg.bench.runner import BUNDLE_BENCHMARKS
from strokeseg.bench.timing import median, time_repeats
from strokeseg.errors import BundleError
from strokeseg.networks.eddnet import EDDNet

CPUINFO_AVX2 = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx fma avx2\n\n"
CPUINFO_AMX = "processor\t: 0\nmodel name\t: Test CPU 9500\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_conv_peak_counts_the_textbook_flops_and_is_positive():
    result = conv_peak(2, quick=True, repeats=1)
    b, c, s = 2, 64, 64
    assert result["flops"] == 2 * b * c * c * 9 * s * s  # 2 FLOPs per multiply-add, 3 × 3 kernel
    assert result["shape"] == [b, c, s, s]
    assert result["gflops"] > 0
    assert result["gflops"] == max(v["gflops"] for v in result["by_memory_format"].values())
    result3 = conv_peak(3, quick=True, repeats=1, memory_formats=("contiguous",))
    assert result3["flops"] == 2 * 1 * 32 * 32 * 27 * 24**3
    assert result3["best_memory_format"] == "contiguous" and result3["gflops"] > 0


def test_conv_peak_rejects_bad_arguments():
    with pytest.raises(ValueError, match="spatial_dims"):
        conv_peak(1, quick=True)
    with pytest.raises(ValueError, match="memory_formats"):
        conv_peak(2, quick=True, memory_formats=("nhwc",))


def test_edd_flops_are_linear_in_the_slice_batch():
    net = EDDNet(features=(4, 8, 8)).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.inference_mode():
        one, three = count_flops(net, x[:1]), count_flops(net, x)
    assert one > 0 and three == 3 * one


def test_cpuinfo_parsing_and_bf16_decision():
    assert cpu_model(CPUINFO_AVX2) == "Test CPU 9000"
    assert cpu_flags(CPUINFO_AVX2) == {"fpu", "sse2", "avx", "fma", "avx2"}
    supported, reason = bf16_support(CPUINFO_AVX2)
    assert not supported and "avx2" in reason
    if torch.backends.mkldnn.is_available():
        supported, reason = bf16_support(CPUINFO_AMX)
        assert supported and "amx_bf16" in reason and "avx512_bf16" in reason
    assert cpu_flags("") == set()


def test_timing_helpers():
    calls = []
    seconds = time_repeats(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(seconds) == 3 and len(calls) == 5 and all(s >= 0 for s in seconds)
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([1.0, 2.0]) == 1.5
    with pytest.raises(ValueError):
        time_repeats(lambda: None, repeats=0)
    with pytest.raises(ValueError):
        median([])


def test_resolve_sections(tmp_path: Path):
    (tmp_path / "stroke_dwi_edd_muscle" / "configs").mkdir(parents=True)
    (tmp_path / "stroke_new_bundle" / "configs").mkdir(parents=True)
    (tmp_path / "not_a_bundle").mkdir()
    assert resolve_sections(None, tmp_path) == ["synth", "evaluate", "stroke_dwi_edd_muscle", "stroke_new_bundle"]
    assert resolve_sections("evaluate, synth,evaluate", tmp_path) == ["evaluate", "synth"]
    assert resolve_sections(("synth", "stroke_dwi_edd_muscle"), tmp_path) == ["synth", "stroke_dwi_edd_muscle"]
    with pytest.raises(BundleError, match="unknown benchmark section.*nope.*choose among: synth, evaluate"):
        resolve_sections("synth,nope", tmp_path)
    with pytest.raises(BundleError, match="unknown"):
        resolve_sections("not_a_bundle", tmp_path)
    with pytest.raises(BundleError, match="stroke_new_bundle have no benchmark yet"):
        resolve_sections("stroke_new_bundle", tmp_path)
    with pytest.raises(BundleError, match="no benchmark section named"):
        resolve_sections(" , ", tmp_path)
    assert "stroke_dwi_edd_muscle" in BUNDLE_BENCHMARKS


def test_run_bench_rejects_unknown_names_before_measuring(tmp_path: Path):
    with pytest.raises(BundleError, match="unknown benchmark section"):
        run_bench(bundles="synth,no_such_bundle", out=tmp_path / "bench.json", quick=True)
    assert not (tmp_path / "bench.json").exists()


def test_judge_and_ratio_collection():
    assert TARGETS["P2"].met(1.25) is True and TARGETS["P2"].met(1.26) is False
    assert TARGETS["P1_fp32"].met(0.6) is True and TARGETS["P1_fp32"].met(0.59) is False
    assert judge("P4", None, "b")["met"] is None
    record = {
        "variants": {
            "fp32": {"bf16": False, "p1": 0.7, "p2": 1.3, "end_to_end_seconds_per_20_slice_scan": 2.0},
            "bf16": {"bf16": True, "p1": 1.0, "p2": 1.1, "end_to_end_seconds_per_20_slice_scan": 0.5},
        },
        "training": {"p4": 1.1},
        "memory": {"peak_rss_gib": 5.0},
    }
    rows = collect_ratios({"bundles": {"b": record, "skipped_one": {"skipped": "no benchmark"}}})
    got = {(r["id"], r["variant"]): (r["value"], r["target"], r["met"]) for r in rows}
    assert got[("P1", "fp32")] == (0.7, ">= 0.6", True)
    assert got[("P1", "bf16")] == (1.0, ">= 1.2", False)  # the bf16 option has its own, higher target
    assert got[("P2", "fp32")] == (1.3, "<= 1.25", False)
    assert got[("P2", "bf16")][2] is True
    assert got[("anchor", "bf16")][2] is True and got[("anchor", "fp32")][2] is False
    assert got[("P4", None)] == (1.1, "<= 1.15", True)
    assert got[("P5", None)][2] is False
    assert len(rows) == 8


def test_brain_slice_batch_keeps_brain_slices_and_pads():
    image = torch.zeros(1, 6, 7, 5)
    image[0, 1, 2, 1] = 1.0
    image[0, 5, 6, 3] = -2.0
    slices = brain_slice_batch(image, spatial_divisor=4)
    assert slices.shape == (2, 1, 8, 8)
    assert slices[0, 0, 1, 2] == 1.0 and slices[1, 0, 5, 6] == -2.0
    assert slices[:, :, 6:, :].abs().sum() == 0 and slices[:, :, :, 7:].abs().sum() == 0
    assert brain_slice_batch(image).shape == (2, 1, 6, 7)


def test_child_peak_rss_sees_the_child_allocation(tmp_path: Path):
    code = "b = b'x' * (200 * 2**20); print(len(b))"
    result = child_peak_rss([sys.executable, "-c", code], tmp_path / "child.log")
    assert result["returncode"] == 0
    assert 200 <= result["peak_rss_mib"] < 1000
    failed = child_peak_rss([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "fail.log")
    assert failed["returncode"] == 3


def _check_common(data: dict, out: Path) -> None:
    assert data["schema"] == "strokeseg-bench/1" and data["quick"] is True
    machine = data["machine"]
    assert machine["usable_cores"] >= 1 and machine["torch_threads"] == machine["usable_cores"]
    assert isinstance(machine["bf16_supported"], bool) and machine["bf16_reason"]
    assert machine["cpu_model"]
    peak = data["peak"]
    assert peak["conv2d_fp32"]["gflops"] > 0 and peak["conv3d_fp32"]["gflops"] > 0
    assert (peak["conv2d_bf16"] is None) == (not machine["bf16_supported"])
    assert data["bundles"] == {} and data["ratios"] == []
    assert out.with_suffix(".md").is_file()
    assert not list(out.parent.glob(".partial-*"))


def test_run_bench_evaluate_quick(tmp_path: Path):
    threads = torch.get_num_threads()
    out = run_bench(bundles="evaluate", out=tmp_path / "bench.json", quick=True)
    assert out == tmp_path / "bench.json"
    assert torch.get_num_threads() == threads  # restored
    data = json.loads(out.read_text())
    _check_common(data, out)
    assert data["sections"] == ["evaluate"] and "synth" not in data
    ev = data["evaluate"]
    assert ev["num_cases"] == 2 and ev["seconds"] > 0 and ev["seconds_per_case"] > 0
    assert ev["target_s"] == 30.0 and ev["target_applies"] is False and ev["met"] is None
    text = out.with_suffix(".md").read_text()
    assert "## Evaluation" in text and "## Machine peak" in text and "indicative" in text


def test_run_bench_synth_quick(tmp_path: Path):
    out = run_bench(bundles="synth", out=tmp_path / "bench.json", quick=True)
    data = json.loads(out.read_text())
    _check_common(data, out)
    layouts = data["synth"]["layouts"]
    assert set(layouts) == {"isles2015_spes", "isles2018"}
    spes, isles18 = layouts["isles2015_spes"], layouts["isles2018"]
    assert spes["seconds_per_case_without_series"] > 0 and spes["seconds_per_case_with_series"] is None
    assert spes["met"]["with_series"] is None
    assert spes["met"]["without_series"] is (spes["seconds_per_case_without_series"] <= 2.0)
    # the 4-D series is extra work on top of the same case
    assert isles18["cpu_seconds_per_case_with_series"] > isles18["cpu_seconds_per_case_without_series"] > 0
    assert isles18["met"]["with_series"] is (isles18["seconds_per_case_with_series"] <= 10.0)
    text = out.with_suffix(".md").read_text()
    assert "## Synthetic phantoms" in text and "| isles2018 |" in text


def test_render_markdown_shows_failures():
    results = {
        "machine": {
            "cpu_model": "X",
            "usable_cores": 2,
            "torch_threads": 2,
            "cpu_flags": ["avx2"],
            "bf16_supported": False,
            "bf16_reason": "no flag",
            "torch": "t",
            "monai": "m",
            "load_average": [1.0, 1.0, 1.0],
        },
        "evaluate": {"error": "DataError: boom"},
        "bundles": {"b": {"error": "BundleError: failed to run"}},
        "ratios": [judge("P4", 1.5, "b")],
    }
    text = render_markdown(results)
    assert "Failed: DataError: boom" in text and "Failed: BundleError: failed to run" in text
    assert "| P4 | b |  | 1.5 | <= 1.15 | **not met** |" in text


@pytest.mark.slow
def test_run_bench_edd_muscle_quick(tmp_path: Path):
    out = run_bench(bundles="stroke_dwi_edd_muscle", out=tmp_path / "bench.json", quick=True)
    data = json.loads(out.read_text())
    record = data["bundles"]["stroke_dwi_edd_muscle"]
    fp32 = record["variants"]["fp32"]
    assert record["network"]["flops_per_slice"] > 0 and record["case"]["slices_kept"] > 0
    assert fp32["bare_forward_median_s"] > 0 and fp32["end_to_end_median_s"] > 0 and fp32["p1"] > 0
    assert record["training"]["p4"] > 0 and record["memory"]["peak_rss_gib"] > 0
    assert {r["id"] for r in data["ratios"]} >= {"P1", "P2", "P4", "P5"}
