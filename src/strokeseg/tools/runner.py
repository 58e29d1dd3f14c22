"""The one way the tools run MONAI's bundle commands: ``python -m monai.bundle <verb> ...`` as a subprocess.

``verify``, ``demo``, ``bench``, ``strokeseg infer/train`` and the conformance tests all go through
:func:`run_monai_bundle`, so what they run is exactly what a user types, with the same environment rules
(bounded CPU threads, unbuffered output) and the same failure report (exit code, the exceptions raised, the
last lines of the log).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BundleRun",
    "run_monai_bundle",
    "run_tied",
    "monai_bundle_command",
    "config_arg",
    "override_args",
    "child_env",
]

TAIL_LINES = 30
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# the last line of a Python traceback: "ZeroDivisionError: division by zero", "monai.x.SomeError: ..."
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)\b(?::|$)")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a child process: the caller's, with a bounded number of CPU threads."""
    env = dict(os.environ)
    threads = env.get("OMP_NUM_THREADS") or str(min(4, os.cpu_count() or 1))
    env["OMP_NUM_THREADS"] = threads
    env.setdefault("MKL_NUM_THREADS", threads)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")  # read back as UTF-8 by the parent, whatever the locale
    env.update(extra or {})
    return env


def config_arg(files: Sequence[str | Path]) -> str:
    """``--config_file`` value: one file as is, several as a JSON list ``["a", "b"]``.

    ``python -m monai.bundle`` reads its arguments with python-fire, which evaluates a bracketed value as a
    Python literal: a JSON list of strings is one whatever the paths hold (quotes, apostrophes, commas, spaces,
    backslashes, non-ASCII letters, which ``json.dumps`` escapes), where a hand-quoted ``['a','b']`` breaks on
    the first apostrophe.
    """
    names = [str(f) for f in files]
    if len(names) == 1:
        return names[0]
    return json.dumps(names)


def override_args(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``--id value`` arguments of ``overrides`` (a mapping, or a ready list which is returned as is)."""
    if overrides is None:
        return []
    if not isinstance(overrides, Mapping):
        return [str(a) for a in overrides]
    args: list[str] = []
    for key, value in overrides.items():
        text = value if isinstance(value, str) else json.dumps(value)
        args += [f"--{key}", text]
    return args


def monai_bundle_command(verb: str, *args: str) -> list[str]:
    """``[python, -m, monai.bundle, verb, *args]`` with this interpreter."""
    return [sys.executable, "-m", "monai.bundle", verb, *[str(a) for a in args]]


@dataclass
class BundleRun:
    """A finished ``monai.bundle`` subprocess.

    Args:
        label: what ran (for messages).
        returncode: exit code; ``None`` when it was stopped by the time limit.
        stdout, stderr: its output.
        seconds: wall time.
        log: file holding the command line and both streams.
    """

    label: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_line(self) -> str:
        """The last non-empty line the user saw on stderr (stdout when stderr is empty)."""
        stream = self.stderr if self.stderr.strip() else self.stdout
        lines = [line for line in stream.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def failure(self) -> str:
        """What went wrong: exit status, the exceptions named in the output and its last lines."""
        how = "timed out" if self.returncode is None else f"exited with code {self.returncode}"
        stream = self.stderr if self.stderr.strip() else self.stdout
        lines = stream.strip().splitlines()
        tail = "\n".join(lines[-TAIL_LINES:])
        raised = list(dict.fromkeys(line.strip() for line in lines if EXCEPTION_LINE.match(line)))
        causes = f"; exceptions: {' <- '.join(r[:200] for r in raised[::-1])}" if raised else ""
        return f"{self.label} {how} after {self.seconds:.1f} s (full log: {self.log}){causes}; last lines:\n{tail}"


def run_monai_bundle(
    verb: str,
    args: Sequence[str],
    log: str | Path,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    label: str | None = None,
    env: Mapping[str, str] | None = None,
) -> BundleRun:
    """Run ``python -m monai.bundle <verb> <args>``; output is kept and written to ``log``.

    Args:
        verb: ``run``, ``ckpt_export``, ``verify_net_in_out``, ...
        args: the remaining command-line arguments.
        log: file for the command line, exit code and both output streams.
        cwd: working folder (a bundle's root, so relative config paths work).
        timeout: wall-clock limit in seconds (the run is reported with ``returncode=None`` past it).
        label: name in messages (default: the verb).
        env: extra environment variables.

    Returns:
        The finished run; check ``ok`` (nothing is raised for a failing command).
    """
    command = monai_bundle_command(verb, *args)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command,
            cwd=cwd,
            env=child_env(env),
            capture_output=True,
            encoding="utf-8",  # the child writes UTF-8 (names, ×, …) whatever this process's locale is
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
        returncode = None
        stdout = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
    seconds = time.perf_counter() - start
    log_path = Path(log)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(
        f"$ {' '.join(command)}\n# exit code: {returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        encoding="utf-8",
    )
    return BundleRun(label or verb, returncode, stdout, stderr, seconds, log_path)


def _tie_to_parent() -> Callable[[], None]:
    """``preexec_fn`` of a child that must not outlive this process: its own process group, and on Linux a
    ``SIGKILL`` from the kernel when this process dies, however it dies (``prctl(PR_SET_PDEATHSIG)``).

    Neither ``subprocess`` nor MONAI offers a parent-death signal, so it is set here through ``ctypes``; libc is
    loaded before the fork, and a parent that died before the ``prctl`` (the child then has another parent)
    ends the child at once.
    """
    parent = os.getpid()
    prctl = None
    if sys.platform.startswith("linux"):
        import ctypes  # lazy: only the front door launches tied children

        prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent:
                os._exit(128 + int(signal.SIGKILL))

    return preexec


def _signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to the process group ``pgid`` (the tied child and the processes it started)."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def run_tied(
    command: Sequence[str],
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    grace_s: float = 10.0,
) -> int:
    r"""Run ``command`` with this terminal's output, as a child that lives and dies with this process.

    The child gets a process group of its own, which this process signals: a ``SIGTERM``, ``SIGINT`` or
    ``SIGHUP`` received here is forwarded to the whole group (the ``python -m monai.bundle`` child and its data
    loader workers), ``SIGKILL``\ ed after ``grace_s`` seconds if it is still running, and whatever is left of
    the group when this function returns or raises is killed. A ``SIGKILL`` of this process, which no handler
    sees, kills the child through the kernel's parent-death signal (Linux). ``subprocess.run`` does none of
    this: a killed front process left its child running and writing, re-parented to PID 1.

    Args:
        command: the program and its arguments (no shell).
        cwd: working folder.
        env: the child's whole environment (default: :func:`child_env`).
        grace_s: seconds between the forwarded signal and the ``SIGKILL``.

    Returns:
        The child's exit code; ``128 + N`` when signal ``N`` stopped this process or the child.
    """
    proc = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env) if env is not None else child_env(),
        stdin=subprocess.DEVNULL,
        preexec_fn=_tie_to_parent(),
    )
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        _signal_group(proc.pid, signum)

    handlers = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        handlers = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        deadline = None
        while True:
            try:
                code = proc.wait(timeout=0.2 if received else None)
                break
            except subprocess.TimeoutExpired:
                deadline = deadline or time.monotonic() + grace_s
                if time.monotonic() > deadline:
                    _signal_group(proc.pid, signal.SIGKILL)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        # a pid stays reserved while it names a live process group, so this cannot reach a stranger
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()
    if received:
        return 128 + received[0]
    return code if code >= 0 else 128 - code
