"""Every bundle passes ``strokeseg verify`` (all its checks) and logs what TensorBoard should show.

``make test`` runs the checks without training (1–5, 7, 8: files, metadata, properties, networks, TorchScript
export, hygiene, multi-GPU overlay) on every bundle, and check 6 (one smoke epoch of every stage, evaluation and
inference, as ``python -m monai.bundle run`` subprocesses) with the TensorBoard test on one representative bundle;
``.ci/run`` runs check 6 on every bundle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from strokeseg.runtime.description import BundleDescription
from strokeseg.tools import verify
from strokeseg.tools.verify import VerifyReport, verify_bundle

SMOKE_BUNDLE = "stroke_ctp_msdcnn"
"""Where ``make test`` runs check 6 (the cheapest smoke run of the suite)."""


def _export_not_run(ctx) -> str:
    return "not run with the smoke training: the test without training exports every network"


@pytest.fixture(scope="session")
def verified(tmp_path_factory) -> Callable[[BundleDescription, bool], tuple[VerifyReport, Path]]:
    """``verified(bundle, train)``: the report of ``strokeseg verify`` and its work folder.

    Verify runs once per bundle, ``train`` and session: the smoke-training and TensorBoard tests share one run
    (the latter reads its event files). With ``train``, check 5 (the TorchScript export, two subprocesses per
    network) is left to the run without training, which every bundle has in ``make test``.
    """
    reports: dict[tuple[str, bool], tuple[VerifyReport, Path]] = {}

    def run_verify(bundle: BundleDescription, train: bool) -> tuple[VerifyReport, Path]:
        key = (bundle.name, train)
        if key not in reports:
            work = tmp_path_factory.mktemp(f"verify-{bundle.name}-{'train' if train else 'static'}")
            with pytest.MonkeyPatch.context() as patch:
                if train:
                    checks = [(n, _export_not_run if n.startswith("5.") else c) for n, c in verify.CHECKS]
                    patch.setattr(verify, "CHECKS", tuple(checks))
                reports[key] = (verify_bundle(bundle.root, workdir=work, train=train, small_export=True), work)
        return reports[key]

    return run_verify


def test_verify_passes_every_check_but_the_smoke_training(bundle, verified):
    report, _ = verified(bundle, False)
    assert report.ok, report.summary()
    assert {check.number for check in report.checks} == set(range(1, 9))
    exports = report.result(5).message
    for network in bundle.networks:  # every exported network went through ckpt_export and torch.jit.load
        assert f"{network.id}:" in exports


@pytest.mark.representative(SMOKE_BUNDLE)
def test_verify_smoke_training_passes(bundle, verified):
    report, _ = verified(bundle, True)
    assert report.ok, report.summary()
    smoke = report.result(6)
    assert not smoke.skipped, smoke.message
    for stage in bundle.stages:
        assert f"{stage} " in smoke.message, smoke.message


def _read_events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def _validation_metric_names(bundle: BundleDescription) -> list[str]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle.configs / "train.json"))
    return sorted(parser.get("validate#key_metric", {}) or {})


@pytest.mark.representative(SMOKE_BUNDLE)
def test_tensorboard_shows_loss_lr_validation_metric_and_images(bundle, verified):
    report, work = verified(bundle, True)
    if not report.result(6).ok:
        pytest.fail(f"the smoke training failed, so there is nothing to read: {report.result(6).message}")
    tb_dirs = sorted({p.parent for p in (work / "out" / "train").rglob("events.out.tfevents.*")})
    assert tb_dirs, f"no TensorBoard event file under {work / 'out' / 'train'}"
    scalars: dict[str, list] = {}
    images: list[str] = []
    for folder in tb_dirs:
        events = _read_events(folder)
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(events.Scalars(tag))
        images += events.Tags()["images"]
    loss_tags = [tag for tag in scalars if "loss" in tag.lower()]
    assert loss_tags, f"no loss scalar in {sorted(scalars)}"
    # one value per iteration: steps are consecutive iteration numbers
    steps = sorted({event.step for tag in loss_tags for event in scalars[tag]})
    assert steps and steps == list(range(steps[0], steps[0] + len(steps))), steps
    assert any(tag == "lr" or tag.startswith("lr/") for tag in scalars), f"no learning-rate scalar in {sorted(scalars)}"
    metrics = _validation_metric_names(bundle)
    assert metrics, "train.json has no validate#key_metric"
    for name in metrics:
        assert name in scalars, f"validation key metric {name!r} not logged (scalars: {sorted(scalars)})"
        assert len({event.step for event in scalars[name]}) >= 1
    assert images, "no image summary (input, label, prediction) in the training event files"
