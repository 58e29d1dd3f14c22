"""The ``strokeseg`` command (python-fire): synth, datalist, infer, train, demo, evaluate, verify, bench,
profile.

Each verb is a thin function. A verb whose implementation is slow to import (MONAI, the phantom generator)
imports it inside the function, with the measured cost beside the import, so ``strokeseg --help`` stays fast and
one verb's heavy dependencies are not loaded by another.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import fire

from strokeseg.errors import BundleError, StrokesegError
from strokeseg.grids import GRID_TOLERANCE_MM, grid_tolerance
from strokeseg.knobs import KnobError, as_bool, as_int
from strokeseg.runtime.hardware import enable_huge_pages
from strokeseg.tools.frontdoor import infer_command, resolve_bundle, run_streaming, train_commands

__all__ = ["main", "synth", "datalist", "infer", "train", "demo", "evaluate", "verify", "bench", "profile", "as_bool"]


def synth(
    layout: str,
    out: str,
    cases: int = 4,
    test_cases: int = 0,
    seed: int = 0,
    difficulty: str = "standard",
    overwrite: bool = False,
    preview: bool = False,
) -> str:
    """Write a synthetic stroke dataset in the exact on-disk layout of LAYOUT into OUT.

    Args:
        layout: isles2015_siss | isles2015_spes | isles2017 | isles2018 | isles2022.
        out: output folder (must be empty unless --overwrite).
        cases: number of training cases (with labels).
        test_cases: number of unlabelled test cases.
        seed: same seed ⇒ byte-identical files.
        difficulty: easy | standard | hard (contrast, lesion size, confounders).
        overwrite: allow writing into a non-empty folder.
        preview: also write a PNG montage per case (``<out>/preview/``).
    """
    from strokeseg.data.phantoms import synthesize_dataset  # lazy: 0.8 s at start-up (scipy, nibabel)

    result = synthesize_dataset(
        layout,
        out,
        cases=cases,
        test_cases=test_cases,
        seed=seed,
        difficulty=difficulty,
        overwrite=as_bool(overwrite, "overwrite"),
        preview=as_bool(preview, "preview"),
    )
    return str(result)


def datalist(
    layout: str,
    root: str,
    out: str | None = None,
    folds: int = 5,
    seed: int = 0,
    allow_incomplete: bool = False,
    grid_tolerance_mm: float = GRID_TOLERANCE_MM,
) -> str:
    """Discover the cases of a real (or synthetic) ISLES tree and write a MONAI datalist JSON.

    Args:
        layout: isles2015_siss | isles2015_spes | isles2017 | isles2018 | isles2022.
        root: root folder of the dataset as downloaded.
        out: JSON file to write (default: ``<root>/datalist.json``).
        folds: number of cross-validation folds (assigned per patient where derivable).
        seed: seed of the fold assignment.
        allow_incomplete: skip incomplete cases with a warning instead of failing.
        grid_tolerance_mm: largest difference between affine entries (mm) of one case's files.
    """
    from strokeseg.data.datalist import build_datalist, write_datalist  # lazy: 6.8 s at start-up (MONAI)

    incomplete = as_bool(allow_incomplete, "allow_incomplete")
    tolerance = grid_tolerance(grid_tolerance_mm)
    data = build_datalist(layout, root, folds, seed, allow_incomplete=incomplete, grid_tolerance_mm=tolerance)
    return str(write_datalist(data, out if out is not None else f"{root}/datalist.json"))


def demo(out: str = "demo_out", bundles: str | list[str] | None = None, quick: bool = True) -> str:
    """Synthesise small datasets for every layout, build datalists and previews, run the bundles' quick
    pipelines (train → infer → evaluate → export) and write ``<out>/README.md``.

    Args:
        out: output folder.
        bundles: comma-separated bundle names to run (default: every bundle in ``bundles/``).
        quick: use each bundle's ``configs/quick.json`` budget.
    """
    from strokeseg.tools.demo import run_demo  # lazy: 6.3 s at start-up (MONAI)

    return str(run_demo(out, bundles=bundles, quick=as_bool(quick, "quick")))


def evaluate(
    pred: str,
    labels: str,
    out: str = "eval_out",
    threshold: float = 0.5,
    connectivity: int | None = None,
    per_slice: bool = False,
    small_lesion_voxels: float | None = None,
    figures: bool = True,
    allow_missing: bool = False,
    grid_tolerance_mm: float = GRID_TOLERANCE_MM,
) -> str:
    """Compare a folder of predictions with a label folder or a datalist JSON and write a report.

    Args:
        pred: folder of predictions named by case (``<case>_seg.nii.gz``, ``<case>/<case>_seg.nii.gz`` or
            ``<case>.nii.gz``).
        labels: folder of reference masks named by case, or a datalist JSON with ``label`` entries.
        out: report folder (metrics.csv, summary.json, summary.md, figures/).
        threshold: binarisation threshold for soft predictions.
        connectivity: connected-component connectivity (default: full for the chosen dimensionality).
        per_slice: lesion-wise metrics on 2-D components per axial slice (as Chen et al. 2017 did).
        small_lesion_voxels: mean lesion size splitting small/large cases (default: the cohort mean).
        figures: write PNG figures.
        allow_missing: evaluate the cases present on both sides and warn about the others (default: error).
        grid_tolerance_mm: largest difference between the affine entries of a prediction and its reference (mm)
            that still counts as the same grid (e.g. 0.01 for files rounded by an export).
    """
    from strokeseg.metrics.report import evaluate_folders  # lazy: 6.3 s at start-up (MONAI)

    return str(
        evaluate_folders(
            pred,
            labels,
            out,
            threshold=threshold,
            connectivity=connectivity,
            per_slice=as_bool(per_slice, "per_slice"),
            small_lesion_voxels=small_lesion_voxels,
            figures=as_bool(figures, "figures"),
            allow_missing=as_bool(allow_missing, "allow_missing"),
            grid_tolerance_mm=grid_tolerance_mm,
        )
    )


def verify(bundle: str, workdir: str | None = None, train: bool = True, small_export: bool = False) -> str:
    """Run the offline bundle checks (``strokeseg.tools.verify``) on BUNDLE and print a pass/fail line per check.

    Args:
        bundle: bundle folder, e.g. ``bundles/stroke_dwi_edd_muscle``.
        workdir: where the smoke runs write (default: a temporary folder).
        train: include the one-epoch train / evaluate / infer smoke run (check 6).
        small_export: export the networks at the sizes of the bundle's ``smoke_overrides`` (faster).
    """
    from strokeseg.tools.verify import verify_bundle  # lazy: 6.5 s at start-up (MONAI)

    report = verify_bundle(
        bundle, workdir=workdir, train=as_bool(train, "train"), small_export=as_bool(small_export, "small_export")
    )
    if not report.ok:
        raise BundleError(report.summary())
    return report.summary()


def bench(
    bundles: str | list[str] | None = None,
    out: str = "bench.json",
    quick_config: bool = False,
    ckpt_dir: str | None = None,
    repeats: int | None = None,
    variants: str = "all",
    **overrides,
) -> str:
    """Measure the performance ratios of docs/performance.md and write ``bench.json`` + ``bench.md``.

    Args:
        bundles: comma-separated bundle names (default: all) or ``synth`` / ``evaluate`` for the
            shared components.
        out: JSON file to write.
        quick_config: measure every bundle as its ``configs/quick.json`` configures it (the CPU-sized networks
            of the quick configuration) instead of its default (paper-sized) configuration.
        ckpt_dir: trained checkpoints (a training run's ``ckpt_dir``) instead of fresh weights; one bundle only,
            and its configuration must match the one the checkpoints were trained with (``quick_config``).
        repeats: timed repeats of each measurement (default: 2 for inference, 3 for a training iteration).
        variants: ``all`` (every variant the bundle and the machine allow), ``default`` (only what the bundle
            runs by default on this machine, as ``make bench``), or a comma-separated list (``fp32,bf16``).
        overrides: config ids for every measured bundle's inference and training runs, e.g.
            ``--train_precision bf16`` (the bundles that lack an id ignore it).
    """
    from strokeseg.tools.bench import run_bench  # lazy: 5.5 s at start-up (MONAI)

    options: dict = {"quick_config": True} if as_bool(quick_config, "quick_config") else {}
    if repeats is not None:
        options["repeats"] = as_int(repeats, "repeats")
        if options["repeats"] < 1:
            raise KnobError(f"--repeats expects an integer >= 1, got {repeats!r}")
    if isinstance(variants, (list, tuple)):
        variants = ",".join(str(v) for v in variants)
    if str(variants) != "all":
        options["variants"] = str(variants)
    if ckpt_dir is not None:
        names = bundles.split(",") if isinstance(bundles, str) else list(bundles or [])
        if len(names) != 1:
            raise BundleError(f"--ckpt_dir holds one bundle's checkpoints: give exactly one bundle, not {names}.")
        options["ckpt_dir"] = ckpt_dir
    if overrides:
        options["overrides"] = dict(overrides)
    return str(run_bench(bundles=bundles, out=out, bundle_options=options or None))


def infer(bundle: str, input: str, out: str = "predictions", quick: bool = False, **overrides) -> str:  # noqa: A002
    """Segment INPUT (a NIfTI file, a folder of them, a datalist or an ISLES tree) with a trained BUNDLE.

    Runs the bundle's ``configs/inference.json`` through ``python -m monai.bundle run`` (the same code path),
    writing ``<out>/<case>/<case>_seg.nii.gz`` in each input's own space. Any further ``--id value`` is a
    config override (e.g. ``--skip_bad_cases true``, ``--save_prob true``).

    Args:
        bundle: bundle name (folder under ``bundles/``) or bundle folder.
        input: what to segment.
        out: output folder.
        quick: apply the bundle's ``configs/quick.json`` (a model trained with ``--quick``).
    """
    command = infer_command(bundle, input, out, quick=as_bool(quick, "quick"), overrides=overrides)
    code = run_streaming(command)
    if code != 0:
        sys.exit(code)  # the bundle already printed its one-line error
    return str(Path(out).resolve())


def train(
    bundle: str,
    data: str,
    quick: bool = False,
    ckpt_dir: str | None = None,
    output_dir: str | None = None,
    **overrides,
) -> str:
    """Train every stage of BUNDLE on DATA (an ISLES tree or a datalist), as ``python -m monai.bundle run``.

    Checkpoints go to ``ckpt_dir`` (default: the bundle's ``models/``, where inference looks), TensorBoard
    logs to ``<output_dir>/tb``. A rerun resumes from the last checkpoint. Further ``--id value`` options are
    config overrides (e.g. ``--epochs 5 --fold 1``).

    Args:
        bundle: bundle name (folder under ``bundles/``) or bundle folder.
        data: dataset root or datalist.
        quick: the bundle's ``configs/quick.json`` (a short CPU budget on synthetic data).
        ckpt_dir: checkpoint folder.
        output_dir: logs and TensorBoard folder.
    """
    commands = train_commands(
        bundle, data, quick=as_bool(quick, "quick"), ckpt_dir=ckpt_dir, output_dir=output_dir, overrides=overrides
    )
    for command in commands:
        code = run_streaming(command)
        if code != 0:
            sys.exit(code)
    return "training finished"


def profile(bundle: str, out: str = "profile.md", workdir: str | None = None, top: int = 15, **overrides) -> str:
    """Profile one end-to-end inference run of a bundle on a synthetic case (where P2's time goes).

    Args:
        bundle: a bundle folder (``bundles/stroke_dwi_edd_muscle``) or a bundle name.
        out: Markdown file for the stage and transform tables; the full ``cProfile`` listing goes beside it
            (``<out stem>.txt``).
        workdir: where the temporary scratch folder goes (default: the system temp dir); it is removed after.
        top: rows per listing.
        overrides: config ids, e.g. ``--inference_precision bf16``.
    """
    from strokeseg.tools.bench.profile import format_profile, profile_inference  # lazy: 6.6 s at start-up (MONAI)

    folder = resolve_bundle(bundle).root
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)  # before the run, so a bad --out fails at once
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        result = profile_inference(folder, tmp, overrides=overrides, top=as_int(top, "top"))
    target.write_text(format_profile(result))
    target.with_suffix(".txt").write_text(result["listing"])
    return format_profile(result)


COMMANDS = {
    "infer": infer,
    "train": train,
    "synth": synth,
    "datalist": datalist,
    "demo": demo,
    "evaluate": evaluate,
    "verify": verify,
    "bench": bench,
    "profile": profile,
}


def _help_flags(argv: list[str]) -> list[str]:
    """A ``--help`` / ``-h`` anywhere: fire's help of the named command, which then does not run.

    Fire reads a bare ``--help`` as help only where a command cannot run without more arguments, and calls the
    command before showing help when its arguments are complete; a command with defaults for all of them and
    ``**overrides`` (``strokeseg bench``) would take the flag as a config id and start measuring.
    """
    if not any(a in ("--help", "-h") for a in argv):
        return argv
    names = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    return [*argv[:names], "--", "--help"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``strokeseg`` console script; our own errors exit 2 with their message.

    Turns on PyTorch's huge pages first (:func:`strokeseg.runtime.hardware.enable_huge_pages`), before any tensor
    exists; the bundle runs it starts inherit the setting.
    """
    enable_huge_pages()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = _help_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        fire.Fire(COMMANDS, command=argv, name="strokeseg")
    except StrokesegError as err:
        print(f"strokeseg: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
