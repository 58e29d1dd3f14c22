"""``strokeseg infer`` and ``strokeseg train``: the bundles for people who do not write bundle configs.

Both run the bundle's own configs through ``python -m monai.bundle run`` (no second code path): the same
progress bars, the same one-line input errors (the bundle's ``initialize`` installs
:mod:`strokeseg.runtime.errors`), the same outputs. A bundle is named by its folder under ``bundles/`` or by a
path. Extra ``--id value`` options are passed on as config overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from strokeseg.dicom import is_dicom_file, lone_dicom_file_error
from strokeseg.errors import BundleError, DataError
from strokeseg.runtime.description import BundleDescription, bundle_folders, default_bundles_dir, describe_bundle
from strokeseg.tools.runner import child_env, config_arg, monai_bundle_command, override_args, run_tied

__all__ = ["resolve_bundle", "check_device", "infer_command", "train_commands", "run_streaming"]


def resolve_bundle(bundle: str | Path) -> BundleDescription:
    """The description of ``bundle``: a bundle folder, or the name of one under ``bundles/``.

    Raises:
        BundleError: no such bundle (the message lists the available ones).
    """
    path = Path(bundle).expanduser()
    if not (path / "configs" / "metadata.json").is_file():
        named = default_bundles_dir() / str(bundle)
        if (named / "configs" / "metadata.json").is_file():
            path = named
        else:
            names = ", ".join(p.name for p in bundle_folders()) or "none"
            raise BundleError(f"{bundle}: not a bundle folder or bundle name (available: {names})")
    return describe_bundle(path)


def check_device(overrides: Mapping[str, Any] | None) -> None:
    """Refuse a ``--device`` override naming a CUDA device this machine lacks, before anything is started or written.

    Without this, the bundle run created its output folder and then failed deep inside PyTorch (``Torch not
    compiled with CUDA enabled``, ``Found no NVIDIA driver``) at the end of a long traceback.

    Raises:
        BundleError: the device is not a device name, or CUDA (or that CUDA device) is not available here.
    """
    device = (overrides or {}).get("device")
    if device is None or "cuda" not in str(device).lower() or str(device).startswith("$"):
        return
    import torch  # lazy: 1 s at start-up, paid only when a CUDA device is named

    text = str(device)
    try:
        chosen = torch.device(text)
    except (RuntimeError, ValueError):
        raise BundleError(f"--device {text}: not a device name (cpu, cuda, cuda:0, ...)") from None
    if not torch.cuda.is_available():
        raise BundleError(
            f"--device {text}: no CUDA device on this machine (PyTorch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); leave --device out (it picks what is there) or pass --device cpu"
        )
    count = torch.cuda.device_count()
    if chosen.index is not None and chosen.index >= count:
        raise BundleError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")


def _quick(description: BundleDescription, quick: bool) -> list[str]:
    if not quick:
        return []
    if not (description.configs / "quick.json").is_file():
        raise BundleError(f"{description.name} has no configs/quick.json")
    return [str(description.configs / "quick.json")]


def infer_command(
    bundle: str | Path,
    source: str | Path,
    out: str | Path,
    quick: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> list[str]:
    """The ``python -m monai.bundle run`` command line of inference on ``source`` into ``out``.

    Raises:
        DataError: ``source`` does not exist, or is a single DICOM file (a series is given as its folder).
        BundleError: unknown bundle, no trained ``network_def`` checkpoint in it, or a ``device`` override naming
            a CUDA device this machine lacks.
    """
    check_device(overrides)
    description = resolve_bundle(bundle)
    if not Path(source).exists():
        raise DataError(f"{source}: no such file or folder")
    if is_dicom_file(source):  # before a bundle starts: it would take the file for a datalist
        raise lone_dicom_file_error(source)
    for network in description.networks:
        if not (description.root / network.checkpoint).is_file():
            raise BundleError(
                f"{description.name}: {network.checkpoint} does not exist; train the bundle first "
                f"(strokeseg train {description.name} DATA) or copy a trained checkpoint there"
            )
    configs = [str(description.configs / "inference.json"), *_quick(description, quick)]
    args = ["--config_file", config_arg(configs), "--bundle_root", str(description.root)]
    args += ["--dataset_dir", str(Path(source).resolve()), "--output_dir", str(Path(out).resolve())]
    return monai_bundle_command("run", *args, *override_args(dict(overrides or {})))


def train_commands(
    bundle: str | Path,
    data: str | Path,
    quick: bool = False,
    ckpt_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[list[str]]:
    """One ``python -m monai.bundle run`` command line per training stage, in order.

    Raises:
        DataError: ``data`` does not exist.
        BundleError: unknown bundle, or a ``device`` override naming a CUDA device this machine lacks.
    """
    check_device(overrides)
    description = resolve_bundle(bundle)
    if not Path(data).exists():
        raise DataError(f"{data}: no such dataset folder or datalist")
    ckpt = Path(ckpt_dir).resolve() if ckpt_dir is not None else description.root / "models"
    out = Path(output_dir).resolve() if output_dir is not None else description.root / "eval"
    commands = []
    for stage in description.stages:
        configs = [str(description.root / c) for c in description.stage_configs(stage)] + _quick(description, quick)
        args = ["--config_file", config_arg(configs), "--bundle_root", str(description.root)]
        args += ["--dataset_dir", str(Path(data).resolve()), "--ckpt_dir", str(ckpt), "--output_dir", str(out)]
        commands.append(monai_bundle_command("run", *args, *override_args(dict(overrides or {}))))
    return commands


def run_streaming(command: list[str], cwd: str | Path | None = None) -> int:
    """Run ``command`` with its output on this terminal (progress bars, the one-line error); its exit code.

    The child dies with this process: a ``SIGTERM`` / ``SIGINT`` here stops it, a ``SIGKILL`` here kills it
    (:func:`strokeseg.tools.runner.run_tied`).
    """
    return run_tied(command, cwd=cwd, env=child_env())
