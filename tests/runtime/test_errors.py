"""``strokeseg.runtime.errors``: the cause chain is searched, one line is printed at exit, repeats are dropped."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from strokeseg.errors import BundleError, DataError
from strokeseg.knobs import KnobError
from strokeseg.runtime.errors import ERROR_PREFIX, InputErrorFilter, format_error, input_problem


def _wrapped(inner: BaseException) -> RuntimeError:
    """``inner`` wrapped the way MONAI does: a transform error inside a config-expression error."""
    try:
        try:
            raise RuntimeError("applying transform <CheckImaged object>") from inner
        except RuntimeError as transform_error:
            raise RuntimeError('Failed to evaluate ConfigExpression: "$@evaluator.run()"') from transform_error
    except RuntimeError as outer:
        return outer


def test_strokeseg_error_found_through_the_cause_chain() -> None:
    outer = _wrapped(DataError("sub-01_dwi.nii.gz: contains 12 NaN voxel(s)"))
    assert input_problem(outer) == "sub-01_dwi.nii.gz: contains 12 NaN voxel(s)"


def test_implicit_context_is_searched_too() -> None:
    try:
        try:
            raise BundleError("checkpoint models/model.pt does not fit the network")
        except BundleError:
            raise KeyError("while handling")  # noqa: B904 - an implicit __context__ on purpose
    except KeyError as err:
        assert input_problem(err) == "checkpoint models/model.pt does not fit the network"


def test_multi_line_message_is_one_line() -> None:
    assert input_problem(DataError("a.nii: bad\n  second line")) == "a.nii: bad second line"
    assert format_error("x.nii:\nproblem") == ERROR_PREFIX + "x.nii: problem"


def test_dataloader_worker_text_is_parsed() -> None:
    # torch re-raises a worker's exception as a new one whose message is the formatted traceback
    text = textwrap.dedent(
        """\
        Caught RuntimeError in DataLoader worker process 0.
        Original Traceback (most recent call last):
          File "validation.py", line 68, in __call__
            raise DataError(...)
        strokeseg.errors.DataError: /data/case7_dwi.nii.gz: file is empty (0 bytes)

        The above exception was the direct cause of the following exception:

        RuntimeError: applying transform <CheckNiftiHeadersd>
        """
    )
    assert input_problem(_wrapped(RuntimeError(text))) == "/data/case7_dwi.nii.gz: file is empty (0 bytes)"


def test_os_error_naming_a_file_is_an_input_problem() -> None:
    err = FileNotFoundError(2, "No such file or directory", "/data/missing.nii.gz")
    assert input_problem(_wrapped(err)) == "/data/missing.nii.gz: No such file or directory"
    assert input_problem(OSError("no file named")) is None


def test_nibabel_image_file_error_is_an_input_problem() -> None:
    from nibabel.filebasedimages import ImageFileError

    assert input_problem(_wrapped(ImageFileError("Cannot work out file type of x.nii"))) == (
        "Cannot work out file type of x.nii"
    )


def test_other_errors_are_not_input_problems() -> None:
    assert input_problem(_wrapped(ZeroDivisionError("division by zero"))) is None
    assert input_problem(ValueError("shape mismatch")) is None


def test_cyclic_chain_terminates() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert input_problem(a) is None


def _record(exc: BaseException | None, name: str = "ignite.engine.engine.SupervisedEvaluator") -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, logging.ERROR, __file__, 1, "Exception: %s", (exc,), info)


def test_filter_drops_records_repeating_an_input_error() -> None:
    flt = InputErrorFilter()
    assert not flt.filter(_record(_wrapped(DataError("a.nii: empty"))))
    assert flt.filter(_record(_wrapped(ZeroDivisionError("x"))))
    assert flt.filter(_record(None))
    # our own one-line messages pass even while an input error is being handled
    assert flt.filter(_record(_wrapped(DataError("a.nii: empty")), name="strokeseg.runtime.inputs"))


def test_filter_uses_the_exception_being_handled_when_the_record_has_none() -> None:
    flt = InputErrorFilter()
    try:
        raise _wrapped(DataError("b.nii: truncated"))
    except RuntimeError:
        assert not flt.filter(_record(None))  # ignite logs "terminating due to exception" without exc_info


def _run(body: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        """\
        import logging, sys
        from strokeseg.runtime.errors import install
        from strokeseg.errors import DataError
        logging.basicConfig(stream=sys.stderr, level=logging.INFO)
        def nested(inner):
            try:
                raise inner
            except Exception as err:
                raise RuntimeError('Failed to evaluate ConfigExpression') from err
        """
    ) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_uncaught_input_error_ends_with_one_line_and_exit_1() -> None:
    proc = _run(
        """\
        install("false")
        try:
            nested(DataError('/d/sub-01_dwi.nii.gz: contains 12 NaN voxel(s)'))
        except RuntimeError as err:
            logging.getLogger('ignite.engine.engine.SupervisedEvaluator').exception('Exception: %s', err)
            logging.getLogger('monai.handlers.StatsHandler').exception('Exception: %s', err)
            raise
        """
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"{ERROR_PREFIX}/d/sub-01_dwi.nii.gz: contains 12 NaN voxel(s)"]


def test_other_errors_keep_their_traceback() -> None:
    proc = _run("install(False)\nnested(ZeroDivisionError('division by zero'))\n")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and proc.stderr.strip().endswith("Failed to evaluate ConfigExpression")


def test_debug_keeps_the_full_traceback_and_logs() -> None:
    proc = _run(
        """\
        install(False)
        install("true")  # a later debug install undoes the one-line mode
        try:
            nested(DataError('/d/a.nii: file is empty (0 bytes)'))
        except RuntimeError as err:
            logging.getLogger('x').exception('Exception: %s', err)
            raise
        """
    )
    assert proc.returncode == 1
    assert proc.stderr.count("Traceback") >= 2  # the logged one and the final one
    assert "strokeseg.errors.DataError: /d/a.nii: file is empty (0 bytes)" in proc.stderr
    assert not proc.stderr.strip().splitlines()[-1].startswith(ERROR_PREFIX)


def test_debug_knob_is_typed() -> None:
    from strokeseg.runtime.errors import install

    with pytest.raises(KnobError, match="--debug expects true or false"):
        install("maybe")
