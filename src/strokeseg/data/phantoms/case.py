"""One synthetic stroke case in memory: anatomy, lesions, contrasts, perfusion and 4-D series on the
native grids of a layout, plus the ``phantom.json`` description.

Skull-stripped layouts without a 4-D series (ISLES 2015) are computed on the bounding box of the head
only (everything outside it is 0), and their MR images on the brain voxels only; the results are pasted
into the full native grid at the end.

Randomness is split in two ``numpy`` generators: one seeded by (seed, layout, patient) draws everything
that belongs to the patient (anatomy, lesions, contrasts, geometry, so the two ISLES 2018 slabs of one
patient agree), one seeded by (seed, layout, case number) draws the acquisition noise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from strokeseg.data.layouts import get_layout
from strokeseg.data.phantoms.acquisition import bias_field, gaussian, rician, to_int16
from strokeseg.data.phantoms.anatomy import (
    TissueMaps,
    hemispheric_gain,
    random_deformation,
    sample_tissue,
    tissue_box,
)
from strokeseg.data.phantoms.contrasts import draw_contrasts, render_anatomical
from strokeseg.data.phantoms.difficulty import get_difficulty
from strokeseg.data.phantoms.grids import Grid, draw_flair_grid, draw_image_grid, paste, slab_layout
from strokeseg.data.phantoms.lesions import (
    LESION_CHANNELS,
    LesionMaps,
    confounder_map,
    draw_confounders,
    draw_lesions,
    lesion_maps,
)
from strokeseg.data.phantoms.perfusion import bolus_series, draw_timing, perfusion_maps
from strokeseg.data.phantoms.template import load_template
from strokeseg.errors import DataError

__all__ = [
    "LABEL_CHANNEL",
    "LABEL_SEMANTICS",
    "MODALITY_SOURCES",
    "UNITS",
    "CasePlan",
    "Volume",
    "PhantomCase",
    "plan_cases",
    "synthesize_case",
]

# which lesion channel each dataset's reference mask delineates
LABEL_CHANNEL = {
    "isles2015_siss": "core",
    "isles2015_spes": "penumbra",
    "isles2017": "final",
    "isles2018": "core",
    "isles2022": "core",
}
LABEL_SEMANTICS = {
    "isles2015_siss": "whole_lesion",
    "isles2015_spes": "penumbra",
    "isles2017": "final_infarct",
    "isles2018": "core",
    "isles2022": "dwi_lesion",
}
_SKULL_STRIPPED = {
    "isles2015_siss": True,
    "isles2015_spes": True,
    "isles2017": True,
    "isles2018": False,
    "isles2022": False,
}
# file token → what is rendered into it
MODALITY_SOURCES: dict[str, dict[str, str]] = {
    "isles2015_siss": {"MR_DWI": "dwi", "MR_Flair": "flair", "MR_T1": "t1", "MR_T2": "t2"},
    "isles2015_spes": {
        "MR_CBF": "cbf",
        "MR_CBV": "cbv",
        "MR_DWI": "dwi",
        "MR_T1c": "t1",
        "MR_T2": "t2",
        "MR_TTP": "ttp",
        "MR_Tmax": "tmax",
    },
    "isles2017": {
        "MR_ADC": "adc",
        "MR_MTT": "mtt",
        "MR_rCBF": "rcbf",
        "MR_rCBV": "rcbv",
        "MR_Tmax": "tmax",
        "MR_TTP": "ttp",
        "MR_4DPWI": "series_mr",
    },
    "isles2018": {
        "CT": "ct",
        "CT_CBF": "cbf",
        "CT_CBV": "cbv",
        "CT_MTT": "mtt",
        "CT_Tmax": "tmax",
        "CT_4DPWI": "series_ct",
        "MR_DWI": "dwi",
    },
    "isles2022": {"dwi": "dwi", "adc": "adc", "FLAIR": "flair"},
}
UNITS = {
    "dwi": "a.u.",
    "flair": "a.u.",
    "t1": "a.u.",
    "t2": "a.u.",
    "adc": "1e-6 mm^2/s",
    "ct": "HU",
    "cbf": "ml/100g/min",
    "cbv": "ml/100g",
    "rcbf": "a.u. (CBF times a per-case gain)",
    "rcbv": "a.u. (CBV times a per-case gain)",
    "mtt": "s",
    "tmax": "s",
    "ttp": "s",
    "series_ct": "HU",
    "series_mr": "a.u. (DSC signal)",
}
_MR_WEIGHTED = ("dwi", "flair", "t1", "t2")
_MAP_NOISE = {"cbf": 0.04, "cbv": 0.04, "rcbf": 0.04, "rcbv": 0.04, "mtt": 0.03, "tmax": 0.03, "ttp": 0.02}
_MR_NOISE = {"dwi": 0.04, "flair": 0.025, "t1": 0.02, "t2": 0.025}  # σ / WM signal


@dataclass(frozen=True)
class CasePlan:
    """Where a case sits in a dataset: number, folder name, split and its patient (ISLES 2018 slabs)."""

    layout: str
    number: int
    name: str
    split: str
    patient: str
    patient_number: int
    slab_index: int = 0
    slab_count: int = 1


@dataclass
class Volume:
    """An array on a grid; ``dt_s`` is the frame interval of 4-D series."""

    data: np.ndarray
    grid: Grid
    dt_s: float | None = None

    @property
    def affine(self) -> np.ndarray:
        """Voxel → world affine."""
        return self.grid.affine


@dataclass
class PhantomCase:
    """A synthesised case: ``volumes`` by file token (no label), the reference ``label`` (always
    present in memory, written only for training cases), and ``meta`` (the ``phantom.json`` content).

    ``work_maps`` are the lesion fields as computed, on the voxels ``work_box`` of the image grid
    (``None``: the whole grid); :attr:`lesion_maps` gives them on the image grid.
    """

    plan: CasePlan
    volumes: dict[str, Volume]
    label: Volume
    meta: dict = field(default_factory=dict)
    work_maps: LesionMaps | None = field(default=None, repr=False)
    work_box: tuple[slice, slice, slice] | None = field(default=None, repr=False)

    @property
    def lesion_maps(self) -> LesionMaps | None:
        """Lesion fields on the image grid (pasted from the work box on first access)."""
        maps, box = self.work_maps, self.work_box
        if maps is None or box is None:
            return maps
        if "_full_maps" not in self.__dict__:
            shape = self.label.grid.shape
            self.__dict__["_full_maps"] = LesionMaps(
                *(paste(getattr(maps, name), box, shape) for name in (*LESION_CHANNELS, "lesion_id"))
            )
        return self.__dict__["_full_maps"]


def _layout_code(layout: str) -> int:
    return zlib.crc32(layout.encode("utf-8"))


def _check_layout(layout: str):
    try:
        return get_layout(layout)
    except ValueError as err:
        raise DataError(str(err)) from None


def plan_cases(layout: str, cases: int, test_cases: int = 0, seed: int = 0) -> list[CasePlan]:
    """Case numbers, folder names and patients of a dataset: training 1..N, test N+1..N+M.

    ISLES 2018 groups about half of the patients into two consecutive slab cases (as the public
    release does: 94 training slabs from 63 patients); other layouts have one case per patient.

    Raises:
        DataError: unknown layout or negative counts.
    """
    spec = _check_layout(layout)
    if cases < 0 or test_cases < 0 or cases + test_cases < 1:
        raise DataError(f"need at least one case; got cases={cases}, test_cases={test_cases}")
    rng = np.random.default_rng([seed, _layout_code(layout), 7])
    plans: list[CasePlan] = []
    patient = 0
    for split, first, count, pattern in (
        ("training", 1, cases, spec.train_case_pattern),
        ("testing", cases + 1, test_cases, spec.test_case_pattern),
    ):
        numbers = list(range(first, first + count))
        i = 0
        while i < len(numbers):
            patient += 1
            slabs = 2 if layout == "isles2018" and i + 1 < len(numbers) and rng.random() < 0.5 else 1
            for s in range(slabs):
                number = numbers[i + s]
                plans.append(
                    CasePlan(
                        layout, number, pattern.format(n=number), split, f"patient_{patient:03d}", patient, s, slabs
                    )
                )
            i += slabs
    return plans


def _round(values, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


def _lesion_records(lesions, maps: LesionMaps, channel: str, grid: Grid, deformation) -> tuple[list[dict], int]:
    label = maps.mask(channel)
    ids = maps.lesion_id
    counts = {name: np.bincount(ids[maps.mask(name)], minlength=len(lesions) + 1) for name in LESION_CHANNELS}
    voxels = np.argwhere(label)
    voxel_ids = ids[label]
    records, hidden = [], 0
    for index, lesion in enumerate(lesions, start=1):
        own = voxels[voxel_ids == index]
        if own.size == 0:
            hidden += 1
            continue
        records.append(
            {
                "centroid_mm": _round(grid.world(own.mean(axis=0)), 2),
                "volume_mm3": round(own.shape[0] * grid.voxel_volume_mm3, 2),
                "voxels": int(own.shape[0]),
                "category": lesion.category,
                "hemisphere": lesion.hemisphere,
                "territory": lesion.territory,
                "template_centre_mm": _round(lesion.centre_mm, 2),
                "radius_mm": round(lesion.radius_mm, 3),
                "channel_volumes_mm3": {
                    name: round(float(counts[name][index]) * grid.voxel_volume_mm3, 2) for name in LESION_CHANNELS
                },
            }
        )
    return records, hidden


def synthesize_case(
    layout: str,
    number: int = 1,
    seed: int = 0,
    difficulty: str = "standard",
    split: str = "training",
    series: bool = True,
    plan: CasePlan | None = None,
) -> PhantomCase:
    """Synthesise one case of ``layout`` in memory.

    Args:
        layout: isles2015_siss | isles2015_spes | isles2017 | isles2018 | isles2022.
        number: case number (folder name from the layout's pattern); ignored when ``plan`` is given.
        seed: dataset seed; with the patient / case number it fixes every random draw.
        difficulty: easy | standard | hard.
        split: ``training`` or ``testing``; ignored when ``plan`` is given.
        series: also build the 4-D perfusion series of the layouts that have one.
        plan: the case's place in a dataset (from :func:`plan_cases`).

    Returns:
        The case with its volumes (image arrays ``(I, J, K)``, 4-D series ``(I, J, K, T)`` or
        ``(I, J, K, 1, T)``), the uint8 reference label on the image grid and the metadata.

    Raises:
        DataError: unknown layout or difficulty, or a split other than training / testing.
    """
    spec = _check_layout(layout)
    level = get_difficulty(difficulty)
    if plan is None:
        if split not in ("training", "testing"):
            raise DataError(f"split must be 'training' or 'testing', got {split!r}")
        pattern = spec.train_case_pattern if split == "training" else spec.test_case_pattern
        plan = CasePlan(layout, number, pattern.format(n=number), split, f"patient_{number:03d}", number)
    template = load_template()
    code = _layout_code(layout)
    prng = np.random.default_rng([seed, code, plan.patient_number, 1])
    crng = np.random.default_rng([seed, code, plan.number, 2])

    acute = layout != "isles2015_siss"
    deformation = random_deformation(prng, template.brain_centre_mm)
    hemisphere, lesions = draw_lesions(prng, template, level, acute=acute)
    confounders = draw_confounders(prng, template, level)
    contrasts = draw_contrasts(prng, level, subacute=not acute)
    head_centre = deformation.to_world(template.brain_centre_mm)
    sources = MODALITY_SOURCES[layout]
    series_kind = next((s for s in sources.values() if s.startswith("series_")), None)
    timing = draw_timing(prng, "ct" if series_kind == "series_ct" else "mr")
    gains = {name: float(prng.uniform(300.0, 900.0)) for name in (*_MR_WEIGHTED, "series_mr")}
    relative_gain = float(prng.uniform(0.8, 1.25))
    five_d = layout == "isles2017" or prng.random() < 0.3

    slab_info = None
    if layout == "isles2018":
        slabs = slab_layout(prng, plan.slab_count)
        pixel = float(prng.uniform(0.80, 0.95))
        xy = head_centre[:2] + prng.uniform(-4.0, 4.0, size=2)
        extents = [n * t for n, t in slabs]
        lesion_z = deformation.to_world(lesions[0].centre_mm)[2]
        z0 = np.clip(lesion_z + prng.uniform(-0.3, 0.3) * extents[0], head_centre[2] - 40.0, head_centre[2] + 55.0)
        centres = [float(z0)]
        if plan.slab_count == 2:
            overlap = prng.uniform(0.0, 0.3) * min(extents)
            step = extents[0] / 2 + extents[1] / 2 - overlap
            centres.append(float(z0 + (step if prng.random() < 0.5 else -step)))
        grid = draw_image_grid(
            layout,
            prng,
            head_centre,
            slab=slabs[plan.slab_index],
            slab_centre_z_mm=centres[plan.slab_index],
            in_plane=(pixel, xy),
        )
        slab_info = {"index": plan.slab_index, "count": plan.slab_count, "z_centres_mm": _round(centres, 2)}
    else:
        grid = draw_image_grid(layout, prng, head_centre)
    flair_grid = draw_flair_grid(prng, head_centre) if layout == "isles2022" else None

    stripped = _SKULL_STRIPPED[layout]
    with_head = (not stripped) or series_kind == "series_mr"
    # skull-stripped images without a series are 0 outside the brain: work on the head's bounding box
    box = tissue_box(template, deformation, grid) if not with_head else None
    work = grid.crop(box) if box is not None else grid

    def full(data: np.ndarray) -> np.ndarray:
        return paste(data, box, grid.shape) if box is not None else data

    tissue = sample_tissue(template, deformation, work, head=with_head)
    brain = tissue.brain
    stripped_tissue = tissue.without_head() if stripped else tissue
    maps = lesion_maps(lesions, deformation, work, tissue.parenchyma)
    bias = bias_field(work.shape, crng, level.bias)
    bias = bias * hemispheric_gain(deformation, work, crng.spawn(1)[0])  # healthy hemispheres differ a little
    brain_index = np.flatnonzero(brain) if stripped else None
    compact: dict[str, object] = {}
    spots = None
    perfusion = None
    noise_used: dict[str, float] = {}
    volumes: dict[str, Volume] = {}

    def mr_weighted(name: str, tissue_maps: TissueMaps, lesion_fields: LesionMaps, on: Grid, field_bias) -> np.ndarray:
        nonlocal spots
        sigma = _MR_NOISE[name] * level.noise * gains[name] * contrasts[f"{name}.wm"]
        noise_used[name] = round(sigma, 4)
        if stripped:  # brain voxels only, as 1-D arrays; Rician noise there, 0 elsewhere
            if not compact:
                compact["tissue"] = TissueMaps(*(np.take(m, brain_index) for m in (tissue.gm, tissue.wm, tissue.csf)))
                compact["maps"] = LesionMaps(
                    *(np.take(getattr(maps, n), brain_index) for n in (*LESION_CHANNELS, "lesion_id"))
                )
                compact["bias"] = np.take(bias, brain_index)
            image = render_anatomical(name, compact["tissue"], compact["maps"], contrasts)
            if name == "dwi":
                image *= 1.0 + np.take(confounder_map(confounders, deformation, on), brain_index)
            image *= compact["bias"]
            image *= np.float32(gains[name])
            out = np.zeros(grid.shape, dtype=np.float32, order="F")
            out[box or ...][brain] = rician(image, sigma, crng)
            return out
        image = render_anatomical(name, tissue_maps, lesion_fields, contrasts)
        if name == "dwi":
            if spots is None:
                spots = confounder_map(confounders, deformation, on)
            image *= 1.0 + spots
        image *= field_bias * gains[name]
        return rician(image, sigma, crng)

    tokens = list(spec.modalities) + [extra.token for extra in spec.extras]
    for token in tokens:
        source = sources[token]
        extra = next((e for e in spec.extras if e.token == token), None)
        if extra is not None and extra.training_only and plan.split != "training":
            continue
        if source.startswith("series_") and not series:
            continue
        if source == "flair" and flair_grid is not None:
            flair_tissue = sample_tissue(template, deformation, flair_grid, head=True)
            flair_maps = lesion_maps(lesions, deformation, flair_grid, flair_tissue.parenchyma)
            flair_bias = bias_field(flair_grid.shape, crng, level.bias)
            volumes[token] = Volume(mr_weighted("flair", flair_tissue, flair_maps, flair_grid, flair_bias), flair_grid)
        elif source in _MR_WEIGHTED:
            volumes[token] = Volume(mr_weighted(source, stripped_tissue, maps, work, bias), grid)
        elif source == "adc":
            image = render_anatomical("adc", stripped_tissue, maps, contrasts) * 1000.0
            sigma = 0.03 * level.noise * 1000.0 * contrasts["adc.wm"]
            noise_used["adc"] = round(sigma, 4)
            head_mask = brain if stripped else None
            volumes[token] = Volume(full(gaussian(image, sigma, crng, head_mask, floor=0.0)), grid)
        elif source == "ct":
            sigma = float(crng.uniform(3.0, 4.5)) * level.noise
            noise_used["ct"] = round(sigma, 4)
            image = render_anatomical("ct", tissue, maps, contrasts)
            volumes[token] = Volume(to_int16(gaussian(image, sigma, crng)), grid)
        else:
            if perfusion is None:
                perfusion = perfusion_maps(tissue, maps, contrasts, timing)
            if source == "series_ct":
                baseline = render_anatomical("ct", tissue, maps, contrasts)
                sigma = float(crng.uniform(5.0, 8.0)) * level.noise
                data = bolus_series(perfusion, timing, baseline, "ct", sigma, crng)
            elif source == "series_mr":
                baseline = render_anatomical("t2", tissue, maps, contrasts) * bias * gains["series_mr"]
                sigma = 0.02 * level.noise * gains["series_mr"] * contrasts["t2.wm"]
                data = bolus_series(perfusion, timing, baseline, "mr", sigma, crng)
            else:
                name = source[1:] if source.startswith("r") else source
                value = getattr(perfusion, name) * (relative_gain if source.startswith("r") else 1.0)
                reference = float(np.percentile(value[perfusion.tissue], 90)) if perfusion.tissue.any() else 1.0
                sigma = _MAP_NOISE[source] * level.noise * reference
                noise_used[source] = round(sigma, 4)
                volumes[token] = Volume(full(gaussian(value.astype(np.float32), sigma, crng, brain, floor=0.0)), grid)
                continue
            noise_used[source] = round(sigma, 4)
            if five_d:
                data = data[:, :, :, None, :]
            volumes[token] = Volume(data, grid, dt_s=timing.dt_s)

    channel = LABEL_CHANNEL[layout]
    label = Volume(full(maps.mask(channel).view(np.uint8)), grid)
    records, hidden = _lesion_records(lesions, maps, channel, work, deformation)
    point, normal = deformation.midsagittal_plane()
    meta = {
        "generator": "strokeseg.data.phantoms",
        "format_version": 1,
        "layout": layout,
        "case": plan.name,
        "case_number": plan.number,
        "patient": plan.patient,
        "split": plan.split,
        "seed": int(seed),
        "difficulty": level.name,
        "label": {
            "token": spec.label_token,
            "semantics": LABEL_SEMANTICS[layout],
            "meaning": spec.label_meaning,
            "values": {"0": "background", "1": LABEL_SEMANTICS[layout]},
            "written": plan.split == "training",
        },
        "hemisphere": hemisphere,
        "midsagittal_plane": {"point_mm": _round(point, 3), "normal": _round(normal, 6)},
        "lesions": records,
        "lesions_outside_grid": hidden,
        "confounders": [
            {
                "centroid_mm": _round(deformation.to_world(spot.centre_mm), 2),
                "radius_mm": round(spot.radius_mm, 3),
                "strength": round(spot.strength, 4),
                "modalities": ["dwi"],
            }
            for spot in confounders
        ],
        "contrasts": {key: round(value, 5) for key, value in sorted(contrasts.items())},
        "acquisition": {
            "skull_stripped": stripped,
            "bias_amplitude": level.bias,
            "noise_sigma": noise_used,
            "gains": {key: round(value, 3) for key, value in gains.items()},
            "relative_map_gain": round(relative_gain, 4),
        },
        "modalities": {token: sources[token] for token in volumes},
        "units": {token: UNITS[sources[token]] for token in volumes},
        "grids": {"image": grid.describe(), **({"flair": flair_grid.describe()} if flair_grid is not None else {})},
        "deformation": deformation.summary(),
        "template": "MNI ICBM152 2009a symmetric, from the nilearn package data",
    }
    if series_kind is not None:
        meta["perfusion"] = {**timing.summary(), "kind": series_kind, "five_d": bool(five_d)}
    if slab_info is not None:
        meta["slab"] = slab_info
    return PhantomCase(plan=plan, volumes=volumes, label=label, meta=meta, work_maps=maps, work_box=box)
