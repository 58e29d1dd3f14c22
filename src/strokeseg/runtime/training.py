"""Training that stops loudly and resumes completely.

* **A NaN loss.** :class:`StopOnNonFiniteLoss` (ignite's ``TerminateOnNan`` made to raise) stops training
  with a one-line error naming the epoch and iteration instead of ``terminate()``-ing quietly, which would
  fire the ``COMPLETED`` savers with NaN weights.
* **One entry point.** :func:`attach_training_checkpoints`, called from a bundle's ``initialize``, saves
  model, optimiser, trainer state, LR scheduler, AMP grad scaler and the best-metric trackers after every
  epoch (atomically, :mod:`strokeseg.runtime.checkpoint`) and resumes all of them from the newest save.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, TerminateOnNan, global_step_from_engine
from monai.handlers import CheckpointSaver, LrScheduleHandler, ValidationHandler

from strokeseg.atomic_io import check_writable_folder, temporary_path
from strokeseg.errors import BundleError
from strokeseg.knobs import BoolKnob, as_bool
from strokeseg.networks.weights import read_state
from strokeseg.runtime.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    CheckpointWriteError,
    StrictCheckpointLoader,
    TrainingDivergedError,
    remove_stale_partials,
)

__all__ = ["StopOnNonFiniteLoss", "attach_training_checkpoints", "check_checkpoint_folder", "latest_checkpoint"]

logger = logging.getLogger(__name__)


def _loss_of(output: Any) -> Any:
    """The loss of a MONAI trainer's output (a dict, or a list of dicts for ``num_samples`` batches)."""
    if isinstance(output, Mapping):
        return output.get("loss", output.get("g_loss", output))
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
        return [_loss_of(item) for item in output]
    return output


class StopOnNonFiniteLoss(TerminateOnNan):
    """ignite ``TerminateOnNan`` that raises :class:`TrainingDivergedError` instead of terminating quietly.

    ``TerminateOnNan`` calls ``engine.terminate()``, after which ignite fires ``COMPLETED``: every final save
    then writes the NaN weights as if training had finished. Raising stops the run before any save, names the
    epoch and iteration, and leaves the checkpoints of the previous epochs untouched; the CLI prints the
    message as its one-line error. Put it in a trainer's ``train_handlers`` (it has MONAI's ``attach``).

    Args:
        output_transform: picks the value(s) to check from ``engine.state.output``; default: the ``loss``
            entry of MONAI's output dict (``g_loss`` for a GAN trainer). Images and predictions are not checked.
        ckpt_dir: where the checkpoints are, for the message (set by :func:`attach_training_checkpoints`).
    """

    def __init__(self, output_transform: Callable = _loss_of, ckpt_dir: str | Path | None = None) -> None:
        super().__init__(output_transform=output_transform)
        self.ckpt_dir = ckpt_dir
        self.prefix = "last"

    def attach(self, engine: Engine) -> None:
        """Check the output after every iteration of ``engine``."""
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = self._output_transform(engine.state.output)
        values = output if isinstance(output, (list, tuple)) else [output]
        for value in values:
            if isinstance(value, numbers.Number):
                value = torch.tensor(float(value))
            if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value.detach()).all()):
                shown = value.detach().float().flatten()[:1].item()
                kept = latest_checkpoint(self.ckpt_dir, self.prefix) if self.ckpt_dir is not None else None
                where = f"; the last good checkpoint {kept} is kept" if kept else "; earlier checkpoints are kept"
                raise TrainingDivergedError(
                    f"training stopped: the loss is {shown} at epoch {engine.state.epoch}, iteration "
                    f"{engine.state.iteration} (training diverged: lower the learning rate or check the inputs)"
                    f"{where}"
                )


# --------------------------------------------------------------------------------------- training resume


def _numbered_checkpoints(ckpt_dir: str | Path, prefix: str) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every ``<prefix>_checkpoint_<epoch>.pt`` in ``ckpt_dir``, oldest first."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob(f"{prefix}_checkpoint_*.pt"):
        step = path.stem.rsplit("_", 1)[-1]
        if step.isdigit():
            found.append((int(step), path))
    return sorted(found)


def latest_checkpoint(ckpt_dir: str | Path, prefix: str = "last") -> Path | None:
    """Newest ``<prefix>_checkpoint_<epoch>.pt`` written by :func:`attach_training_checkpoints`, or ``None``."""
    found = _numbered_checkpoints(ckpt_dir, prefix)
    return found[-1][1] if found else None


