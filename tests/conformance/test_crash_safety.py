"""Crash safety of every bundle's training, through real ``python -m monai.bundle run`` subprocesses.

Per bundle (everything it needs comes from the bundle's self-description, nothing is bundle-specific):

* **determinism**: two fresh one-epoch smoke runs with the same seed write identical checkpoint tensors (with the
  uResNet's mirror registration as users run it, see :data:`AS_USERS_RUN`);
* **SIGKILL + resume**, for every training stage: the stage is killed with SIGKILL right after its first new
  epoch checkpoint appears, then rerun with ``--resume true``: it restores the newest checkpoint (model,
  optimiser, trainer counters, best-metric tracker), trains only the remaining epochs, leaves no temporary
  file, and the best file of a stage (``model.pt``) is not replaced by a worse one;
* **NaN loss**: a run whose weights turn NaN at the start of epoch 2 stops with a one-line error naming the
  loss and the epoch, non-zero exit, and the epoch-1 checkpoint stays on disk, finite and untouched.
  The NaN is injected generically by a config overlay (written by the test) that adds one handler to the
  ``train#trainer``'s ``train_handlers`` (``"$@train#handlers + [...]"``, both ids every bundle has, see
  ``docs/DEVELOPMENT.md``): at ``EPOCH_STARTED`` of epoch 2 it fills every floating parameter of every ``nn.Module``
  attribute of the trainer with NaN, as a diverged optimiser step would. No bundle-specific loss or
  learning rate is involved;
* **untrusted files**: ``model.pt`` with a pickled Python object in it is refused by the bundle's inference
  with an error naming the file (in-process ``ConfigWorkflow``: the refusal happens before any data is read).

The fresh one-epoch runs are made once per session by the :func:`fresh_run` fixture; the SIGKILL and NaN tests
go on training their own copy of one, so the tests run in any order. ``make test`` runs each of the three
training behaviours on one representative bundle (see ``conftest.py``), ``.ci/run`` on all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from strokeseg.errors import StrokesegError
from strokeseg.runtime.description import BundleDescription
from strokeseg.tools.runner import BundleRun, child_env, config_arg, monai_bundle_command
from tests.conformance.conftest import bundle_copy, run_config, smoke_args

KILL_EPOCHS = 3
"""Epochs of a run that is killed (``epochs`` is the shared knob: later stages scale their own from it)."""
TIMEOUT_S = 600
RESTORED = re.compile(r"Restored all variables from (\S+?\.pt)")
CHECKPOINT = re.compile(r"_checkpoint_(\d+)\.pt$")
AS_USERS_RUN = {"stroke_mri_uresnet_focal": ("registration_iterations",)}
"""Smoke overrides the fresh runs take back to the bundle's ``train.json`` value: 3 iterations of the uResNet's mirror
registration keep ITK's rounding differences below float32, so the check could not see them; 200, what users run,
moved the transform by up to 0.14 mm between two runs (2 registrations of about 4 s per run on the smoke grid)."""

NAN_HANDLER = (
    "$@train#handlers + [type('NanAtEpoch2', (), {'attach': lambda self, engine: engine.add_event_handler("
    "monai.engines.workflow.Events.EPOCH_STARTED(once=2), lambda e: [p.data.fill_("
    "float('nan')) for m in list(vars(e).values()) if isinstance(m, torch.nn.Module) for p in m.parameters() "
    "if p.is_floating_point()])})()]"
)


# ------------------------------------------------------------------------------------------------ helpers


def _epoch_checkpoints(models: Path) -> dict[str, int]:
    """``{file name: epoch}`` of every ``<prefix>_checkpoint_<epoch>.pt`` in ``models``."""
    found = {}
    for path in models.glob("*_checkpoint_*.pt"):
        match = CHECKPOINT.search(path.name)
        if match and not path.name.startswith("."):  # not a temporary sibling being written
            found[path.name] = int(match.group(1))
    return found


def _leftovers(folder: Path) -> list[str]:
    """Temporary files of an interrupted write: ours (``.partial-*``) and ignite's (``tmp*``)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith((".partial-", "tmp")) and p.is_file())


