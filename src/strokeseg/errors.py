"""Exceptions raised on bad input; their messages name the file or case and what is wrong."""

from __future__ import annotations

__all__ = ["StrokesegError", "DataError", "BundleError"]


class StrokesegError(Exception):
    """Base class of every error this package raises on purpose (the CLI prints it without a traceback)."""


class DataError(StrokesegError, ValueError):
    """An input file, case or dataset tree is missing, unreadable or inconsistent."""


class BundleError(StrokesegError, RuntimeError):
    """A bundle fails one of the checks of ``strokeseg verify`` or cannot run as configured."""
