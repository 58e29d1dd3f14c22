"""Benchmark of the ``stroke_dwi_edd_muscle`` bundle: network compute, end-to-end inference, training step, memory.

Everything runs on one synthetic ISLES 2022 case through the bundle's own configs (``inference.json``,
``train.json``) in a temporary copy of the bundle, so the numbers describe what a user's
``python -m monai.bundle run`` does, not a re-implementation of it:

- network compute: FLOPs of the EDD Net over the slices :class:`~strokeseg.transforms.slices.BatchedSliceInferer`
  keeps (the brain slices of the brain's bounding box), and the bare forward over exactly those slices;
- end-to-end: ``ConfigWorkflow(inference.json).run()`` (load, preprocess, EDD, MUSCLE, invert, write);
- P4: one training iteration drawn from ``train#dataloader`` vs the same iteration on a batch already in memory;
- P5: peak resident memory of ``python -m monai.bundle run`` inference in a child process.

Without trained weights the networks are freshly initialised (seed 0): compute and memory do not depend on the
weights, but the number of small EDD candidates that MUSCLE classifies does, and with it a (small) part of the
end-to-end time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from strokeseg.bench.peak import count_flops
from strokeseg.bench.timing import median, time_call
from strokeseg.errors import BundleError

__all__ = [
    "BUNDLE_NAME",
    "VARIANTS",
    "prepare_bundle_copy",
    "brain_slice_batch",
    "bare_forward",
    "bench_edd_muscle",
    "child_peak_rss",
]

BUNDLE_NAME = "stroke_dwi_edd_muscle"
#: inference variants: name → (channels_last, bf16 autocast); the bf16 ones run only where the CPU has bf16
VARIANTS = {
    "fp32": (False, False),
    "fp32_channels_last": (True, False),
    "bf16": (False, True),
    "bf16_channels_last": (True, True),
}
# seed 000, §5.5: 0.90 s per DWI scan on a Tesla K80 (0.63 s of it the EDD Net), scans of about 20 slices.
PAPER_SECONDS_PER_SCAN = 0.90
PAPER_EDD_SECONDS_PER_SCAN = 0.63
PAPER_SLICES_PER_SCAN = 20
UNTRAINED_NOTE = (
    "freshly initialised weights (seed 0): FLOPs, forward time and memory do not depend on the weights, but the "
    "number of small EDD candidates that MUSCLE classifies does, so end-to-end times with trained weights may differ"
)


def _configs(bundle: Path) -> Path:
    return bundle / "configs"


def prepare_bundle_copy(
    bundle_dir: str | Path, dest: str | Path, ckpt_dir: str | Path | None = None, seed: int = 0
) -> str:
    """Copy the bundle (without weights or outputs) to ``dest`` and put weights into ``dest/models``.

    Args:
        bundle_dir: the bundle folder.
        dest: where the copy goes (must not exist).
        ckpt_dir: folder with trained ``model.pt`` and ``muscle.pt``; ``None`` writes freshly initialised networks
            built from ``inference.json`` under ``torch.manual_seed(seed)``.
        seed: seed of the fresh initialisation.

    Returns:
        A description of the weights used.

    Raises:
        BundleError: the bundle has no ``configs/inference.json``, or ``ckpt_dir`` lacks a checkpoint.
    """
    from monai.bundle import ConfigParser

    bundle_dir, dest = Path(bundle_dir), Path(dest)
    if not (_configs(bundle_dir) / "inference.json").is_file():
        raise BundleError(f"{bundle_dir} has no configs/inference.json; is it a bundle folder?")
    shutil.copytree(bundle_dir, dest, ignore=shutil.ignore_patterns("*.pt", "*.ts", "eval", "data"))
    models = dest / "models"
    models.mkdir(exist_ok=True)
    if ckpt_dir is not None:
        for name in ("model.pt", "muscle.pt"):
            source = Path(ckpt_dir) / name
            if not source.is_file():
                raise BundleError(f"checkpoint folder {ckpt_dir} has no {name} (need model.pt and muscle.pt).")
            shutil.copy2(source, models / name)
        return f"trained weights from {ckpt_dir}"
    parser = ConfigParser()
    parser.read_config(str(_configs(dest) / "inference.json"))
    parser["bundle_root"] = str(dest)
    torch.manual_seed(seed)
    torch.save(parser.get_parsed_content("network_def").state_dict(), models / "model.pt")
    torch.save(parser.get_parsed_content("muscle_network_def").state_dict(), models / "muscle.pt")
    return f"untrained: {UNTRAINED_NOTE}"


def brain_slice_batch(image: torch.Tensor, spatial_divisor: int = 1) -> torch.Tensor:
    """The network input of one case exactly as :class:`BatchedSliceInferer` builds it.

    Args:
        image: ``(C, H, W, D)`` preprocessed case.
        spatial_divisor: pad H and W with zeros to a multiple of this (the inferer's padding).

    Returns:
        ``(N, C, H', W')``: the axial slices holding a non-zero voxel, in slice order.
    """
    from strokeseg.transforms.slices import brain_slices, volume_to_slices

    source = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    slices = volume_to_slices(source[None])
    slices = slices[brain_slices(slices)]
    h, w = slices.shape[-2:]
    pad_h, pad_w = (-h) % spatial_divisor, (-w) % spatial_divisor
    return F.pad(slices, (0, pad_w, 0, pad_h)) if pad_h or pad_w else slices


def bare_forward(
    network: torch.nn.Module, slices: torch.Tensor, batch_size: int, channels_last: bool = False, bf16: bool = False
) -> torch.Tensor:
    """The network alone over ``slices`` in chunks of ``batch_size`` (eval, ``inference_mode``).

    The caller converts the network and input to channels-last beforehand (untimed), as the inferer does once.

    Returns:
        ``(N, C_out, H, W)`` float32 logits.
    """
    with torch.inference_mode(), torch.autocast(device_type=slices.device.type, dtype=torch.bfloat16, enabled=bf16):
        return torch.cat([network(chunk).float() for chunk in slices.split(batch_size)])


def _to_format(network: torch.nn.Module, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    network.to(memory_format=fmt)
    return x.contiguous(memory_format=fmt)


# A bare interpreter forks and execs the measured command, then reports that child's own ``ru_maxrss``. Forking
# the command straight from this (large) process would not do: the child's peak would start at the parent's
# resident size at fork time, which Linux keeps across ``exec``.
_RSS_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def child_peak_rss(args: list[str], log_file: Path, cwd: Path | None = None, timeout: float = 1800.0) -> dict:
    """Run ``args`` as a child process and return its own peak resident memory (``os.wait4`` rusage).

    The command is started by a bare launcher interpreter (see ``_RSS_LAUNCHER``), so its peak does not include
    this process's memory; Linux reports ``ru_maxrss`` in KiB.

    Returns:
        ``{"returncode", "seconds", "peak_rss_mib", "peak_rss_gib", "log"}``.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    rss_file = log_file.with_suffix(".maxrss")
    rss_file.unlink(missing_ok=True)
    start = time.perf_counter()
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _RSS_LAUNCHER, str(rss_file), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ},
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = proc.wait()
    rss_kib = float(rss_file.read_text()) if rss_file.is_file() else float("nan")
    rss_mib = rss_kib / 1024.0
    return {
        "returncode": returncode,
        "seconds": round(time.perf_counter() - start, 3),
        "peak_rss_mib": round(rss_mib, 1),
        "peak_rss_gib": round(rss_mib / 1024.0, 3),
        "log": str(log_file),
    }


