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
* a rerun (:meth:`InferenceCases.plan_rerun`, called by the wiring before anything runs) skips every case
  whose outputs all exist *and* whose record says this bundle, these weights and these options made them
  (:mod:`strokeseg.runtime.reruns`); it runs the cases with an output missing, and refuses, in one line, a
  folder holding another run's outputs, unless ``overwrite`` (a config that writes its own files, without the
  shared wiring, keeps no records: it skips a case whose described outputs exist); temporary files of a killed
  earlier run are removed first (outputs are written atomically by :mod:`strokeseg.transforms.io`, so a killed
  run leaves no half-written NIfTI);
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from strokeseg.atomic_io import check_writable_folder
from strokeseg.data.datalist import build_datalist, cases_for, select_split
from strokeseg.data.discovery import narrowed_layout, standalone_volumes
from strokeseg.data.layouts import get_layout
from strokeseg.errors import BundleError, DataError
from strokeseg.grids import GRID_TOLERANCE_MM, grid_tolerance
from strokeseg.knobs import BoolKnob, as_bool
from strokeseg.naming import case_name, nifti_stem
from strokeseg.runtime.description import describe_bundle
from strokeseg.runtime.errors import close_progress_bars, input_problem
from strokeseg.runtime.input_grid import SPACING_FACTOR, warn_untrained_grids
from strokeseg.runtime.reruns import RunRecord, check_case, refusal

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
    extras: Sequence[str] | None = None,
    grid_tolerance_mm: float = GRID_TOLERANCE_MM,
) -> list[dict]:
    """Cases to run inference on, as datalist entries with absolute ``image`` paths and a ``case`` name.

    Args:
        source: a NIfTI file or a DICOM series folder (one single-modality case), a folder holding only NIfTI
            files or only DICOM series folders (one case each), a datalist ``.json``, or the root of an ISLES
            layout.
        layout: layout of ``source`` when it is a dataset root or datalist.
        split: which cases of a layout: ``test``, ``val``, ``train``, ``trainval`` or ``all``.
        fold, num_folds, seed: fold selection for ``val``/``train``.
        modalities: image channels to keep, in order (layout tokens); a dataset root's cases need only these.
        skip_bad_cases: a dataset root is discovered leniently: a broken case (missing volume, unreadable
            or truncated file, grids that differ) is returned as ``{"case": name, BAD_CASE_KEY: problem}``
            instead of stopping discovery.
        extras: the layout's extra files (keys) the bundle's inference reads; a dataset root's cases need only
            these (``None``: every extra the layout requires).
        grid_tolerance_mm: largest difference between affine entries (mm) of one case's files.

    Raises:
        DataError: ``source`` does not exist, is a single DICOM file, or holds no case.
    """
    path = Path(source)
    if not path.exists():
        raise DataError(f"inference input {path} does not exist")
    volumes = standalone_volumes(path)
    if volumes is not None:
        return [{"image": [str(p.resolve())], "case": case_name(p)} for p in volumes]
    if path.is_dir():
        spec = narrowed_layout(get_layout(layout), modalities, extras)
        with warnings.catch_warnings():
            if skip_bad_cases:
                warnings.simplefilter("ignore")  # the skipped cases are reported at the end of the run
            data = build_datalist(
                spec, path, num_folds, seed, allow_incomplete=skip_bad_cases, grid_tolerance_mm=grid_tolerance_mm
            )
        cases = select_split(data, split, fold, num_folds, modalities)
        cases += [{"case": item["case"], BAD_CASE_KEY: item["reason"]} for item in data.get("skipped", [])]
    else:
        cases = cases_for(path, layout, split, fold, num_folds, seed, modalities, grid_tolerance_mm)
    if not cases:
        raise DataError(f"{path}: no {split!r} case found for layout {layout} (try --infer_split all)")
    return cases


