"""Checkpoints of a bundle: written atomically, read with one-line errors, never from a diverged run.

What MONAI / ignite give us and what this module adds:

* **Loading.** :class:`StrictCheckpointLoader` is MONAI's ``CheckpointLoader`` whose failures (a checkpoint of
  another network, a truncated file, pickled objects) end in a one-line :class:`~strokeseg.errors.BundleError`
  naming the file (:mod:`strokeseg.networks.weights` words them).
* **Saving.** MONAI's ``CheckpointSaver`` writes with ignite's ``DiskSaver(atomic=False)`` (MONAI avoids
  ignite's atomic mode because its ``NamedTemporaryFile`` gets owner-only permissions), and for a fixed file
  name (``model.pt``) it even *deletes* the previous best file before writing the new one. Ignite's atomic
  mode leaves a ``tmpXXXX`` file behind when the process is killed. :class:`AtomicDiskSaver` writes every
  checkpoint to a ``.partial-<pid>-<name>`` sibling (``strokeseg.atomic_io``), flushes it to disk and
  ``os.replace``\\ s it onto the final name; stale ``.partial-*`` files of killed runs are removed when the
  next run attaches. It refuses to write weights with NaN/Inf values (:class:`TrainingDivergedError`), so the
  last good checkpoint survives a diverging run. :class:`AtomicCheckpointSaver` is MONAI's
  ``CheckpointSaver`` with that save handler, a best-metric tracker that survives a resume, and a final save
  that does not fire on an exception.
* **The best-metric tracker.** ``CheckpointSaver(key_metric_save_state=True)`` would store the tracker
  *inside* ``model.pt``, which a bundle keeps a plain ``state_dict``. Instead the tracker travels in the
  trainer's last checkpoint (``best_metric`` entry) *and* in a small JSON next to the best file
  (``model_key_metric.json``: score, epoch, file), written just before ``model.pt`` is replaced. A resumed run
  restores the better of the two, so its first validation cannot replace a better ``model.pt`` by a worse
  one, even when the previous run was killed between writing ``model.pt`` and its next last checkpoint.

Resuming and the NaN-loss stop are in :mod:`strokeseg.runtime.training`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from strokeseg.atomic_io import atomic_path, write_text_atomic
from strokeseg.errors import BundleError, StrokesegError
from strokeseg.networks.weights import describe_mismatch, first_line, read_state

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "CheckpointWriteError",
    "StrictCheckpointLoader",
    "TrainingDivergedError",
    "remove_stale_partials",
]

logger = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
"""Prefix of the temporary siblings written by ``strokeseg.atomic_io`` (``.partial-<pid>-<name>``)."""


class TrainingDivergedError(StrokesegError, FloatingPointError):
    """Training produced a NaN/Inf loss or NaN/Inf weights; the checkpoints written before it are kept."""


class CheckpointWriteError(StrokesegError, OSError):
    """A checkpoint could not be written (a full disk, a folder that became read-only); the files there are intact."""


@contextmanager
def checkpoint_writing(path: str | Path) -> Iterator[None]:
    """Turn a failed write of the checkpoint file ``path`` into a one-line :class:`CheckpointWriteError`.

    ``torch.save`` into a full disk raises a bare ``OSError(ENOSPC)`` (no file name) or, writing to a path,
    PyTorch's ``RuntimeError`` from its zip writer; either ended a training run in a traceback of ≈ 125 lines.
    The atomic write has already removed its temporary file, so the message can say the folder is as it was.

    Raises:
        CheckpointWriteError: the write failed with an ``OSError`` or PyTorch's writer error.
    """
    try:
        yield
    except CheckpointWriteError:
        raise
    except OSError as err:
        reason = err.strerror or first_line(err)
        raise CheckpointWriteError(_write_failure(Path(path), reason)) from err
    except RuntimeError as err:
        if "PytorchStreamWriter" not in str(err) and "write failed" not in str(err):
            raise
        raise CheckpointWriteError(_write_failure(Path(path), first_line(err))) from err


def _write_failure(path: Path, reason: str) -> str:
    return (
        f"{path.parent}: cannot write checkpoint {path.name} ({reason}); the checkpoints already there are kept: "
        "free space there (or pass another --ckpt_dir) and run again to resume"
    )


class StrictCheckpointLoader(CheckpointLoader):
    """MONAI ``CheckpointLoader`` whose failures are one-line :class:`~strokeseg.errors.BundleError`\\ s naming the
    file: missing, unreadable, pickled objects (``weights_only=True``), another network, a later epoch than
    ``max_epochs``, or an object of ``load_dict`` that the checkpoint lacks."""

    def __call__(self, engine: Engine) -> None:
        # MONAI reads and loads the file, once; only when that fails is it read again (read_state) to say in one
        # line what is wrong. (Checking first and then calling MONAI read every checkpoint twice.)
        max_epochs = engine.state.max_epochs
        try:
            super().__call__(engine)
        except Exception as err:
            raise self._diagnose(engine, max_epochs, err) from err

    def _diagnose(self, engine: Engine, max_epochs: int | None, err: Exception) -> Exception:
        """The one-line error for a failed load (``err`` itself when the checkpoint is not to blame)."""
        path = Path(self.load_path)
        if isinstance(err, ValueError) and "max_epochs" in str(err):
            return BundleError(
                f"checkpoint {path} is from epoch {engine.state.epoch}, beyond epochs={max_epochs} of "
                "this run: raise epochs to train on, or pass --resume false to start again"
            )
        checkpoint = read_state(path, self.map_location)  # raises for a missing, unreadable or pickled file
        if len(self.load_dict) > 1:
            absent = [name for name in self.load_dict if name not in checkpoint]
            if absent:
                return BundleError(
                    f"checkpoint {path} has no {absent} (it holds {sorted(checkpoint)}): was it written by "
                    "another bundle or configuration?"
                )
        if not isinstance(err, (RuntimeError, KeyError)):
            return err
        details = []
        for name, obj in self.load_dict.items():
            if isinstance(obj, torch.nn.Module):
                state = checkpoint[name] if isinstance(checkpoint.get(name), dict) else checkpoint
                details.append(f"{name}: {describe_mismatch(obj, state)}")
        return BundleError(
            f"checkpoint {path} does not fit this bundle's objects {list(self.load_dict)} "
            f"(was it trained with another network or configuration?): {'; '.join(details) or first_line(err)}"
        )


# ------------------------------------------------------------------------------------------------- saving


def _non_finite_tensor(checkpoint: Any, prefix: str = "") -> str | None:
    """Dotted name of the first floating-point tensor with a NaN/Inf value in ``checkpoint``, or ``None``."""
    if isinstance(checkpoint, torch.Tensor):
        if checkpoint.is_floating_point() and not bool(torch.isfinite(checkpoint).all()):
            return prefix or "tensor"
        return None
    if isinstance(checkpoint, Mapping):
        items = checkpoint.items()
    elif isinstance(checkpoint, (list, tuple)):
        items = enumerate(checkpoint)
    else:
        return None
    for key, value in items:
        found = _non_finite_tensor(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


class AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` that writes through ``strokeseg.atomic_io`` and refuses non-finite weights.

    Each file is written to ``.partial-<pid>-<name>`` in the same folder, flushed with ``fsync`` and moved onto
    its name with ``os.replace``: a reader (or a resumed run) sees the old file or the new one, never half of
    one. The permissions are the process's usual ones (ignite's own atomic mode makes files owner-only, the
    reason MONAI switched it off). ignite's ``Checkpoint`` asks to remove the oldest file *before* it writes
    the next one (``n_saved``), so a kill in between would leave no checkpoint at all: here the removal waits
    until the next file is in place. With a fixed ``filename`` (``model.pt``) ``remove`` is a no-op: the
    replace overwrites the previous file, whereas MONAI deletes it first and writes afterwards.

    Args:
        dirname: folder of the checkpoints (created if missing).
        filename: fixed file name for every save (MONAI's ``key_metric_filename`` / ``final_filename``).
        check_finite: refuse (raise :class:`TrainingDivergedError`) to write a checkpoint that holds a NaN/Inf
            floating-point tensor, so a diverged run never replaces a good file.
        save_on_rank: the distributed rank that writes.
    """

    def __init__(
        self, dirname: str | Path, filename: str | None = None, check_finite: bool = True, save_on_rank: int = 0
    ) -> None:
        super().__init__(
            dirname=str(dirname), atomic=True, create_dir=True, require_empty=False, save_on_rank=save_on_rank
        )
        self.filename = filename
        self.check_finite = check_finite
        self._pending: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        import ignite.distributed as idist

        name = self.filename or filename
        path = Path(self.dirname) / name
        if self.check_finite:
            bad = _non_finite_tensor(checkpoint)
            if bad is not None:
                raise TrainingDivergedError(
                    f"not saving {path}: {bad} has NaN/Inf values (training diverged); the previous checkpoint "
                    "is kept: lower the learning rate or check the inputs, then resume"
                )
        if idist.get_rank() != self.save_on_rank:
            return
        with checkpoint_writing(path), atomic_path(path) as tmp:
            with open(tmp, "wb") as stream:
                torch.save(checkpoint, stream, **self.kwargs)
                stream.flush()
                os.fsync(stream.fileno())
        pending, self._pending = self._pending, []
        for old in pending:
            if old != name:
                (Path(self.dirname) / old).unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        """Forget ``filename``: deleted only after the next checkpoint is safely written (see class doc)."""
        import ignite.distributed as idist

        if self.filename is not None or idist.get_rank() != self.save_on_rank:
            return
        self._pending.append(filename)


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Delete the ``.partial-<pid>-*`` files of processes that no longer run (a killed training) in ``folder``.

    Returns:
        The files removed.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.glob(f"{PARTIAL_PREFIX}*"):
        pid_text = path.name[len(PARTIAL_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            removed.append(path)
        except PermissionError:  # the pid exists (another user's process): leave its file alone
            continue
        else:
            continue
    if removed:
        logger.info("removed %d half-written file(s) of an interrupted run in %s", len(removed), folder)
    return removed


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` whose files are written atomically and whose best-metric tracker survives a resume.

    Same arguments as MONAI's ``CheckpointSaver`` (a bundle config only changes ``_target_``), plus:

    * every save goes through :class:`AtomicDiskSaver` (atomic, never NaN weights);
    * ``state_dict()`` / ``load_state_dict()`` carry the key-metric tracker (the scores of the kept best
      files and the evaluator's ``best_metric`` / ``best_metric_epoch``), which
      :func:`attach_training_checkpoints` puts into the trainer's last checkpoint;
    * the tracker is also written to ``<best file stem>_key_metric.json`` beside the best file just before that
      file is replaced, and :meth:`restore_best` reads it back, so ``model.pt`` stays a plain ``state_dict``
      (``key_metric_save_state=True`` would embed the tracker in it) and a resumed run never replaces a better
      ``model.pt`` by a worse one;
    * ``save_final`` saves on ``COMPLETED`` only; MONAI also saves on ``EXCEPTION_RAISED``, which turned a
      crashed or diverged run into a "final" model. ``save_final_on_exception=True`` restores MONAI's behaviour.

    Args:
        save_final_on_exception: also write the final file when the engine raises.
        check_finite: refuse to write weights with NaN/Inf values (see :class:`AtomicDiskSaver`).
        *args, **kwargs: MONAI ``CheckpointSaver`` arguments.
    """

    def __init__(
        self, *args: Any, save_final_on_exception: bool = False, check_finite: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.save_final_on_exception = save_final_on_exception
        self._engine: Engine | None = None
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                fixed = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed, check_finite=check_finite)
        if self._key_metric_checkpoint is not None:
            self._key_metric_checkpoint.save_handler = _TrackedSaveHandler(self)

    # ---- the best-metric tracker

    @property
    def tracks_key_metric(self) -> bool:
        """Whether this saver keeps best-by-key-metric files."""
        return self._key_metric_checkpoint is not None

    @property
    def key_metric_state_file(self) -> Path:
        """JSON beside the best file with the tracker (``model.pt`` → ``model_key_metric.json``)."""
        fixed = getattr(self._key_metric_checkpoint.save_handler, "filename", None) if self.tracks_key_metric else None
        stem = Path(fixed).stem if fixed else (self._key_metric_checkpoint.filename_prefix or "checkpoint")
        return Path(self.save_dir) / f"{stem}_key_metric.json"

    def state_dict(self) -> dict[str, Any]:
        """The key-metric tracker: ``{"_saved": [(score, file), ...], "best_metric": x, "best_metric_epoch": n}``."""
        if not self.tracks_key_metric:
            return {"_saved": []}
        saved = [(float(priority), str(name)) for priority, name in self._key_metric_checkpoint._saved]
        state: dict[str, Any] = {"_saved": saved}
        engine_state = self._engine.state if self._engine is not None else None
        if engine_state is not None and hasattr(engine_state, "best_metric"):
            state["best_metric"] = float(engine_state.best_metric)
            state["best_metric_epoch"] = int(engine_state.best_metric_epoch)
        return state

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore the tracker from a last checkpoint, then keep what the JSON beside the best file says if better."""
        if not self.tracks_key_metric:
            return
        self._apply(state_dict)
        self.restore_best()

    def _best_score(self) -> float:
        saved = self._key_metric_checkpoint._saved
        return max((float(item.priority) for item in saved), default=-math.inf)

    def _apply(self, state: Mapping) -> None:
        """Take ``state``'s tracker if it names existing files with a better score than the current tracker."""
        folder = Path(self.save_dir)
        fixed = self._key_metric_checkpoint.save_handler.filename  # ignite records its own name, MONAI writes this
        saved = [(float(p), str(f)) for p, f in state.get("_saved", []) if (folder / (fixed or str(f))).is_file()]
        best = max((p for p, _ in saved), default=-math.inf)
        if best <= self._best_score():
            return
        self._key_metric_checkpoint.load_state_dict({"_saved": saved})
        if self._engine is not None and "best_metric" in state:
            self._engine.state.best_metric = float(state["best_metric"])
            self._engine.state.best_metric_epoch = int(state["best_metric_epoch"])

    def restore_best(self) -> bool:
        """Read the tracker from :attr:`key_metric_state_file` if it records a better score than the current one.

        Files it names that no longer exist are dropped (a deleted ``model.pt`` may be written again by any
        score). Returns whether anything was restored.
        """
        if not self.tracks_key_metric or not self.key_metric_state_file.is_file():
            return False
        try:
            state = json.loads(self.key_metric_state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise BundleError(
                f"{self.key_metric_state_file}: cannot be read ({first_line(err)}); delete it to let this run "
                "replace the best checkpoint by any score"
            ) from err
        before = self._best_score()
        self._apply(state)
        return self._best_score() > before

    def _write_key_metric_state(self, engine: Engine | None, filename: str) -> None:
        # ignite appends the new (score, file) to the tracker before it calls the save handler, and MONAI's
        # workflow updates best_metric in an EPOCH_COMPLETED handler registered before this saver's
        state = self.state_dict()
        state["file"] = filename
        state["epoch"] = int(engine.state.epoch) if engine is not None else None
        with checkpoint_writing(self.key_metric_state_file):
            write_text_atomic(self.key_metric_state_file, json.dumps(state, indent=4) + "\n")

    # ---- attaching

    def attach(self, engine: Engine) -> None:
        """Attach like MONAI's saver, except that the final save does not fire on an exception (see class doc)."""
        if self._name is None:
            self.logger = engine.logger
        self._engine = engine
        if self._final_checkpoint is not None:
            engine.add_event_handler(Events.COMPLETED, self.completed)
            if self.save_final_on_exception:
                engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)
        if self._key_metric_checkpoint is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.metrics_completed)
        if self._interval_checkpoint is not None:
            event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
            engine.add_event_handler(event(every=self.save_interval), self.interval_completed)


class _TrackedSaveHandler(AtomicDiskSaver):
    """Save handler of a key-metric checkpoint: writes the tracker JSON, then the best file (both atomic)."""

    def __init__(self, owner: AtomicCheckpointSaver) -> None:
        previous = owner._key_metric_checkpoint.save_handler
        super().__init__(owner.save_dir, filename=previous.filename, check_finite=previous.check_finite)
        self.owner = owner

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if self.check_finite:
            bad = _non_finite_tensor(checkpoint)
            if bad is not None:
                raise TrainingDivergedError(
                    f"not saving {Path(self.dirname) / (self.filename or filename)}: {bad} has NaN/Inf values "
                    "(training diverged); the previous best checkpoint is kept"
                )
        import ignite.distributed as idist

        if idist.get_rank() == self.save_on_rank:
            # tracker first: a kill between the two writes leaves a tracker too strict, never too lenient
            self.owner._write_key_metric_state(self.owner._engine, self.filename or filename)
        super().__call__(checkpoint, filename, metadata)
