"""Every bundle passes ``strokeseg verify`` (all its checks) and logs what TensorBoard should show."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from strokeseg.runtime.description import BundleDescription
from strokeseg.tools.verify import VerifyReport, verify_bundle


@pytest.fixture(scope="session")
def verified(tmp_path_factory) -> Callable[[BundleDescription], tuple[VerifyReport, Path]]:
    """``verified(bundle)``: the report of ``strokeseg verify`` (with training) and its work folder.

    Verify runs once per bundle and session: both tests read it, the TensorBoard test the smoke run's event files.
    """
    reports: dict[str, tuple[VerifyReport, Path]] = {}

    def verify(bundle: BundleDescription) -> tuple[VerifyReport, Path]:
        if bundle.name not in reports:
            work = tmp_path_factory.mktemp(f"verify-{bundle.name}")
            reports[bundle.name] = (verify_bundle(bundle.root, workdir=work, train=True, small_export=True), work)
        return reports[bundle.name]

    return verify


def test_verify_passes_every_check(bundle, verified):
    report, _ = verified(bundle)
    assert report.ok, report.summary()
    assert {check.number for check in report.checks} == set(range(1, 9))
    exports = report.result(5).message
    for network in bundle.networks:  # every exported network went through ckpt_export and torch.jit.load
        assert f"{network.id}:" in exports


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


def test_tensorboard_shows_loss_lr_validation_metric_and_images(bundle, verified):
    report, work = verified(bundle)
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
