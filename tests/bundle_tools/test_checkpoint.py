"""Checkpoint loading errors (``BundleError`` naming the file) and per-epoch save / resume of a trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer

from strokeseg.bundle.checkpoint import (
    StrictCheckpointLoader,
    attach_training_checkpoints,
    describe_mismatch,
    latest_checkpoint,
    load_network_state,
)
from strokeseg.errors import BundleError


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(2, 1, 1))


def _other_net() -> torch.nn.Module:
    """Same layer names, different widths, one extra layer: what another method's ``model.pt`` looks like."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1), torch.nn.Conv2d(1, 1, 1)
    )


def _same_weights(a: torch.nn.Module | dict, b: torch.nn.Module | dict) -> bool:
    sa = a.state_dict() if isinstance(a, torch.nn.Module) else a
    sb = b.state_dict() if isinstance(b, torch.nn.Module) else b
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------ load_network_state


def test_round_trip_plain_state_dict(tmp_path: Path) -> None:
    source = _net()
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    target = _net()
    assert not _same_weights(source, target)

    out = load_network_state(target, path)

    assert out is target
    assert _same_weights(source, target)


def test_round_trip_model_wrapper(tmp_path: Path) -> None:
    source = _net()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    target = load_network_state(_net(), str(path))
    assert _same_weights(source, target)


