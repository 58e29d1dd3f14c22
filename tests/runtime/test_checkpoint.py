"""Checkpoints: loading errors naming the file, refused pickles, atomic writes, the best-metric tracker across
resumes, scheduler / scaler / trainer state, a NaN loss, and the final save that must not fire on an error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer

from strokeseg.errors import BundleError
from strokeseg.networks.weights import describe_mismatch, load_network_state
from strokeseg.runtime.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    StrictCheckpointLoader,
    TrainingDivergedError,
    remove_stale_partials,
)
from strokeseg.runtime.training import StopOnNonFiniteLoss, attach_training_checkpoints, latest_checkpoint


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
    """Checkpoint files under their final names (not the hidden ``.partial-*`` siblings being written)."""
    return sorted(p.name for p in folder.glob("*.pt") if not p.name.startswith(".")) if folder.is_dir() else []


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


# ------------------------------------------------------------------------------- untrusted (pickled) files


class _Payload:
    """A Python object: ``weights_only=True`` must refuse to unpickle it."""


def test_pickled_object_in_model_pt_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    state = _net().state_dict()
    state["payload"] = _Payload()
    torch.save(state, path)
    with pytest.raises(BundleError) as info:
        load_network_state(_net(), path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "pickled Python object" in message and "_Payload" in message

    engine = _engine_with_loader(path, _net())
    with pytest.raises(BundleError, match=r"model\.pt contains a pickled Python object"):
        engine.run([0], max_epochs=1)


def test_garbage_message_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_text("not torch at all")
    with pytest.raises(BundleError) as info:
        load_network_state(_net(), path)
    assert "\n" not in str(info.value) and "cannot be read" in str(info.value)


# ----------------------------------------------------------------------------------------- atomic writes


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_atomic_disk_saver_writes_via_a_sibling_and_leaves_nothing_on_failure(tmp_path, monkeypatch) -> None:
    saver = AtomicDiskSaver(tmp_path)
    good = _net().state_dict()
    saver(good, "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]

    seen = []
    real_save = torch.save

    def failing_save(obj, f, **kwargs):
        seen.append(Path(f.name).name)
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        saver(_other_net().state_dict(), "model.pt")
    monkeypatch.setattr(torch, "save", real_save)

    assert seen and seen[0].startswith(".partial-") and seen[0].endswith("model.pt")  # same folder, hidden
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left
    assert _same_weights(torch.load(tmp_path / "model.pt", weights_only=True), good)  # old file intact


def test_fixed_name_is_replaced_never_deleted_first(tmp_path: Path) -> None:
    saver = AtomicDiskSaver(tmp_path, filename="model.pt")
    saver(_net().state_dict(), "ignored_name_0.5.pt")
    saver.remove("ignored_name_0.5.pt")  # ignite asks to delete the previous best before writing the next
    assert (tmp_path / "model.pt").is_file()
    assert not list(tmp_path.glob("ignored*"))


def test_non_finite_weights_are_never_written(tmp_path: Path) -> None:
    saver = AtomicDiskSaver(tmp_path)
    good = _net().state_dict()
    saver({"model": good}, "last_checkpoint_1.pt")
    bad = {k: v.clone() for k, v in good.items()}
    bad["0.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"model\.0\.weight has NaN/Inf"):
        saver({"model": bad}, "last_checkpoint_1.pt")
    kept = torch.load(tmp_path / "last_checkpoint_1.pt", weights_only=True)
    assert _same_weights(kept["model"], good)
    assert AtomicDiskSaver(tmp_path, check_finite=False)({"model": bad}, "other.pt") is None


def test_stale_partials_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f".partial-{_dead_pid()}-last_checkpoint_2.pt"
    alive = tmp_path / f".partial-{os.getppid()}-model.pt"
    mine = tmp_path / f".partial-{os.getpid()}-model.pt"
    for path in (dead, alive, mine):
        path.write_bytes(b"x")
    assert remove_stale_partials(tmp_path) == [dead]
    assert alive.exists() and mine.exists() and not dead.exists()
    assert remove_stale_partials(tmp_path / "absent") == []


# ------------------------------------------------------------------------------ best-metric tracker, resume


class _Scored:
    """A ``_Run`` whose 'evaluator' (a plain ignite engine run after every epoch) reports scripted scores."""

    def __init__(self, ckpt: Path, max_epochs: int, scores: dict[int, float], seed: int = 0) -> None:
        self.run = _Run(max_epochs=max_epochs, seed=seed)
        self.evaluator = Engine(lambda engine, batch: None)
        self.scores = scores
        self.weights: dict[int, dict] = {}

        @self.evaluator.on(Events.EPOCH_COMPLETED)
        def score(engine: Engine) -> None:
            engine.state.metrics["score"] = self.scores[self.run.trainer.state.epoch]

        self.best = AtomicCheckpointSaver(
            save_dir=str(ckpt),
            save_dict={"model": self.run.net},
            save_key_metric=True,
            key_metric_name="score",
            key_metric_filename="model.pt",
        )
        self.best.attach(self.evaluator)

        @self.run.trainer.on(Events.EPOCH_COMPLETED)
        def validate(engine: Engine) -> None:
            self.weights[engine.state.epoch] = {k: v.clone() for k, v in self.run.net.state_dict().items()}
            # what MONAI's Evaluator.run(global_epoch) does: one epoch numbered as the trainer's
            self.evaluator.state.max_epochs = engine.state.epoch
            self.evaluator.state.epoch = engine.state.epoch - 1
            self.evaluator.state.iteration = 0
            self.evaluator.run([0])

    def attach(self, ckpt: Path, **kwargs) -> Path | None:
        return attach_training_checkpoints(
            self.run.trainer, ckpt, self.run.objects(), evaluator=self.evaluator, **kwargs
        )


def _best(ckpt: Path) -> dict:
    return torch.load(ckpt / "model.pt", weights_only=True)


def test_best_model_is_not_replaced_by_a_worse_one_after_resume(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Scored(ckpt, 2, {1: 0.5, 2: 0.9})
    first.attach(ckpt)
    first.run.trainer.run()
    assert _same_weights(_best(ckpt), first.weights[2])
    saved = torch.load(ckpt / "last_checkpoint_2.pt", weights_only=True)
    assert saved["best_metric"]["_saved"] == [(0.9, "model_key_metric=0.9000.pt")]
    sidecar = json.loads((ckpt / "model_key_metric.json").read_text())
    assert sidecar["file"] == "model.pt" and sidecar["epoch"] == 2 and sidecar["_saved"][0][0] == 0.9

    second = _Scored(ckpt, 4, {3: 0.6, 4: 0.95}, seed=1)
    second.attach(ckpt)
    seen = {}
    second.run.trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.setdefault(e.state.epoch, _best(ckpt)))
    second.run.trainer.run()
    assert _same_weights(seen[3], first.weights[2])  # 0.6 after the resume did not replace the 0.9 model
    assert _same_weights(_best(ckpt), second.weights[4])  # 0.95 did
    assert json.loads((ckpt / "model_key_metric.json").read_text())["epoch"] == 4
    assert sorted(p.name for p in ckpt.iterdir()) == ["last_checkpoint_4.pt", "model.pt", "model_key_metric.json"]


def test_tracker_survives_a_kill_between_model_pt_and_the_last_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Scored(ckpt, 2, {1: 0.5, 2: 0.9})
    first.attach(ckpt, n_saved=2)
    first.run.trainer.run()
    (ckpt / "last_checkpoint_2.pt").unlink()  # killed after model.pt (0.9) but before last_checkpoint_2.pt
    assert torch.load(ckpt / "last_checkpoint_1.pt", weights_only=True)["best_metric"]["_saved"][0][0] == 0.5

    second = _Scored(ckpt, 3, {2: 0.7, 3: 0.8}, seed=1)
    assert second.attach(ckpt, n_saved=2) == ckpt / "last_checkpoint_1.pt"
    second.run.trainer.run()
    assert _same_weights(_best(ckpt), first.weights[2])  # 0.7 and 0.8 < 0.9 of the JSON beside model.pt


def test_tracker_from_the_last_checkpoint_alone(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Scored(ckpt, 2, {1: 0.5, 2: 0.9})
    first.attach(ckpt)
    first.run.trainer.run()
    (ckpt / "model_key_metric.json").unlink()
    second = _Scored(ckpt, 3, {3: 0.8}, seed=1)
    second.attach(ckpt)
    second.run.trainer.run()
    assert _same_weights(_best(ckpt), first.weights[2])


def test_deleted_best_file_or_fresh_start_accepts_any_score(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Scored(ckpt, 1, {1: 0.9})
    first.attach(ckpt)
    first.run.trainer.run()

    fresh = _Scored(ckpt, 1, {1: 0.1}, seed=1)
    assert fresh.attach(ckpt, resume="false") is None  # a command-line string, not a truthy 'false'
    fresh.run.trainer.run()
    assert _same_weights(_best(ckpt), fresh.weights[1])

    (ckpt / "model.pt").unlink()
    again = _Scored(ckpt, 2, {2: 0.05}, seed=2)
    again.attach(ckpt)
    again.run.trainer.run()
    assert _same_weights(_best(ckpt), again.weights[2])


def test_plain_monai_checkpoint_saver_is_refused(tmp_path: Path) -> None:
    from monai.handlers import CheckpointSaver

    run = _Run(max_epochs=1)
    CheckpointSaver(save_dir=str(tmp_path), save_dict={"model": run.net}, save_interval=1).attach(run.trainer)
    with pytest.raises(BundleError, match="not atomic.*AtomicCheckpointSaver"):
        attach_training_checkpoints(run.trainer, tmp_path, run.objects())


# ------------------------------------------------------------------------------ scheduler, scaler, epochs


def test_scheduler_and_grad_scaler_are_saved_and_resumed(tmp_path: Path) -> None:
    from monai.handlers import LrScheduleHandler

    ckpt = tmp_path / "ckpt"

    def build(max_epochs: int, scale: float) -> tuple[_Run, torch.optim.lr_scheduler.StepLR, torch.amp.GradScaler]:
        run = _Run(max_epochs=max_epochs)
        scheduler = torch.optim.lr_scheduler.StepLR(run.optimizer, step_size=1, gamma=0.5)
        LrScheduleHandler(scheduler, print_lr=False).attach(run.trainer)
        run.trainer.scaler = torch.amp.GradScaler("cpu", init_scale=scale)  # what amp=True gives on a GPU
        return run, scheduler, run.trainer.scaler

    first, scheduler, scaler = build(2, 64.0)
    attach_training_checkpoints(first.trainer, ckpt, first.objects())
    first.trainer.run()
    saved = torch.load(ckpt / "last_checkpoint_2.pt", weights_only=True)
    assert {"lr_scheduler", "scaler", "model", "optimizer", "trainer"} <= set(saved)
    assert saved["lr_scheduler"]["last_epoch"] == 2 and saved["scaler"]["scale"] == 64.0

    second, scheduler2, scaler2 = build(3, 1024.0)
    attach_training_checkpoints(second.trainer, ckpt, second.objects())
    second.trainer.run()
    assert scheduler2.last_epoch == 3
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**3)
    assert scaler2.get_scale() == 64.0


def test_a_checkpoint_beyond_max_epochs_is_a_one_line_error(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Run(max_epochs=3)
    attach_training_checkpoints(first.trainer, ckpt, first.objects())
    first.trainer.run()
    second = _Run(max_epochs=2)
    attach_training_checkpoints(second.trainer, ckpt, second.objects())
    with pytest.raises(BundleError, match=r"last_checkpoint_3\.pt is from epoch 3, beyond epochs=2.*--resume false"):
        second.trainer.run()


def test_checkpoint_without_an_object_of_this_run_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Run(max_epochs=1)
    attach_training_checkpoints(first.trainer, ckpt, {"model": first.net})
    first.trainer.run()
    second = _Run(max_epochs=2)
    with pytest.raises(BundleError, match=r"last_checkpoint_1\.pt has no 'optimizer'"):
        attach_training_checkpoints(second.trainer, ckpt, second.objects())


# -------------------------------------------------------------------------------------------------- NaN loss


class _NanAt:
    """MSE loss that returns NaN from the ``at``-th call on (a diverging run, reproducibly)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = torch.nn.functional.mse_loss(pred, target)
        return loss * float("nan") if self.calls >= self.at else loss


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    run = _Run(max_epochs=3)
    run.trainer.loss_function = _NanAt(4)  # epoch 2, iteration 4 (2 iterations per epoch)
    attach_training_checkpoints(run.trainer, ckpt, run.objects())
    good = {}
    run.trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: good.update({k: v.clone() for k, v in run.net.state_dict().items()})
    )
    with pytest.raises(TrainingDivergedError) as info:
        run.trainer.run()
    message = str(info.value)
    assert "\n" not in message
    assert "loss is nan at epoch 2, iteration 4" in message
    assert "last_checkpoint_1.pt is kept" in message
    assert _checkpoints(ckpt) == ["last_checkpoint_1.pt"]
    kept = torch.load(ckpt / "last_checkpoint_1.pt", weights_only=True)
    assert _same_weights(kept["model"], good)
    assert all(torch.isfinite(v).all() for v in kept["model"].values())
    assert not any(torch.isfinite(v).all() for k, v in run.net.state_dict().items() if k.endswith("weight"))


