"""A network's recorded calls: exactly the slices, windows or tiles that inference fed it, kept for replay.

:class:`CallRecorder` watches a network's forward (pre- and post-hooks, keyword arguments included) and keeps
every call's arguments and first output, in memory or written to files as they happen; :func:`load_calls` reads
such files back memory-mapped. The bench records the calls in the end-to-end child's first run
(:mod:`strokeseg.tools.bench.endtoend`), then counts their FLOPs and replays them in its own process.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from strokeseg.errors import BundleError

__all__ = [
    "CALL_INDEX",
    "RECORD_SUMMARY",
    "NetworkCall",
    "CallRecorder",
    "load_calls",
    "map_tensors",
    "tensors_in",
    "plain_tensor",
    "batch_voxels",
]

#: index of the calls a :class:`CallRecorder` wrote into its folder
CALL_INDEX = "calls.json"
#: what the recording run's inferer got and gave, beside the recorded calls
RECORD_SUMMARY = "summary.json"


def map_tensors(fn: Callable[[torch.Tensor], Any], value: Any) -> Any:
    """``value`` with ``fn`` applied to every tensor in it (through lists, tuples and mappings)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(fn, v) for v in value)
    if isinstance(value, Mapping):
        return {k: map_tensors(fn, v) for k, v in value.items()}
    return value


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Every tensor in ``value`` (through lists, tuples and mappings), in order."""
    found: list[torch.Tensor] = []
    map_tensors(lambda t: found.append(t) or t, value)
    return found


def plain_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a plain ``torch.Tensor`` (a MONAI ``MetaTensor`` without its metadata), not copied."""
    return t.as_tensor() if hasattr(t, "as_tensor") else t


def batch_voxels(shape: Sequence[int]) -> int:
    """Spatial voxels of a ``(B, C, *S)`` shape summed over its batch (``B`` where it has no spatial axes)."""
    return int(shape[0] * math.prod(shape[2:])) if len(shape) > 2 else int(shape[0]) if shape else 1


def _stored(t: torch.Tensor, plain_fp32: bool) -> torch.Tensor:
    """A copy of ``t`` to keep: detached, a plain tensor; with ``plain_fp32`` also contiguous and, if floating
    point, float32 (how a bf16 or channels-last run's calls are kept for replay in any variant)."""
    if not plain_fp32:
        return plain_tensor(t).detach().clone()
    plain = plain_tensor(t).detach()
    dtype = torch.float32 if plain.is_floating_point() else plain.dtype
    return plain.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)


@dataclass
class NetworkCall:
    """One recorded call of a network: its (detached, copied) arguments and what it produced.

    Attributes:
        args, kwargs: the call's arguments (tensors copied, MetaTensors as plain tensors).
        items: batch size of the first tensor argument (slices, windows or tiles in this call).
        output_voxels: spatial voxels of the first output tensor, summed over its batch.
        output: that first output tensor (float32 copy), for a hook to inspect.
    """

    args: tuple
    kwargs: dict
    items: int = 0
    output_voxels: int = 0
    output: torch.Tensor | None = None

    def signature(self) -> tuple:
        """Shapes of every tensor argument: calls of equal signature cost the same FLOPs."""
        return tuple(tuple(t.shape) for t in tensors_in((self.args, self.kwargs)))


@dataclass
class CallRecorder:
    """Context manager recording every call of ``module`` (forward pre- and post-hooks, kwargs included).

    Args:
        module: the network to watch.
        keep_outputs: keep a float32 copy of each call's first output tensor in :attr:`NetworkCall.output`.
        folder: write each call's arguments and output to files there as it happens (``call_NNNNN_in.pt`` /
            ``_out.pt``, an index ``calls.json`` on exit; :func:`load_calls` reads them) and keep only their
            sizes in :attr:`calls`: the process holds one call's copy at a time, so recording does not raise
            the peak memory of the inference it watches (the end-to-end child's, which is P5).
        plain_fp32: keep arguments and outputs contiguous and floating point as float32 (see :func:`_stored`).

    Attributes:
        calls: the recorded calls.
        seconds: time spent in the hooks (copying and writing), for a caller to take out of the run's time.
    """

    module: torch.nn.Module
    keep_outputs: bool = True
    folder: Path | None = None
    plain_fp32: bool = False
    calls: list[NetworkCall] = field(default_factory=list)
    seconds: float = 0.0

    def _file(self, kind: str) -> Path:
        return Path(self.folder) / f"call_{len(self.calls) - 1:05d}_{kind}.pt"

    def _pre(self, module, args, kwargs):
        start = time.perf_counter()
        first = tensors_in(args) or tensors_in(kwargs)
        items = int(first[0].shape[0]) if first and first[0].ndim > 0 else 1
        store = lambda t: _stored(t, self.plain_fp32)  # noqa: E731
        self.calls.append(NetworkCall(map_tensors(store, args), map_tensors(store, kwargs), items))
        if self.folder is not None:
            call = self.calls[-1]
            torch.save({"args": call.args, "kwargs": call.kwargs}, self._file("in"))
            call.args, call.kwargs = (), {}
        self.seconds += time.perf_counter() - start

    def _post(self, module, args, kwargs, output):
        start = time.perf_counter()
        outs = tensors_in(output)
        if outs and self.calls:
            first = outs[0]
            self.calls[-1].output_voxels = batch_voxels(first.shape)
            if self.keep_outputs:
                kept = _stored(first, self.plain_fp32).float()
                if self.folder is not None:
                    torch.save(kept, self._file("out"))
                else:
                    self.calls[-1].output = kept
        self.seconds += time.perf_counter() - start

    def __enter__(self) -> CallRecorder:
        if self.folder is not None:
            Path(self.folder).mkdir(parents=True, exist_ok=True)
        self._handles = [
            self.module.register_forward_pre_hook(self._pre, with_kwargs=True),
            self.module.register_forward_hook(self._post, with_kwargs=True),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        if self.folder is not None:
            index = [{"items": c.items, "output_voxels": c.output_voxels} for c in self.calls]
            (Path(self.folder) / CALL_INDEX).write_text(json.dumps(index))


def load_calls(folder: str | Path) -> list[NetworkCall]:
    """The calls a :class:`CallRecorder` with a ``folder`` wrote there (tensors memory-mapped from the files).

    Raises:
        BundleError: the folder holds no call index or misses a call's file.
    """
    folder = Path(folder)
    if not (folder / CALL_INDEX).is_file():
        raise BundleError(f"{folder} holds no recorded network calls ({CALL_INDEX} missing).")
    calls = []
    for i, entry in enumerate(json.loads((folder / CALL_INDEX).read_text())):
        inputs, output = folder / f"call_{i:05d}_in.pt", folder / f"call_{i:05d}_out.pt"
        if not inputs.is_file():
            raise BundleError(f"recorded call {i} has no {inputs.name} in {folder}.")
        saved = torch.load(inputs, mmap=True, weights_only=True)
        out = torch.load(output, mmap=True, weights_only=True) if output.is_file() else None
        args, kwargs = tuple(saved["args"]), dict(saved["kwargs"])
        calls.append(NetworkCall(args, kwargs, entry["items"], entry["output_voxels"], out))
    return calls