def test_custom_wrapper_key(tmp_path: Path) -> None:
    source = _net()
    path = tmp_path / "ckpt.pt"
    torch.save({"network": source.state_dict()}, path)
    assert _same_weights(source, load_network_state(_net(), path, key="network"))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "model.pt"
    with pytest.raises(BundleError, match=rf"{path}.*not found"):
        load_network_state(_net(), path)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        load_network_state(_net(), tmp_path)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"this is not a checkpoint\x00\x01\x02")
    with pytest.raises(BundleError, match=rf"{path}.*cannot be read"):
        load_network_state(_net(), path)


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(_net().state_dict(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BundleError, match=rf"{path}.*cannot be read"):
        load_network_state(_net(), path)


def test_pickled_list_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save([torch.zeros(2), torch.ones(3)], path)
    with pytest.raises(BundleError, match=rf"{path} holds a list, not a state_dict"):
        load_network_state(_net(), path)


def test_other_network_state_is_described(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(_other_net().state_dict(), path)
    with pytest.raises(BundleError) as info:
        load_network_state(_net(), path)

    message = str(info.value)
    assert str(path) in message
    assert "Sequential" in message
    assert "2 unexpected key(s)" in message and "3.weight" in message
    assert "shape mismatch" in message and "0.weight: checkpoint (4, 1, 3, 3) vs network (2, 1, 3, 3)" in message


def test_describe_mismatch_lists_missing_unexpected_and_shapes() -> None:
    state = _net().state_dict()
    assert describe_mismatch(_net(), state) == "no key or shape difference found"

    del state["2.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["0.bias"] = torch.zeros(5)
    text = describe_mismatch(_net(), state)
    assert "1 missing key(s) e.g. ['2.bias']" in text
    assert "1 unexpected key(s) e.g. ['extra.weight']" in text
    assert "1 shape mismatch(es) e.g. ['0.bias: checkpoint (5,) vs network (2,)']" in text


# ------------------------------------------------------------------------------------- StrictCheckpointLoader


def _engine_with_loader(path: Path, net: torch.nn.Module) -> Engine:
    engine = Engine(lambda engine, batch: None)
    StrictCheckpointLoader(load_path=str(path), load_dict={"model": net}).attach(engine)
    return engine


def test_strict_loader_loads_a_fitting_checkpoint(tmp_path: Path) -> None:
    source = _net()
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    target = _net()
    _engine_with_loader(path, target).run([0], max_epochs=1)
    assert _same_weights(source, target)


def test_strict_loader_on_other_network(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"model": _other_net().state_dict()}, path)
    engine = _engine_with_loader(path, _net())
    with pytest.raises(BundleError) as info:
        engine.run([0], max_epochs=1)
    message = str(info.value)
    assert str(path) in message and "['model']" in message
    assert "unexpected key(s)" in message and "shape mismatch" in message


def test_strict_loader_on_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        _engine_with_loader(tmp_path / "none.pt", _net()).run([0], max_epochs=1)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not torch")
    with pytest.raises(BundleError, match="cannot be read"):
        _engine_with_loader(garbage, _net()).run([0], max_epochs=1)


# ------------------------------------------------------------------------------------------- training resume


class _Run:
    """A tiny ``SupervisedTrainer`` (conv net, 4 samples, batch 2 ⇒ 2 iterations per epoch) with counters."""

    def __init__(self, max_epochs: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.net = _net()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=0.05)
        generator = torch.Generator().manual_seed(123)
        data = [
            {"image": torch.randn(1, 6, 6, generator=generator), "label": torch.rand(1, 6, 6, generator=generator)}
            for _ in range(4)
        ]
        self.trainer = SupervisedTrainer(
            device=torch.device("cpu"),
            max_epochs=max_epochs,
            train_data_loader=DataLoader(data, batch_size=2, shuffle=False),
            network=self.net,
            optimizer=self.optimizer,
            loss_function=torch.nn.MSELoss(),
        )
        self.iterations = 0
        self.start_state: dict | None = None
        self.start_epoch: int | None = None

    def objects(self) -> dict:
        return {"model": self.net, "optimizer": self.optimizer}

    def watch(self) -> None:
        """Record the iterations run and the weights/epoch the first iteration starts from (after any resume)."""

        def count(engine: Engine) -> None:
            self.iterations += 1

        def first(engine: Engine) -> None:
            if self.start_state is None:
                self.start_state = {k: v.clone() for k, v in self.net.state_dict().items()}
                self.start_epoch = engine.state.epoch

        self.trainer.add_event_handler(Events.ITERATION_COMPLETED, count)
        self.trainer.add_event_handler(Events.ITERATION_STARTED, first)


def _checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []


def test_save_every_epoch_then_resume(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Run(max_epochs=2)
    assert attach_training_checkpoints(first.trainer, ckpt, first.objects()) is None  # nothing to resume yet
    first.watch()
    first.trainer.run()

    assert first.iterations == 4
    assert _checkpoints(ckpt) == ["last_checkpoint_2.pt"]  # n_saved=1 removed epoch 1
    assert latest_checkpoint(ckpt) == ckpt / "last_checkpoint_2.pt"
    saved = torch.load(ckpt / "last_checkpoint_2.pt", weights_only=True)
    assert set(saved) == {"model", "optimizer", "trainer"}
    assert _same_weights(saved["model"], first.net)

    second = _Run(max_epochs=3, seed=1)
    assert not _same_weights(second.net, first.net)
    start = attach_training_checkpoints(second.trainer, ckpt, second.objects(), resume=True)
    assert start == ckpt / "last_checkpoint_2.pt"
    second.watch()
    second.trainer.run()

    assert second.iterations == 2  # one epoch: 3 requested, 2 already done
    assert second.start_epoch == 3
    assert _same_weights(second.start_state, saved["model"])
    assert second.trainer.state.epoch == 3
    assert second.trainer.state.iteration == 6
    # Adam's step counter went on from the 4 steps of the first run
    assert int(second.optimizer.state_dict()["state"][0]["step"]) == 6
    assert _checkpoints(ckpt) == ["last_checkpoint_3.pt"]
    assert latest_checkpoint(ckpt) == ckpt / "last_checkpoint_3.pt"


def test_save_false_writes_nothing(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    run = _Run(max_epochs=2)
    assert attach_training_checkpoints(run.trainer, ckpt, run.objects(), save=False) is None
    run.trainer.run()
    assert _checkpoints(ckpt) == []
    assert latest_checkpoint(ckpt) is None


def test_resume_false_ignores_existing_checkpoints(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Run(max_epochs=2)
    attach_training_checkpoints(first.trainer, ckpt, first.objects())
    first.trainer.run()
    saved = torch.load(ckpt / "last_checkpoint_2.pt", weights_only=True)

    second = _Run(max_epochs=3, seed=1)
    initial = {k: v.clone() for k, v in second.net.state_dict().items()}
    assert attach_training_checkpoints(second.trainer, ckpt, second.objects(), resume=False) is None
    second.watch()
    second.trainer.run()

    assert second.iterations == 6  # all 3 epochs from scratch
    assert second.start_epoch == 1
    assert _same_weights(second.start_state, initial)
    assert not _same_weights(second.start_state, saved["model"])
    assert latest_checkpoint(ckpt) == ckpt / "last_checkpoint_3.pt"


def test_resume_without_saving_on_other_ranks(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Run(max_epochs=2)
    attach_training_checkpoints(first.trainer, ckpt, first.objects())
    first.trainer.run()

    other = _Run(max_epochs=3, seed=1)
    assert attach_training_checkpoints(other.trainer, ckpt, other.objects(), save=False) == (
        ckpt / "last_checkpoint_2.pt"
    )
    other.watch()
    other.trainer.run()
    assert other.iterations == 2
    assert _same_weights(other.start_state, first.net)
    assert _checkpoints(ckpt) == ["last_checkpoint_2.pt"]


def test_resume_into_another_network_raises_bundle_error(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Run(max_epochs=1)
    attach_training_checkpoints(first.trainer, ckpt, first.objects())
    first.trainer.run()

    other = _Run(max_epochs=2)
    other.net[0] = torch.nn.Conv2d(1, 2, 5, padding=2)
    with pytest.raises(BundleError, match=r"last_checkpoint_1\.pt.*0\.weight: checkpoint \(2, 1, 3, 3\)"):
        attach_training_checkpoints(other.trainer, ckpt, other.objects())
        other.trainer.run()


def test_latest_checkpoint_picks_highest_epoch_number(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "absent") is None
    for name in ("last_checkpoint_9.pt", "last_checkpoint_10.pt", "last_checkpoint_x.pt", "best_checkpoint_99.pt"):
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "last_checkpoint_10.pt"  # numeric, not lexicographic
    assert latest_checkpoint(tmp_path, prefix="best") == tmp_path / "best_checkpoint_99.pt"
    assert latest_checkpoint(tmp_path, prefix="other") is None


def test_n_saved_holds_across_resumes(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Run(max_epochs=3)
    attach_training_checkpoints(first.trainer, ckpt, first.objects(), n_saved=2)
    first.trainer.run()
    assert _checkpoints(ckpt) == ["last_checkpoint_2.pt", "last_checkpoint_3.pt"]

    second = _Run(max_epochs=4)
    attach_training_checkpoints(second.trainer, ckpt, second.objects(), n_saved=2)
    second.trainer.run()
    assert _checkpoints(ckpt) == ["last_checkpoint_3.pt", "last_checkpoint_4.pt"]
