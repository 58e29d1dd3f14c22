"""Tests of ``strokeseg bench``: peak and FLOP counting, section names, report logic, quick end-to-end runs."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from strokeseg.errors import BundleError
from strokeseg.networks.eddnet import EDDNet
from strokeseg.runtime.hardware import bf16_support, cpu_flags, cpu_model
from strokeseg.tools.bench import conv_peak, count_flops, resolve_sections, run_bench
from strokeseg.tools.bench.bundle import bench_bundle
from strokeseg.tools.bench.calls import CallRecorder, NetworkCall
from strokeseg.tools.bench.flops import count_call_flops, useful_fraction
from strokeseg.tools.bench.hooks import edd_muscle as edd_hook
from strokeseg.tools.bench.memory import child_peak_rss
from strokeseg.tools.bench.report import render_markdown
from strokeseg.tools.bench.targets import TARGETS, collect_ratios, judge, p3_row
from strokeseg.tools.bench.timing import median, time_repeats
from strokeseg.tools.bench.variants import choose_variants, default_variant, variant_knobs, variant_overrides

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


_HUGE_PAGES_PROBE = """
import os, monai.bundle, strokeseg, torch
before = os.environ.get("THP_MEM_ALLOC_ENABLE")
strokeseg.runtime.hardware.enable_huge_pages()  # what the strokeseg command and every bundle config call first
x = torch.ones(64 * 1024 * 1024)  # 256 MiB, the first CPU allocation of this process
huge = [line.split()[1] for line in open("/proc/self/smaps_rollup") if line.startswith("AnonHugePages")]
print(before, os.environ.get("THP_MEM_ALLOC_ENABLE"), huge[0] if huge else "unknown")
"""


@pytest.mark.parametrize("preset", [None, "0"])
def test_enable_huge_pages_turns_on_torch_huge_pages_unless_the_user_chose(preset):
    """Importing strokeseg changes nothing; the explicit call does, before the first allocation."""
    import subprocess

    from strokeseg.runtime.hardware import huge_pages

    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if preset is not None:
        env["THP_MEM_ALLOC_ENABLE"] = preset
    out = subprocess.run([sys.executable, "-c", _HUGE_PAGES_PROBE], env=env, capture_output=True, text=True)
    before, variable, huge_kib = out.stdout.split()
    assert before == (preset or "None")
    assert variable == (preset or "1")
    if huge_pages()["kernel_mode"] == "madvise" and huge_kib != "unknown":  # only then does torch's switch decide
        assert (int(huge_kib) > 0) == (preset is None)


def test_cpuinfo_parsing_and_bf16_decision():
    assert cpu_model(CPUINFO_AVX2) == "Test CPU 9000"
    assert cpu_flags(CPUINFO_AVX2) == {"fpu", "sse2", "avx", "fma", "avx2"}
    supported, reason = bf16_support(CPUINFO_AVX2, environ={})
    assert not supported and "avx2" in reason
    if torch.backends.mkldnn.is_available():
        supported, reason = bf16_support(CPUINFO_AMX, environ={})
        assert supported and "amx_bf16" in reason and "avx512_bf16" in reason
        # oneDNN capped below bf16 emulates it even with the flags; ONEDNN_ wins over the older DNNL_ name
        supported, reason = bf16_support(CPUINFO_AMX, environ={"ONEDNN_MAX_CPU_ISA": "avx2"})
        assert not supported and "ONEDNN_MAX_CPU_ISA=avx2" in reason
        assert not bf16_support(CPUINFO_AMX, environ={"DNNL_MAX_CPU_ISA": "AVX512_CORE_VNNI"})[0]
        env = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX", "DNNL_MAX_CPU_ISA": "AVX2"}
        assert bf16_support(CPUINFO_AMX, environ=env)[0]
        assert bf16_support(CPUINFO_AMX, environ={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"})[0]
        assert not bf16_support(CPUINFO_AVX2, environ={"ONEDNN_MAX_CPU_ISA": "ALL"})[0]
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


def _bundle_folder(root: Path, name: str) -> Path:
    (root / name / "configs").mkdir(parents=True)
    (root / name / "configs" / "metadata.json").write_text("{}")
    return root / name


def test_resolve_sections(tmp_path: Path):
    _bundle_folder(tmp_path, "stroke_dwi_edd_muscle")
    _bundle_folder(tmp_path, "stroke_new_bundle")
    (tmp_path / "not_a_bundle" / "configs").mkdir(parents=True)  # no metadata.json: not a bundle
    assert resolve_sections(None, tmp_path) == ["synth", "evaluate", "stroke_dwi_edd_muscle", "stroke_new_bundle"]
    assert resolve_sections("evaluate, synth,evaluate", tmp_path) == ["evaluate", "synth"]
    assert resolve_sections(("synth", "stroke_dwi_edd_muscle"), tmp_path) == ["synth", "stroke_dwi_edd_muscle"]
    # every bundle folder is benchmarked by the generic harness: a new one needs no bench module
    assert resolve_sections("stroke_new_bundle", tmp_path) == ["stroke_new_bundle"]
    with pytest.raises(BundleError, match="unknown benchmark section.*nope.*choose among: synth, evaluate"):
        resolve_sections("synth,nope", tmp_path)
    with pytest.raises(BundleError, match="unknown"):
        resolve_sections("not_a_bundle", tmp_path)
    with pytest.raises(BundleError, match="no benchmark section named"):
        resolve_sections(" , ", tmp_path)


def test_run_bench_rejects_unknown_names_before_measuring(tmp_path: Path):
    with pytest.raises(BundleError, match="unknown benchmark section"):
        run_bench(bundles="synth,no_such_bundle", out=tmp_path / "bench.json", quick=True)
    assert not (tmp_path / "bench.json").exists()


def _machine_results() -> dict:
    return {
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
        }
    }


def test_p3_needs_both_the_ratio_and_the_dice_agreement():
    assert p3_row({"value": 60.0, "dice": 0.96}, "u")["met"] is True
    assert p3_row({"value": 60.0, "dice": 0.94}, "u")["met"] is False  # fast enough, but not the same answer
    assert p3_row({"value": 40.0, "dice": 0.99}, "u")["met"] is False
    assert p3_row({"value": 60.0, "dice": None}, "u")["met"] is None
    row = collect_ratios({"bundles": {"u": {"variants": {}, "p3": {"value": 80.0, "dice": 0.97, "variant": "fp32"}}}})
    assert [(r["id"], r["met"], r["target"]) for r in row] == [("P3", True, ">= 50, Dice >= 0.95")]


def test_judge_and_ratio_collection():
    assert TARGETS["P2"].met(1.25) is True and TARGETS["P2"].met(1.26) is False
    assert TARGETS["P1_fp32"].met(0.6) is True and TARGETS["P1_fp32"].met(0.59) is False
    assert judge("P4", None, "b")["met"] is None
    anchor = {"value_key": "per_scan", "description": "seconds per scan", "op": "<=", "threshold": 0.9}
    record = {
        "variants": {
            "fp32": {"bf16": False, "p1": 0.7, "p2": 1.3, "per_scan": 2.0, "default": True},
            "bf16": {"bf16": True, "p1": 1.0, "p2": 1.1, "per_scan": 0.5, "default": False},
        },
        "anchor": anchor,
        "training": {"p4": 1.1},
        "memory": {"peak_rss_gib": 5.0, "three_d": True},
    }
    two_d = {"variants": {"fp32": {"p1": 0.5, "p2": 1.0, "default": True}}, "memory": {"peak_rss_gib": 0.5}}
    results = {"bundles": {"b": record, "c": two_d, "broken": {"error": "BundleError: no | good\nat all"}}}
    rows = collect_ratios(results)
    got = {(r["section"], r["id"], r["variant"]): r for r in rows}
    assert got[("b", "P1", "fp32")]["value"] == 0.7 and got[("b", "P1", "fp32")]["met"] is True
    assert got[("b", "P1", "bf16")]["target"] == ">= 1.2"  # the bf16 option has its own, higher target
    assert got[("b", "P1", "bf16")]["met"] is False
    assert got[("b", "P2", "fp32")]["met"] is False and got[("b", "P2", "bf16")]["met"] is True
    assert got[("b", "anchor", "bf16")]["met"] is True and got[("b", "anchor", "fp32")]["met"] is False
    assert got[("b", "anchor", "fp32")]["informative"] is True
    # the default marker: per variant, and rows without a variant describe the default configuration
    assert got[("b", "P2", "fp32")]["default"] is True and got[("b", "P2", "bf16")]["default"] is False
    assert got[("b", "P4", None)]["default"] is True and got[("b", "P4", None)]["met"] is True
    assert got[("b", "P5", None)]["met"] is False and got[("b", "P5", None)]["informative"] is False
    assert got[("c", "P5", None)]["informative"] is True  # the 3-D memory target is informative for 2-D
    assert ("c", "anchor", "fp32") not in got  # no anchor without a hook
    assert got[("broken", "error", None)]["met"] is False
    assert len(rows) == 8 + 3 + 1
    text = render_markdown({**_machine_results(), "ratios": rows})
    assert "| error | broken |  |  | BundleError: no / good at all |  | **failed** |" in text
    assert "| P2 | b | bf16 | no | 1.1 | <= 1.25 | met |" in text


def test_child_peak_rss_sees_the_child_allocation(tmp_path: Path):
    code = "b = b'x' * (200 * 2**20); print(len(b))"
    result = child_peak_rss([sys.executable, "-c", code], tmp_path / "child.log")
    assert result["returncode"] == 0
    assert 200 <= result["peak_rss_mib"] < 1000
    failed = child_peak_rss([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "fail.log")
    assert failed["returncode"] == 3
    pid_file = tmp_path / "pid"
    sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"

    def fail_meanwhile(proc) -> None:
        while not pid_file.is_file() or not pid_file.read_text():
            time.sleep(0.01)
        raise RuntimeError("the bench failed while the child ran")

    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="while the child ran"):
        child_peak_rss([sys.executable, "-c", sleeper], tmp_path / "s.log", while_running=fail_meanwhile)
    assert time.perf_counter() - start < 30
    status = Path(f"/proc/{pid_file.read_text()}/status")
    for _ in range(100):  # the measured command is killed too, not only its launcher (gone, or a zombie)
        if not status.is_file() or "State:\tZ" in status.read_text():
            break
        time.sleep(0.05)
    assert not status.is_file() or "State:\tZ" in status.read_text()


class _PairwiseNet(torch.nn.Module):
    """A network whose cost is not linear in the batch: every item against every other one."""

    def forward(self, x):
        flat = x.flatten(1)
        return flat @ flat.T


class _DataDependentNet(torch.nn.Module):
    """A network that reads a value out of its input, which the meta device cannot give."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(5, 3)

    def forward(self, x):
        return self.linear(x) * float(x.abs().max().item() > 0)


