"""The on-disk layouts of the public ISLES datasets: modality tokens, channel order and file naming.

This module is the single source of truth for what a layout contains. Discovery of real trees
(:mod:`strokeseg.data.datalist`) and the synthetic phantom writer (:mod:`strokeseg.data.phantoms`)
both read it, so a synthetic dataset is named exactly as the discovery code expects real data to be.

ISLES 2015-2018 store one volume per folder, folder name = file stem:
``<Prefix>.Brain.XX.O.<MOD>.<id>/<Prefix>.Brain.XX.O.<MOD>.<id>.nii``. Discovery matches the modality
token between dots and never relies on the numeric ids or the prefix. ISLES 2022 is BIDS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LAYOUT_NAMES",
    "LAYOUTS",
    "Layout",
    "Extra",
    "get_layout",
    "isles_legacy_name",
    "isles2022_paths",
    "modality_token",
]


@dataclass(frozen=True)
class Extra:
    """A per-case file that is not a channel of ``image`` (4-D series, a volume on another grid, …).

    Args:
        key: datalist key the path is stored under.
        token: modality token (ISLES 2015-2018) or BIDS suffix (ISLES 2022).
        required: a case without it is incomplete.
        training_only: only labelled (training) cases are expected to have it.
        same_grid: its spatial grid must equal the ``image`` grid (first three dimensions).
    """

    key: str
    token: str
    required: bool = True
    training_only: bool = False
    same_grid: bool = True


@dataclass(frozen=True)
class Layout:
    """Static description of one ISLES dataset layout.

    Args:
        name: layout id used on the command line.
        modalities: tokens of the co-registered 3-D volumes stacked, in this order, as ``image`` channels.
        label_token: token of the reference segmentation.
        label_meaning: what the label delineates in this dataset.
        extras: per-case files kept under their own datalist keys.
        prefix: file-name prefix the synthetic writer uses (real data may use ``VSD`` or ``SMIR``).
        suffix: file extension of the real release (``.nii``; ``.nii.gz`` is accepted everywhere).
        train_case_pattern / test_case_pattern: case folder name format (``{n}`` = case number).
    """

    name: str
    modalities: tuple[str, ...]
    label_token: str
    label_meaning: str
    extras: tuple[Extra, ...] = field(default_factory=tuple)
    prefix: str = "VSD"
    suffix: str = ".nii"
    train_case_pattern: str = "{n}"
    test_case_pattern: str = "{n}"
    label_prefix_part: str = "Brain.XX.O"
    bids: bool = False


LAYOUTS: dict[str, Layout] = {
    "isles2015_siss": Layout(
        name="isles2015_siss",
        modalities=("MR_DWI", "MR_Flair", "MR_T1", "MR_T2"),
        label_token="OT",
        label_meaning="whole sub-acute ischemic lesion",
        label_prefix_part="Brain_3more.XX.XX",
    ),
    "isles2015_spes": Layout(
        name="isles2015_spes",
        modalities=("MR_CBF", "MR_CBV", "MR_DWI", "MR_T1c", "MR_T2", "MR_TTP", "MR_Tmax"),
        label_token="OT",
        label_meaning="penumbra (hypoperfused tissue at risk)",
        label_prefix_part="Brain_1more.XX.XX",
    ),
    "isles2017": Layout(
        name="isles2017",
        modalities=("MR_ADC", "MR_MTT", "MR_rCBF", "MR_rCBV", "MR_Tmax", "MR_TTP"),
        label_token="OT",
        label_meaning="final infarct at about 90 days, mapped to the acute space",
        extras=(Extra(key="perfusion_4d", token="MR_4DPWI"),),
        train_case_pattern="training_{n}",
        test_case_pattern="test_{n}",
    ),
    "isles2018": Layout(
        name="isles2018",
        modalities=("CT", "CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax"),
        label_token="OT",
        label_meaning="infarct core delineated on DWI",
        extras=(
            Extra(key="perfusion_4d", token="CT_4DPWI"),
            Extra(key="dwi", token="MR_DWI", required=False, training_only=True),
        ),
        prefix="SMIR",
        train_case_pattern="case_{n}",
        test_case_pattern="case_{n}",
    ),
    "isles2022": Layout(
        name="isles2022",
        modalities=("dwi", "adc"),
        label_token="msk",
        label_meaning="acute/sub-acute infarct visible on DWI",
        extras=(Extra(key="flair", token="FLAIR", required=False, same_grid=False),),
        suffix=".nii.gz",
        train_case_pattern="sub-strokecase{n:04d}",
        test_case_pattern="sub-strokecase{n:04d}",
        bids=True,
    ),
}

LAYOUT_NAMES: tuple[str, ...] = tuple(LAYOUTS)


def get_layout(name: str) -> Layout:
    """Return the layout called ``name``.

    Raises:
        ValueError: ``name`` is not a known layout (the message lists the known ones).
    """
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown layout {name!r}; expected one of: {', '.join(LAYOUT_NAMES)}") from None


_TOKEN_RE = re.compile(
    r"^(?P<prefix>[^.]+)\.Brain[^.]*\.(?:[^.]+\.)*?(?P<token>[A-Za-z0-9_]+)\.(?P<id>\d+)(?:\.nii(?:\.gz)?)?$"
)


def modality_token(name: str) -> str | None:
    """Modality token of an ISLES 2015-2018 file or folder name, e.g. ``MR_DWI`` for
    ``VSD.Brain.XX.O.MR_DWI.70613.nii``; ``None`` when the name does not follow the convention."""
    match = _TOKEN_RE.match(Path(name).name)
    return match.group("token") if match else None


def isles_legacy_name(layout: Layout, token: str, file_id: int, gz: bool = False) -> str:
    """File stem + extension of an ISLES 2015-2018 volume, e.g. ``VSD.Brain.XX.O.MR_DWI.70613.nii``.

    The same string (without extension) is the name of the folder that holds the file.
    """
    part = layout.label_prefix_part if token == layout.label_token else "Brain.XX.O"
    return f"{layout.prefix}.{part}.{token}.{file_id}" + (".nii.gz" if gz else layout.suffix)


def isles2022_paths(root: Path, case: str, session: str = "ses-0001", rawdata: bool = True) -> dict[str, Path]:
    """BIDS paths of one ISLES 2022 case (``dwi``, ``adc``, ``flair`` and the ``label`` mask)."""
    raw = Path(root) / "rawdata" if rawdata else Path(root)
    base = raw / case / session
    stem = f"{case}_{session}"
    return {
        "dwi": base / "dwi" / f"{stem}_dwi.nii.gz",
        "adc": base / "dwi" / f"{stem}_adc.nii.gz",
        "flair": base / "anat" / f"{stem}_FLAIR.nii.gz",
        "label": Path(root) / "derivatives" / case / session / f"{stem}_msk.nii.gz",
    }
