"""Atomic file output: write to a hidden temporary sibling, then ``os.replace`` onto the final name.

Every file this package writes for users (predictions, synthetic volumes, datalists, reports, benchmark
results) goes through here, so a crash or a concurrent reader never sees a half-written file under its
final name, and a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "check_writable_folder", "temporary_path", "write_bytes_atomic", "write_text_atomic"]


def temporary_path(final: str | os.PathLike) -> Path:
    """Hidden temporary sibling of ``final`` that keeps its extension (``.nii.gz`` writers rely on it)."""
    final = Path(final)
    return final.parent / f".partial-{os.getpid()}-{final.name}"


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final`` (same folder ⇒ same filesystem); on success it replaces
    ``final``, on error it is removed and ``final`` is left untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(final: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``final`` atomically and return its path."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(payload)
    return Path(final)


def write_text_atomic(final: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``final`` atomically and return its path."""
    return write_bytes_atomic(final, text.encode("utf-8"))


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and write, then remove, an empty hidden file in it.

    The probe has a ``.partial-<pid>-`` name (:func:`temporary_path`), so a later run removes it if a crash leaves it.

    Raises:
        OSError: the folder cannot be created or written into (the caller words the one-line error).
    """
    folder = Path(folder)
    probe = temporary_path(folder / "write-test")
    folder.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"")
    probe.unlink()
    return folder
