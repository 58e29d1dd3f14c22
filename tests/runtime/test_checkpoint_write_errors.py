"""Checkpoints that cannot be written: one line naming the folder, said as early as it can be known."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from strokeseg.runtime.checkpoint import AtomicDiskSaver, CheckpointWriteError
from strokeseg.runtime.errors import input_problem
from strokeseg.runtime.training import attach_training_checkpoints, check_checkpoint_folder
from tests.runtime.test_checkpoint import _checkpoints, _Run

NO_SPACE = os.strerror(errno.ENOSPC)


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, NO_SPACE)  # what torch.save into a full disk raises: no file name


def test_a_full_disk_while_checkpointing_is_one_line_naming_the_folder(tmp_path: Path, monkeypatch) -> None:
    ckpt = tmp_path / "ckpt"
    first = _Run(max_epochs=1)
    attach_training_checkpoints(first.trainer, ckpt, first.objects())
    first.trainer.run()
    assert _checkpoints(ckpt) == ["last_checkpoint_1.pt"]

    second = _Run(max_epochs=2)
    attach_training_checkpoints(second.trainer, ckpt, second.objects())
    monkeypatch.setattr(torch, "save", _full_disk)
    with pytest.raises(CheckpointWriteError) as raised:
        second.trainer.run()
    message = f"{ckpt}: cannot write checkpoint last_checkpoint_2.pt ({NO_SPACE}); the checkpoints already there"
    assert str(raised.value).startswith(message)
    assert input_problem(raised.value) == str(raised.value)  # what the bundle run prints, on one line
    assert _checkpoints(ckpt) == ["last_checkpoint_1.pt"]
    assert not list(ckpt.glob(".partial-*"))


def test_pytorchs_own_write_error_is_one_line_and_other_errors_pass(tmp_path: Path, monkeypatch) -> None:
    saver = AtomicDiskSaver(tmp_path)

    def writer_error(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", writer_error)
    with pytest.raises(CheckpointWriteError, match=r": cannot write checkpoint model\.pt \(\[enforce fail"):
        saver({"w": torch.zeros(1)}, "model.pt")

    def bug(*args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(torch, "save", bug)
    with pytest.raises(RuntimeError, match="^something else$"):
        saver({"w": torch.zeros(1)}, "model.pt")
    assert not list(tmp_path.iterdir())


def test_an_unwritable_checkpoint_folder_stops_the_run_before_the_first_epoch(tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("")
    run = _Run(max_epochs=1)
    with pytest.raises(CheckpointWriteError, match=f"^{blocker}/ckpt: cannot write checkpoints there: Not a directory"):
        attach_training_checkpoints(run.trainer, blocker / "ckpt", run.objects())
    assert run.iterations == 0


@pytest.mark.skipif(os.geteuid() == 0 and not Path("/sys/kernel").is_dir(), reason="root needs sysfs to meet a refusal")
def test_an_existing_read_only_folder_is_found_at_once(tmp_path: Path) -> None:
    folder = Path("/sys")
    if os.geteuid() != 0:  # a plain user: a folder of our own made read-only
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o500)
    try:
        with pytest.raises(CheckpointWriteError, match=f"^{folder}: cannot write checkpoints there: .*--ckpt_dir$"):
            check_checkpoint_folder(folder)
    finally:
        if folder != Path("/sys"):
            folder.chmod(0o700)
    assert check_checkpoint_folder(tmp_path / "new" / "ckpt") == tmp_path / "new" / "ckpt"
    assert list((tmp_path / "new" / "ckpt").iterdir()) == []