def test_call_flops_are_counted_per_item_where_that_is_exact(monkeypatch):
    import strokeseg.tools.bench.flops as bench_module

    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Conv2d(4, 2, 1)).eval()
    calls = [NetworkCall((torch.zeros(n, 2, 12, 10),), {}, n) for n in (8, 8, 6, 1)]
    calls.append(NetworkCall((torch.zeros(3, 2, 6, 6),), {}, 3))  # other per-item shape, its own group
    expected = 23 * count_flops(net, torch.zeros(1, 2, 12, 10)) + 3 * count_flops(net, torch.zeros(1, 2, 6, 6))
    assert count_call_flops(net, calls) == (expected, "meta")  # a meta copy counts exactly what the CPU runs
    counted = []
    monkeypatch.setattr(
        bench_module, "count_flops", lambda fn, *a, **k: counted.append(a[0].shape[0]) or count_flops(fn, *a, **k)
    )
    count_call_flops(net, calls)
    monkeypatch.undo()
    assert sorted(counted) == [1, 1, 2, 2]  # one and two items per group, never the 8-item batches
    pairwise = [NetworkCall((torch.ones(n, 5),), {}, n) for n in (4, 4, 3)]
    exact = 2 * count_flops(_PairwiseNet(), torch.ones(4, 5)) + count_flops(_PairwiseNet(), torch.ones(3, 5))
    assert count_call_flops(_PairwiseNet(), pairwise) == (exact, "meta")  # not linear: each batch size as called
    no_meta = [NetworkCall((torch.ones(n, 5),), {}, n) for n in (4, 2)]  # .item() needs the numbers
    assert count_call_flops(_DataDependentNet(), no_meta) == (
        6 * count_flops(_DataDependentNet(), torch.ones(1, 5)),
        "cpu",
    )


