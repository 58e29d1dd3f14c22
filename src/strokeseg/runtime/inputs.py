"""What a bundle's inference runs on, which cases still need running, and what happens to a bad case.

Bundles call :func:`inference_cases` with their ``dataset_dir`` so the same ``inference.json`` serves a
whole ISLES tree (``--dataset_dir <root>``), one of the user's own scans (``--dataset_dir scan.nii.gz``)
or a folder of them, without editing the config.

:class:`InferenceCases` adds the batch-inference bookkeeping every bundle shares; the shared wiring
(:class:`strokeseg.runtime.wiring.CaseInference`) runs the bundle's evaluator over it (config shape)::

    "skip_bad_cases": false,
    "overwrite": false,
    "inputs": {"_target_": "strokeseg.runtime.inputs.InferenceCases", "source": "@dataset_dir", ...,
               "skip_bad_cases": "@skip_bad_cases", "overwrite": "@overwrite"},
    "inference": {"_target_": "strokeseg.runtime.wiring.CaseInference", "inputs": "@inputs", ...},
    "run": ["$@inference.run()"]

* the output folder is checked (created, writable) before anything runs;
* a rerun skips every case whose outputs (the bundle description's ``inference_outputs``) all exist,
  unless ``overwrite``; temporary files of a killed earlier run are removed first (outputs are written
  atomically by :mod:`strokeseg.transforms.io`, so a killed run leaves no half-written NIfTI);
* with ``skip_bad_cases``, a case whose input is bad (a :class:`~strokeseg.errors.StrokesegError` while
  it is discovered or loaded) is skipped, the good cases are written, and the run ends by listing each bad
  case (``strokeseg: bad case: <case>: <file>: <problem>``) on stderr, followed by one error line; the exit
  status is then 1 (as for any error), 0 only when every case was written. Without it the first bad
  case stops the run with its one-line error (:mod:`strokeseg.runtime.errors`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from strokeseg.data.datalist import build_datalist, cases_for, select_split
from strokeseg.data.layouts import get_layout
from strokeseg.errors import BundleError, DataError
from strokeseg.knobs import BoolKnob, as_bool
from strokeseg.naming import case_name, nifti_stem
from strokeseg.runtime.description import describe_bundle
from strokeseg.runtime.errors import close_progress_bars, input_problem

__all__ = [
    "inference_cases",
    "is_nifti",
    "check_output_dir",
    "remove_stale_partials",
    "InferenceCases",
    "SkipBadCases",
    "BAD_CASE_KEY",
]

BAD_CASE_KEY = "bad_input"
"""Datalist key of a case that discovery already found bad (``skip_bad_cases``): the problem, one line."""

_PARTIAL = re.compile(r"^\.partial-(?P<pid>\d+)-")
logger = logging.getLogger(__name__)


def is_nifti(path: Path) -> bool:
    """True for ``*.nii`` / ``*.nii.gz`` file names (any case)."""
    return nifti_stem(path.name) is not None


def inference_cases(
    source: str | Path,
    layout: str,
    split: str = "test",
    fold: int = 0,
    num_folds: int = 5,
    seed: int = 0,
    modalities: Sequence[str] | None = None,
    skip_bad_cases: bool = False,
) -> list[dict]:
    """Cases to run inference on, as datalist entries with absolute ``image`` paths and a ``case`` name.

    Args:
        source: a NIfTI file (one single-modality case), a folder holding only NIfTI files (one case per
            file), a datalist ``.json``, or the root of an ISLES layout.
        layout: layout of ``source`` when it is a dataset root or datalist.
        split: which cases of a layout: ``test``, ``val``, ``train``, ``trainval`` or ``all``.
        fold, num_folds, seed: fold selection for ``val``/``train``.
        modalities: image channels to keep, in order (layout tokens).
        skip_bad_cases: a dataset root is discovered leniently: a broken case (missing volume, unreadable
            or truncated file, grids that differ) is returned as ``{"case": name, BAD_CASE_KEY: problem}``
            instead of stopping discovery.

    Raises:
        DataError: ``source`` does not exist or holds no case.
    """
    path = Path(source)
    if not path.exists():
        raise DataError(f"inference input {path} does not exist")
    if path.is_file() and is_nifti(path):
        return [{"image": [str(path.resolve())], "case": case_name(path)}]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_nifti(p))
        subdirs = [p for p in path.iterdir() if p.is_dir()]
        if files and not subdirs:
            return [{"image": [str(p.resolve())], "case": case_name(p)} for p in files]
    if skip_bad_cases and path.is_dir():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped cases are reported at the end of the run
            data = build_datalist(layout, path, folds=num_folds, seed=seed, allow_incomplete=True)
        cases = select_split(data, split, fold, num_folds, modalities)
        cases += [{"case": item["case"], BAD_CASE_KEY: item["reason"]} for item in data.get("skipped", [])]
    else:
        cases = cases_for(path, layout, split, fold, num_folds, seed, modalities)
    if not cases:
        raise DataError(f"{path}: no {split!r} case found for layout {layout} (try --infer_split all)")
    return cases


def check_output_dir(output_dir: str | Path) -> Path:
    """Create ``output_dir`` if needed and check a file can be written in it.

    Raises:
        DataError: the folder cannot be created or is not writable (the message names it).
    """
    folder = Path(output_dir)
    probe = folder / f".partial-{os.getpid()}-write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DataError(f"output folder {folder}: not writable ({reason})") from exc
    return folder


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(output_dir: str | Path) -> list[Path]:
    """Remove the temporary files (``.partial-<pid>-*``, :mod:`strokeseg.atomic_io`) that a killed run left
    under ``output_dir``; files of a process still alive are kept. Returns the removed paths."""
    removed = []
    root = Path(output_dir)
    if not root.is_dir():
        return removed
    for path in root.rglob(".partial-*"):
        match = _PARTIAL.match(path.name)
        if match and path.is_file() and not _alive(int(match.group("pid"))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _check_single_files(source: Path, layout: str, modalities: Sequence[str] | None) -> None:
    """Refuse stand-alone NIfTI files (one file = one single-modality case) for a multi-modality bundle.

    Raises:
        DataError: ``source`` is a NIfTI file or a folder of them and the bundle reads several modalities.
    """
    wanted = list(modalities) if modalities is not None else list(get_layout(layout).modalities)
    if len(wanted) == 1:
        return
    single = source.is_file() and is_nifti(source)
    if source.is_dir() and not single:
        entries = list(source.iterdir())
        single = any(p.is_file() and is_nifti(p) for p in entries) and not any(p.is_dir() for p in entries)
    if single:
        raise DataError(
            f"{source}: a stand-alone NIfTI file is one single-modality case, but this bundle reads "
            f"{len(wanted)} modalities ({', '.join(wanted)}); give a {layout} dataset folder or a datalist"
        )


class SkipBadCases:
    """Iterate a batch-size-1 DataLoader, skipping the cases whose loading raises an input error.

    A DataLoader keeps going after an item raised (single-process and worker iterators alike), so the
    case that failed is the next one in the (unshuffled) order; its name comes from ``cases``. No ``len``:
    ignite then ends the epoch when the iterator is exhausted, so a skipped case is not re-run.

    Args:
        loader: the bundle's ``dataloader`` (``batch_size`` 1, no shuffling).
        cases: the dataset's entries, in loader order.
        bad: list that receives ``(case, problem)`` for each skipped case.
    """

    def __init__(self, loader, cases: Sequence[dict], bad: list[tuple[str, str]]) -> None:
        if getattr(loader, "batch_size", 1) != 1:
            raise BundleError(f"skip_bad_cases needs a dataloader with batch_size 1, got {loader.batch_size}")
        self.loader = loader
        self.cases = list(cases)
        self.bad = bad

    def __iter__(self) -> Iterator:
        iterator = iter(self.loader)
        index = -1
        while True:
            index += 1
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                problem = input_problem(exc)
                if problem is None:
                    raise
                case = self.cases[index]["case"] if index < len(self.cases) else f"case #{index}"
                logger.warning(f"skipping bad case {case}: {problem}")
                self.bad.append((case, problem))
                continue
            yield batch


class InferenceCases:
    """The cases a batch inference run processes, with the bookkeeping shared by every bundle.

    Args:
        source, layout, split, fold, num_folds, seed, modalities: as :func:`inference_cases`.
        output_dir: where the predictions go; checked (created, writable) now.
        bundle_root: the bundle, whose description names the files inference writes per case.
        skip_bad_cases: skip bad cases and list them at the end (see the module docstring).
        overwrite: run cases whose outputs already exist (default: skip them).

    Attributes:
        cases: every case found. pending: those this run processes. done: names already written.
        bad: ``(case, problem)`` of each bad case (discovery + loading).

    Raises:
        DataError: no input, an unwritable output folder; without ``skip_bad_cases`` a bad case found
            during discovery.
    """

    def __init__(
        self,
        source: str | Path,
        layout: str,
        output_dir: str | Path,
        bundle_root: str | Path,
        split: str = "test",
        fold: int = 0,
        num_folds: int = 5,
        seed: int = 0,
        modalities: Sequence[str] | None = None,
        skip_bad_cases: BoolKnob = False,
        overwrite: BoolKnob = False,
    ) -> None:
        self.output_dir = check_output_dir(output_dir)
        self.outputs = describe_bundle(bundle_root).inference_outputs
        self.skip_bad_cases = as_bool(skip_bad_cases, "skip_bad_cases")
        self.overwrite = as_bool(overwrite, "overwrite")
        removed = remove_stale_partials(self.output_dir)
        if removed:
            logger.info(f"removed {len(removed)} temporary file(s) of an interrupted earlier run in {self.output_dir}")
        _check_single_files(Path(source), layout, modalities)
        found = inference_cases(source, layout, split, fold, num_folds, seed, modalities, self.skip_bad_cases)
        self.bad: list[tuple[str, str]] = [(c["case"], c[BAD_CASE_KEY]) for c in found if BAD_CASE_KEY in c]
        self.cases = [c for c in found if BAD_CASE_KEY not in c]
        self.done = [] if self.overwrite else [c["case"] for c in self.cases if self._written(c["case"])]
        self.pending = [c for c in self.cases if c["case"] not in set(self.done)]
        if self.done:
            logger.info(
                f"{len(self.done)} of {len(self.cases)} case(s) already have their outputs in {self.output_dir}; "
                "skipping them (--overwrite true runs them again)"
            )

    def _written(self, case: str) -> bool:
        return all((self.output_dir / pattern.replace("{case}", case)).is_file() for pattern in self.outputs)

    def loader(self, dataloader):
        """What the evaluator iterates: ``dataloader`` itself, or with ``skip_bad_cases`` a
        :class:`SkipBadCases` view of it."""
        return SkipBadCases(dataloader, self.pending, self.bad) if self.skip_bad_cases else dataloader

    def run(self, evaluator) -> None:
        """Run ``evaluator`` over the pending cases (if any), then report the bad cases.

        Raises:
            DataError: at least one case was bad (after listing them all on stderr).
        """
        if self.pending:
            evaluator.run()
        else:
            logger.info(f"nothing to run: every case's outputs exist in {self.output_dir}")
        self.report()

    def report(self) -> None:
        """List the bad cases on stderr and raise, or return when there were none.

        Raises:
            DataError: ``n of N case(s) had bad input``.
        """
        if not self.bad:
            return
        close_progress_bars()
        for case, problem in self.bad:
            shown = problem[len(case) + 2 :] if problem.startswith(f"{case}: ") else problem  # discovery names it
            sys.stderr.write(f"strokeseg: bad case: {case}: {shown}\n")
        sys.stderr.flush()
        total = len(self.cases) + sum(1 for case, _ in self.bad if case not in {c["case"] for c in self.cases})
        written = len(self.cases) - len({case for case, _ in self.bad} & {c["case"] for c in self.cases})
        raise DataError(
            f"{len(self.bad)} of {total} case(s) had bad input and were skipped (listed above); "
            f"{written} case(s) have their outputs in {self.output_dir}"
        )
