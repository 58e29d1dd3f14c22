"""End-to-end inference timed in a child process, as a user's ``python -m monai.bundle run`` runs it (P2, P5).

The bench's parent process holds the recorded network calls and their copies (gigabytes for a sliding window),
so its own peak memory says nothing about a user's inference (P5), and a separate child for P5 cost one whole
inference more per bundle. Here one child does both: it builds the bundle's ``inference.json`` workflow (the
``ConfigWorkflow`` that ``python -m monai.bundle run`` builds), runs it once untimed (warm-up: lazy imports,
first-touch memory, the network's conversion to channels-last), then ``runs`` timed times, each of which must
write the case's outputs anew. Its peak resident memory over all of it is P5. Where the spec names a ``record``
folder, the first run also records the network's calls there (:class:`strokeseg.tools.bench.calls.CallRecorder`,
one call's copy in memory at a time) with the shapes the inferer got and gave (``summary.json``): the bench
replays and counts those calls, and needs no inference of its own for them.

``python -m strokeseg.tools.bench.endtoend SPEC RESULT`` reads the JSON ``SPEC`` (``bundle``, ``data_root``,
``out_dir``, ``overrides``, ``expected``: output files, ``runs``, ``label``, ``control``: the folder of the
ready / go files by which it waits for the bench between runs, ``timeout_s``, ``record``: optional, see above)
and writes ``RESULT``;
:func:`end_to_end_child` starts it from the bench.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from strokeseg.errors import BundleError
from strokeseg.tools.bench.calls import RECORD_SUMMARY, CallRecorder, tensors_in
from strokeseg.tools.bench.memory import child_peak_rss
from strokeseg.tools.bench.workspace import inference_workflow

__all__ = ["end_to_end_child", "run_spec"]


class _InfererShapes:
    """Passes every call on to ``inner`` and notes the shape of its input and of its first output tensor.

    Everything else (attributes the engine reads) comes from ``inner``.
    """

    def __init__(self, inner: Any) -> None:
        self.inner, self.inputs, self.outputs = inner, [], []

    def __call__(self, inputs, *args, **kwargs):
        output = self.inner(inputs, *args, **kwargs)
        self.inputs.append(list(inputs.shape))
        found = tensors_in(output)
        self.outputs.append(list(found[0].shape) if found else None)
        return output

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _recorded_run(workflow, folder: Path, run_once: Callable[[], float], label: str) -> tuple[float, float]:
    """``run_once()`` with the evaluator network's calls written to ``folder`` and the inferer's shapes noted.

    Returns:
        ``(seconds of the run, seconds of it spent recording)``.

    Raises:
        BundleError: the inferer never called the network or returned no tensor.
    """
    evaluator = workflow.parser.get_parsed_content("evaluator")
    shapes = _InfererShapes(evaluator.inferer)
    evaluator.inferer = shapes
    try:
        with CallRecorder(evaluator.network, folder=folder, plain_fp32=True) as recorder:
            seconds = run_once()
    finally:
        evaluator.inferer = shapes.inner
    network = type(evaluator.network).__name__
    if not recorder.calls:
        raise BundleError(f"{label}: the inferer never called the network {network}.")
    if not shapes.outputs or any(out is None for out in shapes.outputs):
        raise BundleError(f"{label}: the inferer returned no tensor.")
    summary = {"network_class": network, "inferer_inputs": shapes.inputs, "predictions": shapes.outputs}
    (folder / RECORD_SUMMARY).write_text(json.dumps({**summary, "recording_s": recorder.seconds}))
    return seconds, recorder.seconds


def _wait_for(path: Path, alive: Callable[[], bool], timeout: float) -> bool:
    """Poll (10 ms) until ``path`` exists (``True``) or ``alive()`` says the other side ended (``False``).

    Raises:
        BundleError: neither within ``timeout`` seconds.
    """
    deadline = time.perf_counter() + timeout
    while not path.exists():
        if not alive():
            return False
        if time.perf_counter() > deadline:
            raise BundleError(f"gave up waiting for {path} after {timeout:g} s.")
        time.sleep(0.01)
    return True


def run_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Build the workflow of ``spec``, run it once untimed and ``spec["runs"]`` times timed (this process).

    Raises:
        BundleError: a run did not write every expected output file.
    """
    out_dir = Path(spec["out_dir"])
    expected = [Path(p) for p in spec["expected"]]
    workflow = inference_workflow(Path(spec["bundle"]), Path(spec["data_root"]), out_dir, spec["overrides"])

    def run_once() -> float:
        for path in expected:
            path.unlink(missing_ok=True)
        start = time.perf_counter()
        workflow.run()
        elapsed = time.perf_counter() - start
        missing = [str(p.relative_to(out_dir)) for p in expected if not p.is_file()]
        if missing:
            raise BundleError(
                f"end-to-end inference of {spec['label']} did not write {', '.join(missing)} into {out_dir}."
            )
        return elapsed

    control = Path(spec["control"]) if spec.get("control") else None
    timed, started, ended, page_faults = [], [], [], []  # seconds; wall-clock start and end; minor page faults
    record = Path(spec["record"]) if spec.get("record") else None
    recording = 0.0
    try:
        if record is None:
            first = run_once()
        else:
            first, recording = _recorded_run(workflow, record, run_once, spec["label"])
        first_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, as child_peak_rss
        for i in range(int(spec["runs"])):
            if control is not None:  # the bench runs its bare forward now; it says when that is done
                (control / f"ready_{i}").touch()
                _wait_for(control / f"go_{i}", lambda: True, float(spec.get("timeout_s", 1800.0)))
            started.append(time.time())
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            timed.append(run_once())
            page_faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
            ended.append(time.time())
    finally:
        workflow.finalize()
    return {
        "first_s": first - recording,
        "recording_s": recording,
        "end_to_end_s": timed,
        "run_wall_clock": [[a, b] for a, b in zip(started, ended, strict=True)],
        "run_minor_page_faults": page_faults,
        "peak_rss_first_run_gib": round(first_peak_kib / 1024.0**2, 3),
    }


