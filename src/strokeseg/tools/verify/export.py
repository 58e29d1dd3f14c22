"""Check 5: ``ckpt_export`` of every network the bundle exports, reloaded where ``strokeseg`` is not importable.

Each network of the bundle's description is exported with MONAI's ``ckpt_export --net_id <id>`` from a freshly
initialised checkpoint, loaded with ``torch.jit.load`` in a fresh process in which ``import strokeseg`` fails,
and compared with the eager network within :data:`EXPORT_TOLERANCE` on an input of at least
:data:`EXPORT_MIN_SIZE` pixels per spatial dimension (so the deeper layers see more than one pixel).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from strokeseg.errors import BundleError
from strokeseg.runtime.description import ExportedNetwork
from strokeseg.tools.runner import BundleRun, child_env, override_args, run_monai_bundle
from strokeseg.tools.verify.common import (
    EXPORT_TIMEOUT_S,
    EXPORT_TOLERANCE,
    TORCHSCRIPT_RUNNER,
    _Context,
    _load_json,
)
from strokeseg.tools.verify.netio import EXPORT_MIN_SIZE, _input_shape


def _flat_tensors(value: Any) -> list:
    """The tensors of a network output (a tensor, or nested tuples/lists/dicts of them) in a fixed order."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in _flat_tensors(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _flat_tensors(item)]
    raise BundleError(f"network output of type {type(value).__name__} is not a tensor or a collection of tensors")


def _max_abs_difference(eager: Any, scripted: Any) -> float:
    """Largest absolute difference between two network outputs of the same structure."""
    a, b = _flat_tensors(eager), _flat_tensors(scripted)
    if len(a) != len(b):
        raise BundleError(f"eager network returns {len(a)} tensor(s), the TorchScript {len(b)}")
    worst = 0.0
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.shape != y.shape:
            raise BundleError(f"output {i}: eager shape {tuple(x.shape)} != TorchScript shape {tuple(y.shape)}")
        if x.numel():
            worst = max(worst, float((x.float() - y.float()).abs().max()))
    return worst


def _overrides(ctx: _Context) -> dict[str, Any]:
    """Top-level ids check 5 builds the networks with: the description's ``smoke_overrides`` or nothing."""
    if not ctx.small_export or ctx.description is None:
        return {}
    return dict(ctx.description.smoke_overrides)


def _export_args(ctx: _Context, net_id: str, ts_file: Path, ckpt_file: Path, use_trace: bool) -> list[str]:
    args = [
        net_id,
        "--filepath",
        str(ts_file),
        "--ckpt_file",
        str(ckpt_file),
        "--meta_file",
        str(ctx.meta),
        "--config_file",
        str(ctx.inference),
        "--bundle_root",
        str(ctx.bundle),
    ]
    if use_trace:
        # tracing needs an input; MONAI builds it from the metadata for network_def only
        args += ["--use_trace", "True"]
    return args + override_args(_overrides(ctx))


def _run_torchscript(ts_file: Path, input_file: Path, output_file: Path, cwd: Path) -> BundleRun:
    """Load and run ``ts_file`` on ``input_file`` in a fresh process where ``strokeseg`` is not importable."""
    import subprocess
    import time

    runner = cwd / "run_torchscript.py"
    runner.write_text(TORCHSCRIPT_RUNNER)
    command = [sys.executable, str(runner), str(ts_file), str(input_file), str(output_file)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command,
            cwd=cwd,
            env=child_env(),
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=EXPORT_TIMEOUT_S,
        )
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired:
        code, out, err = None, "", ""
    log = cwd / f"{ts_file.stem}_torchscript.log"
    log.write_text(f"$ {' '.join(command)}\n# exit code: {code}\n--- stdout\n{out}\n--- stderr\n{err}")
    return BundleRun("torch.jit.load (strokeseg blocked)", code, out, err, time.perf_counter() - start, log)


