"""Typed bundle knobs: a knob means the same whether given as JSON or on a command line.

``python -m monai.bundle run --use_muscle false`` hands the config the *string* ``"false"`` (python-fire only
turns ``False``/``True`` into booleans), which is truthy. So ``false``, ``False``, ``0`` and JSON ``false`` agree
and anything else is refused with a one-line error, a boolean knob is read by :func:`as_bool`:

* our components read their boolean arguments themselves: a parameter annotated :data:`BoolKnob` accepts any
  spelling, so a config passes the knob as it is (``"channels_last": "@channels_last"``);
* a config expression or a MONAI component's argument wraps it once
  (``"_disabled_": "$not strokeseg.knobs.as_bool(@save_prob, 'save_prob')"``).

This module is in the core floor, because core components parse their own knobs.
"""

from __future__ import annotations

from strokeseg.errors import StrokesegError

__all__ = ["BoolKnob", "as_bool", "as_int", "as_float", "KnobError"]

#: a boolean knob as a config or a command line may hand it over: ``True``, ``"false"``, ``"False"``, ``0`` …;
#: a parameter with this annotation reads it with :func:`as_bool`
BoolKnob = bool | str | int

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


class KnobError(StrokesegError, ValueError):
    """A knob's value cannot be read as the type the knob has."""


def as_bool(value: object, name: str = "flag") -> bool:
    """``value`` as a boolean: ``True``/``False``, ``1``/``0``, or the words true/false, yes/no, on/off.

    Raises:
        KnobError: the value is not a recognisable boolean (e.g. ``"maybe"``, ``2``, ``0.5``).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise KnobError(f"--{name} expects true or false, got {value!r}")


def as_int(value: object, name: str = "knob") -> int:
    """``value`` as an integer (``4``, ``"4"``, ``4.0``); anything else is refused.

    Raises:
        KnobError: not an integer.
    """
    if isinstance(value, bool):
        raise KnobError(f"--{name} expects an integer, got {value!r}")
    try:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, (int, float)) and float(number).is_integer():
            return int(number)
    except ValueError:
        pass
    raise KnobError(f"--{name} expects an integer, got {value!r}")


def as_float(value: object, name: str = "knob") -> float:
    """``value`` as a float (``1e-3``, ``"1e-3"``, ``2``).

    Raises:
        KnobError: not a number.
    """
    if not isinstance(value, bool):
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    raise KnobError(f"--{name} expects a number, got {value!r}")
