"""The project's set-up files agree with each other: README commands, Makefile, CI entry, Dockerfile, shared configs.

The Docker image cannot be built on these machines (no engine), so what can be checked is that it installs
exactly what ``make install`` installs and runs the demo by default.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (ROOT / "bundles").iterdir() if (p / "configs" / "train.json").is_file())


def test_readme_starts_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash)?\n(.*?)```", text, re.S)
    assert first_block, "README has no command block"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert text.index(first_block.group(0)) < text.index("\n## "), "the set-up commands must come first"


def test_makefile_targets_create_the_venv_themselves():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "bench"):
        match = re.search(rf"^{target}:(.*)$", makefile, re.M)
        assert match, f"no '{target}' target"
        assert "$(STAMP)" in match.group(1), f"'{target}' does not depend on the venv install stamp"
    assert re.search(r"-m venv \$\(VENV\)", makefile)
    assert 'pip install -e ".[test]"' in makefile


def test_ci_runs_make_test():
    script = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", script, re.M)
    assert "set -euo pipefail" in script


def test_dockerfile_installs_like_the_makefile_and_runs_the_demo():
    docker = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", docker, re.M), "CPU base by default"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", docker, re.M), "base selectable by build arg"
    assert re.search(r"^RUN make install$", docker, re.M), "must install through the Makefile"
    for needed in ("pyproject.toml", "src", "bundles", "configs", "Makefile"):
        assert re.search(rf"^COPY .*\b{re.escape(needed)}\b", docker, re.M), f"{needed} not copied into the image"
    assert re.search(r'^CMD \["demo"', docker, re.M)


def test_pyproject_pins_the_product_dependencies():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = meta["project"]["dependencies"]
    assert "torch==2.13.0" in deps
    names = {re.split(r"[<>=!~ ]", d)[0].lower() for d in deps}
    assert {"monai", "nibabel", "itk", "pytorch-ignite", "tensorboard", "fire", "nilearn"} <= names
    assert any(d.startswith("monai>=1.6") for d in deps)
    assert meta["project"]["scripts"]["strokeseg"] == "strokeseg.tools.cli:main"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_bundles_carry_the_shared_config_fragments_unchanged(bundle):
    shared = ROOT / "configs"
    assert (bundle / "configs" / "logging.conf").read_text() == (shared / "logging.conf").read_text()
    ours = json.loads((bundle / "configs" / "multi_gpu_train.json").read_text())
    assert ours == json.loads((shared / "multi_gpu_train.json").read_text())


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_bundles_define_the_shared_knobs(bundle):
    train = json.loads((bundle / "configs" / "train.json").read_text())
    knobs = json.loads((ROOT / "configs" / "knobs.json").read_text())["knobs"]
    missing = [k for k in knobs if k not in train]
    assert not missing, f"{bundle.name}/configs/train.json lacks shared top-level ids {missing}"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_bundles_name_their_checkpoint_objects_once(bundle):
    """The shared multi-GPU overlay checkpoints ``@checkpoint_objects``, so every train.json defines it."""
    train = json.loads((bundle / "configs" / "train.json").read_text())
    assert isinstance(train.get("checkpoint_objects"), dict), f"{bundle.name}: no top-level checkpoint_objects"
    assert any("@checkpoint_objects" in line for line in train["initialize"]), "initialize ignores checkpoint_objects"
