"""``strokeseg.metrics`` and ``strokeseg.postprocessing`` do not import each other (issue 7): fitting code that
needs both lives in ``strokeseg.fitting``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import strokeseg

PACKAGE_ROOT = Path(strokeseg.__file__).parent


def _modules(package: str) -> list[str]:
    folder = PACKAGE_ROOT / package
    return [f"strokeseg.{package}"] + [f"strokeseg.{package}.{p.stem}" for p in sorted(folder.glob("[!_]*.py"))]


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("package", "other"), [("metrics", "postprocessing"), ("postprocessing", "metrics")])
def test_no_import_statement_names_the_other_package(package: str, other: str):
    offenders = {
        path.name: sorted(n for n in _imported_names(path) if n.startswith(f"strokeseg.{other}"))
        for path in sorted((PACKAGE_ROOT / package).glob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize(("package", "other"), [("metrics", "postprocessing"), ("postprocessing", "metrics")])
def test_importing_every_module_loads_nothing_of_the_other_package(package: str, other: str):
    code = (
        "import importlib, json, sys\n"
        f"for name in {_modules(package)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith('strokeseg.{other}'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_fitting_package_file_imports_nothing():
    assert _imported_names(PACKAGE_ROOT / "fitting" / "__init__.py") == set()
