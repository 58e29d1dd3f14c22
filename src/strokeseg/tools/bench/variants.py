"""Inference variants: precision and memory format, set through the knobs a bundle's ``inference.json`` has.

``fp32`` always; ``fp32_channels_last`` where the bundle has a ``channels_last`` knob; ``bf16`` (and
``bf16_channels_last``) where it has an ``inference_precision`` (or ``bf16``) knob *and* the CPU has native bf16.
The variant the bundle runs with its default knobs on this machine is its *default* variant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strokeseg.errors import BundleError
from strokeseg.knobs import as_bool

__all__ = [
    "VARIANTS",
    "variant_knobs",
    "variant_overrides",
    "default_variant",
    "choose_variants",
    "measured_variant",
]

#: inference variants: name → (channels_last, bf16 autocast)
VARIANTS = {
    "fp32": (False, False),
    "fp32_channels_last": (True, False),
    "bf16": (False, True),
    "bf16_channels_last": (True, True),
}


def variant_knobs(config: Mapping[str, Any]) -> dict[str, str | None]:
    """Which top-level ids of ``inference.json`` set precision and memory format.

    Returns:
        ``{"precision": "inference_precision" | "bf16" | None, "channels_last": "channels_last" | None}``.
    """
    precision = "inference_precision" if "inference_precision" in config else "bf16" if "bf16" in config else None
    return {"precision": precision, "channels_last": "channels_last" if "channels_last" in config else None}


def variant_overrides(knobs: Mapping[str, str | None], variant: str) -> dict[str, Any]:
    """Config overrides that make inference run ``variant`` (only the knobs the bundle has).

    Raises:
        BundleError: the variant needs a knob the bundle lacks.
    """
    channels_last, bf16 = VARIANTS[variant]
    overrides: dict[str, Any] = {}
    if knobs["precision"] == "inference_precision":
        overrides["inference_precision"] = "bf16" if bf16 else "fp32"
    elif knobs["precision"] == "bf16":
        overrides["bf16"] = bf16
    elif bf16:
        raise BundleError(f"variant {variant} needs an inference_precision (or bf16) knob; the bundle has none.")
    if knobs["channels_last"]:
        overrides[knobs["channels_last"]] = channels_last
    elif channels_last:
        raise BundleError(f"variant {variant} needs a channels_last knob; the bundle has none.")
    return overrides


def _truthy(value: Any) -> bool:
    return bool(as_bool(value, "knob")) if isinstance(value, (str, int, bool)) else bool(value)


def default_variant(parser, knobs: Mapping[str, str | None], bf16_supported: bool) -> str:
    """The variant the bundle runs with its default knobs on this machine.

    ``inference_precision`` ``auto`` means bf16 where the CPU has native bf16, else fp32.

    Args:
        parser: a ``ConfigParser`` of ``inference.json`` without variant overrides.
        knobs: from :func:`variant_knobs`.
        bf16_supported: the machine has native bf16.
    """
    bf16 = False
    if knobs["precision"] == "inference_precision":
        raw = str(parser.config["inference_precision"]).strip().lower()
        bf16 = raw == "bf16" or (raw == "auto" and bf16_supported)
    elif knobs["precision"] == "bf16":
        bf16 = _truthy(parser.get_parsed_content("bf16"))
    channels_last = bool(knobs["channels_last"]) and _truthy(parser.get_parsed_content(knobs["channels_last"]))
    return ("bf16" if bf16 else "fp32") + ("_channels_last" if channels_last else "")


def choose_variants(
    knobs: Mapping[str, str | None], bf16_supported: bool, bf16_reason: str, quick: bool, default: str = "fp32"
) -> tuple[list[str], dict[str, str]]:
    """Variants to measure and, for the others, why not.

    Quick mode measures only the bundle's ``default`` variant (``fp32`` if that cannot be measured here).
    """
    chosen, skipped = [], {}
    for name, (channels_last, bf16) in VARIANTS.items():
        if channels_last and not knobs["channels_last"]:
            skipped[name] = "the bundle has no channels_last knob"
        elif bf16 and not knobs["precision"]:
            skipped[name] = "the bundle has no inference_precision (or bf16) knob"
        elif bf16 and not bf16_supported:
            skipped[name] = bf16_reason or "no native bf16"
        else:
            chosen.append(name)
    if quick:
        keep = default if default in chosen else "fp32"
        skipped.update({name: "quick mode (the default variant only)" for name in chosen if name != keep})
        chosen = [keep]
    return chosen, skipped


def measured_variant(record: Mapping[str, Any]) -> str | None:
    """The bundle record's default variant where it was measured, else its first measured one (``None``: none).

    Args:
        record: a bundle's record of ``bench.json`` (``default_variant`` and the measured ``variants``).
    """
    default = record.get("default_variant")
    return default if default in record["variants"] else next(iter(record["variants"]), None)