def _check_common(data: dict, out: Path) -> None:
    assert data["schema"] == "strokeseg-bench/1" and data["quick"] is True
    machine = data["machine"]
    assert machine["usable_cores"] >= 1 and machine["torch_threads"] == machine["usable_cores"]
    assert isinstance(machine["bf16_supported"], bool) and machine["bf16_reason"]
    assert machine["cpu_model"] and machine["aten_cpu_capability"]
    assert "ATen CPU capability" in out.with_suffix(".md").read_text()
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
        **_machine_results(),
        "evaluate": {"error": "DataError: boom"},
        "bundles": {"b": {"error": "BundleError: failed to run"}},
        "ratios": [judge("P4", 1.5, "b")],
    }
    text = render_markdown(results)
    assert "Failed: DataError: boom" in text and "Failed: BundleError: failed to run" in text
    assert "| P4 | b |  | yes | 1.5 | <= 1.15 | **not met** |" in text


class TwoOutputNet(torch.nn.Module):
    """A 3-D conv with a second (deep-supervision-like) output and a keyword argument."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, scale: float = 1.0):
        y = self.conv(x) * scale
        return y, y[:, :1]


def test_call_recorder_and_useful_flops_of_overlapping_windows():
    from monai.inferers import SlidingWindowInferer

    net = TwoOutputNet().eval()
    x = torch.randn(1, 2, 24, 24, 12)
    inferer = SlidingWindowInferer(roi_size=(16, 16, 12), sw_batch_size=2, overlap=0.5)
    with CallRecorder(net) as recorder, torch.inference_mode():
        pred = inferer(x, lambda t: net(t, scale=2.0)[0])
    calls = recorder.calls
    n_windows = sum(c.items for c in calls)
    assert n_windows >= 2 and all(c.args[0].shape[1:] == (2, 16, 16, 12) for c in calls)
    assert calls[0].kwargs == {"scale": 2.0} and calls[0].output.shape[1:] == (2, 16, 16, 12)
    assert calls[0].output_voxels == calls[0].items * 16 * 16 * 12
    flops, _ = count_call_flops(net, calls)
    assert flops == n_windows * count_flops(net, torch.zeros(1, 2, 16, 16, 12))  # FLOPs per window × windows
    fraction = useful_fraction(calls, pred.shape[0] * 24 * 24 * 12)
    assert fraction == pytest.approx(24 * 24 * 12 / (n_windows * 16 * 16 * 12)) and fraction < 1  # overlap out
    assert useful_fraction(calls, 10**9) == 1.0  # never more than what was computed
    net(torch.zeros(1, 2, 4, 4, 4))  # the hooks are gone after the block
    assert sum(c.items for c in recorder.calls) == n_windows


def test_slice_calls_are_exactly_the_brain_slices():
    from strokeseg.inferers.slices import BatchedSliceInferer

    net = torch.nn.Conv2d(1, 2, 3, padding=1).eval()
    image = torch.zeros(1, 1, 6, 7, 5)
    image[0, 0, 1, 2, 1] = 1.0
    image[0, 0, 5, 6, 3] = -2.0
    with CallRecorder(net) as recorder, torch.inference_mode():
        BatchedSliceInferer(slice_batch_size=8, spatial_divisor=4)(image, net)
    (call,) = recorder.calls
    assert call.items == 2 and call.args[0].shape == (2, 1, 8, 8)  # 2 brain slices, padded to 8 × 8
    assert call.args[0][0, 0, 1, 2] == 1.0 and call.args[0][1, 0, 5, 6] == -2.0


class _Parser:
    """The part of a ConfigParser that :func:`default_variant` reads."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def get_parsed_content(self, key: str):
        return self.config[key]