def check_output_dir(output_dir: str | Path) -> Path:
    """Create ``output_dir`` if needed and check a file can be written in it.

    Raises:
        DataError: the folder cannot be created or is not writable (the message names it).
    """
    folder = Path(output_dir)
    try:
        check_writable_folder(folder)
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
    """Refuse stand-alone volumes (a NIfTI file or DICOM series = one single-modality case) for a
    multi-modality bundle.

    Raises:
        DataError: ``source`` is a stand-alone volume or a folder of them and the bundle reads several modalities.
    """
    wanted = list(modalities) if modalities is not None else list(get_layout(layout).modalities)
    if len(wanted) == 1:
        return
    if standalone_volumes(source) is not None:
        raise DataError(
            f"{source}: a stand-alone NIfTI file or DICOM series is one single-modality case, but this bundle "
            f"reads {len(wanted)} modalities ({', '.join(wanted)}); give a {layout} dataset folder or a datalist"
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
        source, layout, split, fold, num_folds, seed, modalities, extras, grid_tolerance_mm: as
            :func:`inference_cases` (``grid_tolerance_mm``: the bundle's knob, any number spelling).
        output_dir: where the predictions go; checked (created, writable) now.
        bundle_root: the bundle, whose description names the files inference writes per case.
        skip_bad_cases: skip bad cases and list them at the end (see the module docstring).
        overwrite: recompute cases whose outputs already exist (default: skip them when this run made them,
            refuse when another did; see :meth:`plan_rerun`).
        training_spacing_mm, min_input_shape, resampled_spacing_mm, spacing_factor: what the bundle's network
            was trained at; a case far from it gets one warning line (:mod:`strokeseg.runtime.input_grid`).

    Attributes:
        cases: every case found. pending: those this run processes. done: names already written.
        planned: whether :meth:`plan_rerun` decided ``pending`` from the cases' records.
        bad: ``(case, problem)`` of each bad case (discovery + loading).
        grid_warnings: the warning lines of the cases on a grid the network was not trained for.

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
        extras: Sequence[str] | None = None,
        training_spacing_mm: Sequence[float | None] | None = None,
        min_input_shape: Sequence[int | None] | None = None,
        resampled_spacing_mm: Sequence[float | None] | None = None,
        spacing_factor: float = SPACING_FACTOR,
        grid_tolerance_mm: float = GRID_TOLERANCE_MM,
    ) -> None:
        self.output_dir = check_output_dir(output_dir)
        self.outputs = describe_bundle(bundle_root).inference_outputs
        self.skip_bad_cases = as_bool(skip_bad_cases, "skip_bad_cases")
        self.overwrite = as_bool(overwrite, "overwrite")
        removed = remove_stale_partials(self.output_dir)
        if removed:
            logger.info(f"removed {len(removed)} temporary file(s) of an interrupted earlier run in {self.output_dir}")
        _check_single_files(Path(source), layout, modalities)
        tolerance = grid_tolerance(grid_tolerance_mm)
        found = inference_cases(
            source, layout, split, fold, num_folds, seed, modalities, self.skip_bad_cases, extras, tolerance
        )
        self.bad: list[tuple[str, str]] = [(c["case"], c[BAD_CASE_KEY]) for c in found if BAD_CASE_KEY in c]
        self.cases = [c for c in found if BAD_CASE_KEY not in c]
        self.grid_warnings = warn_untrained_grids(
            self.cases,
            training_spacing_mm=training_spacing_mm,
            min_input_shape=min_input_shape,
            resampled_spacing_mm=resampled_spacing_mm,
            factor=float(spacing_factor),
        )
        # until plan_rerun (the shared wiring calls it), a config writing its own files skips by file names alone
        self.planned = False
        self.done = [] if self.overwrite else [c["case"] for c in self.cases if self._written(c["case"])]
        self.pending = [c for c in self.cases if c["case"] not in set(self.done)]

    def _written(self, case: str) -> bool:
        return all((self.output_dir / pattern.replace("{case}", case)).is_file() for pattern in self.outputs)

    def _log_skipped(self) -> None:
        if self.done:
            logger.info(
                f"{len(self.done)} of {len(self.cases)} case(s) already have their outputs in {self.output_dir}; "
                "skipping them (--overwrite true runs them again)"
            )

    def plan_rerun(
        self, now: RunRecord | Callable[[], RunRecord], outputs_for: Callable[[str], Sequence[Path]]
    ) -> None:
        """Decide which cases this run skips (``done``) and which it runs (``pending``), from each case's record.

        A case is skipped when its record matches ``now`` and lists every output this run writes (``outputs_for``
        and the bundle description's ``inference_outputs``), all present; with ``overwrite`` every case runs.

        Args:
            now: this run's bundle, weights and options, or a callable that makes them (called only for a case that
                has a record to compare with).
            outputs_for: the files this run writes for a case.

        Raises:
            DataError: a case holds outputs of another run, or outputs with no record (one line, the first case).
        """
        self.planned = True
        if self.overwrite:
            self.done, self.pending = [], list(self.cases)
            return
        checks = []
        for entry in self.cases:
            case = entry["case"]
            described = [self.output_dir / pattern.replace("{case}", case) for pattern in self.outputs]
            checks.append(check_case(self.output_dir, case, now, [*outputs_for(case), *described]))
        refused = [check for check in checks if check.action == "refuse"]
        if refused:
            raise refusal(refused, self.output_dir)
        self.done = [check.case for check in checks if check.action == "skip"]
        self.pending = [entry for entry in self.cases if entry["case"] not in set(self.done)]
        self._log_skipped()

    def loader(self, dataloader):
        """What the evaluator iterates: ``dataloader`` itself, or with ``skip_bad_cases`` a
        :class:`SkipBadCases` view of it."""
        return SkipBadCases(dataloader, self.pending, self.bad) if self.skip_bad_cases else dataloader

    def run(self, evaluator) -> None:
        """Run ``evaluator`` over the pending cases (if any), then report the bad cases.

        Raises:
            DataError: at least one case was bad (after listing them all on stderr).
        """
        if not self.planned:
            self._log_skipped()
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
