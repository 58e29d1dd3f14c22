"""Every bundle's ``multi_gpu_train.json`` overlay trains with two processes under ``torch.distributed.run``.

On a machine without GPUs the overlay falls back to the gloo backend on CPU, so the distributed path (process
group, ``DistributedDataParallel``, distributed samplers, rank-0-only checkpoints and handlers) runs the same
code as on GPUs. One smoke epoch of the ``train`` stage with ``num_folds=1`` (training = validation = all three
cases, so each rank gets validation data); the checkpoints of the stage's networks are plain ``state_dict``s,
without DDP's ``module.`` prefix.

Two whole trainings per bundle: marked ``multi_gpu``, which only ``.ci/run`` selects.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from strokeseg.tools.runner import child_env, config_arg

from .conftest import bundle_copy, smoke_args

pytestmark = pytest.mark.multi_gpu

TIMEOUT_S = 600
RANKS = 2


def test_multi_gpu_overlay_trains_with_two_gloo_processes_on_cpu(bundle, smoke_dataset, tmp_path):
    overlay = bundle.configs / "multi_gpu_train.json"
    if not overlay.is_file():
        pytest.skip(f"{bundle.name} has no configs/multi_gpu_train.json")
    copy = bundle_copy(bundle, tmp_path / "bundle")
    data = smoke_dataset(bundle.layout)
    configs = [str(copy / c) for c in bundle.stage_configs("train")] + [str(copy / "configs" / overlay.name)]
    args = smoke_args(bundle, copy, data, output_dir=tmp_path / "out", num_folds=1)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
    command += [f"--nproc_per_node={RANKS}", "-m", "monai.bundle", "run", "--config_file", config_arg(configs), *args]

    proc = subprocess.run(
        command,
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=child_env({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    models = copy / "models"
    written = sorted(p.name for p in models.iterdir())
    assert any(name.endswith("_checkpoint_1.pt") for name in written), f"no epoch-1 checkpoint in {written}"
    for network in bundle.networks:
        if network.stage != "train":
            continue
        state = torch.load(copy / network.checkpoint, weights_only=True)
        assert state and not any(k.startswith("module.") for k in state), (
            f"{network.checkpoint}: DDP wrapper leaked into the saved state_dict"
        )
