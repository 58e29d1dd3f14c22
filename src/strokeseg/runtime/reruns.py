"""What made each case of an inference output folder, and whether a rerun may skip the case.

A batch inference run skips the cases it finds finished, so that an interrupted batch resumes where it stopped
(:class:`strokeseg.runtime.inputs.InferenceCases`). A file of the right name is not proof of that: another bundle,
other weights or other options may have written it. So each case folder holds a record,
``<case>/<case>_provenance.json``, of the run that wrote the case::

    {"bundle": "<metadata name>", "version": "0.2.1", "weights": {"models/model.pt": "<sha256>"},
     "options": {"bf16": false, "pixdim": [1.6, 1.6, -1], ...}, "outputs": ["<case>_seg.nii.gz"]}

* ``weights``: the sha256 of every weight file the run loads (relative to the bundle folder when inside it);
* ``options``: the inference knobs that change the values written, as ``inference#options`` of the bundle's
  ``inference.json`` lists them (the precision actually used, the preprocessing, inferer and post-processing
  parameters, resolved: a tuned threshold read from its file, ``auto`` precision as used); knobs that change only
  speed or which cases run (batch sizes, ``channels_last``, workers, device, ``infer_split``) are not options, and
  the network's shape is fixed by its weights;
* ``outputs``: the files the run writes for the case; ``--save_prob`` changes these, not the options.

A rerun (:func:`check_case`) skips a case whose record matches this run and lists every output it asks for, all
present; runs a case with no outputs, or with a matching record that lacks an output (a probability map asked for
where only masks were written); and refuses a case whose record differs, is unreadable, or is missing beside
existing outputs (written before records were kept). ``--overwrite true`` recomputes every case.

:class:`RecordedWriters` writes the record *before* the case's outputs, after removing the outputs it replaces, so
a run killed at any point leaves a folder that a rerun reads correctly: outputs listed by a matching record and
present were written by that run. MONAI's writers (``SaveImage``) keep no such record, hence this module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strokeseg.atomic_io import write_text_atomic
from strokeseg.errors import BundleError, DataError
from strokeseg.naming import nifti_stem

__all__ = [
    "RECORD_SUFFIX",
    "RunRecord",
    "CaseCheck",
    "record_path",
    "read_record",
    "file_sha256",
    "bundle_identity",
    "check_case",
    "refusal",
    "RecordedWriters",
]

RECORD_SUFFIX = "_provenance.json"
"""The record of a case is ``<output_dir>/<case>/<case>_provenance.json``."""

_HASH_CHUNK = 1 << 20


def record_path(output_dir: str | Path, case: str) -> Path:
    """Where the record of ``case`` lives in ``output_dir``."""
    return Path(output_dir) / case / f"{case}{RECORD_SUFFIX}"


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, in hex.

    Raises:
        BundleError: the file does not exist (a weight file: the same words as the checkpoint loader's).
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"checkpoint {path} not found: train the bundle first or point to an existing model file")
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_identity(bundle_root: str | Path) -> tuple[str, str]:
    """``(name, version)`` of a bundle from its ``configs/metadata.json`` (the folder name if it names none)."""
    root = Path(bundle_root)
    try:
        meta = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    return str(meta.get("name") or root.resolve().name), str(meta.get("version", ""))


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, numpy/torch scalars numbers)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _short(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


@dataclass(frozen=True)
class RunRecord:
    """Which bundle, weights and options made a case's outputs.

    Args:
        bundle: the bundle's name (``metadata.json`` ``name``).
        version: the bundle's version.
        weights: sha256 of each weight file the run loads, by file.
        options: the inference knobs that change the values written (see the module docstring).
    """

    bundle: str
    version: str
    weights: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _plain(dict(self.options)))
        object.__setattr__(self, "weights", dict(self.weights))

    def differences(self, now: RunRecord) -> list[str]:
        """What differs between this (recorded) run and ``now``, one short phrase each."""
        found = []
        if (self.bundle, self.version) != (now.bundle, now.version):
            found.append(f"bundle {self.bundle!r} {self.version} made them, this is {now.bundle!r} {now.version}")
        for name in sorted(set(self.weights) | set(now.weights)):
            then, current = self.weights.get(name), now.weights.get(name)
            if then is None:
                found.append(f"weights {name} were not used then")
            elif current is None:
                found.append(f"weights {name} were used then, not now")
            elif then != current:
                found.append(f"weights {name} differ (sha256 {then[:12]}… then, {current[:12]}… now)")
        for name in sorted(set(self.options) | set(now.options)):
            if name not in self.options or name not in now.options:
                found.append(f"option {name} is {'new' if name not in self.options else 'gone'}")
            elif self.options[name] != now.options[name]:
                found.append(f"{name} {_short(self.options[name])} then, {_short(now.options[name])} now")
        return found

    def to_json(self, outputs: Sequence[str]) -> str:
        """The record of a case whose outputs are the files ``outputs`` (names in the case folder)."""
        body = {
            "bundle": self.bundle,
            "version": self.version,
            "weights": self.weights,
            "options": self.options,
            "outputs": list(outputs),
        }
        return json.dumps(body, indent=1) + "\n"


def read_record(path: str | Path) -> tuple[RunRecord, list[str]]:
    """The run and the output names a record file holds.

    Raises:
        DataError: the file cannot be read as a record (the message names it).
    """
    path = Path(path)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        record = RunRecord(str(body["bundle"]), str(body["version"]), dict(body["weights"]), dict(body["options"]))
        outputs = [Path(str(name)).name for name in body["outputs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a readable inference record ({type(exc).__name__}: {exc})") from exc
    return record, outputs


@dataclass(frozen=True)
class CaseCheck:
    """What a rerun does with one case: ``run``, ``skip`` or ``refuse`` (then ``reason`` says why)."""

    case: str
    action: str
    reason: str = ""


def check_case(
    output_dir: str | Path, case: str, now: RunRecord | Callable[[], RunRecord], wanted: Sequence[str | Path]
) -> CaseCheck:
    """Whether this run (``now``, asking for the files ``wanted``) may skip ``case``, must run it, or must refuse.

    Args:
        output_dir: the run's output folder.
        case: the case name.
        now: this run's bundle, weights and options, or a callable that makes them: it is called only when the case
            has a record to compare with (hashing the weights needs them to exist; a fresh output folder does not).
        wanted: the output files this run writes for the case (paths, or names in the case folder).
    """
    folder = Path(output_dir) / case
    names = [Path(w).name for w in wanted]
    record_file = record_path(output_dir, case)
    if not record_file.is_file():
        existing = folder.is_dir() and any(p.is_file() and nifti_stem(p.name) is not None for p in folder.iterdir())
        if existing:
            return CaseCheck(
                case, "refuse", "its outputs have no record of the bundle, weights and options that made them"
            )
        return CaseCheck(case, "run")
    try:
        then, outputs = read_record(record_file)
    except DataError as exc:
        return CaseCheck(case, "refuse", str(exc).replace(f"{record_file}: ", f"its record {record_file.name} is "))
    differences = then.differences(now() if callable(now) else now)
    if differences:
        return CaseCheck(case, "refuse", "; ".join(differences))
    if all(name in outputs and (folder / name).is_file() for name in names):
        return CaseCheck(case, "skip")
    return CaseCheck(case, "run")


def refusal(refused: Sequence[CaseCheck], output_dir: str | Path) -> DataError:
    """The one-line error of a rerun that would mix its outputs with another run's, naming the first such case."""
    first = refused[0]
    more = f" ({len(refused) - 1} more case(s) likewise)" if len(refused) > 1 else ""
    return DataError(
        f"{Path(output_dir) / first.case}: case {first.case} was written by another run: {first.reason}{more}; "
        "pass --overwrite true to recompute, or write to another output folder"
    )


