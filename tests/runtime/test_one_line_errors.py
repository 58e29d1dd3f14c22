"""Errors a user meets inside a bundle run that end with one line: no CUDA device, a dataset too small to batch."""

from __future__ import annotations

import pytest
import torch

from strokeseg.data.patch_batches import PatchBatchLoader
from strokeseg.errors import StrokesegError
from strokeseg.runtime.errors import input_problem


def _wrapped(exc: BaseException) -> RuntimeError:
    """``exc`` as MONAI's config parser hands it on (``Failed to instantiate component``)."""
    try:
        try:
            raise exc
        except BaseException as inner:
            raise RuntimeError("Failed to instantiate {'_target_': 'SupervisedTrainer'}") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "exc",
    [AssertionError("Torch not compiled with CUDA enabled"), RuntimeError("Found no NVIDIA driver on your system.")],
)
def test_a_missing_cuda_device_inside_a_bundle_run_is_one_line(exc):
    problem = input_problem(_wrapped(exc))
    assert problem is not None and "\n" not in problem
    assert problem.startswith("a CUDA device was asked for (--device) and this machine has none usable (")
    assert problem.endswith("or pass --device cpu")
    assert input_problem(_wrapped(AssertionError("shapes differ"))) is None  # other assertions keep their traceback


def test_too_few_patches_for_one_batch_is_one_line_naming_the_numbers():
    """The uResNet's batch of 16 patches from 2 training cases × samples_per_case 4: said when the loader is built."""
    cases = [{"image": torch.zeros(1, 4, 4)} for _ in range(2)]
    with pytest.raises(StrokesegError) as raised:
        PatchBatchLoader(cases, lambda case: [case] * 4, samples_per_case=4, batch_size=16)
    assert isinstance(raised.value, ValueError)
    assert input_problem(_wrapped(raised.value)) == (
        "no full batch of 16 patches: 2 case(s) × samples_per_case=4, split between 1 loader worker(s); "
        "lower the batch size or the workers, or raise samples_per_case"
    )
