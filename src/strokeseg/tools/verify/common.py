"""What the checks of :mod:`strokeseg.tools.verify` share: limits, the report classes, the context."""

from __future__ import annotations

import json
import logging
import re
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strokeseg.errors import BundleError
from strokeseg.runtime.description import SMOKE_KNOBS, BundleDescription

logger = logging.getLogger("strokeseg.tools.verify")

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
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

SMOKE_OVERRIDES: dict[str, str] = {key: str(value) for key, value in SMOKE_KNOBS.items()}
"""Top-level ids every bundle shares (``configs/knobs.json``) and the values of a smoke run."""

SMOKE_TIMEOUT_S = 1800
"""Wall-clock limit of one smoke subprocess (one training stage, evaluation or inference)."""

EXPORT_TIMEOUT_S = 600
SMOKE_CASES = 3
SMOKE_TEST_CASES = 1

REQUIRED_FILES = ("configs/metadata.json", "LICENSE", "configs/inference.json")
# runtime output folders a user's own runs leave in a bundle; they are never distributed
RUNTIME_FOLDERS = frozenset({"eval", "__pycache__", ".ipynb_checkpoints"})

# absolute paths of somebody's machine; the look-behind keeps URLs and relative paths (e.g. "data/scratch/x") out
MACHINE_PATH = re.compile(r"(?<![\w.~/:-])(?:/(?:home|root|work|tmp|Users|mnt)/|[A-Za-z]:\\)")


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
        output = model(torch.load(input_file, weights_only=True))
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
        """The check's number (the list in :mod:`strokeseg.tools.verify`)."""
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
    small_export: bool = False
    data_dir: Path | None = None
    data_error: str | None = None
    data_seconds: float = 0.0
    layout: str | None = None
    description: BundleDescription | None = None
    description_error: str | None = None

    def describe(self) -> BundleDescription:
        """The bundle's self-description; the calling check is skipped when it cannot be read."""
        if self.description is None:
            raise _Skipped(f"skipped because the bundle's description cannot be read ({self.description_error})")
        return self.description

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