def _attached(engine: Engine | None) -> Iterator[Any]:
    """Every handler object attached to ``engine`` (bound methods → their object, filtered events → the handler)."""
    if engine is None:
        return
    seen: set[int] = set()
    for handlers in engine._event_handlers.values():
        for handler, _, _ in handlers:
            parent = getattr(handler, "_parent", None)
            for obj in (handler, parent() if parent is not None else None, getattr(handler, "__self__", None)):
                if obj is not None and id(obj) not in seen:
                    seen.add(id(obj))
                    yield obj


def _find_evaluators(trainer: Engine) -> list[Engine]:
    return [obj.validator for obj in _attached(trainer) if isinstance(obj, ValidationHandler) and obj.validator]


def check_checkpoint_folder(ckpt_dir: str | Path) -> Path:
    """Create ``ckpt_dir`` if needed and write (then remove) a small file in it, so that a folder where no
    checkpoint can be written stops a run at its start rather than after its first epoch.

    Raises:
        CheckpointWriteError: the folder cannot be created or written into (one line naming it and why).
    """
    folder = Path(ckpt_dir)
    probe = temporary_path(folder / "write-test")
    try:
        check_writable_folder(folder)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        where = f" ({err.filename} is in the way)" if err.filename and Path(err.filename) != probe else ""
        raise CheckpointWriteError(
            f"{folder}: cannot write checkpoints there: {reason}{where}; pass a writable --ckpt_dir"
        ) from err
    return folder


