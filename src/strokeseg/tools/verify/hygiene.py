"""Check 7: JSON indent 4, every reference resolves, no oversized file, no machine paths."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path

from strokeseg.errors import BundleError
from strokeseg.tools.verify.common import (
    MACHINE_PATH,
    MAX_FILE_BYTES,
    RUNTIME_FOLDERS,
    _Context,
    _rel,
    _shorten,
    _Skipped,
)

# ---------------------------------------------------------------------------------------------- check 7


def _indent_problem(path: Path, label: str) -> str | None:
    """Why ``path`` is not JSON pretty-printed with indent 4 (``None`` when it is)."""
    try:
        text = path.read_text(encoding="utf-8")
        content = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{label} is not readable JSON: {err}"
    body = text[:-1] if text.endswith("\n") else text
    candidates = [json.dumps(content, indent=4, ensure_ascii=ascii_only) for ascii_only in (True, False)]
    if body in candidates:
        return None
    expected = candidates[1].splitlines()
    for number, (got, want) in enumerate(zip(body.splitlines(), expected, strict=False), start=1):
        if got != want:
            return f"{label} is not pretty-printed with indent 4: line {number} is {got!r}, expected {want!r}"
    diff = difflib.unified_diff(expected, body.splitlines(), lineterm="", n=0)
    return f"{label} is not pretty-printed with indent 4 ({_shorten(' | '.join(list(diff)[2:5]), 200)})"


def _dangling_references(config_files: Sequence[Path], meta: Path | None) -> list[str]:
    """``@id`` references (and ``%`` macros) in the merged ``config_files`` that name no config id."""
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver
    from monai.bundle.utils import ID_SEP_KEY

    parser = ConfigParser()
    parser.read_config([str(path) for path in config_files])
    if meta is not None and meta.is_file():
        parser.read_meta(str(meta))
    try:
        parser.parse(reset=True)  # resolves macros and relative ids, registers every item
    except Exception as err:
        return [f"does not parse: {type(err).__name__}: {_shorten(err, 300)}"]
    items = parser.ref_resolver.items
    problems = []
    for item_id, item in items.items():
        value = item.get_config()
        if not isinstance(value, str):
            continue
        for ref in ReferenceResolver.match_refs_pattern(value):
            if ref not in items:
                where, what = item_id.replace(ID_SEP_KEY, "#"), ref.replace(ID_SEP_KEY, "#")
                problems.append(f"'{where}' refers to @{what}, which is not defined")
    return problems


def _overlay_base(configs: Path, overlay: Path) -> Path:
    """The standalone config an overlay applies to: ``inference.json`` for ``inference_*``, else ``train.json``."""
    return configs / ("inference.json" if overlay.name.startswith("inference") else "train.json")


def _reference_combinations(configs: Path) -> list[list[Path]]:
    """Every standalone config alone and every overlay on its base (multi-GPU is check 8)."""
    standalone = [configs / name for name in ("train.json", "inference.json") if (configs / name).is_file()]
    overlays = [
        path
        for path in sorted(configs.glob("*.json"))
        if path not in standalone and path.name not in ("metadata.json", "multi_gpu_train.json")
    ]
    return [[path] for path in standalone] + [[_overlay_base(configs, path), path] for path in overlays]


def _text_files(bundle: Path) -> list[Path]:
    return [
        path
        for path in sorted(bundle.rglob("*"))
        if path.is_file() and not RUNTIME_FOLDERS.intersection(path.relative_to(bundle).parts)
    ]


def _machine_paths(path: Path, label: str) -> list[str]:
    """``label:line: snippet`` for each absolute machine path in a text file (binary files are skipped)."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return []
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = MACHINE_PATH.search(line)
        if match:
            snippet = line[max(0, match.start() - 20) : match.end() + 30].strip()
            found.append(f"{label}:{number}: absolute path {snippet!r}")
    return found


def _check_hygiene(ctx: _Context) -> str:
    if not ctx.configs.is_dir():
        raise _Skipped("skipped because the bundle has no configs/ folder")
    problems: list[str] = []
    json_files = sorted(ctx.configs.rglob("*.json"))
    for path in json_files:
        problem = _indent_problem(path, _rel(ctx, path))
        if problem:
            problems.append(problem)

    combinations = _reference_combinations(ctx.configs)
    for files in combinations:
        label = " + ".join(_rel(ctx, path) for path in files)
        if not all(path.is_file() for path in files):
            problems.append(f"{label}: {', '.join(_rel(ctx, p) for p in files if not p.is_file())} missing")
            continue
        try:
            dangling = _dangling_references(files, ctx.meta)
        except Exception as err:
            dangling = [f"cannot be read: {type(err).__name__}: {_shorten(err, 300)}"]
        problems += [f"{label}: {problem}" for problem in dangling]

    files = _text_files(ctx.bundle)
    for path in files:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            problems.append(f"{_rel(ctx, path)} is {size / 1e6:.1f} MB (limit {MAX_FILE_BYTES / 1e6:.0f} MB)")
        else:
            problems += _machine_paths(path, _rel(ctx, path))
    if problems:
        shown = problems[:25] + ([f"… and {len(problems) - 25} more"] if len(problems) > 25 else [])
        raise BundleError("\n".join(shown))
    return (
        f"{len(json_files)} JSON file(s) indented by 4; references resolve in {len(combinations)} config "
        f"combination(s); {len(files)} file(s) <= {MAX_FILE_BYTES / 1e6:.0f} MB without machine paths"
    )
