"""Peak resident memory of a child process (P5), read from the child's own rusage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["child_peak_rss"]

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


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the launcher and the command it started (the launcher's process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def child_peak_rss(
    args: list[str],
    log_file: Path,
    cwd: Path | None = None,
    timeout: float = 1800.0,
    while_running: Callable[[subprocess.Popen], None] | None = None,
) -> dict:
    """Run ``args`` as a child process and return its own peak resident memory (``os.wait4`` rusage).

    The command is started by a bare launcher interpreter (see ``_RSS_LAUNCHER``), so its peak does not include
    this process's memory; Linux reports ``ru_maxrss`` in KiB.

    Args:
        args: the command line.
        log_file: file for the child's stdout and stderr.
        cwd: working folder of the child.
        timeout: seconds before the child is killed (its return code is then the kill signal's).
        while_running: called with the started process before it is waited for (work to interleave with the
            child's); if it raises, the child is killed and the error passes on.

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
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env={**os.environ},
            start_new_session=True,  # its own process group: a kill reaches the measured command too
        )
        try:
            if while_running is not None:
                while_running(proc)
            returncode = proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - start)))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            returncode = proc.wait()
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
    rss_kib = float(rss_file.read_text()) if rss_file.is_file() else float("nan")
    rss_mib = rss_kib / 1024.0
    return {
        "returncode": returncode,
        "seconds": round(time.perf_counter() - start, 3),
        "peak_rss_mib": round(rss_mib, 1),
        "peak_rss_gib": round(rss_mib / 1024.0, 3),
        "log": str(log_file),
    }