def _inference_workflow(bundle: Path, dwi: str, out_dir: Path, overrides: dict[str, Any]):
    """The bundle's ``inference.json`` as an initialised ``monai.bundle.ConfigWorkflow`` on one DWI file."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(_configs(bundle) / "inference.json"),
        meta_file=str(_configs(bundle) / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(bundle),
        dataset_dir=dwi,
        output_dir=str(out_dir),
        **overrides,
    )
    workflow.initialize()
    return workflow


def _measure_variant(
    network: torch.nn.Module,
    slices: torch.Tensor,
    batch_size: int,
    variant: str,
    bundle: Path,
    dwi: str,
    out_dir: Path,
    repeats: int,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Bare forward and end-to-end inference of one variant, alternated ``repeats`` times.

    Alternating puts a drifting machine load on both sides of P2 alike. The bare forward gets one small untimed
    warm-up call; the end-to-end run gets none (a user's run pays its first-call costs too), which can only
    raise P2.

    Returns:
        ``(raw record, logits of the last bare forward (N, 2, H, W))``.

    Raises:
        BundleError: the inference wrote no prediction file.
    """
    channels_last, bf16 = VARIANTS[variant]
    x = _to_format(network, slices, channels_last)
    workflow = _inference_workflow(bundle, dwi, out_dir, {"inferer#channels_last": channels_last, "bf16": bf16})
    bare, end_to_end = [], []
    try:
        bare_forward(network, x[:2], batch_size, channels_last, bf16)
        for _ in range(repeats):
            elapsed, logits = time_call(lambda: bare_forward(network, x, batch_size, channels_last, bf16))
            bare.append(elapsed)
            end_to_end.append(time_call(workflow.run)[0])
    finally:
        workflow.finalize()
        _to_format(network, slices, False)
    written = sorted(p.name for p in out_dir.rglob("*.nii.gz"))
    if not written:
        raise BundleError(f"end-to-end inference of {bundle.name} ({variant}) wrote no prediction into {out_dir}.")
    record = {
        "channels_last": channels_last,
        "bf16": bf16,
        "bare_forward_s": [round(s, 3) for s in bare],
        "end_to_end_s": [round(s, 3) for s in end_to_end],
        "written": written,
    }
    return record, logits


