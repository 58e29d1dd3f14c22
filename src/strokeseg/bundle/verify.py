"""The offline checks every bundle passes (``strokeseg verify BUNDLE``), numbered as in bundles.md.

1. ``configs/metadata.json``, ``LICENSE`` and ``configs/inference.json`` exist.
2. ``version`` is a key of ``changelog``; the metadata validates against the schema its ``"schema"`` URL
   names, read from the copy this package carries (nothing is downloaded).
3. ``ConfigWorkflow`` of ``inference.json`` (``infer``) and ``train.json`` (``train``) initialise and
   ``check_properties()`` finds nothing missing.
4. ``verify_net_in_out network_def`` passes.
5. ``ckpt_export`` of a freshly initialised ``network_def``; the TorchScript is loaded in a process where
   ``strokeseg`` cannot be imported and matches the eager network within :data:`EXPORT_TOLERANCE`.
6. One epoch of every training stage, the evaluate overlay and inference run as subprocesses on a
   synthetic dataset in the bundle's layout (skipped with ``train=False``).
7. Configs are pretty-printed with indent 4, every ``@reference`` resolves (standalone configs and overlay
   combinations), no file exceeds :data:`MAX_FILE_BYTES`, no text file holds an absolute path of a machine.
8. The ``multi_gpu_train.json`` overlay parses and its references resolve (when the file exists).

Every check runs even when an earlier one failed; a check that needs what an earlier one found missing
reports itself as skipped and says why. The MONAI bundle tools (``verify_metadata``, ``verify_net_in_out``,
``ckpt_export``, ``ConfigWorkflow``, ``python -m monai.bundle run``) do the work; this module only
orchestrates them, supplies the offline schema and synthetic data, and turns their failures into a report.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strokeseg.errors import BundleError

__all__ = [
    "CheckResult",
    "VerifyReport",
    "CHECKS",
    "verify_bundle",
    "SCHEMA_DIR",
    "CARRIED_SCHEMAS",
    "EXPORT_TOLERANCE",
    "MAX_FILE_BYTES",
    "SMOKE_OVERRIDES",
    "SMOKE_TIMEOUT_S",
]

logger = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
"""Folder of the metadata schema files the package carries (MONAI's published files, byte for byte)."""

CARRIED_SCHEMAS: dict[str, str] = {
    # md5 of the published files; 20220324 is the value MONAI's own test data records for it
    "meta_schema_20220324.json": "662135097106b71067cd1fc657f8720f",
    "meta_schema_20240725.json": "06954cad2cc5d3784e72077ac76f0fc8",
}
"""Schema file name (the last part of the metadata's ``"schema"`` URL) -> md5 of the carried copy."""

EXPORT_TOLERANCE = 1e-4
"""Largest accepted absolute difference between the eager network and its TorchScript export."""

MAX_FILE_BYTES = 25_000_000
"""No file in a bundle may be larger (25 MB, the model-zoo limit for files kept in the repository)."""

SMOKE_OVERRIDES: dict[str, str] = {
    "epochs": "1",
    "val_interval": "1",
    "samples_per_case": "4",
    "num_workers": "0",
    "cache_rate": "0",
}
"""Top-level ids every bundle shares (bundles.md) and the values of a smoke run."""

SMOKE_TIMEOUT_S = 1800
"""Wall-clock limit of one smoke subprocess (one training stage, evaluation or inference)."""

EXPORT_TIMEOUT_S = 600
SMOKE_CASES = 3
SMOKE_TEST_CASES = 1
STDERR_TAIL_LINES = 30

REQUIRED_FILES = ("configs/metadata.json", "LICENSE", "configs/inference.json")
EXCLUDED_TRAIN_OVERLAYS = ("multi_gpu_train.json", "quick.json")
# runtime output folders a user's own runs leave in a bundle; they are never distributed
RUNTIME_FOLDERS = frozenset({"eval", "__pycache__", ".ipynb_checkpoints"})

# absolute paths of somebody's machine; the look-behind keeps URLs and relative paths (e.g. "data/scratch/x") out
MACHINE_PATH = re.compile(r"(?<![\w.~/:-])(?:/(?:home|root|work|tmp|Users|mnt)/|[A-Za-z]:\\)")

# the last line of a Python traceback: "ZeroDivisionError: division by zero", "monai.x.SomeError: ..."
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)\b(?::|$)")

