"""Every boolean knob of every bundle means the same as JSON ``false``, ``--knob false``, ``--knob False`` and
``--knob 0`` (python-fire hands the config the strings ``"false"``/``"False"`` and the int ``0``), and a value
that is no boolean is refused with a one-line error.

A knob is a top-level id whose JSON value is ``true``/``false`` in any of the bundle's configs, plus the shared
boolean knobs (``amp``, ``resume``). Every reference to such a knob must go through
``strokeseg.runtime.knobs.as_bool`` (checked on the config text, so no use is missed), and each referring item
that evaluates on its own is evaluated with every spelling: the results agree, and ``"maybe"`` raises
:class:`strokeseg.runtime.knobs.KnobError`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from strokeseg.runtime.description import BundleDescription
from strokeseg.runtime.knobs import KnobError

SHARED_BOOLEAN_KNOBS = ("amp", "resume")
FALSE_SPELLINGS = (False, "false", "False", 0)
TRUE_SPELLINGS = (True, "true", "True", 1)


def _config_sets(bundle: BundleDescription) -> list[list[Path]]:
    """Standalone configs and each overlay on its base, as the bundle's users combine them."""
    configs = bundle.configs
    sets = [[configs / "train.json"], [configs / "inference.json"]]
    for path in sorted(configs.glob("*.json")):
        if path.name in ("train.json", "inference.json", "metadata.json", "multi_gpu_train.json"):
            continue
        base = configs / ("inference.json" if path.name.startswith("inference") else "train.json")
        sets.append([base, path])
    return sets


def _boolean_knobs(files: list[Path]) -> list[str]:
    knobs: dict[str, None] = {}
    merged: dict = {}
    for path in files:
        merged.update(json.loads(path.read_text()))
    for key, value in merged.items():
        if isinstance(value, bool) or key in SHARED_BOOLEAN_KNOBS:
            knobs[key] = None
    return list(knobs)


def _referring_items(parser, knob: str) -> list[str]:
    pattern = re.compile(rf"@{re.escape(knob)}(?![\w#])")
    parser.parse(reset=True)
    return [
        item_id
        for item_id, item in parser.ref_resolver.items.items()
        if isinstance(item.get_config(), str) and pattern.search(item.get_config())
    ]


def _evaluate(files: list[Path], bundle: BundleDescription, knob: str, value, item_ids: list[str]) -> list[str]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.read_meta(str(bundle.configs / "metadata.json"))
    parser["bundle_root"] = str(bundle.root)
    parser[knob] = value
    results = []
    for item_id in item_ids:
        try:
            outcome = parser.get_parsed_content(item_id, instantiate=False, eval_expr=True)
            results.append(repr(outcome) if isinstance(outcome, (bool, int, float, str, type(None))) else "object")
        except Exception as err:
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, KnobError):
                cause = cause.__cause__ or cause.__context__
            results.append("raised KnobError" if cause is not None else "raised")
    return results


def test_every_use_of_a_boolean_knob_goes_through_as_bool(bundle):
    problems, checked = [], 0
    for files in _config_sets(bundle):
        for knob in _boolean_knobs(files):
            # errors.install reads its argument with as_bool itself
            raw = re.compile(rf"(?<!as_bool\()(?<!errors\.install\()@{re.escape(knob)}(?![\w#])")
            for path in files:
                for number, line in enumerate(path.read_text().splitlines(), start=1):
                    checked += 1
                    if raw.search(line):
                        problems.append(f"{path.name}:{number}: @{knob} used without as_bool: {line.strip()}")
    assert checked
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_boolean_knobs_agree_in_every_spelling_and_refuse_nonsense(bundle):
    from monai.bundle import ConfigParser

    problems = []
    checked = 0
    for files in _config_sets(bundle):
        label = " + ".join(f.name for f in files)
        for knob in _boolean_knobs(files):
            parser = ConfigParser()
            parser.read_config([str(f) for f in files])
            if knob not in parser:
                continue
            items = _referring_items(parser, knob)
            # items that evaluate on their own (no instantiated component needed) for the JSON value
            plain = [
                i for i, o in zip(items, _evaluate(files, bundle, knob, False, items), strict=True) if o != "raised"
            ]
            if not plain:
                continue
            checked += 1
            for spellings in (FALSE_SPELLINGS, TRUE_SPELLINGS):
                outcomes = {repr(v): _evaluate(files, bundle, knob, v, plain) for v in spellings}
                reference = outcomes[repr(spellings[0])]
                for spelling, outcome in outcomes.items():
                    for item, got, want in zip(plain, outcome, reference, strict=True):
                        if got != want:
                            problems.append(f"{label}: --{knob} {spelling} gives {item} = {got}, JSON gives {want}")
            refused = _evaluate(files, bundle, knob, "maybe", plain)
            if "raised KnobError" not in refused:
                problems.append(f"{label}: --{knob} maybe is not refused (items {plain} gave {refused})")
    assert checked, "no boolean knob could be evaluated: the test would prove nothing"
    assert not problems, "\n".join(dict.fromkeys(problems))