def test_stop_on_non_finite_loss_from_the_config_is_not_doubled(tmp_path: Path) -> None:
    run = _Run(max_epochs=1)
    StopOnNonFiniteLoss().attach(run.trainer)
    attach_training_checkpoints(run.trainer, tmp_path, run.objects())
    guards = [
        h for h, _, _ in run.trainer._event_handlers[Events.ITERATION_COMPLETED] if isinstance(h, StopOnNonFiniteLoss)
    ]
    assert len(guards) == 1 and guards[0].ckpt_dir == tmp_path
    run.trainer.run()  # finite losses: no error


def test_stop_on_non_finite_loss_checks_only_the_loss() -> None:
    engine = Engine(lambda engine, batch: {"loss": torch.tensor(0.5), "pred": torch.tensor(float("nan"))})
    StopOnNonFiniteLoss().attach(engine)
    engine.run([0, 1], max_epochs=1)  # a NaN prediction is not a NaN loss
    engine = Engine(lambda engine, batch: [{"loss": 0.1}, {"loss": float("inf")}])
    StopOnNonFiniteLoss().attach(engine)
    with pytest.raises(
        TrainingDivergedError, match=r"loss is inf at epoch 1, iteration 1 .*; earlier checkpoints are kept"
    ):
        engine.run([0], max_epochs=1)