def test_variant_knobs_overrides_and_default():
    edd_like = {"bf16": False, "channels_last": True}
    knobs = variant_knobs(edd_like)
    assert knobs == {"precision": "bf16", "channels_last": "channels_last"}
    assert variant_overrides(knobs, "bf16_channels_last") == {"bf16": True, "channels_last": True}
    assert default_variant(_Parser(edd_like), knobs, bf16_supported=True) == "fp32_channels_last"
    auto = {"inference_precision": "auto"}
    auto_knobs = variant_knobs(auto)
    assert variant_overrides(auto_knobs, "bf16") == {"inference_precision": "bf16"}
    # auto: bf16 where the CPU has it (mocked both ways), fp32 elsewhere
    assert default_variant(_Parser(auto), auto_knobs, bf16_supported=True) == "bf16"
    assert default_variant(_Parser(auto), auto_knobs, bf16_supported=False) == "fp32"
    assert default_variant(_Parser({"bf16": "false", "channels_last": "0"}), knobs, True) == "fp32"
    bare = variant_knobs({})
    assert variant_overrides(bare, "fp32") == {}
    with pytest.raises(BundleError, match="channels_last knob"):
        variant_overrides(bare, "fp32_channels_last")
    chosen, skipped = choose_variants(knobs, bf16_supported=False, bf16_reason="no flag", quick=False)
    assert chosen == ["fp32", "fp32_channels_last"] and skipped["bf16"] == "no flag"
    chosen, _ = choose_variants(knobs, bf16_supported=True, bf16_reason="", quick=False)
    assert chosen == ["fp32", "fp32_channels_last", "bf16", "bf16_channels_last"]
    chosen, skipped = choose_variants(knobs, True, "", quick=True, default="fp32_channels_last")
    assert chosen == ["fp32_channels_last"] and skipped["fp32"].startswith("quick")
    chosen, skipped = choose_variants(bare, True, "", quick=False)
    assert chosen == ["fp32"] and "no channels_last knob" in skipped["fp32_channels_last"]


