"""Each model card's "Code map" lists exactly the strokeseg modules its bundle's configs name.

A module is *named* when a string anywhere in ``bundles/<name>/configs/*.json`` (``_target_`` values, ``$import``
lines, ``$`` expressions, the metadata's ``bench_hook``) holds ``strokeseg.<...>``: the longest prefix of that
dotted name that is a module or package of ``src/strokeseg`` is the module. A package imported only so that its
submodules resolve (``$import strokeseg.metrics``) is left out when one of its submodules is listed.

After a module moves, regenerate the sections (the words beside a module are kept from any card that already
describes it, the card's own first; a module described nowhere gets its docstring's first sentence)::

    .venv/bin/python -m tests.bundles.test_code_map --write
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import strokeseg

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "bundles"
SRC = Path(strokeseg.__file__).parent
HEADING = "## Code map"
INSERT_BEFORE = "## References"
INTRO = (
    "The strokeseg modules this bundle's configs name (`_target_`, `$import` lines, `$` expressions, the metadata's\n"
    "`bench_hook`), checked by `tests/bundles/test_code_map.py`; after a module moves, regenerate this list with\n"
    "`python -m tests.bundles.test_code_map --write`.\n"
)
_DOTTED = re.compile(r"\bstrokeseg(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_FROM_IMPORT = re.compile(r"\bfrom\s+(strokeseg(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s+import\s+([A-Za-z_][\w\s,]*)")
_ENTRY = re.compile(r"^- `(strokeseg(?:\.\w+)*)`(?: — (.*))?$")


def bundle_names() -> list[str]:
    return sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir())


def module_file(module: str) -> Path | None:
    """Source file of ``strokeseg.<...>`` (a package's ``__init__.py``), or ``None`` when there is none."""
    rel = Path(*module.split(".")[1:])
    for path in ((SRC / rel).with_suffix(".py"), SRC / rel / "__init__.py"):
        if path.is_file():
            return path
    return None


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _named_modules(text: str) -> set[str]:
    """Modules named in one config string: every dotted ``strokeseg.<...>`` cut to its longest module prefix."""
    dotted = set(_DOTTED.findall(text))
    for package, names in _FROM_IMPORT.findall(text):
        dotted |= {f"{package}.{name.strip()}" for name in names.split(",") if name.strip()}
    found = set()
    for name in dotted:
        parts = name.split(".")
        while len(parts) > 1 and module_file(".".join(parts)) is None:
            parts.pop()
        if len(parts) > 1:
            found.add(".".join(parts))
    return found


def config_modules(bundle: str) -> list[str]:
    """Sorted strokeseg modules named in ``bundles/<bundle>/configs/*.json``."""
    named: set[str] = set()
    for config in sorted((BUNDLES / bundle / "configs").glob("*.json")):
        for text in _strings(json.loads(config.read_text(encoding="utf-8"))):
            named |= _named_modules(text)
    packages = {m for m in named if module_file(m) is not None and module_file(m).name == "__init__.py"}
    only_imported = {p for p in packages if any(m.startswith(f"{p}.") for m in named)}
    return sorted(named - only_imported)


def _card(bundle: str) -> Path:
    return BUNDLES / bundle / "docs" / "README.md"


def _section_bounds(lines: list[str]) -> tuple[int, int] | None:
    """``(first, end)`` line indices of the Code map section (heading included), or ``None``."""
    if HEADING not in lines:
        return None
    first = lines.index(HEADING)
    end = next((i for i in range(first + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return first, end


def card_entries(bundle: str) -> dict[str, str]:
    """``{module: words}`` of the card's Code map section, in the card's order (empty without a section)."""
    lines = _card(bundle).read_text(encoding="utf-8").splitlines()
    bounds = _section_bounds(lines)
    if bounds is None:
        return {}
    entries = {}
    for line in lines[bounds[0] + 1 : bounds[1]]:
        match = _ENTRY.match(line)
        if match:
            entries[match.group(1)] = (match.group(2) or "").strip()
    return entries


def docstring_summary(module: str) -> str:
    """First sentence of a module's docstring, without parenthesised source notes and the final full stop."""
    path = module_file(module)
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) if path else None
    first = " ".join((doc or "").split("\n\n")[0].split())
    first = re.split(r"(?<=[.!?])\s", first)[0].rstrip(".")
    return re.sub(r"\s*\([^()]*\bseed\b[^()]*\)", "", first)


def render_section(modules: list[str], words: Mapping[str, str]) -> list[str]:
    """The Code map section's lines (heading, intro, one ``- `module` — words`` line per module, blank line)."""
    lines = [HEADING, "", *INTRO.splitlines(), ""]
    lines += [f"- `{m}` — {words.get(m) or docstring_summary(m)}" for m in modules]
    return [*lines, ""]


def write_code_maps(words: Mapping[str, str] | None = None) -> list[Path]:
    """Rewrite every card's Code map from the configs (inserted before ``## References`` when missing).

    The words beside a module are, in this order: ``words``, the card's own, another card's, the module
    docstring's first sentence.

    Args:
        words: words per module that win over those already in the cards.

    Returns:
        The cards whose text changed.
    """
    described = {bundle: {m: w for m, w in card_entries(bundle).items() if w} for bundle in bundle_names()}
    anywhere = {m: w for entries in described.values() for m, w in entries.items()}
    changed = []
    for bundle in bundle_names():
        card = _card(bundle)
        text = card.read_text(encoding="utf-8")
        lines = text.splitlines()
        section = render_section(config_modules(bundle), {**anywhere, **described[bundle], **(words or {})})
        bounds = _section_bounds(lines)
        if bounds is not None:
            lines[bounds[0] : bounds[1]] = section
        elif INSERT_BEFORE in lines:
            at = lines.index(INSERT_BEFORE)
            lines[at:at] = section
        else:
            lines += ["", *section]
        new = "\n".join(lines).rstrip("\n") + "\n"
        if new != text:
            card.write_text(new, encoding="utf-8")
            changed.append(card)
    return changed


@pytest.mark.parametrize("bundle", bundle_names())
def test_card_code_map_lists_the_modules_the_configs_use(bundle):
    listed = list(card_entries(bundle))
    used = config_modules(bundle)
    assert listed, (
        f"bundles/{bundle}/docs/README.md has no '{HEADING}' section; write it with "
        "`python -m tests.bundles.test_code_map --write`"
    )
    assert listed == used, (
        f"bundles/{bundle}/docs/README.md '{HEADING}' differs from the configs: "
        f"missing {sorted(set(used) - set(listed))}, stale {sorted(set(listed) - set(used))}"
        f"{', order' if set(listed) == set(used) else ''}; regenerate with "
        "`python -m tests.bundles.test_code_map --write`"
    )
    assert all(card_entries(bundle).values()), f"bundles/{bundle}/docs/README.md: a Code map line has no words"


def test_config_modules_resolve_names_to_modules(tmp_path, monkeypatch):
    configs = tmp_path / "demo" / "configs"
    configs.mkdir(parents=True)
    config = {
        "imports": ["$import strokeseg", "$import strokeseg.metrics", "$from strokeseg.transforms import ctp"],
        "net": {"_target_": "strokeseg.networks.uresnet.AsymmetricResidualUNet"},
        "flag": "$strokeseg.knobs.as_bool(@x, 'x')",
        "handler": {"_target_": "strokeseg.metrics.handlers.CaseMetricsSaver"},
        "source": "strokeseg synthetic phantoms (strokeseg synth isles2018)",
    }
    (configs / "train.json").write_text(json.dumps(config))
    (configs / "metadata.json").write_text(json.dumps({"strokeseg": {"bench_hook": "strokeseg.runtime.hardware"}}))
    monkeypatch.setitem(globals(), "BUNDLES", tmp_path)
    # the bare packages (strokeseg, strokeseg.metrics, strokeseg.transforms) only make their submodules resolve
    assert config_modules("demo") == [
        "strokeseg.knobs",
        "strokeseg.metrics.handlers",
        "strokeseg.networks.uresnet",
        "strokeseg.runtime.hardware",
        "strokeseg.transforms.ctp",
    ]


def test_write_inserts_the_section_before_the_references_keeps_words_and_is_idempotent(tmp_path, monkeypatch):
    bundle = tmp_path / "demo"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "docs").mkdir()
    config = {"a": {"_target_": "strokeseg.transforms.io.SaveCasePredictiond"}, "b": "$strokeseg.knobs.x"}
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    card = bundle / "docs" / "README.md"
    card.write_text("# Demo\n\n## Export\n\ntext\n\n## References\n\n- a paper\n")
    monkeypatch.setitem(globals(), "BUNDLES", tmp_path)
    assert write_code_maps({"strokeseg.transforms.io": "writing predictions"}) == [card]
    text = card.read_text()
    assert text.index("## Export") < text.index(HEADING) < text.index("## References")
    assert card_entries("demo") == {
        "strokeseg.knobs": docstring_summary("strokeseg.knobs"),
        "strokeseg.transforms.io": "writing predictions",
    }
    assert write_code_maps() == [] and card.read_text() == text
    assert main([]) == 0
    (bundle / "configs" / "inference.json").write_text(json.dumps({"a": "$strokeseg.knobs.x"}))
    assert main([]) == 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check or rewrite the Code map section of every model card.")
    parser.add_argument("--write", action="store_true", help="rewrite the sections from the configs")
    args = parser.parse_args(argv)
    if args.write:
        for card in write_code_maps():
            print(f"rewrote {card.relative_to(ROOT)}")
        return 0
    stale = [b for b in bundle_names() if list(card_entries(b)) != config_modules(b)]
    for bundle in stale:
        print(f"bundles/{bundle}/docs/README.md: the Code map differs from the configs")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