def attach_training_checkpoints(
    trainer: Engine,
    ckpt_dir: str | Path,
    objects: dict,
    resume: BoolKnob = True,
    prefix: str = "last",
    n_saved: int = 1,
    save: bool = True,
    evaluator: Engine | list[Engine] | None = None,
    stop_on_nan: bool = True,
) -> Path | None:
    """Save the whole training state after every epoch (atomically) and resume all of it from the newest save.

    MONAI's ``CheckpointSaver`` cannot take the trainer itself in a bundle config without a circular
    reference (the trainer's handler list would reference the trainer), so bundles call this from their
    ``initialize`` section::

        "$strokeseg.runtime.checkpoint.attach_training_checkpoints(@train#trainer, @ckpt_dir,
            {'model': @network_def, 'optimizer': @optimizer}, resume=@resume)"

    Besides ``objects`` and the trainer (epoch, iteration), the checkpoint holds what is found attached:

    * ``scaler``: the trainer's AMP ``GradScaler`` (``trainer.scaler``; ``g_scaler``/``d_scaler`` of a GAN);
    * ``lr_scheduler``: the scheduler of a MONAI ``LrScheduleHandler`` on the trainer, unless ``objects``
      already holds it (name an ignite/other scheduler in ``objects`` yourself);
    * ``best_metric`` (``best_metric_<i>`` for several): the tracker of every :class:`AtomicCheckpointSaver`
      with a key metric on the trainer or on the evaluators (by default the validators of the trainer's
      ``ValidationHandler``\\ s).

    A plain MONAI ``CheckpointSaver`` found there is refused (it is not atomic and its tracker does not
    resume). A :class:`StopOnNonFiniteLoss` is attached when the trainer has none. Stale ``.partial-*`` files
    of a killed run are removed from ``ckpt_dir``. Optional entries missing from an older checkpoint are
    skipped with a warning.

    Args:
        trainer: the ignite/MONAI trainer.
        ckpt_dir: folder of the checkpoints (``<prefix>_checkpoint_<epoch>.pt``).
        objects: e.g. ``{"model": network, "optimizer": optimizer, "lr_scheduler": scheduler}``; the trainer
            is added as ``trainer``.
        resume: load the newest checkpoint in ``ckpt_dir`` when the trainer starts, and the best-metric
            trackers from their JSON files. ``False`` starts over: the first validation writes ``model.pt``.
        prefix: file name prefix (``last``; ``muscle_last`` for a second stage in the same folder).
        n_saved: how many epoch checkpoints to keep.
        save: write checkpoints (``False`` on the non-zero ranks of a distributed run, which only resume).
        evaluator: evaluator(s) whose best-metric savers to track; default: found through the trainer.
        stop_on_nan: attach a :class:`StopOnNonFiniteLoss` if the trainer has none.

    Returns:
        The checkpoint that will be resumed from, or ``None``.

    Raises:
        BundleError: a plain (non-atomic) MONAI ``CheckpointSaver`` is attached, or ``objects`` names ``trainer``,
            or the checkpoint to resume from lacks an object of ``objects``.
        CheckpointWriteError: ``save`` and ``ckpt_dir`` cannot be created or written into.
    """

    resume, save = as_bool(resume, "resume"), as_bool(save, "save")  # "--resume false" arrives as 'false'
    if save:
        check_checkpoint_folder(ckpt_dir)  # now, not when the first epoch ends
    evaluators = [evaluator] if isinstance(evaluator, Engine) else list(evaluator or _find_evaluators(trainer))
    if "trainer" in objects:
        raise BundleError("attach_training_checkpoints: 'trainer' is added automatically; do not name it in objects")
    to_save = dict(objects)
    to_save["trainer"] = trainer
    optional: set[str] = set()

    scalers = {"scaler": getattr(trainer, "scaler", None)}
    state = getattr(trainer, "state", None)
    scalers.update({name: getattr(state, name, None) for name in ("g_scaler", "d_scaler")})
    for name, scaler in scalers.items():
        # a disabled GradScaler (amp on a CPU-only machine) has an empty state that it refuses to load again
        enabled = scaler is not None and (not hasattr(scaler, "is_enabled") or scaler.is_enabled())
        if enabled and name not in to_save:
            to_save[name] = scaler
            optional.add(name)

    best_savers: list[AtomicCheckpointSaver] = []
    known = {id(v) for v in objects.values()}
    for engine in [trainer, *evaluators]:
        for obj in _attached(engine):
            if isinstance(obj, AtomicCheckpointSaver):
                if obj.tracks_key_metric and obj not in best_savers:
                    best_savers.append(obj)
            elif isinstance(obj, CheckpointSaver):
                raise BundleError(
                    f"a plain MONAI CheckpointSaver writes into {obj.save_dir}: it is not atomic and its best-metric "
                    "tracker does not resume; use strokeseg.runtime.checkpoint.AtomicCheckpointSaver (same arguments)"
                )
            elif isinstance(obj, LrScheduleHandler) and id(obj.lr_scheduler) not in known:
                if "lr_scheduler" not in to_save:
                    to_save["lr_scheduler"] = obj.lr_scheduler
                    optional.add("lr_scheduler")
    for index, saver in enumerate(best_savers):
        name = "best_metric" if len(best_savers) == 1 else f"best_metric_{index}"
        to_save[name] = saver
        optional.add(name)

    if stop_on_nan:
        guards = [obj for obj in _attached(trainer) if isinstance(obj, StopOnNonFiniteLoss)]
        if not guards:
            guard = StopOnNonFiniteLoss()
            guard.attach(trainer)
            guards = [guard]
        for guard in guards:
            guard.ckpt_dir, guard.prefix = ckpt_dir, prefix

    saver = Checkpoint(
        to_save,
        AtomicDiskSaver(ckpt_dir),
        filename_prefix=prefix,
        n_saved=n_saved,
        global_step_transform=global_step_from_engine(trainer),
    )
    if save:
        remove_stale_partials(ckpt_dir)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, saver)
    if not resume:
        return None
    for best in best_savers:
        best.restore_best()
    start = latest_checkpoint(ckpt_dir, prefix)
    if start is not None:
        # a fresh saver knows nothing of the previous run's files: hand it the newest ones so that
        # n_saved still holds across resumes (otherwise every resume leaves one more checkpoint behind)
        previous = _numbered_checkpoints(ckpt_dir, prefix)[-n_saved:]
        saver.load_state_dict({"_saved": [(step, path.name) for step, path in previous]})
        stored = read_state(start, "cpu")
        load_dict = {}
        for name, obj in to_save.items():
            if name in stored:
                load_dict[name] = obj
            elif name in optional:
                logger.warning("%s has no %r entry (an older checkpoint?): that state starts afresh", start, name)
            else:
                raise BundleError(
                    f"checkpoint {start} has no {name!r} (it holds {sorted(stored)}): written by another bundle or "
                    "configuration? Pass --resume false to start again, or use another ckpt_dir"
                )
        StrictCheckpointLoader(load_path=str(start), load_dict=load_dict, map_location="cpu").attach(trainer)
    return start