# the loading side of check 5: strokeseg is made unimportable before torch is even imported
TORCHSCRIPT_RUNNER = textwrap.dedent(
    """
    import sys

    sys.modules["strokeseg"] = None
    try:
        import strokeseg  # noqa: F401
    except ImportError:
        pass
    else:
        sys.exit("strokeseg is importable although it was blocked")
    import torch

    ts_file, input_file, output_file = sys.argv[1:4]
    model = torch.jit.load(ts_file, map_location="cpu")
    model.eval()
    with torch.no_grad():
        output = model(torch.load(input_file))
    torch.save(output, output_file)
    """
)


@dataclass
class CheckResult:
    """Outcome of one check.

    Args:
        name: number and short name, e.g. ``"5. TorchScript export"``.
        ok: the check passed (a check skipped because it does not apply counts as passed; one skipped
            because an earlier check found something missing does not).
        message: what was found; on failure, what is wrong and where.
        seconds: wall time the check took.
        skipped: the check did not run (``message`` says why).
    """

    name: str
    ok: bool
    message: str
    seconds: float = 0.0
    skipped: bool = False

    @property
    def number(self) -> int:
        """The check's number in bundles.md."""
        return int(self.name.split(".", 1)[0])

    def line(self) -> str:
        """One summary line: ``PASS``/``FAIL``/``SKIP``, name, seconds and message."""
        status = "SKIP" if self.skipped and self.ok else ("PASS" if self.ok else "FAIL")
        return f"{status} {self.name} ({self.seconds:.1f} s): {self.message}"