def test_edd_hook_counts_candidates_and_scales_to_a_scan():
    from strokeseg.tools.bench.calls import NetworkCall

    logits = torch.full((3, 2, 16, 16), -5.0)
    logits[:, 0] = 5.0
    logits[0, 1, 2:4, 2:4] = 10.0  # a 4-pixel candidate in slice 0
    logits[2, 1, 8:10, 8:11] = 10.0  # a 6-pixel candidate in slice 2
    calls = [NetworkCall((), {}, 2, output=logits[:2]), NetworkCall((), {}, 1, output=logits[2:])]
    record = {
        "weights": "untrained: fresh",
        "case": {"items": 40},
        "variants": {"fp32": {"end_to_end_median_s": 4.0}, "fp32_channels_last": {"end_to_end_median_s": 2.0}},
    }
    extra = edd_hook.bench_hook({"record": record, "calls": calls})
    assert extra["muscle_candidates"] == 2
    assert extra["variants"]["fp32"]["end_to_end_seconds_per_20_slice_scan"] == 2.0  # 4 s / 40 slices × 20
    assert extra["variants"]["fp32_channels_last"]["end_to_end_seconds_per_20_slice_scan"] == 1.0
    assert extra["anchor"]["threshold"] == edd_hook.PAPER_SECONDS_PER_SCAN
    assert "MUSCLE" in extra["weights"] and extra["notes"] == ["2 small EDD candidates for MUSCLE."]


def test_run_bench_failing_bundle_gets_an_error_row(tmp_path: Path):
    bundles = tmp_path / "bundles"
    _bundle_folder(bundles, "broken_bundle")  # metadata without a 'strokeseg' description
    out = tmp_path / "bench.json"
    with pytest.raises(BundleError, match="broken_bundle failed"):
        run_bench(bundles="broken_bundle", out=out, quick=True, bundles_dir=bundles)
    data = json.loads(out.read_text())
    assert "description" in data["bundles"]["broken_bundle"]["error"]
    assert [r["id"] for r in data["ratios"]] == ["error"]
    assert "**failed**" in out.with_suffix(".md").read_text()