def _training_step(bundle: Path, data_root: Path, repeats: int, samples_per_case: int | None, seed: int) -> dict:
    """P4: iteration from ``train#dataloader`` (``num_workers`` 0, ``cache_rate`` 1) vs on a batch in memory."""
    import monai
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(_configs(bundle) / "train.json"))
    parser.update(
        {
            "bundle_root": str(bundle),
            "dataset_dir": str(data_root),
            "num_workers": 0,
            "cache_rate": 1.0,
            "num_folds": 1,  # every synthetic training case in the training split
            "seed": seed,
        }
    )
    if samples_per_case is not None:
        parser["samples_per_case"] = samples_per_case
    monai.utils.set_determinism(seed=seed)
    device = parser.get_parsed_content("device")
    network = parser.get_parsed_content("network").train()
    loss_fn = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    cache_s, loader = time_call(lambda: parser.get_parsed_content("train#dataloader"))

    def iteration(batch: dict) -> float:
        image, label = batch["image"].to(device), batch["label"].to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(image), label)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    state = {"it": iter(loader)}

    def next_batch() -> dict:
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])

    fetch_s, prebuilt = time_call(next_batch)
    iteration(prebuilt)  # warm-up: allocator and oneDNN backward primitives
    pipeline, in_memory, data_only = [], [], []
    for _ in range(repeats):  # alternate, so drifting machine load hits both sides alike
        start = time.perf_counter()
        batch = next_batch()
        data_only.append(time.perf_counter() - start)
        iteration(batch)
        pipeline.append(time.perf_counter() - start)
        in_memory.append(time_call(lambda: iteration(prebuilt))[0])
    ratio = median(pipeline, 9) / median(in_memory, 9)
    return {
        "batch_image_shape": list(prebuilt["image"].shape),
        "train_batch_size": parser["train_batch_size"],
        "samples_per_case": parser["samples_per_case"],
        "cache_build_s": round(cache_s, 3),
        "first_fetch_s": round(fetch_s, 3),
        "pipeline_iteration_s": [round(s, 3) for s in pipeline],
        "in_memory_iteration_s": [round(s, 3) for s in in_memory],
        "data_fetch_s": [round(s, 3) for s in data_only],
        "pipeline_median_s": median(pipeline, 3),
        "in_memory_median_s": median(in_memory, 3),
        "p4": round(ratio, 3),
    }


