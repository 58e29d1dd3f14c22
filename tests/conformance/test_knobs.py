"""Every boolean knob of every bundle means the same as JSON ``false``, ``--knob false``, ``--knob False`` and
``--knob 0`` (python-fire hands the config the strings ``"false"``/``"False"`` and the int ``0``), and a value
that is no boolean is refused with a one-line error.

A knob is a top-level id whose JSON value is ``true``/``false`` in any of the bundle's configs, plus the shared
boolean knobs (``amp``, ``resume``). Every item that refers to such a knob is one of two kinds, and each is
checked by what it does, not by how it is written:

* a plain ``"@knob"`` argument of one of our components, whose parameter is annotated
  :data:`strokeseg.knobs.BoolKnob` (the component reads it with ``as_bool``, unit-tested with each component);
* an expression, evaluated with every spelling (the components it refers to replaced by stand-ins): the results
  agree, and ``"maybe"`` raises :class:`strokeseg.knobs.KnobError`.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import pydoc
import re
import tempfile
from pathlib import Path
from unittest import mock

from monai.bundle.utils import ID_SEP_KEY

from strokeseg.knobs import KnobError, as_bool
from strokeseg.runtime.description import BundleDescription

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


def _stand_in_for_components(parser, item_id: str, knob: str) -> None:
    """Replace the components an expression refers to (networks, trainers, …) by stand-ins, so that only the knob
    decides what it evaluates to and no network is built."""
    for ref in set(re.findall(r"@([\w#:]+)", str(parser.get(item_id)))) - {knob}:
        config = parser.get(ref)
        if isinstance(config, dict) and "_target_" in config or isinstance(config, str) and config.startswith("$@"):
            parser[ref] = mock.MagicMock(name=ref)


def _evaluate(files: list[Path], bundle: BundleDescription, knob: str, value, item_ids: list[str]) -> list[str]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.read_meta(str(bundle.configs / "metadata.json"))
    parser["bundle_root"] = str(bundle.root)
    parser[knob] = value
    results = []
    for item_id in item_ids:
        _stand_in_for_components(parser, item_id, knob)
        try:
            # in a scratch folder: an expression may create a folder named after a stand-in (``os.makedirs(@ckpt_dir)``)
            with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
                outcome = parser.get_parsed_content(item_id, instantiate=False, eval_expr=True)
            results.append(repr(outcome) if isinstance(outcome, (bool, int, float, str, type(None))) else "object")
        except Exception as err:
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, KnobError):
                cause = cause.__cause__ or cause.__context__
            results.append("raised KnobError" if cause is not None else "raised")
    return results


def _target_parameter_annotation(parser, item_id: str) -> str | None:
    """The annotation of the parameter that the plain reference ``item_id`` (``parent::arg``) fills, if the parent
    is a component of ours."""
    parent, _, arg = item_id.replace("#", ID_SEP_KEY).rpartition(ID_SEP_KEY)
    config = parser.get(parent) if parent else None
    target = config.get("_target_") if isinstance(config, dict) else None
    if not isinstance(target, str) or not target.startswith("strokeseg."):
        return None
    component = pydoc.locate(target)
    function = component.__init__ if inspect.isclass(component) else component
    parameter = inspect.signature(function).parameters.get(arg)
    return None if parameter is None else str(parameter.annotation)


def _calls_handing_over(expression: str, knob: str) -> list[tuple[str, str]] | None:
    """``(function, parameter)`` for each call in a ``$`` expression that takes ``@knob`` as a whole argument,
    or ``None`` when the knob is also used in another way (then the expression is evaluated instead)."""
    code = re.sub(r"@([\w#:]+)", lambda m: "_ref_" + re.sub(r"\W", "_", m.group(1)), expression[1:])
    name = "_ref_" + knob
    tree = ast.parse(code, mode="eval")
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        callee = ast.unparse(node.func)
        target = pydoc.locate(callee) if callee.startswith("strokeseg.") else None
        if target is None or target is as_bool:  # as_bool reads the knob: the expression is evaluated instead
            continue
        parameters = list(inspect.signature(target).parameters)
        for index, arg in enumerate(node.args):
            if isinstance(arg, ast.Name) and arg.id == name and index < len(parameters):
                found.append((callee, parameters[index]))
        found += [(callee, kw.arg) for kw in node.keywords if isinstance(kw.value, ast.Name) and kw.value.id == name]
    uses = sum(isinstance(n, ast.Name) and n.id == name for n in ast.walk(tree))
    return found if found and len(found) == uses else None


def _hands_over(parser, item_id: str, knob: str) -> list[tuple[str, str | None]] | None:
    """Where the item hands the knob over unconverted, with each receiving parameter's annotation."""
    config = parser.get(item_id)
    if config == f"@{knob}":
        return [(item_id, _target_parameter_annotation(parser, item_id))]
    if isinstance(config, str) and config.startswith("$"):
        calls = _calls_handing_over(config, knob)
        if calls is not None:
            return [
                (f"{callee}({param})", str(inspect.signature(pydoc.locate(callee)).parameters[param].annotation))
                for callee, param in calls
            ]
    return None


def test_every_plain_reference_to_a_boolean_knob_fills_a_parameter_that_reads_it(bundle):
    """A bare ``"@knob"`` reaches a component unconverted, so the component's parameter must be a ``BoolKnob``."""
    from monai.bundle import ConfigParser

    problems, checked = [], 0
    for files in _config_sets(bundle):
        parser = ConfigParser()
        parser.read_config([str(f) for f in files])
        for knob in _boolean_knobs(files):
            if knob not in parser:
                continue
            for item_id in _referring_items(parser, knob):
                for receiver, annotation in _hands_over(parser, item_id, knob) or []:
                    checked += 1
                    if annotation != "BoolKnob":
                        problems.append(f"{files[-1].name}: {item_id} hands @{knob} to {receiver}: {annotation}")
    assert not problems, "\n".join(dict.fromkeys(problems))
    if bundle.name.startswith("stroke_"):
        assert checked, "no plain reference found: the check proved nothing"


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
            items = [i for i in _referring_items(parser, knob) if _hands_over(parser, i, knob) is None]
            # every expression must evaluate (components replaced by stand-ins) for the JSON value
            first = _evaluate(files, bundle, knob, False, items)
            problems += [f"{label}: {i} fails to evaluate" for i, o in zip(items, first, strict=True) if o == "raised"]
            plain = [i for i, o in zip(items, first, strict=True) if o != "raised"]
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