class RecordedWriters:
    """Write a case's record, then its outputs with ``writers``: the step that ends a bundle's post-processing.

    Before the record, the outputs this run writes are removed, and so are the outputs of a different earlier run
    (``--overwrite true``); outputs of an earlier matching run stay listed. See the module docstring for why.

    Args:
        writers: dictionary transforms writing the case's files, each with a ``path(case)`` of what it writes.
        output_dir: the run's output folder.
        record: this run's record, or a callable returning it (read on the first case).
        case_key: the data key holding the case name.
    """

    def __init__(
        self,
        writers: Sequence[Callable],
        output_dir: str | Path,
        record: RunRecord | Callable[[], RunRecord],
        case_key: str = "case",
    ) -> None:
        self.writers = list(writers)
        self.output_dir = Path(output_dir)
        self.record = record
        self.case_key = case_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        case = data.get(self.case_key)
        if not isinstance(case, str) or not case:
            raise KeyError(f"RecordedWriters: the data has no case name under {self.case_key!r}")
        now = self.record() if callable(self.record) else self.record
        folder = self.output_dir / case
        names = [Path(writer.path(case)).name for writer in self.writers]
        kept: list[str] = []
        stale: list[str] = []
        record_file = record_path(self.output_dir, case)
        if record_file.is_file():
            try:
                then, outputs = read_record(record_file)
            except DataError:
                then, outputs = None, []
            if then is not None and not then.differences(now):
                kept = [name for name in outputs if name not in names and (folder / name).is_file()]
            else:
                stale = [name for name in outputs if name not in names]
        for name in names + stale:
            (folder / name).unlink(missing_ok=True)
        try:
            write_text_atomic(record_file, now.to_json(names + kept))
        except OSError as exc:
            raise DataError(f"{record_file}: cannot be written ({exc.strerror or exc})") from exc
        out = dict(data)
        for writer in self.writers:
            out = writer(out)
        return out