def test_generic_bench_of_a_3d_fixture_bundle(tmp_path: Path):
    """The MONAI-UNet fixture bundle (3-D, sliding windows with overlap, two input channels), no hook."""
    fixture = Path(__file__).resolve().parents[2] / "bundles" / "fixtures" / "tiny_bundle"
    peak = {"conv2d_fp32": {"gflops": 50.0}, "conv3d_fp32": {"gflops": 40.0}}
    machine = {"bf16_supported": False, "bf16_reason": "mocked"}
    start = time.perf_counter()
    record = bench_bundle(fixture, tmp_path / "work", peak, machine, quick=True, variants="default")
    wall = time.perf_counter() - start
    case, net = record["case"], record["network"]
    assert case["item_unit"] == "window" and case["items"] >= case["network_calls"] >= 1
    assert case["preprocessed_shape"][0] == 2 and net["spatial_dims"] == 3
    assert 0 < net["useful_fraction"] < 1 and net["flops_useful"] < net["flops_computed"]  # overlap 0.25
    assert record["peak_key"] == "conv3d_fp32" and record["peak_gflops_fp32"] == 40.0
    (name, fp32), *_ = record["variants"].items()
    assert name == "fp32" and fp32["default"] is True and record["default_variant"] == "fp32"
    assert fp32["p1"] == pytest.approx(fp32["effective_gflops"] / 40.0, rel=0.05, abs=6e-4)  # both rounded
    assert fp32["p2"] == pytest.approx(fp32["end_to_end_median_s"] / fp32["bare_forward_median_s"], rel=0.01)
    assert fp32["written"] == [f"{case['name']}/{case['name']}_seg.nii.gz"]
    assert len(fp32["end_to_end_s"]) == 1 and fp32["end_to_end_first_s"] > 0  # an untimed warm run first
    assert "no channels_last knob" in record["skipped_variants"]["fp32_channels_last"]
    memory = record["memory"]  # P5 from the same child as the end-to-end times: no extra inference for it
    assert memory["variant"] == "fp32" and memory["three_d"] and memory["timed_runs"] == 1
    assert memory["peak_rss_gib"] >= memory["peak_rss_first_run_gib"] > 0.05 and memory["returncode"] == 0
    assert fp32["end_to_end_child"]["seconds"] > fp32["end_to_end_first_s"] + fp32["end_to_end_s"][0]
    assert record["training"]["p4"] > 0 and record["training"]["batch_image_shape"][0] >= 1
    stages = record["stage_seconds"]  # where the bench's own time went, step by step
    assert list(stages) == ["data_and_copy", "evaluator", "flop_count", "variant_fp32", "training"]
    timed = fp32["end_to_end_first_s"] + sum(fp32["bare_forward_s"]) + sum(fp32["end_to_end_s"])
    assert stages["variant_fp32"] >= timed - 0.02  # each step's laps hold that step's own measurements
    assert 0 < fp32["end_to_end_first_recording_s"] < fp32["end_to_end_first_s"] + 1.0  # 100+ calls written
    training = record["training"]
    assert stages["training"] >= sum(training["pipeline_iteration_s"] + training["in_memory_iteration_s"]) - 0.02
    assert sum(stages.values()) <= wall + 0.05 and min(stages.values()) >= 0
    text = render_markdown({**_machine_results(), "bundles": {"tiny": {**record, "section_seconds": 9.5}}})
    assert f"Where this section's 9.5 s went: data and copy {stages['data_and_copy']:g} s, evaluator" in text
    # the calls recorded in the child's first run are the ones the evaluator makes in this process
    from strokeseg.runtime.description import describe_bundle
    from strokeseg.tools.bench.agreement import record_inference
    from strokeseg.tools.bench.calls import load_calls
    from strokeseg.tools.bench.workspace import inference_parser

    work = tmp_path / "work"
    settings = {**describe_bundle(fixture).smoke_overrides, "bundle_root": str(work / "tiny_bundle")}
    parser = inference_parser(work / "tiny_bundle", {**settings, "dataset_dir": str(work / "data")})
    here = record_inference(parser, describe_bundle(fixture), work / "tiny_bundle")
    child = load_calls(work / "calls")
    assert [c.signature() for c in child] == [c.signature() for c in here["calls"]]
    assert [c.items for c in child] == [c.items for c in here["calls"]] and len(child) == case["network_calls"]
    for a, b in zip(child, here["calls"], strict=True):
        torch.testing.assert_close(a.args[0], b.args[0])
        torch.testing.assert_close(a.output, b.output, rtol=1e-4, atol=1e-5)
    assert count_call_flops(here["network"], here["calls"])[0] == net["flops_computed"]
    rows = collect_ratios({"bundles": {"tiny": record}})
    assert {r["id"] for r in rows} == {"P1", "P2", "P4", "P5"} and all(r["default"] for r in rows)


def test_bench_without_a_measurable_variant_records_the_calls_in_its_p5_child(tmp_path: Path):
    """No variant can run (the fixture has no channels_last knob): one run of the defaults records the calls."""
    fixture = Path(__file__).resolve().parents[2] / "bundles" / "fixtures" / "tiny_bundle"
    peak = {"conv2d_fp32": {"gflops": 50.0}, "conv3d_fp32": {"gflops": 40.0}}
    machine = {"bf16_supported": False, "bf16_reason": "mocked"}
    record = bench_bundle(
        fixture, tmp_path / "work", peak, machine, quick=True, variants="fp32_channels_last", measure_training=False
    )
    assert record["variants"] == {} and "no channels_last knob" in record["skipped_variants"]["fp32_channels_last"]
    assert record["network"]["flops_computed"] > 0 and record["case"]["network_calls"] >= 1
    memory = record["memory"]
    assert memory["variant"] == "fp32 (bundle defaults)" and memory["timed_runs"] == 0 and memory["returncode"] == 0
    assert list(record["stage_seconds"]) == ["data_and_copy", "evaluator", "recording_run", "flop_count"]


