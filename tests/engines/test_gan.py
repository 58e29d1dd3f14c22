"""Alternating D / (G + S) engine of the CTP→DWI GAN (P. Liu 2018): losses, updated networks, checkpoint + resume."""

from __future__ import annotations

import math

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.utils import set_determinism

from strokeseg.engines.gan import (
    CtpDwiGanTrainer,
    FollowUpEvaluation,
    GanKeys,
    SlicePSNRMetric,
    SliceSSIMMetric,
    loss_scalars,
    prepare_synthesis_batch,
)
from strokeseg.losses.gan import CrossEntropyLogGeneralizedDiceLoss
from strokeseg.networks.ctp_dwi_gan import GroupNormUNet, LSGANDiscriminator
from strokeseg.runtime.training import attach_training_checkpoints

SIZE = 32


def _data(n: int = 4) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        image = torch.randn(5, SIZE, SIZE, generator=g)
        label = (image[:1] > 1.0).float()
        dwi = image[:1] * 0.5 + label
        items.append({"image": image, "label": label, "dwi": dwi})
    return items


def _build(lr: float = 1e-3, gs_lr: float | None = None, max_epochs: int = 1):
    set_determinism(seed=0)
    g = GroupNormUNet(2, 5, 1, features=(4, 8))
    d = LSGANDiscriminator(features=(4, 4), norm="group")  # min input 29: fits 32 x 32
    s = GroupNormUNet(2, 1, 2, features=(4, 8), maxout_pieces=(3, 1))
    d_opt = torch.optim.RMSprop(d.parameters(), lr=lr, alpha=0.9)
    gs_opt = torch.optim.RMSprop(
        list(g.parameters()) + list(s.parameters()), lr=lr if gs_lr is None else gs_lr, alpha=0.9
    )
    loader = DataLoader(Dataset(_data()), batch_size=2, shuffle=False, num_workers=0)
    trainer = CtpDwiGanTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=loader,
        generator=g,
        discriminator=d,
        segmentator=s,
        d_optimizer=d_opt,
        gs_optimizer=gs_opt,
        seg_loss_function=CrossEntropyLogGeneralizedDiceLoss(),
    )
    return trainer, g, d, s, d_opt, gs_opt


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_one_epoch_updates_all_three_networks_and_reports_the_losses():
    trainer, g, d, s, *_ = _build()
    before = [_params(m) for m in (g, d, s)]
    trainer.run()
    assert all(_changed(b, m) for b, m in zip(before, (g, d, s), strict=True))
    output = trainer.state.output[0]  # MONAI decollates the last iteration's dict: one per batch item
    for key in GanKeys.LOSSES:
        assert math.isfinite(float(output[key]))
    w_g, w_d, w_s = trainer.loss_weights
    total = w_g * output["g_loss"] + w_d * output["adv_loss"] + w_s * output["seg_loss"]
    torch.testing.assert_close(output["loss"], total)
    assert trainer.loss_weights == (0.002, 0.5, 1.0)
    assert output[GanKeys.FAKE].shape == output[GanKeys.REAL].shape == (1, SIZE, SIZE)
    assert output["pred"].shape == (2, SIZE, SIZE)
    tags = loss_scalars([output])
    assert set(tags) == {"train_loss", "train_g_loss", "train_d_loss", "train_adv_loss", "train_seg_loss"}
    assert tags["train_d_loss"] == float(output["d_loss"])
    assert loss_scalars({"loss": torch.tensor(0.5)}) == {"train_loss": 0.5}


def test_discriminator_step_leaves_generator_and_segmentator_alone():
    trainer, g, d, s, *_ = _build(gs_lr=0.0)
    before = [_params(m) for m in (g, d, s)]
    trainer.run()
    assert _changed(before[1], d)
    assert not _changed(before[0], g) and not _changed(before[2], s)


def test_generator_step_does_not_update_the_discriminator():
    trainer, g, d, s, d_opt, _ = _build()
    for group in d_opt.param_groups:
        group["lr"] = 0.0
    before = [_params(m) for m in (g, d, s)]
    trainer.run()
    assert not _changed(before[1], d)
    assert _changed(before[0], g) and _changed(before[2], s)
    assert all(p.requires_grad for p in d.parameters())  # D is frozen only during the G + S step