def end_to_end_child(
    bundle: Path,
    data_root: Path,
    out_dir: Path,
    overrides: Mapping[str, Any],
    expected: Sequence[Path],
    runs: int,
    log_file: Path,
    label: str,
    before_each_run: Callable[[int], None] | None = None,
    timeout_s: float = 1800.0,
    record: Path | None = None,
) -> dict[str, Any]:
    """Run :func:`run_spec` in a child process and return its times and peak memory.

    ``before_each_run(i)`` runs here before the child's timed run ``i`` (while the child waits, after its first
    run): the bench times its bare forward there, so that the two sides of P2 alternate and a drifting machine
    load hits both alike.

    Args:
        bundle: the bundle copy; data_root: its dataset; out_dir: where the outputs go.
        overrides: config ids of the inference workflow (the variant's knobs included), as JSON values.
        expected: the output files each run must write.
        runs: timed runs after the untimed first one (0: the first run only, for P5).
        log_file: the child's stdout and stderr (its result lies beside it, ``.json``).
        label: what runs, for messages (bundle and variant).
        before_each_run: see above.
        timeout_s: seconds before the child is killed.
        record: a folder for the first run's network calls (:func:`strokeseg.tools.bench.calls.load_calls` reads
            them; ``summary.json`` beside them), before ``before_each_run(0)``.

    Returns:
        ``{"first_s", "recording_s", "end_to_end_s", "run_wall_clock", "run_minor_page_faults",
        "peak_rss_first_run_gib"}`` (``first_s``: the first run less ``recording_s``, the time its recording
        took; ``run_wall_clock``: the ``time.time()`` start and end of each timed run) and the child's
        ``returncode``, ``seconds``, ``peak_rss_mib`` / ``peak_rss_gib`` (its whole life: every run) and ``log``.

    Raises:
        BundleError: the child failed (with the last lines of its log) or wrote no result.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file, result_file = log_file.with_suffix(".spec.json"), log_file.with_suffix(".json")
    result_file.unlink(missing_ok=True)
    control = log_file.with_suffix(".control")
    shutil.rmtree(control, ignore_errors=True)
    control.mkdir()
    spec = {
        "bundle": str(bundle),
        "data_root": str(data_root),
        "out_dir": str(out_dir),
        "overrides": dict(overrides),
        "expected": [str(p) for p in expected],
        "runs": int(runs),
        "label": label,
        "control": str(control),
        "timeout_s": timeout_s,
        "record": None if record is None else str(record),
    }
    spec_file.write_text(json.dumps(spec, indent=1))
    args = [sys.executable, "-m", "strokeseg.tools.bench.endtoend", str(spec_file), str(result_file)]

    def alternate(proc) -> None:
        for i in range(int(runs)):
            if not _wait_for(control / f"ready_{i}", lambda: proc.poll() is None, timeout_s):
                return  # the child ended early: its return code and log tell why
            if before_each_run is not None:
                before_each_run(i)
            (control / f"go_{i}").touch()

    child = child_peak_rss(args, log_file, cwd=bundle, timeout=timeout_s, while_running=alternate)
    shutil.rmtree(control, ignore_errors=True)
    if child["returncode"] != 0 or not result_file.is_file():
        tail = Path(child["log"]).read_text(errors="replace").splitlines()[-20:]
        raise BundleError(f"end-to-end inference of {label} failed (log {log_file}):\n" + "\n".join(tail))
    return {**json.loads(result_file.read_text()), **child}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m strokeseg.tools.bench.endtoend SPEC RESULT``: run the spec, write the result (JSON)."""
    spec_file, result_file = (sys.argv[1:] if argv is None else list(argv))[:2]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run_spec(json.loads(Path(spec_file).read_text()))
    Path(result_file).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