def test_quick_config_measures_the_quick_networks(tmp_path: Path):
    """``quick_config`` applies the bundle's ``configs/quick.json`` (the CPU-sized model) to what is measured."""
    import monai

    bundle = tmp_path / "tiny_bundle"
    shutil.copytree(Path(__file__).resolve().parents[2] / "bundles" / "fixtures" / "tiny_bundle", bundle)
    peak = {"conv2d_fp32": {"gflops": 50.0}, "conv3d_fp32": {"gflops": 40.0}}
    machine = {"bf16_supported": False, "bf16_reason": "mocked"}
    with pytest.raises(BundleError, match="quick.json does not exist"):
        bench_bundle(bundle, tmp_path / "w0", peak, machine, quick=True, quick_config=True)
    (bundle / "configs" / "quick.json").write_text(json.dumps({"network_def#channels": [2, 4]}))
    record = bench_bundle(
        bundle,
        tmp_path / "w1",
        peak,
        machine,
        quick=True,
        quick_config=True,
        measure_memory=False,
        measure_training=False,
    )
    small = monai.networks.nets.UNet(3, 2, 2, channels=(2, 4), strides=(2,), num_res_units=0, norm="batch")
    assert record["network"]["parameters"] == sum(p.numel() for p in small.parameters())
    assert record["config"] == "inference.json + quick.json"
    assert "Configuration: inference.json + quick.json." in render_markdown(
        {**_machine_results(), "bundles": {"tiny": record}, "ratios": collect_ratios({"bundles": {"tiny": record}})}
    )


@pytest.mark.slow
def test_run_bench_edd_muscle_quick(tmp_path: Path):
    options = {"overrides": {"features": [4, 8, 8], "use_muscle": False}}
    out = run_bench(bundles="stroke_dwi_edd_muscle", out=tmp_path / "bench.json", quick=True, bundle_options=options)
    data = json.loads(out.read_text())
    record = data["bundles"]["stroke_dwi_edd_muscle"]
    (variant,) = record["variants"]
    numbers = record["variants"][variant]
    assert variant == record["default_variant"] == "fp32_channels_last" and numbers["default"] is True
    assert record["network"]["flops_per_item"] > 0 and record["case"]["items"] > 0
    assert record["case"]["item_unit"] == "slice" and record["network"]["useful_fraction"] == 1.0
    assert numbers["bare_forward_median_s"] > 0 and numbers["end_to_end_median_s"] > 0 and numbers["p1"] > 0
    assert numbers["end_to_end_seconds_per_20_slice_scan"] > 0 and record["muscle_candidates"] >= 0
    assert record["training"]["p4"] > 0 and record["memory"]["peak_rss_gib"] > 0
    assert {r["id"] for r in data["ratios"]} >= {"P1", "P2", "P4", "P5", "anchor"}


def test_bench_cli_takes_checkpoints_for_one_bundle_only(tmp_path: Path):
    from strokeseg.tools.cli import bench

    with pytest.raises(BundleError, match="exactly one bundle"):
        bench(bundles="stroke_ctp_msdcnn,stroke_ctp_dwi_gan", out=str(tmp_path / "b.json"), ckpt_dir=str(tmp_path))
    assert not (tmp_path / "b.json").exists()


def test_bench_cli_repeats_and_variants_reach_every_bundle(tmp_path: Path, monkeypatch):
    import strokeseg.tools.bench as bench_module
    from strokeseg.knobs import KnobError
    from strokeseg.tools.cli import bench

    seen = {}
    monkeypatch.setattr(bench_module, "run_bench", lambda **kw: seen.update(kw) or tmp_path / "b.json")
    bench(bundles="stroke_ctp_msdcnn", out=str(tmp_path / "b.json"), repeats="1", variants="default")
    assert seen["bundle_options"] == {"repeats": 1, "variants": "default"}
    bench(bundles="stroke_ctp_msdcnn", out=str(tmp_path / "b.json"), variants=("fp32", "bf16"))
    assert seen["bundle_options"] == {"variants": "fp32,bf16"}
    bench(bundles="stroke_ctp_msdcnn", out=str(tmp_path / "b.json"))
    assert seen["bundle_options"] is None  # all variants, default repeats
    bench(bundles="stroke_mri_uresnet_focal", out=str(tmp_path / "b.json"), train_precision="bf16")
    assert seen["bundle_options"] == {"overrides": {"train_precision": "bf16"}}  # config ids reach the bundles
    with pytest.raises(KnobError, match="repeats"):
        bench(bundles="stroke_ctp_msdcnn", out=str(tmp_path / "b.json"), repeats=0)


