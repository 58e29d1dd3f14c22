"""``strokeseg infer`` / ``train`` and their ``python -m monai.bundle run`` child die together.

The front process here is ``strokeseg.tools.frontdoor.run_streaming`` (what ``strokeseg infer`` and ``train`` call)
running a cheap long-lived child instead of a bundle run: the same launching code, seconds instead of minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from strokeseg.tools.runner import config_arg

# the child starts a grandchild (as a DataLoader worker would), writes both pids and sleeps
CHILD = (
    "import os, subprocess, sys, time; "
    "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
    "open(sys.argv[1] + '.tmp', 'w').write(f'{os.getpid()} {worker.pid}'); "
    "os.replace(sys.argv[1] + '.tmp', sys.argv[1]); "
    "time.sleep(120)"
)
FRONT = (
    "import sys; from strokeseg.tools.frontdoor import run_streaming; "
    "sys.exit(run_streaming([sys.executable, '-c', sys.argv[1], sys.argv[2]]))"
)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _start(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    pids = tmp_path / "pids"
    front = subprocess.Popen([sys.executable, "-c", FRONT, CHILD, str(pids)], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not pids.is_file():
        assert front.poll() is None, f"front process ended early with {front.returncode}"
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    return front, [int(p) for p in pids.read_text().split()]


def _wait_gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["TERM", "INT", "KILL"])
def test_a_stopped_front_process_leaves_no_child_running(tmp_path, signum):
    front, pids = _start(tmp_path)
    try:
        front.send_signal(signum)
        code = front.wait(timeout=30)
        left = _wait_gone(pids[:1] if signum == signal.SIGKILL else pids)
        assert not left, f"still running after the front process got signal {signum.name}: {left}"
        if signum != signal.SIGKILL:
            assert code == 128 + signum  # the shell's convention, as if the signal had stopped it
            assert not _wait_gone(pids[1:]), "the child's own children (its process group) must stop too"
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_child_exit_code_comes_back(tmp_path):
    from strokeseg.tools.frontdoor import run_streaming

    assert run_streaming([sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
    assert run_streaming([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]) == 143


def test_several_config_files_reach_monai_as_one_list_whatever_their_names_hold(tmp_path):
    from fire.parser import DefaultParseValue  # how python -m monai.bundle reads --config_file

    names = [
        str(tmp_path / 'it\'s a "dir" ü' / "inference.json"),
        str(tmp_path / "a, b" / "back\\slash [1].json"),
    ]
    assert DefaultParseValue(config_arg(names)) == names
    assert json.loads(config_arg(names)) == names
    assert config_arg(names[:1]) == names[0]
