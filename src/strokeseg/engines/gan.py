"""Training engine of the CTP → DWI GAN (Pengbo Liu, BrainLes 2018, §2.3, §3.1) and its synthesis metrics.

Per iteration, alternately (P. Liu 2018, §3.1):

1. **D step** -- the discriminator scores the real DWI and the generated ``G(x)`` (detached) and is updated with
   ``DLoss = MSE(D(fake), 0) + MSE(D(real), 1)`` (eq. 2) by its own RMSprop optimiser;
2. **G + S step** -- generator and segmentator are updated *together* by one optimiser with
   ``Loss = w_g · MSE(G(x), DWI) + w_d · MSE(D(G(x)), 1) + w_s · SegLoss(S(G(x)), y)`` (eqs. 1, 3, 5, 6),
   ``w_g : w_d : w_s = 0.002 : 0.5 : 1`` (P. Liu 2018, §3.1).

Why not MONAI's GAN engines: ``GanTrainer`` draws the generator's input from a latent sampler and has no target
image or third network; ``AdversarialTrainer`` reconstructs its own input (``reals`` is the input batch) and
steps G before D, with no place for a segmentator that shares G's update. Here the input (CT maps), the real
image (DWI) and the label are three different tensors and the segmentation loss flows back into G, so this is a
``monai.engines.Trainer`` subclass that only overrides ``_iteration`` (handlers, AMP, DDP, decollation and
``postprocessing`` keep working). The three losses are in the output dict (``g_loss``, ``d_loss``, ``seg_loss``,
plus the adversarial term ``adv_loss`` and the total ``loss``), so MONAI's ``TensorBoardStatsHandler`` can log
them; ``fake_dwi`` / ``dwi`` feed the image summaries.

The metrics :class:`SliceSSIMMetric` and :class:`SlicePSNRMetric` compare generated and real DWI volumes slice by
slice (MONAI's ``SSIMMetric`` / ``PSNRMetric`` on ``(B·D, C, H, W)``, since ISLES 2018 slabs are often only 2
slices thick, too thin for a 3-D SSIM window), after scaling both to ``[0, 1]`` by the real slice's range.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from ignite.metrics import Metric
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn, default_prepare_batch
from monai.inferers import Inferer, SimpleInferer
from monai.metrics import PSNRMetric, SSIMMetric
from monai.transforms import Transform
from monai.utils import CommonKeys as Keys
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from strokeseg.inferers.slices import volume_to_slices
from strokeseg.knobs import BoolKnob, as_bool
from strokeseg.losses.gan import LSGANDiscriminatorLoss, LSGANGeneratorLoss

__all__ = [
    "LOSS_WEIGHTS",
    "GanKeys",
    "CtpDwiGanTrainer",
    "prepare_synthesis_batch",
    "FollowUpEvaluation",
    "loss_scalars",
    "SliceSSIMMetric",
    "SlicePSNRMetric",
]

LOSS_WEIGHTS: tuple[float, float, float] = (0.002, 0.5, 1.0)  # GLoss : DLoss : SegLoss, P. Liu 2018, §3.1


class GanKeys:
    """Extra keys of :class:`CtpDwiGanTrainer`'s output dict."""

    REAL = "dwi"
    FAKE = "fake_dwi"
    G_LOSS = "g_loss"
    D_LOSS = "d_loss"
    ADV_LOSS = "adv_loss"
    SEG_LOSS = "seg_loss"
    LOSSES = ("loss", G_LOSS, D_LOSS, ADV_LOSS, SEG_LOSS)