def bench_edd_muscle(
    bundle_dir: str | Path,
    work_dir: str | Path,
    peak_gflops: float,
    bf16_supported: bool = False,
    bf16_reason: str = "",
    quick: bool = False,
    repeats: int | None = None,
    ckpt_dir: str | Path | None = None,
    seed: int = 0,
    measure_training: bool = True,
    measure_memory: bool = True,
) -> dict:
    """Measure the EDD + MUSCLE bundle on one synthetic ISLES 2022 test case (see the module docstring).

    Args:
        bundle_dir: the bundle folder (``bundles/stroke_dwi_edd_muscle``).
        work_dir: an empty scratch folder (data, bundle copy, outputs).
        peak_gflops: fp32 2-D convolution peak of this machine (the P1 denominator).
        bf16_supported: run the bf16 variants (only where the CPU has native bf16).
        bf16_reason: why bf16 is (not) measured, recorded with skipped variants.
        quick: fp32 only, one repeat, a small training batch.
        repeats: timed repeats per measurement (default 2, quick 1; training 3, quick 1).
        ckpt_dir: trained ``model.pt`` / ``muscle.pt`` instead of fresh weights.
        seed: seed of data, weights and sampling.
        measure_training: include P4.
        measure_memory: include P5 (a child ``python -m monai.bundle run``).

    Returns:
        The bundle's record of ``bench.json`` (raw numbers, per-variant P1 / P2, P4, P5).

    Raises:
        BundleError: the bundle cannot be copied or run, or its inference writes nothing.
    """
    from monai.bundle import ConfigParser

    from strokeseg.bundle.checkpoint import load_network_state
    from strokeseg.bundle.inputs import inference_cases
    from strokeseg.data.phantoms import synthesize_dataset
    from strokeseg.engines.muscle import find_small_candidates

    work = Path(work_dir)
    repeats = repeats if repeats is not None else (1 if quick else 2)
    train_repeats = 1 if quick else max(3, repeats)
    # Two training cases fill the bundle's training batch (train_batch_size 2); one test case is inferred.
    data_root = synthesize_dataset("isles2022", work / "data", cases=1 if quick else 2, test_cases=1, seed=seed)
    bundle = work / BUNDLE_NAME
    weights = prepare_bundle_copy(bundle_dir, bundle, ckpt_dir=ckpt_dir, seed=seed)
    dwi = inference_cases(data_root, "isles2022", "test", modalities=["dwi"])[0]["image"][0]

    parser = ConfigParser()
    parser.read_config(str(_configs(bundle) / "inference.json"))
    parser.update({"bundle_root": str(bundle), "dataset_dir": dwi, "output_dir": str(work / "unused")})
    preprocess_s, item = time_call(lambda: parser.get_parsed_content("dataset")[0])
    inferer = parser.get_parsed_content("inferer")
    slice_inferer = inferer.slice_inferer
    network = load_network_state(parser.get_parsed_content("network_def"), bundle / "models" / "model.pt").eval()
    image = item["image"]
    slices = brain_slice_batch(image, slice_inferer.spatial_divisor)
    n_slices, batch_size = int(slices.shape[0]), slice_inferer.slice_batch_size
    with torch.inference_mode():
        # convolutions only: FLOPs are linear in the batch for this fully convolutional network
        flops_per_slice = count_flops(network, slices[:1])
    flops = flops_per_slice * n_slices

    variants = ["fp32"] if quick else ["fp32", "fp32_channels_last"]
    skipped = {}
    if bf16_supported and not quick:
        variants += ["bf16", "bf16_channels_last"]
    elif not bf16_supported:
        skipped = {name: bf16_reason or "no native bf16" for name in VARIANTS if name.startswith("bf16")}

    records: dict[str, dict] = {}
    candidates = None
    for name in variants:
        raw, logits = _measure_variant(network, slices, batch_size, name, bundle, dwi, work / f"out_{name}", repeats)
        if candidates is None:  # small EDD components that MUSCLE classifies (first variant: fp32)
            prob = torch.softmax(logits, dim=1)[:, 1].permute(1, 2, 0).contiguous()  # (H, W, N)
            candidates = len(find_small_candidates(prob))
        bare_s, e2e_s = median(raw["bare_forward_s"], 9), median(raw["end_to_end_s"], 9)
        effective = flops / bare_s / 1e9
        records[name] = {
            **raw,
            "bare_forward_median_s": round(bare_s, 3),
            "effective_gflops": round(effective, 2),
            "p1": round(effective / peak_gflops, 3),
            "end_to_end_median_s": round(e2e_s, 3),
            "p2": round(e2e_s / bare_s, 3),
            "bare_seconds_per_slice": round(bare_s / n_slices, 4),
            "end_to_end_seconds_per_slice": round(e2e_s / n_slices, 4),
            "end_to_end_seconds_per_20_slice_scan": round(e2e_s / n_slices * PAPER_SLICES_PER_SCAN, 3),
        }

    record: dict[str, Any] = {
        "bundle": BUNDLE_NAME,
        "weights": weights,
        "case": {
            "dwi": Path(dwi).name,
            "preprocessed_shape": list(image.shape),
            "preprocess_s": round(preprocess_s, 3),
            "slices_total": int(image.shape[-1]),
            "slices_kept": n_slices,
            "slice_shape": list(slices.shape[-2:]),
            "slice_batch_size": batch_size,
        },
        "network": {
            "parameters": sum(p.numel() for p in network.parameters()),
            "flops_per_slice": flops_per_slice,
            "gflop_total": round(flops / 1e9, 2),
        },
        "muscle_candidates": candidates,
        "peak_gflops_fp32": peak_gflops,
        "variants": records,
        "skipped_variants": skipped,
        "anchor": {
            "paper_seconds_per_scan_k80": PAPER_SECONDS_PER_SCAN,
            "paper_edd_seconds_per_scan_k80": PAPER_EDD_SECONDS_PER_SCAN,
            "slices_per_scan": PAPER_SLICES_PER_SCAN,
            "aim_seconds_per_scan": PAPER_SECONDS_PER_SCAN,
        },
    }
    if measure_training:
        record["training"] = _training_step(bundle, data_root, train_repeats, 4 if quick else None, seed)
    if measure_memory:
        args = [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(_configs(bundle) / "inference.json"),
            "--meta_file",
            str(_configs(bundle) / "metadata.json"),
            "--bundle_root",
            str(bundle),
            "--dataset_dir",
            dwi,
            "--output_dir",
            str(work / "out_rss"),
        ]
        memory = child_peak_rss(args, work / "logs" / "inference_rss.log", cwd=bundle)
        if memory["returncode"] != 0:
            tail = Path(memory["log"]).read_text(errors="replace").splitlines()[-20:]
            raise BundleError(f"python -m monai.bundle run inference failed for {BUNDLE_NAME}:\n" + "\n".join(tail))
        record["memory"] = memory
    return record
