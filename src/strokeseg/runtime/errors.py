"""One-line errors for bad input under ``python -m monai.bundle run``.

A bad input file deep inside a bundle run surfaces as ``RuntimeError: Failed to evaluate ConfigExpression``
at the end of ≈ 240 lines: MONAI wraps the transform's error (``applying transform ...``), the bundle parser
wraps that again, and ignite plus MONAI's ``StatsHandler`` log the exception with its traceback several
times on the way. The useful sentence (``DataError: <file>: contains 1 NaN/Inf voxel(s)``) is buried.

:func:`install` is the first entry of every bundle config's ``initialize``::

    "debug": false,
    "initialize": ["$strokeseg.runtime.errors.install(@debug)", ...]

It replaces ``sys.excepthook`` so that an uncaught exception whose cause chain holds a
:class:`~strokeseg.errors.StrokesegError` (or another recognisable input problem: a missing or unreadable
file) ends the run with exactly one last line on stderr, ``strokeseg: error: <file or case>: <problem>``,
and exit status 1, and it drops the log records that repeat that exception (with their tracebacks). Any
other exception keeps Python's full traceback. ``--debug true`` leaves everything as MONAI does it.

Neither MONAI nor ignite offers a hook for this (the bundle runner has no error handler), so it is ours.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from types import TracebackType

from strokeseg.errors import StrokesegError
from strokeseg.knobs import BoolKnob, as_bool

__all__ = ["install", "input_problem", "format_error", "close_progress_bars", "ERROR_PREFIX", "InputErrorFilter"]

ERROR_PREFIX = "strokeseg: error: "

# A DataLoader worker re-raises its exception as text ("Caught RuntimeError in DataLoader worker process 0.
# Original Traceback ...") under a new exception of the outer type: the strokeseg error is a line in it.
_WORKER_LINE = re.compile(r"^(?:Original )?strokeseg\.[\w.]*(?:Error|Exception): (?P<message>.+)$", re.MULTILINE)
# PyTorch's words for "a CUDA device was asked for and there is none" (AssertionError / RuntimeError)
_NO_CUDA = re.compile(
    r"Torch not compiled with CUDA enabled|Found no NVIDIA driver|No CUDA GPUs are available|"
    r"CUDA driver initialization failed|invalid device ordinal"
)
# the loggers whose records repeat an exception (StatsHandler's own logger does not propagate to the root)
_LOGGERS = ("monai.handlers.StatsHandler",)
_state: dict[str, object] = {"installed": False, "previous": None}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything reachable through ``__cause__`` / ``__context__``, outermost first."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


def _os_problem(exc: OSError) -> str | None:
    """``<file>: <reason>`` of an OSError that names a file (missing input, unwritable output)."""
    if exc.filename is None:
        return None
    reason = exc.strerror or type(exc).__name__
    target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
    return f"{target}: {reason}"


def input_problem(exc: BaseException) -> str | None:
    """The one-line message of the input problem behind ``exc``, or ``None`` when it is no input problem.

    Looks through the whole cause chain (MONAI wraps errors in ``RuntimeError: applying transform`` and
    ``Failed to evaluate ConfigExpression``), for, in this order: a :class:`StrokesegError` (its message),
    a strokeseg error re-raised as text by a DataLoader worker, a nibabel ``ImageFileError``, PyTorch's
    error for a CUDA device that is not there, an ``OSError`` that names a file.
    """
    chain = list(_chain(exc))
    for item in chain:
        if isinstance(item, StrokesegError):
            return _one_line(str(item)) or type(item).__name__
    for item in chain:
        match = _WORKER_LINE.search(str(item))
        if match and "DataLoader worker" in str(item):
            return _one_line(match.group("message"))
    for item in chain:
        if type(item).__name__ == "ImageFileError":
            return _one_line(str(item))
    for item in chain:
        if isinstance(item, (AssertionError, RuntimeError)) and _NO_CUDA.search(str(item)):
            return (
                f"a CUDA device was asked for (--device) and this machine has none usable ({_one_line(str(item))}); "
                "leave --device out (it picks what is there) or pass --device cpu"
            )
    for item in chain:
        if isinstance(item, OSError) and not isinstance(item, (ConnectionError, TimeoutError)):
            problem = _os_problem(item)
            if problem:
                return problem
    return None


def format_error(message: str) -> str:
    """``strokeseg: error: <message>`` on one line."""
    return ERROR_PREFIX + _one_line(message)


class InputErrorFilter(logging.Filter):
    """Drops log records that repeat an input error (ignite's and StatsHandler's "terminating due to
    exception" lines and their tracebacks); the one-line message at exit says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("strokeseg"):
            return True  # our own messages (e.g. "skipping bad case ...") say it once already
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            exc = sys.exc_info()[1]  # ignite logs inside its ``except`` block without exc_info
        return exc is None or input_problem(exc) is None


def close_progress_bars() -> None:
    """Close open tqdm bars (ignite's ProgressBar) so the error line is not glued to a bar."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        return
    for bar in list(getattr(tqdm.tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar that cannot close must not hide the error
            pass


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    problem = input_problem(exc) if isinstance(exc, Exception) else None
    previous = _state["previous"] or sys.__excepthook__
    if problem is None:
        previous(exc_type, exc, tb)  # type: ignore[operator]
        return
    close_progress_bars()
    sys.stdout.flush()
    sys.stderr.write(format_error(problem) + "\n")
    sys.stderr.flush()


def _filtered_handlers() -> Iterator[logging.Handler | logging.Logger]:
    yield from logging.getLogger().handlers
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        yield logger
        yield from logger.handlers


def install(debug: BoolKnob = False) -> bool:
    """Make input errors end a bundle run with one line (see the module docstring); idempotent.

    Args:
        debug: the bundle's ``debug`` knob (``true`` keeps MONAI's full tracebacks and logs).

    Returns:
        Whether the one-line mode is active (``not debug``).
    """
    if as_bool(debug, "debug"):
        if _state["installed"]:
            sys.excepthook = _state["previous"] or sys.__excepthook__  # type: ignore[assignment]
            for target in _filtered_handlers():
                for flt in [f for f in target.filters if isinstance(f, InputErrorFilter)]:
                    target.removeFilter(flt)
            _state["installed"] = False
        return False
    if not _state["installed"]:
        _state["previous"] = sys.excepthook
        sys.excepthook = _excepthook
        _state["installed"] = True
    for target in _filtered_handlers():
        if not any(isinstance(f, InputErrorFilter) for f in target.filters):
            target.addFilter(InputErrorFilter())
    return True