def test_without_generator_and_discriminator_it_trains_the_unet_on_its_input():
    """Paper stages 1-2: S on the CT maps (or the real DWI) directly, SegLoss only, no DWI needed in the batch."""
    set_determinism(seed=0)
    s = GroupNormUNet(2, 5, 2, features=(4, 8), norm="batch")
    opt = torch.optim.RMSprop(s.parameters(), lr=1e-3, alpha=0.9)
    data = [{"image": d["image"], "label": d["label"]} for d in _data()]
    seg_loss = CrossEntropyLogGeneralizedDiceLoss()
    trainer = CtpDwiGanTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(Dataset(data), batch_size=2),
        generator=None,
        discriminator=None,
        segmentator=s,
        d_optimizer=None,
        gs_optimizer=opt,
        seg_loss_function=seg_loss,
    )
    before = _params(s)
    trainer.run()
    assert _changed(before, s)
    assert set(loss_scalars(trainer.state.output)) == {"train_loss", "train_seg_loss"}
    torch.testing.assert_close(trainer.state.output[0]["loss"], trainer.state.output[0]["seg_loss"])


def test_a_discriminator_needs_a_generator():
    s = GroupNormUNet(2, 5, 2, features=(4, 8))
    d = LSGANDiscriminator(features=(4,))
    opt = torch.optim.RMSprop(s.parameters())
    with pytest.raises(ValueError, match="needs a generator"):
        CtpDwiGanTrainer("cpu", 1, [], None, d, s, torch.optim.RMSprop(d.parameters()), opt, torch.nn.MSELoss())


def _objects(g, d, s, d_opt, gs_opt) -> dict:
    return {"generator": g, "discriminator": d, "segmentator": s, "d_optimizer": d_opt, "gs_optimizer": gs_opt}


def test_checkpoint_resume_gives_the_uninterrupted_run(tmp_path):
    straight, *nets_straight = _build(max_epochs=3)
    straight.run()

    first, *nets_first = _build(max_epochs=2)
    attach_training_checkpoints(first, tmp_path, _objects(*nets_first), resume=True)
    first.run()
    saved = torch.load(tmp_path / "last_checkpoint_2.pt", weights_only=True)
    assert {"generator", "discriminator", "segmentator", "d_optimizer", "gs_optimizer", "trainer"} <= set(saved)

    resumed, *nets_resumed = _build(max_epochs=3)
    start = attach_training_checkpoints(resumed, tmp_path, _objects(*nets_resumed), resume=True)
    assert start is not None and start.name == "last_checkpoint_2.pt"
    resumed.run()
    assert resumed.state.epoch == 3
    for a, b in zip(nets_straight[:3], nets_resumed[:3], strict=True):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            torch.testing.assert_close(p, q, msg=name)
    # both optimisers resumed too: their running averages match the uninterrupted run
    for a, b in zip(nets_straight[3:], nets_resumed[3:], strict=True):
        for sa, sb in zip(a.state_dict()["state"].values(), b.state_dict()["state"].values(), strict=True):
            torch.testing.assert_close(sa["square_avg"], sb["square_avg"])


def test_synthesis_batch_pairs_the_ct_input_with_the_real_dwi():
    batch = {"image": torch.zeros(1, 5, 4, 4), "label": torch.ones(1, 1, 4, 4), "dwi": torch.full((1, 1, 4, 4), 2.0)}
    image, target = prepare_synthesis_batch(batch, device="cpu")
    assert image.shape == (1, 5, 4, 4) and bool((target == 2).all())


def test_slice_metrics_on_volumes():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(1, 1, 32, 32, 3, generator=g)
    real[..., 2] = 0.0  # a slice without brain is left out
    ssim, psnr = SliceSSIMMetric(), SlicePSNRMetric()
    assert float(ssim(real, real).mean()) > 0.999
    noisy = real + 0.1 * torch.randn(real.shape, generator=g)
    assert ssim(noisy, real).shape == (2, 1)
    assert float(ssim(noisy, real).mean()) < 0.97
    # PSNR = 10 log10(1 / MSE) after scaling each real slice to [0, 1]
    shifted = real + 0.05
    expected = []
    for k in range(2):
        span = real[..., k].max() - real[..., k].min()
        expected.append(10 * torch.log10(1 / ((0.05 / span) ** 2)))
    torch.testing.assert_close(psnr(shifted, real).flatten(), torch.stack(expected).flatten(), rtol=1e-4, atol=1e-4)


def test_follow_up_evaluation_runs_after_each_completion_with_the_same_epoch():
    from ignite.engine import Engine

    calls = []

    class Recorder:
        def run(self, epoch):
            calls.append(epoch)

    engine = Engine(lambda e, b: None)
    FollowUpEvaluation(Recorder()).attach(engine)
    FollowUpEvaluation(None).attach(engine)  # GAN off: nothing attached
    engine.run([0, 1], max_epochs=3)
    assert calls == [3]