class CtpDwiGanTrainer(Trainer):
    """Alternating LSGAN training of generator + discriminator with a segmentator on the generated DWI.

    Batches are dicts with ``image`` (CT channels ``(B, 5, H, W)``), ``label`` (``(B, 1, H, W)``) and ``dwi_key``
    (the real DWI ``(B, 1, H, W)``). See the module docstring for the two steps and why MONAI's ``GanTrainer`` /
    ``AdversarialTrainer`` do not fit.

    Args:
        device: device of the networks.
        max_epochs: number of epochs.
        train_data_loader: loader of 2-D slice batches.
        generator: G, ``(B, 5, H, W) → (B, 1, H, W)``; ``None`` (with no discriminator) for the paper's stages
            1-2, a U-Net trained on its input directly with the segmentation loss alone.
        discriminator: D, ``(B, 1, H, W) → (B, 1)`` scores; ``None``: no adversarial term and no D step.
        segmentator: S, ``(B, 1, H, W) → (B, 2, H, W)`` logits.
        d_optimizer: optimiser of D's parameters (``None`` without a discriminator).
        gs_optimizer: one optimiser of G's and S's parameters (updated together, P. Liu 2018, §3.1).
        seg_loss_function: ``SegLoss(logits, label)`` (CE − log GDS, :mod:`strokeseg.losses.gan`).
        recon_loss_function: ``GLoss(fake, real)``; default ``torch.nn.MSELoss()`` (eq. 1).
        d_loss_function: ``DLoss(real_scores, fake_scores)``; default LSGAN eq. 2.
        adv_loss_function: ``DLoss(fake_scores)`` of the G + S step; default LSGAN eq. 3.
        loss_weights: ``(w_g, w_d, w_s)``; default ``(0.002, 0.5, 1)``.
        dwi_key: batch key of the real DWI.
        epoch_length, non_blocking, prepare_batch, iteration_update, postprocessing, key_train_metric,
        additional_metrics, metric_cmp_fn, train_handlers, amp, event_names, event_to_attr, decollate,
        to_kwargs, amp_kwargs: as in MONAI's ``SupervisedTrainer``.
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
        inferer: how G, D and S are called (default ``SimpleInferer``).

    Raises:
        ValueError: ``loss_weights`` is not three numbers, a discriminator comes without a generator or without
            ``d_optimizer``, or (in training) a batch lacks ``dwi_key`` while there is a generator.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        generator: torch.nn.Module | None,
        discriminator: torch.nn.Module | None,
        segmentator: torch.nn.Module,
        d_optimizer: Optimizer | None,
        gs_optimizer: Optimizer,
        seg_loss_function: Callable,
        recon_loss_function: Callable | None = None,
        d_loss_function: Callable | None = None,
        adv_loss_function: Callable | None = None,
        loss_weights: Sequence[float] = LOSS_WEIGHTS,
        dwi_key: str = GanKeys.REAL,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable | None = None,
        inferer: Inferer | None = None,
        postprocessing: Transform | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: BoolKnob = False,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=as_bool(amp, "amp"),
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        weights = [float(w) for w in loss_weights]
        if len(weights) != 3:
            raise ValueError(f"loss_weights must be (w_g, w_d, w_s), got {loss_weights!r}.")
        if discriminator is not None and (generator is None or d_optimizer is None):
            raise ValueError("a discriminator needs a generator to judge and its own d_optimizer.")
        self.generator = generator
        self.discriminator = discriminator
        self.segmentator = segmentator
        self.network = segmentator  # what MONAI handlers that look for ``engine.network`` should see
        self.d_optimizer = d_optimizer
        self.gs_optimizer = gs_optimizer
        self.optimizer = gs_optimizer
        self.seg_loss_function = seg_loss_function
        self.recon_loss_function = torch.nn.MSELoss() if recon_loss_function is None else recon_loss_function
        self.d_loss_function = LSGANDiscriminatorLoss() if d_loss_function is None else d_loss_function
        self.adv_loss_function = LSGANGeneratorLoss() if adv_loss_function is None else adv_loss_function
        self.loss_weights = tuple(weights)
        self.dwi_key = dwi_key
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.optim_set_to_none = optim_set_to_none
        # one grad scaler per optimiser, under the names attach_training_checkpoints saves
        self.state.g_scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.state.d_scaler = torch.amp.GradScaler("cuda") if self.amp else None

    def _autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast("cuda")`` under AMP (as MONAI's trainers), else a no-op context."""
        return torch.autocast("cuda", **self.amp_kwargs) if self.amp else contextlib.nullcontext()

    def _step(self, loss: torch.Tensor, optimizer: Optimizer, scaler: Any) -> None:
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    def _iteration(self, engine: CtpDwiGanTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """One D step, then one joint G + S step; returns the output dict (module docstring)."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        generator, discriminator = engine.generator, engine.discriminator
        if generator is not None and engine.dwi_key not in batchdata:
            raise ValueError(
                f"the GAN trainer needs the real DWI under {engine.dwi_key!r}; batch keys: {list(batchdata)}"
            )
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        w_g, w_d, w_s = engine.loss_weights
        output: dict[str, Any] = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        real = None
        if generator is not None:
            real = batchdata[engine.dwi_key].to(engine.state.device, non_blocking=engine.non_blocking)
            generator.train()
        engine.segmentator.train()

        # 1. discriminator: real vs generated (G not updated here)
        if discriminator is not None and generator is not None and engine.d_optimizer is not None:
            discriminator.train()
            engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            with torch.no_grad(), engine._autocast():
                fake_for_d = engine.inferer(inputs, generator)
            with engine._autocast():
                d_loss = engine.d_loss_function(
                    engine.inferer(real, discriminator), engine.inferer(fake_for_d.detach(), discriminator)
                )
            engine._step(d_loss, engine.d_optimizer, engine.state.d_scaler)
            output[GanKeys.D_LOSS] = d_loss.detach()

        # 2. generator + segmentator together; D is only judged, not updated
        engine.gs_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if discriminator is not None:
            discriminator.requires_grad_(False)
        try:
            with engine._autocast():
                fake = inputs if generator is None else engine.inferer(inputs, generator)
                logits = engine.inferer(fake, engine.segmentator)
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
                seg_loss = engine.seg_loss_function(logits, targets).mean()
                loss = w_s * seg_loss
                if generator is not None:
                    g_loss = engine.recon_loss_function(fake, real).mean()
                    loss = loss + w_g * g_loss
                    output[GanKeys.G_LOSS] = g_loss.detach()
                if discriminator is not None and generator is not None:
                    adv_loss = engine.adv_loss_function(engine.inferer(fake, discriminator))
                    loss = loss + w_d * adv_loss
                    output[GanKeys.ADV_LOSS] = adv_loss.detach()
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            engine._step(loss, engine.gs_optimizer, engine.state.g_scaler)
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        finally:
            if discriminator is not None:
                discriminator.requires_grad_(True)
        output.update({Keys.PRED: logits.detach(), Keys.LOSS: loss.detach(), GanKeys.SEG_LOSS: seg_loss.detach()})
        if generator is not None:
            output.update({GanKeys.REAL: real, GanKeys.FAKE: fake.detach()})
        engine.state.output = output
        # decollation and postprocessing run on this event and replace engine.state.output
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def prepare_synthesis_batch(
    batchdata: dict[str, torch.Tensor], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``prepare_batch`` of an evaluator that runs G alone: ``(image, dwi)`` instead of ``(image, label)``."""
    return (
        batchdata[Keys.IMAGE].to(device=device, non_blocking=non_blocking, **kwargs),
        batchdata[GanKeys.REAL].to(device=device, non_blocking=non_blocking, **kwargs),
    )


class FollowUpEvaluation:
    """Run a second evaluator every time the engine it is attached to completes (same global epoch).

    The bundle attaches it to the segmentation validator so that the generated-DWI metrics (an evaluator running G
    alone) are computed right after each validation. A second MONAI ``ValidationHandler`` on the trainer would do
    the same, but MONAI's bundle property check accepts only ``validate#evaluator`` as a ``ValidationHandler``'s
    validator.

    Args:
        evaluator: the evaluator to run (``None``: do nothing, e.g. when the GAN is off).
    """

    def __init__(self, evaluator: Any | None) -> None:
        self.evaluator = evaluator

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if self.evaluator is not None:
            engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        self.evaluator.run(engine.state.epoch)


def loss_scalars(output: Any, prefix: str = "train_") -> dict[str, float]:
    """The losses present in a trainer's output (a dict or MONAI's decollated list of dicts) as ``{tag: value}``.

    For ``TensorBoardStatsHandler`` / ``StatsHandler`` ``output_transform``: a U-Net trainer gives ``train_loss``,
    :class:`CtpDwiGanTrainer` also ``train_g_loss``, ``train_d_loss``, ``train_adv_loss`` and ``train_seg_loss``.
    """
    first = output[0] if isinstance(output, (list, tuple)) and output else output
    if not isinstance(first, dict):
        return {}
    return {f"{prefix}{key}": float(first[key]) for key in GanKeys.LOSSES if key in first}


def _unit_range(y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D slices of both images, each scaled by the real slice's min / max to ``[0, 1]``.

    ``(B, C, H, W, D)`` volumes become ``(B·D', C, H, W)``, keeping the ``D'`` slices whose real image is not
    constant (a slice without brain has no structure to compare; one slice is kept if none is).
    """
    if y.ndim == 5:
        y_pred, y = volume_to_slices(y_pred), volume_to_slices(y)
        flat = y.reshape(y.shape[0], -1)
        keep = (flat.amax(dim=1) - flat.amin(dim=1)) > 0
        if bool(keep.any()):
            y_pred, y = y_pred[keep], y[keep]
    flat = y.reshape(y.shape[0], -1)
    low = flat.amin(dim=1).reshape(-1, *([1] * (y.ndim - 1)))
    span = (flat.amax(dim=1).reshape(low.shape) - low).clamp(min=1e-6)
    return (y_pred - low) / span, (y - low) / span


class SliceSSIMMetric(SSIMMetric):
    """MONAI ``SSIMMetric`` over the 2-D slices of ``(B, C, H, W, D)`` volumes (or on ``(B, C, H, W)`` directly).

    Both inputs are scaled by the real slice's range to ``[0, 1]`` (``data_range = 1``); one value per slice
    (slices whose real image is constant are left out).
    """

    def __init__(self, win_size: int = 7, reduction: str = "mean", get_not_nans: bool = False) -> None:
        super().__init__(
            spatial_dims=2, data_range=1.0, win_size=win_size, reduction=reduction, get_not_nans=get_not_nans
        )

    def _compute_metric(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super()._compute_metric(*_unit_range(y_pred, y))


class SlicePSNRMetric(PSNRMetric):
    """MONAI ``PSNRMetric`` over the 2-D slices of ``(B, C, H, W, D)`` volumes, scaled by the real slice's range."""

    def __init__(self, reduction: str = "mean", get_not_nans: bool = False) -> None:
        super().__init__(max_val=1.0, reduction=reduction, get_not_nans=get_not_nans)

    def _compute_metric(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super()._compute_metric(*_unit_range(y_pred, y))