@dataclass
class VerifyReport:
    """All check results of one bundle.

    Args:
        bundle: the verified bundle folder.
        checks: one :class:`CheckResult` per check, in the order they ran.
    """

    bundle: Path
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every check passed (or did not apply)."""
        return bool(self.checks) and all(check.ok for check in self.checks)

    def result(self, number: int) -> CheckResult:
        """The result of check ``number``.

        Raises:
            KeyError: no check with that number ran.
        """
        for check in self.checks:
            if check.number == number:
                return check
        raise KeyError(f"no check {number} in the report of {self.bundle}")

    def summary(self) -> str:
        """One line per check (``PASS``/``FAIL``/``SKIP`` + message) and a verdict line."""
        lines = [f"strokeseg verify {self.bundle}"]
        lines += [check.line() for check in self.checks]
        failed = [check.name for check in self.checks if not check.ok]
        lines.append("all checks passed" if not failed else f"{len(failed)} check(s) failed: {', '.join(failed)}")
        return "\n".join(lines)


class _Skipped(Exception):
    """Raised by a check that cannot run; ``applies`` is False when the check does not apply to the bundle."""

    def __init__(self, reason: str, applies: bool = True):
        super().__init__(reason)
        self.applies = applies


@dataclass
class _Context:
    """What the checks share: paths, options and the synthetic dataset once it exists."""

    bundle: Path
    work: Path
    train: bool
    data_dir: Path | None = None
    data_error: str | None = None
    data_seconds: float = 0.0
    layout: str | None = None

    @property
    def configs(self) -> Path:
        return self.bundle / "configs"

    @property
    def meta(self) -> Path:
        return self.configs / "metadata.json"

    @property
    def inference(self) -> Path:
        return self.configs / "inference.json"

    @property
    def train_config(self) -> Path:
        return self.configs / "train.json"

    def require(self, *paths: Path) -> None:
        """Skip the calling check when one of ``paths`` is missing."""
        missing = [str(path.relative_to(self.bundle)) for path in paths if not path.is_file()]
        if missing:
            raise _Skipped(f"skipped because {', '.join(missing)} is missing")

    def workdir(self, name: str) -> Path:
        """A fresh sub-folder of the work folder."""
        path = self.work / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path


def _rel(ctx: _Context, path: Path) -> str:
    try:
        return str(path.relative_to(ctx.bundle))
    except ValueError:
        return str(path)


def _shorten(text: str, limit: int = 1500) -> str:
    text = str(text).strip()
    return text if len(text) <= limit else text[: limit - 20] + " … [truncated]"


def _describe(err: BaseException) -> str:
    """``Type: message`` of ``err`` followed by its causes (MONAI wraps the real error of a config item)."""
    parts, seen = [], set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {_shorten(current, 700)}")
        current = current.__cause__ or current.__context__
    return " <- caused by ".join(parts)


def _load_json(path: Path, label: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{label} is not readable JSON: {err}") from err


# ---------------------------------------------------------------------------------------------- check 1


def _check_files(ctx: _Context) -> str:
    missing = [name for name in REQUIRED_FILES if not (ctx.bundle / name).is_file()]
    if missing:
        raise BundleError(f"missing in {ctx.bundle}: {', '.join(missing)}")
    return f"{', '.join(REQUIRED_FILES)} present"


# ---------------------------------------------------------------------------------------------- check 2


def _check_metadata(ctx: _Context) -> str:
    from monai.bundle import verify_metadata

    ctx.require(ctx.meta)
    meta = _load_json(ctx.meta, "configs/metadata.json")
    if not isinstance(meta, dict):
        raise BundleError("configs/metadata.json: the top level must be a JSON object")
    problems = []
    version, changelog = meta.get("version"), meta.get("changelog")
    if not isinstance(changelog, dict):
        problems.append("configs/metadata.json has no 'changelog' object")
    elif version not in changelog:
        problems.append(
            f"configs/metadata.json: version {version!r} is not a key of 'changelog' "
            f"(keys: {', '.join(map(str, changelog)) or 'none'})"
        )
    url = meta.get("schema")
    schema_name = str(url).rsplit("/", 1)[-1] if url else None
    if not url:
        problems.append("configs/metadata.json has no 'schema' URL")
    elif schema_name not in CARRIED_SCHEMAS:
        problems.append(
            f"configs/metadata.json: schema {url!r} names {schema_name!r}, of which no offline copy is carried "
            f"(carried: {', '.join(sorted(CARRIED_SCHEMAS))})"
        )
    else:
        schema_file = SCHEMA_DIR / schema_name
        if not schema_file.is_file():
            raise BundleError(f"the carried schema {schema_file} is missing; reinstall strokeseg")
        # verify_metadata downloads only when `filepath` does not exist; it exists, and the md5 pins our copy
        try:
            verify_metadata(
                meta_file=str(ctx.meta),
                filepath=str(schema_file),
                hash_val=CARRIED_SCHEMAS[schema_name],
                hash_type="md5",
            )
        except Exception as err:  # ValueError carries the validation error; anything else is as fatal
            problems.append(f"configs/metadata.json does not validate against {schema_name}: {_shorten(err, 600)}")
    if problems:
        raise BundleError("; ".join(problems))
    return f"version {version} in changelog; valid against {schema_name} (offline copy)"


# ---------------------------------------------------------------------------------------------- check 3


def _check_properties(ctx: _Context) -> str:
    from monai.bundle import ConfigWorkflow

    ctx.require(ctx.meta)
    if ctx.data_dir is not None:
        data_dir, data_note = ctx.data_dir, "the synthetic dataset"
    else:
        data_dir = ctx.workdir("empty_dataset")
        data_note = f"an empty folder, as no synthetic dataset could be made ({ctx.data_error})"
    problems: list[str] = []
    for config, workflow_type in ((ctx.inference, "infer"), (ctx.train_config, "train")):
        label = f"{_rel(ctx, config)} (workflow_type={workflow_type!r})"
        if not config.is_file():
            problems.append(f"{_rel(ctx, config)} is missing")
            continue
        out = ctx.workdir(f"properties_{workflow_type}")
        overrides: dict[str, Any] = {
            "bundle_root": str(ctx.bundle),
            "dataset_dir": str(data_dir),
            "output_dir": str(out / "out"),
        }
        if workflow_type == "train":
            # nothing may be written into the user's bundle, and nothing cached before a run
            overrides.update(ckpt_dir=str(out / "models"), num_workers=0, cache_rate=0.0)
        try:
            # logging_file=False: the bundle's logging.conf would reconfigure this process's loggers
            workflow = ConfigWorkflow(
                config_file=str(config),
                meta_file=str(ctx.meta),
                logging_file=False,
                workflow_type=workflow_type,
                **overrides,
            )
        except Exception as err:
            problems.append(f"{label} cannot be loaded: {_describe(err)}")
            continue
        # MONAI's check_properties raises (KeyError) at the first absent required id; list them all instead
        absent = _absent_required_properties(workflow)
        if absent:
            problems.append(f"{label}: required properties absent from the config: {', '.join(absent)}")
            continue
        try:
            workflow.initialize()  # check_properties reads parsed content, which needs initialisation
        except Exception as err:
            problems.append(f"{label}: initialize() failed with dataset_dir={data_note}: {_describe(err)}")
            continue
        try:
            missing = workflow.check_properties()  # instantiates every property (datasets, engines, ...)
        except Exception as err:
            problems.append(f"{label}: check_properties() failed with dataset_dir={data_note}: {_describe(err)}")
            continue
        if missing:
            problems.append(f"{label}: check_properties() reports missing or wrongly referenced {sorted(missing)}")
    if problems:
        raise BundleError("; ".join(problems))
    return f"infer and train workflows initialise (dataset_dir: {data_note}); check_properties() returns nothing"


def _absent_required_properties(workflow: Any) -> list[str]:
    """``name (id 'x')`` of every required property of ``workflow`` whose config id is not in its config."""
    from monai.utils import BundleProperty, BundlePropertyConfig

    absent = []
    for name, prop in (workflow.properties or {}).items():
        prop_id = prop.get(BundlePropertyConfig.ID)
        if prop.get(BundleProperty.REQUIRED, False) and prop_id is not None and prop_id not in workflow.parser:
            absent.append(f"{name} (id '{prop_id.replace('::', '#')}')")
    return sorted(absent)


# ---------------------------------------------------------------------------------------------- check 4

#: smallest spatial size of the eager-vs-TorchScript comparison input (check 5)
EXPORT_MIN_SIZE = 32


def _input_shape(meta: dict, min_size: int = 1) -> tuple[int, ...]:
    """``(1, C, *spatial)`` of the metadata's ``image`` input, with ``p = 1``, ``*`` = 1 and the smallest ``n``
    that makes every ``"k*n"`` dimension at least ``min_size`` (``n = 1`` by default).

    MONAI's own expansion of ``"16*n"``-style entries is used, so with ``min_size=1`` this is the shape
    ``verify_net_in_out`` and traced ``ckpt_export`` build; the export comparison asks for a larger one, so
    that the network's deeper layers see more than a single pixel.
    """
    from monai.bundle.scripts import _get_fake_spatial_shape

    try:
        image = meta["network_data_format"]["inputs"]["image"]
        channels, spatial = int(image["num_channels"]), image["spatial_shape"]
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(
            "configs/metadata.json: network_data_format#inputs#image needs an int 'num_channels' and a "
            f"'spatial_shape' list ({type(err).__name__}: {err})"
        ) from err
    n = 1
    while n < 1024 and min(_get_fake_spatial_shape(spatial, n=n) or (min_size,)) < min_size:
        if _get_fake_spatial_shape(spatial, n=n) == _get_fake_spatial_shape(spatial, n=n + 1):
            break  # no dimension depends on n
        n += 1
    return (1, channels, *_get_fake_spatial_shape(spatial, n=n))


def _check_net_io(ctx: _Context) -> str:
    from monai.bundle import verify_net_in_out

    ctx.require(ctx.meta, ctx.inference)
    shape = _input_shape(_load_json(ctx.meta, "configs/metadata.json"))
    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(ctx.meta),
            config_file=str(ctx.inference),
            device="cpu",
            bundle_root=str(ctx.bundle),
        )
    except Exception as err:
        raise BundleError(
            f"verify_net_in_out network_def (configs/inference.json, input {shape}) failed: {_describe(err)}"
        ) from err
    return f"network_def maps an input of shape {shape} to the channels and dtype the metadata declares"


# ---------------------------------------------------------------------------------------------- check 5


def _subprocess_env() -> dict[str, str]:
    """Environment of the child processes: the caller's, with a bounded number of CPU threads."""
    env = dict(os.environ)
    threads = env.get("OMP_NUM_THREADS") or str(min(4, os.cpu_count() or 1))
    env["OMP_NUM_THREADS"] = threads
    env.setdefault("MKL_NUM_THREADS", threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class _Run:
    """A finished subprocess: exit code (``None`` on timeout), output and wall time."""

    label: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        """What went wrong, with the last lines of stderr (of stdout when stderr is empty)."""
        how = "timed out" if self.returncode is None else f"exited with code {self.returncode}"
        stream = self.stderr if self.stderr.strip() else self.stdout
        lines = stream.strip().splitlines()
        tail = "\n".join(lines[-STDERR_TAIL_LINES:])
        # a chained traceback can push the root cause out of the tail; name every exception raised
        raised = list(dict.fromkeys(line.strip() for line in lines if EXCEPTION_LINE.match(line)))
        causes = f"; exceptions: {' <- '.join(_shorten(line, 200) for line in raised[::-1])}" if raised else ""
        return f"{self.label} {how} after {self.seconds:.1f} s (full log: {self.log}){causes}; last lines:\n{tail}"


def _run(label: str, command: Sequence[str], cwd: Path, log: Path, timeout: float) -> _Run:
    """Run ``command`` in ``cwd`` with a time limit; stdout and stderr are kept and written to ``log``."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            list(command), cwd=cwd, env=_subprocess_env(), capture_output=True, text=True, timeout=timeout
        )
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
        returncode = None
        stdout = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
    seconds = time.perf_counter() - start
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {' '.join(command)}\n# exit code: {returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    return _Run(label, returncode, stdout, stderr, seconds, log)


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


def _export_command(ctx: _Context, ts_file: Path, ckpt_file: Path, use_trace: bool) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "network_def",
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
    return command + (["--use_trace", "True"] if use_trace else [])


def _run_torchscript(ts_file: Path, input_file: Path, output_file: Path, cwd: Path) -> _Run:
    """Load and run ``ts_file`` on ``input_file`` in a fresh process where ``strokeseg`` is not importable."""
    runner = cwd / "run_torchscript.py"
    runner.write_text(TORCHSCRIPT_RUNNER)
    command = [sys.executable, str(runner), str(ts_file), str(input_file), str(output_file)]
    return _run("torch.jit.load (strokeseg blocked)", command, cwd, cwd / "run_torchscript.log", EXPORT_TIMEOUT_S)


def _check_export(ctx: _Context) -> str:
    import torch
    from monai.bundle import ConfigParser

    ctx.require(ctx.meta, ctx.inference)
    work = ctx.workdir("export")
    shape = _input_shape(_load_json(ctx.meta, "configs/metadata.json"), min_size=EXPORT_MIN_SIZE)

    parser = ConfigParser()
    parser.read_config(str(ctx.inference))
    parser.read_meta(str(ctx.meta))
    parser["bundle_root"] = str(ctx.bundle)
    network = parser.get_parsed_content("network_def")
    if not isinstance(network, torch.nn.Module):
        raise BundleError(f"configs/inference.json: network_def is a {type(network).__name__}, not a torch.nn.Module")
    ckpt_file, ts_file = work / "model.pt", work / "model.ts"
    torch.save(network.state_dict(), ckpt_file)

    export = _run(
        "ckpt_export", _export_command(ctx, ts_file, ckpt_file, False), work, work / "export.log", EXPORT_TIMEOUT_S
    )
    mode = "scripted"
    if not export.ok:
        scripted_failure = export
        export = _run(
            "ckpt_export --use_trace True",
            _export_command(ctx, ts_file, ckpt_file, True),
            work,
            work / "export_trace.log",
            EXPORT_TIMEOUT_S,
        )
        if not export.ok:
            raise BundleError(f"{scripted_failure.failure()}\nand with tracing: {export.failure()}")
        mode = "traced (scripting failed; export with --use_trace True)"
    if not ts_file.is_file():
        raise BundleError(f"ckpt_export exited 0 but wrote no {ts_file}")

    generator = torch.Generator().manual_seed(0)
    sample = torch.rand(shape, generator=generator)
    input_file, output_file = work / "input.pt", work / "output.pt"
    torch.save(sample, input_file)
    loaded = _run_torchscript(ts_file, input_file, output_file, work)
    if not loaded.ok:
        raise BundleError(loaded.failure())
    scripted = torch.load(output_file, weights_only=True)

    network.load_state_dict(torch.load(ckpt_file, weights_only=True))
    network.eval()
    with torch.no_grad():
        eager = network(sample)
    difference = _max_abs_difference(eager, scripted)
    if not difference <= EXPORT_TOLERANCE:
        raise BundleError(
            f"TorchScript output differs from the eager network_def: max abs diff {difference:.3g} > "
            f"{EXPORT_TOLERANCE:g} on an input of shape {shape} ({mode})"
        )
    return (
        f"max abs diff eager vs TorchScript {difference:.3g} <= {EXPORT_TOLERANCE:g} on input {shape}; "
        f"{mode}; loaded with strokeseg not importable"
    )


# ---------------------------------------------------------------------------------------------- check 6


def _synthesize_dataset(layout: str, out: Path) -> Path:
    """Write the smoke run's synthetic dataset in ``layout`` into ``out`` (the phantom generator)."""
    from strokeseg.data.phantoms import synthesize_dataset

    synthesize_dataset(layout, out, cases=SMOKE_CASES, test_cases=SMOKE_TEST_CASES, seed=0)
    return out


def _read_layout(ctx: _Context) -> str:
    """The bundle's ``layout`` id (top level of ``configs/train.json``)."""
    from strokeseg.data.layouts import LAYOUT_NAMES

    train = _load_json(ctx.train_config, "configs/train.json")
    layout = train.get("layout") if isinstance(train, dict) else None
    if layout not in LAYOUT_NAMES:
        raise BundleError(
            f"configs/train.json: top-level 'layout' is {layout!r}; expected one of {', '.join(LAYOUT_NAMES)}"
        )
    return layout


def _prepare_dataset(ctx: _Context) -> None:
    """Synthesise the dataset of checks 3 and 6; a failure is kept and reported by the checks that need it.

    Check 3 needs data even without the smoke runs: a training ``DataLoader`` with ``shuffle=True`` cannot be
    built over an empty dataset.
    """
    if not ctx.train_config.is_file():
        ctx.data_error = "configs/train.json is missing, so the layout is unknown"
        return
    start = time.perf_counter()
    try:
        ctx.layout = _read_layout(ctx)
        ctx.data_dir = _synthesize_dataset(ctx.layout, ctx.workdir("data"))
    except Exception as err:
        ctx.data_error = _describe(err)
        ctx.data_dir = None
    ctx.data_seconds = time.perf_counter() - start


def _training_stages(configs: Path) -> list[Path]:
    """``configs/train_<stage>.json`` overlays, alphabetical (multi-GPU and quick overlays excluded)."""
    return sorted(
        path
        for path in configs.glob("train_*.json")
        if path.name not in EXCLUDED_TRAIN_OVERLAYS and path.name != "train.json"
    )


def _copy_bundle(bundle: Path, target: Path) -> Path:
    """Copy the bundle for the smoke runs, without runtime outputs or a checkpoint the training must write."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        skipped = [name for name in names if name in RUNTIME_FOLDERS]
        if Path(folder).resolve() == (bundle / "models").resolve():
            skipped += [name for name in names if name == "model.pt"]
        return skipped

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(bundle, target, ignore=ignore)
    (target / "models").mkdir(exist_ok=True)
    return target


def _config_arg(*names: str) -> str:
    if len(names) == 1:
        return f"configs/{names[0]}"
    return "[" + ",".join(f"'configs/{name}'" for name in names) + "]"


def _check_smoke(ctx: _Context) -> str:
    if not ctx.train:
        raise _Skipped("skipped because train=False", applies=False)
    ctx.require(ctx.train_config, ctx.inference)
    if ctx.data_dir is None:
        raise BundleError(f"the synthetic dataset could not be made: {ctx.data_error}")
    bundle = _copy_bundle(ctx.bundle, ctx.work / "bundle")
    out, logs = ctx.workdir("out"), ctx.workdir("logs")
    common = [f"--{key}={value}" for key, value in SMOKE_OVERRIDES.items()]
    common += [f"--dataset_dir={ctx.data_dir}", f"--ckpt_dir={bundle / 'models'}", f"--bundle_root={bundle}"]

    def run(label: str, *configs: str) -> _Run:
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _config_arg(*configs)]
        command += [*common, f"--output_dir={out / label}"]
        return _run(label, command, bundle, logs / f"{label}.log", SMOKE_TIMEOUT_S)

    timings = [f"synthetic {ctx.layout} data {ctx.data_seconds:.1f} s"]
    problems: list[str] = []
    train = run("train", "train.json")
    timings.append(f"train {train.seconds:.1f} s")
    if not train.ok:
        raise BundleError(f"{train.failure()}\n(stages, evaluate and inference skipped because training failed)")
    if not (bundle / "models" / "model.pt").is_file():
        problems.append(f"configs/train.json ran but wrote no models/model.pt into ckpt_dir ({bundle / 'models'})")
    for stage in _training_stages(bundle / "configs"):
        result = run(stage.stem, "train.json", stage.name)
        timings.append(f"{stage.stem} {result.seconds:.1f} s")
        if not result.ok:
            problems.append(result.failure())

    evaluate_config = bundle / "configs" / "evaluate.json"
    if not evaluate_config.is_file():
        problems.append("configs/evaluate.json is missing")
    else:
        evaluate = run("evaluate", "train.json", "evaluate.json")
        timings.append(f"evaluate {evaluate.seconds:.1f} s")
        if not evaluate.ok:
            problems.append(evaluate.failure())
        elif not list((out / "evaluate").rglob("*.csv")):
            problems.append(f"the evaluate overlay wrote no metrics CSV under {out / 'evaluate'}")

    inference = run("inference", "inference.json")
    timings.append(f"inference {inference.seconds:.1f} s")
    if not inference.ok:
        problems.append(inference.failure())
    else:
        written = sorted((out / "inference").rglob("*_seg.nii.gz"))
        if not written:
            problems.append(f"inference wrote no *_seg.nii.gz under {out / 'inference'}")
        else:
            timings.append(f"{len(written)} segmentation(s) written")
    if problems:
        raise BundleError("\n".join(problems))
    stages = "".join(f", {stage.stem}" for stage in _training_stages(bundle / "configs"))
    return f"one epoch of train{stages}, evaluate and inference ran on synthetic data: {'; '.join(timings)}"


# ---------------------------------------------------------------------------------------------- check 7


def _indent_problem(path: Path, label: str) -> str | None:
    """Why ``path`` is not JSON pretty-printed with indent 4 (``None`` when it is)."""
    try:
        text = path.read_text(encoding="utf-8")
        content = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{label} is not readable JSON: {err}"
    body = text[:-1] if text.endswith("\n") else text
    candidates = [json.dumps(content, indent=4, ensure_ascii=ascii_only) for ascii_only in (True, False)]
    if body in candidates:
        return None
    expected = candidates[1].splitlines()
    for number, (got, want) in enumerate(zip(body.splitlines(), expected, strict=False), start=1):
        if got != want:
            return f"{label} is not pretty-printed with indent 4: line {number} is {got!r}, expected {want!r}"
    diff = difflib.unified_diff(expected, body.splitlines(), lineterm="", n=0)
    return f"{label} is not pretty-printed with indent 4 ({_shorten(' | '.join(list(diff)[2:5]), 200)})"


def _dangling_references(config_files: Sequence[Path], meta: Path | None) -> list[str]:
    """``@id`` references (and ``%`` macros) in the merged ``config_files`` that name no config id."""
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver
    from monai.bundle.utils import ID_SEP_KEY

    parser = ConfigParser()
    parser.read_config([str(path) for path in config_files])
    if meta is not None and meta.is_file():
        parser.read_meta(str(meta))
    try:
        parser.parse(reset=True)  # resolves macros and relative ids, registers every item
    except Exception as err:
        return [f"does not parse: {type(err).__name__}: {_shorten(err, 300)}"]
    items = parser.ref_resolver.items
    problems = []
    for item_id, item in items.items():
        value = item.get_config()
        if not isinstance(value, str):
            continue
        for ref in ReferenceResolver.match_refs_pattern(value):
            if ref not in items:
                where, what = item_id.replace(ID_SEP_KEY, "#"), ref.replace(ID_SEP_KEY, "#")
                problems.append(f"'{where}' refers to @{what}, which is not defined")
    return problems


def _overlay_base(configs: Path, overlay: Path) -> Path:
    """The standalone config an overlay applies to: ``inference.json`` for ``inference_*``, else ``train.json``."""
    return configs / ("inference.json" if overlay.name.startswith("inference") else "train.json")


def _reference_combinations(configs: Path) -> list[list[Path]]:
    """Every standalone config alone and every overlay on its base (multi-GPU is check 8)."""
    standalone = [configs / name for name in ("train.json", "inference.json") if (configs / name).is_file()]
    overlays = [
        path
        for path in sorted(configs.glob("*.json"))
        if path not in standalone and path.name not in ("metadata.json", "multi_gpu_train.json")
    ]
    return [[path] for path in standalone] + [[_overlay_base(configs, path), path] for path in overlays]


def _text_files(bundle: Path) -> list[Path]:
    return [
        path
        for path in sorted(bundle.rglob("*"))
        if path.is_file() and not RUNTIME_FOLDERS.intersection(path.relative_to(bundle).parts)
    ]


def _machine_paths(path: Path, label: str) -> list[str]:
    """``label:line: snippet`` for each absolute machine path in a text file (binary files are skipped)."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return []
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = MACHINE_PATH.search(line)
        if match:
            snippet = line[max(0, match.start() - 20) : match.end() + 30].strip()
            found.append(f"{label}:{number}: absolute path {snippet!r}")
    return found


def _check_hygiene(ctx: _Context) -> str:
    if not ctx.configs.is_dir():
        raise _Skipped("skipped because the bundle has no configs/ folder")
    problems: list[str] = []
    json_files = sorted(ctx.configs.rglob("*.json"))
    for path in json_files:
        problem = _indent_problem(path, _rel(ctx, path))
        if problem:
            problems.append(problem)

    combinations = _reference_combinations(ctx.configs)
    for files in combinations:
        label = " + ".join(_rel(ctx, path) for path in files)
        if not all(path.is_file() for path in files):
            problems.append(f"{label}: {', '.join(_rel(ctx, p) for p in files if not p.is_file())} missing")
            continue
        try:
            dangling = _dangling_references(files, ctx.meta)
        except Exception as err:
            dangling = [f"cannot be read: {type(err).__name__}: {_shorten(err, 300)}"]
        problems += [f"{label}: {problem}" for problem in dangling]

    files = _text_files(ctx.bundle)
    for path in files:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            problems.append(f"{_rel(ctx, path)} is {size / 1e6:.1f} MB (limit {MAX_FILE_BYTES / 1e6:.0f} MB)")
        else:
            problems += _machine_paths(path, _rel(ctx, path))
    if problems:
        shown = problems[:25] + ([f"… and {len(problems) - 25} more"] if len(problems) > 25 else [])
        raise BundleError("\n".join(shown))
    return (
        f"{len(json_files)} JSON file(s) indented by 4; references resolve in {len(combinations)} config "
        f"combination(s); {len(files)} file(s) <= {MAX_FILE_BYTES / 1e6:.0f} MB without machine paths"
    )


# ---------------------------------------------------------------------------------------------- check 8


def _check_multi_gpu(ctx: _Context) -> str:
    overlay = ctx.configs / "multi_gpu_train.json"
    if not overlay.is_file():
        raise _Skipped("skipped because the bundle has no configs/multi_gpu_train.json", applies=False)
    ctx.require(ctx.train_config)
    problems = _dangling_references([ctx.train_config, overlay], ctx.meta)
    if problems:
        raise BundleError("; ".join(f"configs/train.json + configs/multi_gpu_train.json: {p}" for p in problems))
    return "configs/train.json + configs/multi_gpu_train.json parse and every reference resolves"


CHECKS: tuple[tuple[str, Callable[[_Context], str]], ...] = (
    ("1. required files", _check_files),
    ("2. metadata", _check_metadata),
    ("3. workflow properties", _check_properties),
    ("4. network input/output", _check_net_io),
    ("5. TorchScript export", _check_export),
    ("6. smoke runs", _check_smoke),
    ("7. configs and files", _check_hygiene),
    ("8. multi-GPU overlay", _check_multi_gpu),
)


def _run_check(name: str, check: Callable[[_Context], str], ctx: _Context) -> CheckResult:
    start = time.perf_counter()
    try:
        message, ok, skipped = check(ctx), True, False
    except _Skipped as skip:
        message, ok, skipped = str(skip), not skip.applies, True
    except BundleError as err:
        message, ok, skipped = str(err), False, False
    except Exception as err:  # a MONAI tool failing in an unforeseen way is still this check's failure
        message, ok, skipped = _describe(err), False, False
    seconds = time.perf_counter() - start
    if name.startswith("3."):
        seconds += ctx.data_seconds  # the dataset is made before the checks run; check 3 is its first user
    result = CheckResult(name=name, ok=ok, message=message, seconds=seconds, skipped=skipped)
    logger.info(result.line())
    return result


def verify_bundle(bundle: str | Path, workdir: str | Path | None = None, train: bool = True) -> VerifyReport:
    """Run every check of bundles.md on ``bundle`` offline and collect the results.

    Nothing is written into ``bundle``: exports, synthetic data, a copy of the bundle for the smoke runs
    (whose ``models/`` receives the checkpoints) and the subprocess logs go to ``workdir``.

    Args:
        bundle: bundle folder (the one holding ``configs/`` and ``LICENSE``).
        workdir: folder for everything the checks write; its sub-folders ``export``, ``data``, ``bundle``,
            ``out``, ``logs``, ``properties_*`` are replaced. Default: a temporary folder, removed afterwards.
        train: run check 6 (one epoch of training, evaluation and inference as subprocesses).

    Returns:
        The report; ``report.ok`` is true when every check passed, ``report.summary()`` has one line per check.

    Raises:
        BundleError: ``bundle`` is not a folder, or ``workdir`` lies inside it.
    """
    bundle_path = Path(bundle).expanduser().resolve()
    if not bundle_path.is_dir():
        raise BundleError(f"{bundle}: not a bundle folder (no such directory)")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="strokeseg-verify-") as tmp:
            return _verify(bundle_path, Path(tmp), train)
    work = Path(workdir).expanduser().resolve()
    if work == bundle_path or bundle_path in work.parents:
        raise BundleError(f"workdir {work} lies inside the bundle {bundle_path}; choose a folder outside it")
    work.mkdir(parents=True, exist_ok=True)
    return _verify(bundle_path, work, train)


def _verify(bundle: Path, work: Path, train: bool) -> VerifyReport:
    ctx = _Context(bundle=bundle, work=work, train=train)
    _prepare_dataset(ctx)
    report = VerifyReport(bundle=bundle)
    for name, check in CHECKS:
        report.checks.append(_run_check(name, check, ctx))
    return report
