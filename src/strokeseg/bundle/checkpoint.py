"""Checkpoint loading with errors that name the file and say what does not match.

MONAI's ``CheckpointLoader`` raises PyTorch's raw ``Error(s) in loading state_dict`` (or a bare
``FileNotFoundError``) without saying which bundle file or which network is involved; a user who points
a bundle at another method's ``model.pt`` deserves a message that says exactly that.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

from strokeseg.errors import BundleError

__all__ = [
    "StrictCheckpointLoader",
    "attach_training_checkpoints",
    "describe_mismatch",
    "latest_checkpoint",
    "load_network_state",
]


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


def _read_state(path: Path, map_location: str | torch.device | None) -> dict:
    if not path.is_file():
        raise BundleError(f"checkpoint {path} not found: train the bundle first or point to an existing model file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated/foreign files
        raise BundleError(f"checkpoint {path} cannot be read as a PyTorch state_dict: {err}") from err
    if not isinstance(checkpoint, dict):
        raise BundleError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state_dict")
    return checkpoint


def load_network_state(
    network: torch.nn.Module, path: str | Path, key: str = "model", map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load ``path`` (a plain state_dict or a dict with ``key``) into ``network`` strictly and return it.

    Raises:
        BundleError: the file is missing or unreadable, or its keys/shapes do not fit ``network``.
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
    """MONAI ``CheckpointLoader`` whose failures are :class:`~strokeseg.errors.BundleError` naming the file."""

    def __call__(self, engine: Engine) -> None:
        path = Path(self.load_path)
        _read_state(path, self.map_location)
        try:
            super().__call__(engine)
        except (RuntimeError, KeyError) as err:
            checkpoint = _read_state(path, self.map_location)
            details = []
            for name, obj in self.load_dict.items():
                if isinstance(obj, torch.nn.Module):
                    state = checkpoint.get(name, checkpoint) if isinstance(checkpoint.get(name), dict) else checkpoint
                    details.append(f"{name}: {describe_mismatch(obj, state)}")
            raise BundleError(
                f"checkpoint {path} does not fit this bundle's objects {list(self.load_dict)} "
                f"(was it trained with another network or configuration?): {'; '.join(details) or err}"
            ) from err


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


def attach_training_checkpoints(
    trainer: Engine,
    ckpt_dir: str | Path,
    objects: dict,
    resume: bool = True,
    prefix: str = "last",
    n_saved: int = 1,
    save: bool = True,
) -> Path | None:
    """Save ``objects`` + the trainer state after every epoch (atomically) and resume from the newest save.

    MONAI's ``CheckpointSaver`` cannot take the trainer itself in a bundle config without a circular
    reference (the trainer's handler list would reference the trainer), so bundles call this from
    their ``initialize`` section instead.

    Args:
        trainer: the ignite/MONAI trainer.
        ckpt_dir: folder of the checkpoints (``<prefix>_checkpoint_<epoch>.pt``).
        objects: e.g. ``{"model": network, "optimizer": optimizer}``; the trainer is added as ``trainer``.
        resume: load the newest checkpoint in ``ckpt_dir`` when the trainer starts.
        prefix: file name prefix.
        n_saved: how many epoch checkpoints to keep.
        save: write checkpoints (``False`` on the non-zero ranks of a distributed run, which only resume).

    Returns:
        The checkpoint that will be resumed from, or ``None``.
    """
    from ignite.engine import Events
    from ignite.handlers import Checkpoint, DiskSaver, global_step_from_engine

    to_save = dict(objects)
    to_save["trainer"] = trainer
    saver = Checkpoint(
        to_save,
        DiskSaver(str(ckpt_dir), require_empty=False, atomic=True),
        filename_prefix=prefix,
        n_saved=n_saved,
        global_step_transform=global_step_from_engine(trainer),
    )
    if save:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, saver)
    start = latest_checkpoint(ckpt_dir, prefix) if resume else None
    if start is not None:
        # a fresh saver knows nothing of the previous run's files: hand it the newest ones so that
        # n_saved still holds across resumes (otherwise every resume leaves one more checkpoint behind)
        previous = _numbered_checkpoints(ckpt_dir, prefix)[-n_saved:]
        saver.load_state_dict({"_saved": [(step, path.name) for step, path in previous]})
        StrictCheckpointLoader(load_path=str(start), load_dict=to_save, map_location="cpu").attach(trainer)
    return start