def _tensors(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) checkpoint, by dotted name."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(state, torch.Tensor):
        out[prefix] = state
    elif isinstance(state, dict):
        for key, value in state.items():
            out.update(_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            out.update(_tensors(value, f"{prefix}.{index}"))
    return out


def _dead_pid() -> int:
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


def _trainer_epoch(state: dict) -> int:
    """Completed epochs recorded by ignite's ``Engine.state_dict()`` (it stores iterations and epoch length)."""
    return int(state["trainer"]["iteration"]) // int(state["trainer"]["epoch_length"])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _best_score(models: Path, checkpoint_name: str) -> float | None:
    """Score of a best-by-key-metric file, recorded beside it (``model.pt`` → ``model_key_metric.json``)."""
    record = models / f"{Path(checkpoint_name).stem}_key_metric.json"
    if not record.is_file():
        return None
    saved = json.loads(record.read_text())["_saved"]
    return max(float(score) for score, _ in saved) if saved else None


def _stage_args(bundle: BundleDescription, copy: Path, data: Path, work: Path, **extra) -> list[str]:
    return smoke_args(bundle, copy, data, output_dir=work / "out", seed=0, **extra)


def _as_users_run(bundle: BundleDescription) -> dict[str, object]:
    """``{knob: train.json value}`` for the knobs of :data:`AS_USERS_RUN` (none for most bundles)."""
    knobs = AS_USERS_RUN.get(bundle.name, ())
    defaults = json.loads((bundle.configs / "train.json").read_text()) if knobs else {}
    return {knob: defaults[knob] for knob in knobs}


def _run(bundle: BundleDescription, copy: Path, stage: str, args: list[str], log: Path, overlay: Path | None = None):
    configs = [str(copy / c) for c in bundle.stage_configs(stage)] + ([str(overlay)] if overlay else [])
    return run_config(copy, configs, args, log, timeout=TIMEOUT_S)


def _run_and_kill(
    bundle: BundleDescription, copy: Path, stage: str, args: list[str], log: Path, before: dict[str, int]
) -> dict[str, int]:
    """Start ``stage``; SIGKILL it as soon as an epoch checkpoint appears that is not in ``before``.

    Returns the epoch checkpoints present right after the kill.
    """
    models = copy / "models"
    configs = config_arg([str(copy / c) for c in bundle.stage_configs(stage)])
    command = monai_bundle_command("run", "--config_file", configs, *args)
    with open(log, "w") as stream:
        proc = subprocess.Popen(command, cwd=copy, env=child_env(), stdout=stream, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if set(_epoch_checkpoints(models).items()) - set(before.items()):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                if proc.poll() is not None:
                    pytest.fail(
                        f"{stage} ended (code {proc.returncode}) before it could be killed:\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.02)
            else:
                pytest.fail(f"{stage}: no new epoch checkpoint within {TIMEOUT_S} s")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return _epoch_checkpoints(models)


# ------------------------------------------------------------------------------- shared runs per bundle


@dataclass(frozen=True)
class FreshRun:
    """A bundle copy after a fresh one-epoch smoke run of its ``train`` stage (seed 0), and that run."""

    copy: Path
    data: Path
    run: BundleRun

    def models(self) -> Path:
        """The run's checkpoint folder, to read only; fails the test if the run failed."""
        if not self.run.ok:
            pytest.fail(f"the one-epoch smoke run failed: {self.run.failure()}")
        return self.copy / "models"

    def trained_copy(self, target: Path) -> Path:
        """The copy, epoch-1 checkpoints included, under ``target`` (a test goes on training it there)."""
        self.models()
        return Path(shutil.copytree(self.copy, target))


@pytest.fixture(scope="session")
def fresh_run(tmp_path_factory, smoke_dataset) -> Callable[[BundleDescription, str], FreshRun]:
    """``fresh_run(bundle, replica)``: a one-epoch smoke run of ``bundle``'s ``train`` stage, made once per session.

    ``replica`` names independent runs with the same seed (the determinism test compares two). The copies are
    shared read-only: a test that trains on copies one with :meth:`FreshRun.trained_copy` first, so no test
    sees what another did, in whatever order they run.
    """
    runs: dict[tuple[str, str], FreshRun] = {}

    def fresh(bundle: BundleDescription, replica: str = "a") -> FreshRun:
        key = (bundle.name, replica)
        if key not in runs:
            work = tmp_path_factory.mktemp(f"fresh-{bundle.name}-{replica}")
            data = smoke_dataset(bundle.layout)
            copy = bundle_copy(bundle, work / "bundle")
            args = _stage_args(bundle, copy, data, work, **_as_users_run(bundle))
            run = _run(bundle, copy, "train", args, work / "train.log")
            runs[key] = FreshRun(copy, data, run)
        return runs[key]

    return fresh


# -------------------------------------------------------------------------------------------------- tests


@pytest.mark.representative("stroke_ctp_msdcnn")
def test_same_seed_gives_identical_checkpoints(bundle, fresh_run):
    states = []
    for replica in ("a", "b"):
        models = fresh_run(bundle, replica).models()
        found = _epoch_checkpoints(models)
        assert found, f"no epoch checkpoint in {models}"
        states.append(_tensors(torch.load(models / max(found, key=found.get), weights_only=True)))
        states[-1].update(
            {
                f"{n.checkpoint_name}:{k}": v
                for n in bundle.networks
                if n.stage == "train"
                for k, v in _tensors(torch.load(models / n.checkpoint_name, weights_only=True)).items()
            }
        )
    first, second = states
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"same seed, different tensors: {different[:5]}"
    assert any(k.startswith("model") for k in first) and any(k.startswith("optimizer") for k in first)


@pytest.mark.representative("stroke_ctp_dwi_gan")
def test_sigkill_during_each_stage_then_resume(bundle, fresh_run, tmp_path):
    fresh = fresh_run(bundle)
    copy, data, work = fresh.trained_copy(tmp_path / "bundle"), fresh.data, tmp_path
    models = copy / "models"
    for stage in bundle.stages:
        args = _stage_args(bundle, copy, data, work, epochs=KILL_EPOCHS, resume="true")
        before = set(_epoch_checkpoints(models)) if stage != "train" else set()
        started_with = _epoch_checkpoints(models)
        after_kill = _run_and_kill(bundle, copy, stage, args, work / f"{stage}_killed.log", started_with)
        new = {name: epoch for name, epoch in after_kill.items() if name not in before}
        assert new, f"{stage}: the kill left no checkpoint of this stage"
        for name in after_kill:  # whatever the kill interrupted, every checkpoint on disk is whole
            torch.load(models / name, weights_only=True)
        newest = max(new, key=new.get)
        resumed_from = new[newest]
        best_files = [models / n.checkpoint_name for n in bundle.networks if n.stage == stage]
        best_before = {p.name: _digest(p) for p in best_files if p.is_file()}
        scores_before = {p.name: _best_score(models, p.name) for p in best_files}
        state = torch.load(models / newest, weights_only=True)
        assert _trainer_epoch(state) == resumed_from
        if any(score is not None for score in scores_before.values()):
            assert any(k.startswith("best_metric") for k in state), f"{newest} lacks the best-metric tracker"

        # what a kill in the middle of a write leaves behind (a process that no longer exists)
        stale = models / f".partial-{_dead_pid()}-{newest}"
        stale.write_bytes(b"half a checkpoint")
        rerun = _run(bundle, copy, stage, args, work / f"{stage}_resumed.log")
        assert rerun.ok, rerun.failure()
        restored = RESTORED.findall(rerun.stdout + rerun.stderr)
        assert restored and Path(restored[0]).name == newest, f"{stage}: resumed from {restored}, not {newest}"
        done = _epoch_checkpoints(models)
        final = max((n for n in done if n not in before), key=done.get)
        final_state = torch.load(models / final, weights_only=True)
        epochs_run = _trainer_epoch(final_state) - resumed_from
        assert epochs_run >= 1, f"{stage}: nothing trained after the resume"
        per_epoch = int(final_state["trainer"]["epoch_length"])
        # the optimiser went on from the saved state: its step counters exceed the rerun's own iterations
        steps = [float(v) for k, v in _tensors(final_state.get("optimizer", {})).items() if k.endswith(".step")]
        if steps:
            assert max(steps) > epochs_run * per_epoch, f"{stage}: optimiser state restarted at the resume"
        for path in best_files:
            assert path.is_file(), f"{stage} wrote no {path.name} after the resume"
            torch.load(path, weights_only=True)
        for name, score_before in scores_before.items():
            if score_before is None:
                continue
            score_after = _best_score(models, name)
            assert score_after is not None and score_after >= score_before, f"{name}: best score went down"
            if name in best_before and _digest(models / name) != best_before[name]:
                assert score_after > score_before, f"{name} replaced by a model that did not score better"
        assert not _leftovers(copy), f"temporary files left after the resume: {_leftovers(copy)}"


@pytest.mark.representative("stroke_ctp_msdcnn")  # reuses the determinism test's first run
def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(bundle, fresh_run, tmp_path):
    fresh = fresh_run(bundle)
    copy, data, work = fresh.trained_copy(tmp_path / "bundle"), fresh.data, tmp_path
    models = copy / "models"
    kept = {name: _digest(models / name) for name in _epoch_checkpoints(models)}
    kept.update({n.checkpoint_name: _digest(models / n.checkpoint_name) for n in bundle.networks if n.stage == "train"})
    overlay = work / "nan_at_epoch_2.json"
    overlay.write_text(json.dumps({"train#trainer#train_handlers": NAN_HANDLER}, indent=4))
    args = _stage_args(bundle, copy, data, work, epochs=2, resume="true")
    run = _run(bundle, copy, "train", args, work / "nan.log", overlay)
    assert not run.ok and run.returncode is not None, "a NaN loss did not stop training"
    last = run.last_line()
    assert re.search(r"loss is (nan|inf)", last, re.IGNORECASE) and "epoch 2" in last, run.failure()
    assert sorted(_epoch_checkpoints(models)) == sorted(n for n in kept if CHECKPOINT.search(n))
    for name, digest in kept.items():  # the epoch-1 files are untouched, hence finite
        assert _digest(models / name) == digest, f"{name} was rewritten by the diverged run"
    assert not _leftovers(copy)


class _Payload:
    """Any Python object: pickled into a checkpoint, ``weights_only=True`` must refuse it."""


def test_pickled_object_in_model_pt_is_refused(bundle, tmp_path, smoke_dataset):
    from monai.bundle import ConfigWorkflow

    copy = bundle_copy(bundle, tmp_path / "bundle")
    models = copy / "models"
    models.mkdir(exist_ok=True)
    target = copy / bundle.networks[0].checkpoint
    torch.save({"model": {"weight": torch.zeros(1)}, "payload": _Payload()}, target)
    data = smoke_dataset(bundle.layout)
    workflow = ConfigWorkflow(
        config_file=str(copy / "configs" / "inference.json"),
        workflow_type="infer",
        logging_file=False,
        bundle_root=str(copy),
        dataset_dir=str(data),
        output_dir=str(tmp_path / "out"),
        ckpt_dir=str(models),
    )
    with pytest.raises(Exception) as info:
        workflow.initialize()
        workflow.run()
    chain, error = [], info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    ours = [e for e in chain if isinstance(e, StrokesegError)]
    assert ours, f"no one-line strokeseg error, got {[type(e).__name__ for e in chain]}: {info.value}"
    message = str(ours[0])
    assert target.name in message and "pickled" in message and "\n" not in message
    assert not list((tmp_path / "out").rglob("*.nii.gz")) if (tmp_path / "out").exists() else True
