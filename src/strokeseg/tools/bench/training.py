"""P4: one training iteration fed by the bundle's data pipeline ÷ the same iteration on a batch in memory.

The iteration is ``train#trainer``'s own ``_iteration`` (prepare, forward, loss, backward, step), on a batch drawn
from ``train#dataloader`` vs on one batch drawn once and kept.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.utils import set_determinism

from strokeseg.tools.bench.calls import tensors_in
from strokeseg.tools.bench.timing import median, time_call
from strokeseg.tools.bench.workspace import configs_dir

__all__ = ["training_step", "SECOND_WARM_UP_BELOW_S"]

#: P4 runs a second warm-up iteration when the first took less than this (seconds)
SECOND_WARM_UP_BELOW_S = 30.0


def _first_tensor_shape(batch: Any) -> list[int]:
    if isinstance(batch, Mapping) and isinstance(batch.get("image"), torch.Tensor):
        return list(batch["image"].shape)
    found = tensors_in(batch)
    return list(found[0].shape) if found else []


def training_step(
    bundle: Path,
    data_root: Path,
    work: Path,
    repeats: int,
    seed: int,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """P4: ``train#trainer``'s own iteration on a batch from ``train#dataloader`` vs on a batch in memory.

    The loader runs with ``num_workers`` 0 and ``cache_rate`` 1 (deterministic transforms cached, as a real
    run after its first epoch); ``num_folds`` 1 puts every synthetic case into the training split (unless that
    empties the bundle's training split). Only the knobs the config has are set.
    """

    def make_parser(single_fold: bool):
        parser = ConfigParser()
        parser.read_config(str(configs_dir(bundle) / "train.json"))
        parser.read_meta(str(configs_dir(bundle) / "metadata.json"))
        wanted = {"num_workers": 0, "cache_rate": 1.0, "seed": seed, **({"num_folds": 1} if single_fold else {})}
        updates: dict[str, Any] = {"bundle_root": str(bundle), "dataset_dir": str(data_root)}
        updates.update({k: v for k, v in wanted.items() if k in parser.config})
        for key, value in {"output_dir": work / "train_out", "ckpt_dir": work / "train_ckpt"}.items():
            if key in parser.config:
                updates[key] = str(value)
        updates.update(dict(overrides or {}))
        parser.update(updates)
        return parser

    # num_folds 1 puts every synthetic case into training where the bundle's split allows it (strokeseg's
    # cases_for); a bundle whose own split then leaves training empty keeps its folds.
    parser = make_parser(single_fold=True)
    set_determinism(seed=seed)
    start = time.perf_counter()
    if "num_folds" in parser.config and len(parser.get_parsed_content("train#dataset")) == 0:
        parser = make_parser(single_fold=False)
    cache_s, trainer = time_call(lambda: parser.get_parsed_content("train#trainer"))
    cache_s = time.perf_counter() - start
    loader = trainer.data_loader
    state = {"it": iter(loader)}

    def next_batch():
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])

    def iteration(batch) -> None:
        trainer._iteration(trainer, batch)

    fetch_s, prebuilt = time_call(next_batch)
    # Warm-up: allocator, optimiser state and oneDNN backward primitives. The iteration after the first was
    # still ~1 s slower than the later ones in every 2-D bundle (MS-DCNN 5.65 s, then 4.74 / 4.64 s), which
    # with one repeat landed on the pipeline side alone; a second warm-up runs unless one iteration is long.
    if time_call(lambda: iteration(prebuilt))[0] < SECOND_WARM_UP_BELOW_S:
        iteration(prebuilt)
    pipeline, in_memory, data_only = [], [], []
    for _ in range(repeats):  # alternate, so drifting machine load hits both sides alike
        start = time.perf_counter()
        batch = next_batch()
        data_only.append(time.perf_counter() - start)
        iteration(batch)
        pipeline.append(time.perf_counter() - start)
        in_memory.append(time_call(lambda: iteration(prebuilt))[0])
    ratio = median(pipeline, 9) / median(in_memory, 9)
    shape = _first_tensor_shape(prebuilt)
    return {
        "stage": "train",
        "batch_image_shape": shape,
        # items (slices, patches, segments) of one batch per second, from the pipeline as a real run sees it
        "items_per_s": round(shape[0] / median(pipeline, 9), 2) if shape and median(pipeline, 9) > 0 else None,
        "train_batch_size": parser.config.get("train_batch_size"),
        "samples_per_case": parser.config.get("samples_per_case"),
        "cache_build_s": round(cache_s, 3),
        "first_fetch_s": round(fetch_s, 3),
        "pipeline_iteration_s": [round(s, 3) for s in pipeline],
        "in_memory_iteration_s": [round(s, 3) for s in in_memory],
        "data_fetch_s": [round(s, 3) for s in data_only],
        "pipeline_median_s": median(pipeline, 3),
        "in_memory_median_s": median(in_memory, 3),
        "p4": round(ratio, 3),
    }
