"""Checkpoints of a bundle: written atomically, resumed completely, read safely, never from a diverged run.

What MONAI / ignite give us and what this module adds:

* **Loading.** MONAI's ``CheckpointLoader`` (and ``ckpt_export``) already call ``torch.load(...,
  weights_only=True)``, but a failure surfaces as PyTorch's raw ``Error(s) in loading state_dict``, a bare
  ``FileNotFoundError`` or a 20-line ``UnpicklingError``. :func:`load_network_state` and
  :class:`StrictCheckpointLoader` turn each into a one-line :class:`~strokeseg.errors.BundleError` naming the
  file (a checkpoint of another network, a truncated file, a file with pickled Python objects in it).
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
  *inside* ``model.pt``, which bundles.md keeps a plain ``state_dict``. Instead the tracker travels in the
  trainer's last checkpoint (``best_metric`` entry) *and* in a small JSON next to the best file
  (``model_key_metric.json``: score, epoch, file), written just before ``model.pt`` is replaced. A resumed run
  restores the better of the two, so its first validation cannot replace a better ``model.pt`` by a worse
  one, even when the previous run was killed between writing ``model.pt`` and its next last checkpoint.
* **A NaN loss.** :class:`StopOnNonFiniteLoss` (ignite's ``TerminateOnNan`` made to raise) stops training
  with a one-line error naming the epoch and iteration instead of ``terminate()``-ing quietly, which would
  fire the ``COMPLETED`` savers with NaN weights.
* **One entry point.** :func:`attach_training_checkpoints`, called from a bundle's ``initialize``, saves
  model, optimiser, trainer state, LR scheduler, AMP grad scaler and the best-metric trackers after every
  epoch and resumes all of them from the newest save.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, TerminateOnNan
from monai.handlers import CheckpointLoader, CheckpointSaver

from strokeseg.atomic_io import atomic_path, write_text_atomic
from strokeseg.errors import BundleError, StrokesegError

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "StopOnNonFiniteLoss",
    "StrictCheckpointLoader",
    "TrainingDivergedError",
    "attach_training_checkpoints",
    "describe_mismatch",
    "latest_checkpoint",
    "load_network_state",
    "remove_stale_partials",
]

logger = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
"""Prefix of the temporary siblings written by ``strokeseg.atomic_io`` (``.partial-<pid>-<name>``)."""


class TrainingDivergedError(StrokesegError, FloatingPointError):
    """Training produced a NaN/Inf loss or NaN/Inf weights; the checkpoints written before it are kept."""


# ------------------------------------------------------------------------------------------------ loading


def describe_mismatch(network: torch.nn.Module, state: dict, limit: int = 5) -> str:
    """Human-readable summary of how ``state`` differs from ``network.state_dict()`` (keys and shapes)."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) e.g. {missing[:limit]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[:limit]}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) e.g. {shapes[:limit]}")
    return "; ".join(parts) or "no key or shape difference found"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


def _torch_load(path: Path, map_location: str | torch.device | None) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped where the file allows it.

    With ``mmap=True`` the tensors are views of the (privately mapped, copy-on-write) file and are copied once,
    into the network, instead of twice: 0.045 s instead of 0.09–0.2 s for the GAN's 62 M parameters. A file that
    cannot be mapped (the legacy non-zip format, or a damaged one) is read the plain way, whose error is reported.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise
    except Exception:  # not mappable: the plain reader decides (and words the error)
        return torch.load(path, map_location=map_location, weights_only=True)


def _read_state(path: Path, map_location: str | torch.device | None) -> dict:
    """``torch.load(path, weights_only=True)`` with one-line errors naming ``path``."""
    if not path.is_file():
        raise BundleError(f"checkpoint {path} not found: train the bundle first or point to an existing model file")
    try:
        checkpoint = _torch_load(path, map_location)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found is None:
            detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(err))
            raise BundleError(
                f"checkpoint {path} cannot be read as a PyTorch state_dict: "
                f"{detail.group(1).strip() if detail else _first_line(err)}"
            ) from err
        raise BundleError(
            f"checkpoint {path} contains a pickled Python object ({found.group(1)}), not only tensors: refused, "
            "because loading it could run arbitrary code (torch.load weights_only=True); save a plain state_dict"
        ) from err
    except Exception as err:  # torch raises several types for truncated/foreign files
        raise BundleError(f"checkpoint {path} cannot be read as a PyTorch state_dict: {_first_line(err)}") from err
    if not isinstance(checkpoint, dict):
        raise BundleError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state_dict")
    return checkpoint


def load_network_state(
    network: torch.nn.Module, path: str | Path, key: str = "model", map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load ``path`` (a plain state_dict or a dict with ``key``) into ``network`` strictly and return it.

    The file is read with ``weights_only=True``: a file holding pickled Python objects is refused.

    Raises:
        BundleError: the file is missing, unreadable or holds pickled objects, or its keys/shapes do not fit
            ``network``.
    """
    path = Path(path)
    checkpoint = _read_state(path, map_location)
    state = checkpoint[key] if key in checkpoint and isinstance(checkpoint[key], dict) else checkpoint
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise BundleError(
            f"checkpoint {path} does not fit the network {type(network).__name__} "
            f"(was it trained with another network or configuration?): {describe_mismatch(network, state)}"
        ) from err
    return network


class StrictCheckpointLoader(CheckpointLoader):
    """MONAI ``CheckpointLoader`` whose failures are one-line :class:`~strokeseg.errors.BundleError`\\ s naming the
    file: missing, unreadable, pickled objects (``weights_only=True``), another network, a later epoch than
    ``max_epochs``, or an object of ``load_dict`` that the checkpoint lacks."""

    def __call__(self, engine: Engine) -> None:
        # MONAI reads and loads the file, once; only when that fails is it read again (_read_state) to say in one
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
        checkpoint = _read_state(path, self.map_location)  # raises for a missing, unreadable or pickled file
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
            f"(was it trained with another network or configuration?): {'; '.join(details) or _first_line(err)}"
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
        with atomic_path(path) as tmp:
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
                f"{self.key_metric_state_file}: cannot be read ({_first_line(err)}); delete it to let this run "
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


# -------------------------------------------------------------------------------------------------- NaN loss


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
    from monai.handlers import ValidationHandler

    return [obj.validator for obj in _attached(trainer) if isinstance(obj, ValidationHandler) and obj.validator]


def attach_training_checkpoints(
    trainer: Engine,
    ckpt_dir: str | Path,
    objects: dict,
    resume: bool = True,
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

        "$strokeseg.bundle.checkpoint.attach_training_checkpoints(@train#trainer, @ckpt_dir,
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
    """
    from ignite.handlers import global_step_from_engine
    from monai.handlers import LrScheduleHandler

    from strokeseg.bundle.knobs import as_bool

    resume, save = as_bool(resume, "resume"), as_bool(save, "save")  # "--resume false" arrives as 'false'
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
                    "tracker does not resume; use strokeseg.bundle.checkpoint.AtomicCheckpointSaver (same arguments)"
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
        stored = _read_state(start, "cpu")
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
