"""The inference wiring the five bundles share, as one component.

Every bundle's ``inference.json`` used to spell out the same ninety lines: a ``Dataset`` of the pending cases, a
one-case ``DataLoader`` wrapped by :meth:`~strokeseg.runtime.inputs.InferenceCases.loader`, strict weight loaders,
progress handlers, a seg writer (and a probability writer behind ``--save_prob``) and MONAI's
``SupervisedEvaluator``. :class:`CaseInference` builds those from what differs per bundle (preprocessing, network,
inferer, post-processing, weight files), so ``inference.json`` names only its method. MONAI's bundle properties
stay ids of the config (``"dataset": "$@inference.dataset"``, ``"evaluator": "$@inference.evaluator"``), and each
part is built on first use, so an overlay that replaces the evaluator (the uResNet's fold ensemble) reuses the
loader and writers without building the single-network evaluator.

Before the dataset is built, the run's :attr:`~CaseInference.record` (bundle, sha256 of every weight file, the
``options`` that change the values written) decides which cases a rerun skips, runs or refuses
(:meth:`~strokeseg.runtime.inputs.InferenceCases.plan_rerun`), and each case's record is written before its files
(:class:`~strokeseg.runtime.reruns.RecordedWriters`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.handlers import ProgressBar
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import StatsHandler
from monai.transforms import Compose

from strokeseg.knobs import BoolKnob, as_bool
from strokeseg.runtime.checkpoint import StrictCheckpointLoader
from strokeseg.runtime.inputs import InferenceCases
from strokeseg.runtime.reruns import RecordedWriters, RunRecord, bundle_identity, file_sha256
from strokeseg.transforms.io import SaveCasePredictiond

__all__ = ["CaseInference"]


class CaseInference:
    """Cases → dataset → loader → evaluator with strict weights, progress and per-case writers.

    Args:
        inputs: the run's cases (:class:`~strokeseg.runtime.inputs.InferenceCases`: discovery, bad cases, reruns).
        bundle_root: the bundle folder, which ``weights`` are relative to.
        preprocessing: the bundle's preprocessing transform.
        device: where the network runs.
        network: the network the default evaluator runs (``None`` when an overlay supplies its own evaluator).
        inferer: the bundle's inferer.
        postprocessing: the bundle's tensor post-processing (the writers are appended to it).
        weights: ``{file relative to the bundle root: load_dict}``; each file is loaded strictly before the run
            (:class:`~strokeseg.runtime.checkpoint.StrictCheckpointLoader`); a ``None`` load_dict skips the file.
            The sha256 of each loaded file goes into the run's record.
        save_prob: also write ``<case>_prob.nii.gz`` (float32) from the ``prob`` key; a boolean knob in any
            command-line spelling (``true``, ``False``, ``0`` …).
        prob_channel: the channel of ``prob`` to write (``None``: the whole map).
        num_workers: ``DataLoader`` workers.
        amp: MONAI's CUDA autocast for the evaluator (a boolean knob).
        extra_handlers: further handlers, run after the weight loaders.
        options: the inference knobs that change the values written (precision, preprocessing, inferer and
            post-processing parameters), as JSON values; recorded with each case, a rerun skips a case only if
            they match (:mod:`strokeseg.runtime.reruns`).
    """

    def __init__(
        self,
        inputs: InferenceCases,
        bundle_root: str | Path,
        preprocessing: Callable,
        device: torch.device | str,
        network: torch.nn.Module | None = None,
        inferer: Any = None,
        postprocessing: Callable | None = None,
        weights: Mapping[str, Mapping[str, torch.nn.Module] | None] | None = None,
        save_prob: BoolKnob = False,
        prob_channel: int | None = None,
        num_workers: int = 0,
        amp: BoolKnob = False,
        extra_handlers: Sequence[Any] = (),
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.inputs = inputs
        self.bundle_root = Path(bundle_root)
        self.preprocessing = preprocessing
        self.device = torch.device(device) if isinstance(device, str) else device
        self.network = network
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.weights = dict(weights or {})
        self.save_prob = as_bool(save_prob, "save_prob")
        self.prob_channel = prob_channel
        self.num_workers = int(num_workers)
        self.amp = as_bool(amp, "amp")
        self.extra_handlers = list(extra_handlers)
        self.options = dict(options or {})

    def _loaded_weights(self) -> list[str]:
        return [name for name, load_dict in self.weights.items() if load_dict is not None]

    def _weight_key(self, name: str) -> str:
        path = (self.bundle_root / name).resolve()
        root = self.bundle_root.resolve()
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    @cached_property
    def record(self) -> RunRecord:
        """This run's bundle (name, version), the sha256 of each weight file it loads, and its ``options``.

        Raises:
            BundleError: a weight file does not exist.
        """
        name, version = bundle_identity(self.bundle_root)
        weights = {self._weight_key(n): file_sha256(self.bundle_root / n) for n in self._loaded_weights()}
        return RunRecord(name, version, weights, self.options)

    @cached_property
    def dataset(self) -> Dataset:
        """The cases this run processes (a rerun's skipped or refused ones decided first), with the preprocessing.

        Raises:
            DataError: the output folder holds another run's outputs (see
                :meth:`~strokeseg.runtime.inputs.InferenceCases.plan_rerun`).
        """
        self.inputs.plan_rerun(lambda: self.record, lambda case: [writer.path(case) for writer in self.writers])
        return Dataset(data=self.inputs.pending, transform=self.preprocessing)

    @cached_property
    def loader(self):
        """One case per batch, in order, bad cases skipped or reported by the inputs."""
        plain = DataLoader(self.dataset, batch_size=1, shuffle=False, num_workers=self.num_workers)
        return self.inputs.loader(plain)

    @cached_property
    def writers(self) -> list[SaveCasePredictiond]:
        """``<case>_seg.nii.gz`` (uint8) always, ``<case>_prob.nii.gz`` (float32) with ``save_prob``."""
        out = self.inputs.output_dir
        writers = []
        if self.save_prob:
            writers.append(
                SaveCasePredictiond("prob", out, postfix="prob", output_dtype=np.float32, channel=self.prob_channel)
            )
        writers.append(SaveCasePredictiond("pred", out, postfix="seg", output_dtype=np.uint8))
        return writers

    @cached_property
    def handlers(self) -> list[Any]:
        """Strict weight loaders, the extra handlers, then MONAI's stats and ignite's progress bar."""
        loaders = [
            StrictCheckpointLoader(
                load_path=str(self.bundle_root / name), load_dict=dict(load_dict), map_location=self.device
            )
            for name, load_dict in self.weights.items()
            if load_dict is not None
        ]
        return loaders + self.extra_handlers + [StatsHandler(iteration_log=False), ProgressBar(persist=False)]

    def postprocessing_with_writers(self, postprocessing: Callable | None = None) -> Compose:
        """``postprocessing`` (the bundle's, by default) followed by the case's record and the writers."""
        chosen = self.postprocessing if postprocessing is None else postprocessing
        recorded = RecordedWriters(self.writers, self.inputs.output_dir, lambda: self.record)
        return Compose(([chosen] if chosen is not None else []) + [recorded])

    @cached_property
    def evaluator(self) -> SupervisedEvaluator:
        """MONAI's evaluator over the loader, with the network, inferer, post-processing + writers, handlers."""
        if self.network is None:
            raise ValueError("CaseInference has no network: pass one, or give the overlay its own evaluator")
        return SupervisedEvaluator(
            device=self.device,
            val_data_loader=self.loader,
            network=self.network,
            inferer=self.inferer,
            postprocessing=self.postprocessing_with_writers(),
            val_handlers=self.handlers,
            amp=self.amp,
        )

    def run(self, evaluator: Any = None) -> None:
        """Run ``evaluator`` (this component's by default) over the cases; bad cases are reported at the end."""
        self.inputs.run(self.evaluator if evaluator is None else evaluator)