def _network_input_shape(ctx: _Context, network: ExportedNetwork, meta: dict) -> tuple[int, ...]:
    if network.input is None:
        return _input_shape(meta, min_size=EXPORT_MIN_SIZE)
    return _input_shape({"network_data_format": {"inputs": {"image": network.input}}}, min_size=EXPORT_MIN_SIZE)


def export_network(ctx: _Context, network: ExportedNetwork, work: Path) -> str:
    """Export, reload and compare one network; return a one-line summary.

    Raises:
        BundleError: the export fails, does not load without ``strokeseg`` or differs from the eager network.
    """
    import torch
    from monai.bundle import ConfigParser

    meta = _load_json(ctx.meta, "configs/metadata.json")
    shape = _network_input_shape(ctx, network, meta)
    parser = ConfigParser()
    parser.read_config(str(ctx.inference))
    parser.read_meta(str(ctx.meta))
    parser["bundle_root"] = str(ctx.bundle)
    for key, value in _overrides(ctx).items():
        parser[key] = value
    if network.id not in parser:
        raise BundleError(f"configs/inference.json has no id {network.id!r}, which the description exports")
    module = parser.get_parsed_content(network.id)
    if not isinstance(module, torch.nn.Module):
        raise BundleError(f"configs/inference.json: {network.id} is a {type(module).__name__}, not a torch.nn.Module")
    ckpt_file, ts_file = work / f"{network.id}.pt", work / f"{network.id}.ts"
    torch.save(module.state_dict(), ckpt_file)

    export = run_monai_bundle(
        "ckpt_export",
        _export_args(ctx, network.id, ts_file, ckpt_file, False),
        work / f"{network.id}_export.log",
        cwd=work,
        timeout=EXPORT_TIMEOUT_S,
        label=f"ckpt_export {network.id}",
    )
    mode = "scripted"
    if not export.ok:
        if network.id != "network_def":
            raise BundleError(export.failure())
        scripted_failure = export
        export = run_monai_bundle(
            "ckpt_export",
            _export_args(ctx, network.id, ts_file, ckpt_file, True),
            work / f"{network.id}_export_trace.log",
            cwd=work,
            timeout=EXPORT_TIMEOUT_S,
            label=f"ckpt_export {network.id} --use_trace True",
        )
        if not export.ok:
            raise BundleError(f"{scripted_failure.failure()}\nand with tracing: {export.failure()}")
        mode = "traced (scripting failed; export with --use_trace True)"
    if not ts_file.is_file():
        raise BundleError(f"ckpt_export {network.id} exited 0 but wrote no {ts_file}")

    sample = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    input_file, output_file = work / f"{network.id}_input.pt", work / f"{network.id}_output.pt"
    torch.save(sample, input_file)
    loaded = _run_torchscript(ts_file, input_file, output_file, work)
    if not loaded.ok:
        raise BundleError(f"{network.id}: {loaded.failure()}")
    scripted = torch.load(output_file, weights_only=True)
    module.load_state_dict(torch.load(ckpt_file, weights_only=True))
    module.eval()
    with torch.no_grad():
        eager = module(sample)
    difference = _max_abs_difference(eager, scripted)
    if not difference <= EXPORT_TOLERANCE:
        raise BundleError(
            f"{network.id}: TorchScript output differs from the eager network: max abs diff {difference:.3g} > "
            f"{EXPORT_TOLERANCE:g} on an input of shape {shape} ({mode})"
        )
    size = " (smoke_overrides sizes)" if _overrides(ctx) else ""
    return f"{network.id}: max abs diff {difference:.3g} on input {shape}, {mode}{size}"


def _check_export(ctx: _Context) -> str:
    ctx.require(ctx.meta, ctx.inference)
    description = ctx.describe()
    work = ctx.workdir("export")
    results, problems = [], []
    for network in description.networks:
        try:
            results.append(export_network(ctx, network, work))
        except BundleError as err:
            problems.append(str(err))
    if problems:
        raise BundleError("\n".join(problems))
    return f"{'; '.join(results)} (<= {EXPORT_TOLERANCE:g}; loaded with strokeseg not importable)"
