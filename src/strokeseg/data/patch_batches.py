"""Patch-level training batches from case-level patch sampling (shuffled across cases).

A sampler such as :class:`strokeseg.transforms.patches3d.RandBalancedPatches3Dd` turns one case into
``samples_per_case`` patches. Put in a case-level ``DataLoader``, MONAI collates every patch of
``batch_size`` cases into one iteration (16 cases × 512 patches = 8,192 patches per optimiser step), where a
method such as that of Clèrigues et al. 2020 trains on batches of 16 patches. :class:`PatchBatchDataset` streams
the patches of every case through a shuffle buffer and yields batches of exactly ``batch_size`` patches.

Why not MONAI's ``PatchDataset`` + ``ShuffleBuffer`` (the same idea): with ``DataLoader`` workers,
MONAI's ``worker_init_fn`` re-seeds the ``ShuffleBuffer`` but stops there, so the patch sampler inside it
draws the same random numbers in every worker and, without persistent workers, the same ones every epoch;
and neither has a length that matches what the workers yield (each worker batches its own stream, leaving a
partial batch per worker), while ignite needs the epoch length. Here every epoch and worker gets its own
sampling and shuffling seed, derived from the seed PyTorch draws for each ``DataLoader`` iterator (so
``set_determinism`` fixes the whole run), each worker keeps only full batches, and ``len()`` is exactly the
number of batches per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, list_data_collate
from monai.utils import MAX_SEED
from torch.utils.data import IterableDataset, get_worker_info

from strokeseg.errors import DataError
from strokeseg.naming import entry_case_name

__all__ = ["PatchBatchDataset", "PatchBatchLoader", "passthrough"]


def passthrough(batch: Any) -> Any:
    """``collate_fn`` for ``DataLoader(PatchBatchDataset(...), batch_size=None)``: the batches come collated.

    MONAI's ``DataLoader`` would otherwise apply ``list_data_collate`` to each already collated batch.
    """
    return batch


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class PatchBatchDataset(IterableDataset):
    """Batches of ``batch_size`` patches, shuffled across cases.

    Load it with ``DataLoader(dataset, batch_size=None, collate_fn=passthrough, num_workers=num_workers)``.

    Each epoch (each new iterator): the cases are visited in ``case_order`` (split between the workers),
    ``patch_func`` turns each case into ``samples_per_case`` patches, the patches go into a buffer of
    ``buffer_size`` from which they leave in random order, in batches of ``batch_size`` collated with
    ``collate_fn``. A worker's last ``< batch_size`` patches are dropped (as ``drop_last`` does), so every
    batch is full and ``len(self)`` is exact.

    Args:
        data: the cases (a map-style dataset, e.g. a ``CacheDataset`` of the deterministic transforms).
        patch_func: a case → a sequence of ``samples_per_case`` patches (a MONAI multi-sample transform);
            re-seeded per epoch and worker if it has ``set_random_state``.
        samples_per_case: patches ``patch_func`` returns per case.
        batch_size: patches per batch.
        buffer_size: shuffle buffer, in patches; a buffer as large as an epoch's patches shuffles fully.
        num_workers: the ``DataLoader``'s ``num_workers`` (the length depends on how cases are split).
        collate_fn: batches a list of patches (default MONAI ``list_data_collate``).

    Raises:
        ValueError: a non-positive size; at iteration, a worker count other than ``num_workers`` or a
            ``patch_func`` that returns the wrong number of patches (naming the case).
    """

    def __init__(
        self,
        data: Sequence,
        patch_func: Callable[[Any], Sequence[Any]],
        samples_per_case: int,
        batch_size: int,
        buffer_size: int = 2048,
        num_workers: int = 0,
        collate_fn: Callable[[list], Any] = list_data_collate,
    ) -> None:
        self.data = data
        self.patch_func = patch_func
        self.samples_per_case = _positive_int(samples_per_case, "samples_per_case")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.buffer_size = _positive_int(buffer_size, "buffer_size")
        if isinstance(num_workers, bool) or int(num_workers) != num_workers or int(num_workers) < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        self.num_workers = int(num_workers)
        self.collate_fn = collate_fn
        self.case_order: list[int] | None = None
        """Cases of the next epoch, in order (:class:`PatchBatchLoader` draws it); ``None``: the data's order."""

    def _cases(self) -> int:
        return len(self.data) if self.case_order is None else len(self.case_order)

    def _workers(self) -> int:
        return max(1, self.num_workers)

    def __len__(self) -> int:
        workers, n = self._workers(), self._cases()
        return sum(len(range(w, n, workers)) * self.samples_per_case // self.batch_size for w in range(workers))

    def _case_name(self, case: Any, index: int) -> str:
        """A case's name in error messages: :func:`strokeseg.naming.entry_case_name` (``case`` field, else the image
        file), else ``case_<index>`` (also for data that are not dictionaries)."""
        return entry_case_name(case, index) if isinstance(case, Mapping) else f"case_{index}"

    def __iter__(self):
        info = get_worker_info()
        if info is None:
            workers, worker = 1, 0
            base = int(torch.empty((), dtype=torch.int64).random_().item())
        else:
            workers, worker = info.num_workers, info.id
            base = int(info.seed) - int(info.id)  # the iterator's base seed: the same in every worker
        if workers != self._workers():
            raise ValueError(
                f"PatchBatchDataset was built for num_workers={self.num_workers} but runs in {workers} "
                "DataLoader worker(s); pass the DataLoader's num_workers so that len() is right"
            )
        order = list(range(len(self.data)) if self.case_order is None else self.case_order)[worker::workers]
        if hasattr(self.patch_func, "set_random_state"):
            self.patch_func.set_random_state(seed=(base + 1 + worker) % MAX_SEED)
        rng = np.random.RandomState((base + 1 + workers + worker) % 2**32)
        buffer: list[Any] = []
        batch: list[Any] = []

        def pop() -> Any:
            i = rng.randint(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            return buffer.pop()

        def emit():
            batch.append(pop())
            if len(batch) == self.batch_size:
                out = self.collate_fn(list(batch))
                batch.clear()
                return out
            return None

        for index in order:
            case = self.data[int(index)]
            patches = self.patch_func(case)
            if len(patches) != self.samples_per_case:
                raise ValueError(
                    f"{self._case_name(case, int(index))}: the patch sampler returned {len(patches)} patches, "
                    f"expected samples_per_case={self.samples_per_case}"
                )
            for patch in patches:
                if len(buffer) >= self.buffer_size and (out := emit()) is not None:
                    yield out
                buffer.append(patch)
        while buffer:
            if (out := emit()) is not None:
                yield out


class PatchBatchLoader(DataLoader):
    """A MONAI ``DataLoader`` of patch batches drawn from a case-level dataset (:class:`PatchBatchDataset`).

    It takes the arguments a case-level ``DataLoader`` would (``dataset``, ``batch_size``, ``shuffle``,
    ``sampler``, ``num_workers``), so a config overlay written for one, such as the shared
    ``multi_gpu_train.json`` that sets ``train#dataloader#sampler`` to a ``DistributedSampler`` of the cases,
    still applies: the sampler chooses and orders this process's cases (``set_epoch`` is called on it every
    epoch), ``shuffle`` draws a new case order every epoch otherwise. ``batch_size`` counts patches.

    Args:
        dataset: the cases (map-style).
        patch_func: a case → ``samples_per_case`` patches.
        samples_per_case: patches per case per epoch.
        batch_size: patches per batch.
        buffer_size: shuffle buffer in patches (1: patches in sampling order).
        shuffle: a random case order every epoch (ignored when ``sampler`` is given).
        sampler: a sampler of case indices (e.g. ``DistributedSampler``).
        num_workers: loader worker processes; the cases of an epoch are split between them.
        kwargs: passed to ``monai.data.DataLoader`` (not ``persistent_workers``: each epoch's case order
            reaches the workers when they start).

    Raises:
        ValueError: the cases cannot fill one batch, or ``persistent_workers`` (as well as
            :class:`PatchBatchDataset`'s errors).
    """

    def __init__(
        self,
        dataset: Sequence,
        patch_func: Callable[[Any], Sequence[Any]],
        samples_per_case: int,
        batch_size: int,
        buffer_size: int = 2048,
        shuffle: bool = True,
        sampler: Any = None,
        num_workers: int = 0,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("persistent_workers"):
            raise ValueError("PatchBatchLoader cannot keep persistent workers: the case order changes every epoch")
        patches = PatchBatchDataset(dataset, patch_func, samples_per_case, batch_size, buffer_size, num_workers)
        self.cases = dataset
        self.case_sampler = sampler
        self.shuffle_cases = bool(shuffle)
        self._epoch = 0
        super().__init__(patches, batch_size=None, collate_fn=passthrough, num_workers=num_workers, **kwargs)
        patches.case_order = self._next_order(advance=False)
        if len(patches) == 0 and patches.case_order:
            raise DataError(  # a ValueError too; a StrokesegError, so a bundle run ends with this line alone
                f"no full batch of {patches.batch_size} patches: {len(patches.case_order)} case(s) × "
                f"samples_per_case={patches.samples_per_case}, split between {max(1, num_workers)} loader "
                "worker(s); lower the batch size or the workers, or raise samples_per_case"
            )

    def _next_order(self, advance: bool = True) -> list[int]:
        if advance:
            self._epoch += 1
        if self.case_sampler is not None:
            if hasattr(self.case_sampler, "set_epoch"):
                self.case_sampler.set_epoch(self._epoch)
            return [int(i) for i in self.case_sampler]
        if self.shuffle_cases and advance:
            return torch.randperm(len(self.cases)).tolist()
        return list(range(len(self.cases)))

    def __iter__(self):
        self.dataset.case_order = self._next_order()
        return super().__iter__()
