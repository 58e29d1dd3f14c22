"""Patch-level batches shuffled across cases (strokeseg.data.patch_batches)."""

from __future__ import annotations

import monai
import pytest
import torch
from monai.transforms import RandSpatialCropSamplesd

from strokeseg.data.patch_batches import PatchBatchDataset, PatchBatchLoader

N_CASES, PER_CASE, BATCH = 5, 7, 4


def _cases(n: int = N_CASES) -> list[dict]:
    """Case k: voxel values 1000 k + linear index, the same in image and label (pairing is checkable)."""
    vol = torch.arange(8 * 8 * 8, dtype=torch.float32).reshape(1, 8, 8, 8)
    return [{"image": vol + 1000 * k, "label": vol + 1000 * k} for k in range(n)]


def _sampler(num_samples: int = PER_CASE) -> RandSpatialCropSamplesd:
    return RandSpatialCropSamplesd(
        keys=["image", "label"], roi_size=(4, 4, 4), num_samples=num_samples, random_size=False
    )


def _epochs(loader, epochs: int = 2) -> list[list[torch.Tensor]]:
    return [[batch["image"].as_tensor().clone() for batch in loader] for _ in range(epochs)]


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_full_patch_batches_of_every_case_and_len_is_exact(workers):
    monai.utils.set_determinism(seed=0)
    loader = PatchBatchLoader(_cases(), _sampler(), PER_CASE, BATCH, buffer_size=64, num_workers=workers)
    batches = list(loader)
    # workers split the cases (3 + 2 with two workers); each keeps only full batches
    expected = (N_CASES * PER_CASE) // BATCH if workers == 0 else (3 * PER_CASE) // BATCH + (2 * PER_CASE) // BATCH
    assert len(loader) == len(batches) == expected
    for batch in batches:
        assert batch["image"].shape == (BATCH, 1, 4, 4, 4)
        assert torch.equal(batch["image"].as_tensor(), batch["label"].as_tensor())  # image and label paired
    cases = torch.cat([b["image"][:, 0, 0, 0, 0] for b in batches]) // 1000
    counts = torch.bincount(cases.long(), minlength=N_CASES)
    assert counts.sum() == expected * BATCH and (counts > 0).all() and (counts <= PER_CASE).all()
    # shuffled across cases, not only case by case: the stream of case ids is not made of one run per case
    # (a loader that ignored the buffer would give exactly one run per case visited)
    if workers == 0:
        ids = cases.long().tolist()
        runs = 1 + sum(a != b for a, b in zip(ids, ids[1:], strict=False))
        assert runs > N_CASES, f"patches left case by case: {ids}"


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_batches_and_every_epoch_draws_anew(workers):
    runs = []
    for _ in range(2):
        monai.utils.set_determinism(seed=3)
        loader = PatchBatchLoader(_cases(), _sampler(), PER_CASE, BATCH, num_workers=workers)
        runs.append(_epochs(loader))
    monai.utils.set_determinism(seed=None)
    first, second = runs
    assert all(torch.equal(a, b) for ea, eb in zip(first, second, strict=True) for a, b in zip(ea, eb, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first[0], first[1], strict=False))


def test_workers_draw_their_own_random_patches():
    """MONAI seeds a ShuffleBuffer but not the sampler inside; here each worker samples with its own seed."""
    monai.utils.set_determinism(seed=0)
    cases = [{"image": torch.arange(512.0).reshape(1, 8, 8, 8), "label": torch.zeros(1, 8, 8, 8)} for _ in range(2)]
    loader = PatchBatchLoader(cases, _sampler(8), 8, 8, buffer_size=1, shuffle=False, num_workers=2)
    one, two = [b["image"][:, 0, 0, 0, 0] for b in loader]  # one batch per worker, one case each
    assert not torch.equal(one, two)


def test_no_shuffle_and_a_one_patch_buffer_keep_the_sampling_order():
    monai.utils.set_determinism(seed=0)
    loader = PatchBatchLoader(_cases(), _sampler(), PER_CASE, 5, buffer_size=1, shuffle=False)
    ids = torch.cat([b["image"][:, 0, 0, 0, 0] for b in loader]) // 1000
    assert ids.tolist() == sorted(ids.tolist())  # case 0's patches, then case 1's, ...


def test_a_case_sampler_chooses_and_orders_the_cases_and_gets_set_epoch():
    class Sampler:
        def __init__(self):
            self.epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

        def __iter__(self):
            return iter([3, 1])

        def __len__(self):
            return 2

    sampler = Sampler()
    loader = PatchBatchLoader(_cases(), _sampler(), PER_CASE, 7, buffer_size=1, sampler=sampler)
    assert len(loader) == 2
    ids = [sorted(set((b["image"][:, 0, 0, 0, 0] // 1000).long().tolist())) for b in loader]
    assert ids == [[3], [1]]
    list(loader)
    assert sampler.epochs[-2:] == [1, 2]


def test_a_sampler_returning_the_wrong_count_names_the_case():
    ds = PatchBatchDataset(_cases(2), _sampler(3), samples_per_case=4, batch_size=2)
    with pytest.raises(ValueError, match=r"case_\d: the patch sampler returned 3 patches, expected samples_per_case=4"):
        list(ds)
    named = [{**case, "case": f"sub-{k}"} for k, case in enumerate(_cases(2))]
    with pytest.raises(ValueError, match=r"sub-\d: the patch sampler returned 3 patches"):
        list(PatchBatchDataset(named, _sampler(3), samples_per_case=4, batch_size=2))


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"samples_per_case": 1.5}, {"buffer_size": -1}])
def test_bad_sizes_are_rejected(bad):
    kwargs = {"samples_per_case": 2, "batch_size": 2, **bad}
    with pytest.raises(ValueError, match="positive integer"):
        PatchBatchDataset(_cases(1), _sampler(2), **kwargs)


def test_persistent_workers_are_refused():
    with pytest.raises(ValueError, match="persistent"):
        PatchBatchLoader(_cases(), _sampler(), PER_CASE, BATCH, num_workers=1, persistent_workers=True)


def test_too_few_patches_for_one_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="no full batch of 16 patches: 2 case"):
        PatchBatchLoader(_cases(2), _sampler(4), 4, 16, num_workers=0)