@pytest.mark.parametrize(("threshold", "iterations"), [(30.0, 4), (0.0, 3)])
def test_p4_warms_up_twice_unless_an_iteration_is_long(tmp_path: Path, monkeypatch, threshold, iterations):
    """Two warm-up iterations, then one from the pipeline and one in memory (quick: one repeat each)."""
    from monai.engines import SupervisedTrainer

    import strokeseg.tools.bench.training as bench_module

    calls = []
    real = SupervisedTrainer._iteration
    monkeypatch.setattr(
        SupervisedTrainer, "_iteration", lambda self, engine, batch: calls.append(1) or real(self, engine, batch)
    )
    monkeypatch.setattr(bench_module, "SECOND_WARM_UP_BELOW_S", threshold)
    fixture = Path(__file__).resolve().parents[2] / "bundles" / "fixtures" / "tiny_bundle"
    peak = {"conv2d_fp32": {"gflops": 50.0}, "conv3d_fp32": {"gflops": 40.0}}
    machine = {"bf16_supported": False, "bf16_reason": "mocked"}
    record = bench_bundle(fixture, tmp_path / "work", peak, machine, quick=True, variants="default")
    assert len(record["training"]["pipeline_iteration_s"]) == 1 and len(calls) == iterations


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_flag_shows_help_and_starts_nothing(flag, monkeypatch, capsys, tmp_path: Path):
    """``strokeseg bench --help`` once started a whole bench: every option has a default and ``**overrides``
    took the flag as a config id."""
    import strokeseg.tools.bench as bench_module
    from strokeseg.tools.cli import main

    monkeypatch.setattr(bench_module, "run_bench", lambda **kw: pytest.fail(f"the bench ran: {kw}"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["bench", flag])
    shown = capsys.readouterr()  # fire writes help to stderr where stdout is no terminal
    assert stop.value.code == 0 and "strokeseg bench" in shown.out + shown.err and not list(tmp_path.iterdir())
    with pytest.raises(SystemExit):
        main(["bench", "--repeats", "1", "--", "--help"])  # fire alone would run the bench, then show help
    shown = capsys.readouterr()
    assert "--variants" in shown.out + shown.err


def test_end_to_end_child_alternates_with_the_bench_and_names_what_it_did_not_write(tmp_path: Path):
    from strokeseg.runtime.description import describe_bundle
    from strokeseg.tools.bench.endtoend import end_to_end_child
    from strokeseg.tools.bench.workspace import bench_copy, case_of, inference_parser

    fixture = Path(__file__).resolve().parents[2] / "bundles" / "fixtures" / "tiny_bundle"
    description = describe_bundle(fixture)
    smoke = dict(description.smoke_overrides)
    data_root, bundle, _ = bench_copy(fixture, tmp_path / "work", description.layout, description.name, 0, None, smoke)
    out, log = tmp_path / "out", tmp_path / "logs" / "e2e.log"
    parser = inference_parser(bundle, {**smoke, "bundle_root": str(bundle), "dataset_dir": str(data_root)})
    case = case_of(parser.get_parsed_content("dataset")[0])  # the case inference writes, as the bench finds it
    expected = [out / rel for rel in description.outputs_for(case)]
    between = []  # wall clock of each bare-forward slot: it must fall between the child's runs
    slot = lambda i: between.append((i, time.time(), time.sleep(0.2), time.time()))  # noqa: E731
    child = end_to_end_child(bundle, data_root, out, smoke, expected, 2, log, "tiny (fp32)", before_each_run=slot)
    assert [i for i, *_ in between] == [0, 1] and len(child["end_to_end_s"]) == 2 and child["first_s"] > 0
    (run0_start, run0_end), (run1_start, _) = child["run_wall_clock"]
    assert between[0][3] <= run0_start and run0_end <= between[1][1] and between[1][3] <= run1_start
    assert child["returncode"] == 0 and child["peak_rss_gib"] >= child["peak_rss_first_run_gib"] > 0
    assert len(child["run_minor_page_faults"]) == 2 and min(child["run_minor_page_faults"]) > 0
    assert all(p.is_file() for p in expected) and not log.with_suffix(".control").exists()
    with pytest.raises(BundleError, match="tiny .fp32. did not write nowhere/missing.nii.gz") as failed:
        missing = [out / "nowhere" / "missing.nii.gz"]  # its first run fails: the bench stops waiting for it
        end_to_end_child(bundle, data_root, out, smoke, missing, 2, log, "tiny (fp32)", before_each_run=slot)
    assert [i for i, *_ in between] == [0, 1]  # no bare-forward slot for a child that never got ready
    assert str(log) in str(failed.value) and log.is_file() and not log.with_suffix(".json").exists()