# ------------------------------------------------------------------------------------------------ final save


def test_final_save_on_completion_only(tmp_path: Path) -> None:
    run = _Run(max_epochs=2)
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": run.net}, save_final=True, final_filename="muscle.pt"
    )
    saver.attach(run.trainer)
    run.trainer.loss_function = _NanAt(3)
    attach_training_checkpoints(run.trainer, tmp_path / "ckpt", run.objects())
    with pytest.raises(TrainingDivergedError):
        run.trainer.run()
    assert not (tmp_path / "muscle.pt").exists()  # MONAI's saver would have written the NaN weights here

    done = _Run(max_epochs=1)
    AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": done.net}, save_final=True, final_filename="muscle.pt"
    ).attach(done.trainer)
    done.trainer.run()
    assert _same_weights(torch.load(tmp_path / "muscle.pt", weights_only=True), done.net)
    assert not list(tmp_path.glob(".partial-*"))


def test_previous_epoch_checkpoint_is_removed_only_after_the_next_is_written(tmp_path, monkeypatch) -> None:
    ckpt = tmp_path / "ckpt"
    run = _Run(max_epochs=3)
    attach_training_checkpoints(run.trainer, ckpt, run.objects())
    listings = []
    real_save = torch.save

    def watching_save(obj, f, **kwargs):
        listings.append(_checkpoints(ckpt))  # what a kill during this write would leave
        return real_save(obj, f, **kwargs)

    monkeypatch.setattr(torch, "save", watching_save)
    run.trainer.run()
    # ignite asks to delete last_checkpoint_1.pt before writing last_checkpoint_2.pt; it must still be there
    assert listings == [[], ["last_checkpoint_1.pt"], ["last_checkpoint_2.pt"]]
    assert _checkpoints(ckpt) == ["last_checkpoint_3.pt"]


def test_every_torch_load_in_src_is_weights_only() -> None:
    """A text scan (so script templates inside strings count too): each ``torch.load(`` call names
    ``weights_only=True`` before its closing parenthesis."""
    import re

    src = Path(__file__).resolve().parents[2] / "src" / "strokeseg"
    offenders = []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 1, match.end()
            while depth and end < len(text):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            if "weights_only=True" not in text[match.end() : end]:
                offenders.append(f"{path.relative_to(src)}:{text.count(chr(10), 0, match.start()) + 1}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_strict_loader_reads_a_fitting_checkpoint_once(tmp_path: Path, monkeypatch) -> None:
    source = _net()
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    target = _net()
    _engine_with_loader(path, target).run([0], max_epochs=1)
    assert _same_weights(source, target) and len(reads) == 1


def test_a_legacy_format_checkpoint_is_read_without_memory_map(tmp_path: Path) -> None:
    source = _net()
    path = tmp_path / "legacy.pt"
    torch.save(source.state_dict(), path, _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    assert _same_weights(source, load_network_state(_net(), path))
