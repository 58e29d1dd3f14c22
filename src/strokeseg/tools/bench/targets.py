"""The performance ratios of ``bench.json`` checked against their targets (``docs/performance.md``).

Each ratio becomes one row of the ratio table (:func:`judge`): its value, its target, whether it is met and
whether it belongs to the variant a bundle runs by default. :func:`collect_ratios` gathers the rows of a whole run.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Target",
    "TARGETS",
    "judge",
    "error_row",
    "anchor_target",
    "P3_DICE_MIN",
    "p3_verdict",
    "p3_row",
    "collect_ratios",
]


class Target:
    """One performance target: ``value <op> threshold`` with ``op`` one of ``<=``, ``>=``.

    Args:
        ratio_id: ``P1`` … ``P5``.
        description: what the ratio is.
        op: ``"<="`` or ``">="``.
        threshold: the target value.
        informative: the target is quoted for context (another configuration); ``met`` is still computed.

    Raises:
        ValueError: ``op`` is neither ``<=`` nor ``>=``.
    """

    def __init__(self, ratio_id: str, description: str, op: str, threshold: float, informative: bool = False) -> None:
        if op not in ("<=", ">="):
            raise ValueError(f"op must be '<=' or '>=', got {op!r}.")
        self.ratio_id, self.description, self.op, self.threshold = ratio_id, description, op, float(threshold)
        self.informative = informative

    def met(self, value: float | None) -> bool | None:
        """Whether ``value`` meets the target (``None`` when nothing was measured)."""
        if value is None:
            return None
        return bool(value <= self.threshold) if self.op == "<=" else bool(value >= self.threshold)


# docs/performance.md, "The performance aims"
TARGETS = {
    "P1_fp32": Target("P1", "effective inference GFLOP/s ÷ fp32 conv peak (fp32)", ">=", 0.6),
    "P1_bf16": Target("P1", "effective inference GFLOP/s ÷ fp32 conv peak (bf16 option)", ">=", 1.2),
    "P2": Target("P2", "end-to-end inference ÷ bare network forward", "<=", 1.25),
    "P3": Target("P3", "uResNet paper-faithful patch inference ÷ fast sliding-window inference", ">=", 50.0),
    "P4": Target("P4", "training iteration from the data pipeline ÷ on a pre-built batch", "<=", 1.15),
    "P5": Target("P5", "peak inference memory, GiB (target set for 3-D inference of 230×230×154)", "<=", 4.0),
}


def judge(
    key: str | Target,
    value: float | None,
    section: str,
    variant: str | None = None,
    default: bool | None = True,
    informative: bool | None = None,
) -> dict[str, Any]:
    """One row of the ratio table: the value, its target, whether it is met and whether it is the default.

    Args:
        key: a key of :data:`TARGETS`, or a :class:`Target` (a bundle's own anchor).
        value: the measured value (``None`` if not measured).
        section: bundle or component the ratio belongs to.
        variant: inference variant (``fp32``, ``fp32_channels_last``…), if any.
        default: whether the variant is what the bundle runs by default on this machine (rows without a
            variant describe the default configuration).
        informative: override the target's ``informative`` flag.
    """
    target = key if isinstance(key, Target) else TARGETS[key]
    return {
        "id": target.ratio_id,
        "section": section,
        "variant": variant,
        "default": default,
        "description": target.description,
        "value": value,
        "target": f"{target.op} {target.threshold:g}",
        "met": target.met(value),
        "informative": target.informative if informative is None else informative,
    }


def error_row(section: str, error: str) -> dict[str, Any]:
    """The ratio-table row of a section whose benchmark failed."""
    return {
        "id": "error",
        "section": section,
        "variant": None,
        "default": None,
        "description": error,
        "value": None,
        "target": "",
        "met": False,
        "informative": False,
    }


def anchor_target(anchor: dict[str, Any]) -> Target:
    """A bundle hook's indicative anchor (``op``, ``threshold``, ``description``) as a :class:`Target`."""
    return Target("anchor", anchor["description"], anchor.get("op", "<="), anchor["threshold"], informative=True)


P3_DICE_MIN = 0.95  # P3 counts only with Dice(fast, faithful) >= 0.95


def p3_verdict(ratio: float | None, dice: float | None, dice_min: float = P3_DICE_MIN) -> dict[str, bool | None]:
    """Whether P3 is met: ratio >= its target (50) *and* Dice(fast, faithful) >= ``dice_min``.

    Returns:
        ``ratio_met``, ``dice_met`` (``None`` when not measured) and ``met``: ``False`` as soon as either part
        fails, ``None`` while a part is unknown, else ``True``.
    """
    ratio_met = TARGETS["P3"].met(ratio)
    dice_met = None if dice is None else bool(dice >= dice_min)
    if ratio_met is False or dice_met is False:
        met = False
    elif ratio_met is None or dice_met is None:
        met = None
    else:
        met = True
    return {"ratio_met": ratio_met, "dice_met": dice_met, "met": met}


def p3_row(p3: dict[str, Any], section: str) -> dict[str, Any]:
    """The P3 row of a bench hook's ``p3`` record (``value``, ``dice``, optional ``dice_min``), judged by
    :func:`p3_verdict`."""
    row = judge("P3", p3.get("value"), section, p3.get("variant"), True, informative=bool(p3.get("informative")))
    dice, dice_min = p3.get("dice"), float(p3.get("dice_min", P3_DICE_MIN))
    row["dice"] = dice
    row["target"] += f", Dice >= {dice_min:g}"
    row["met"] = p3_verdict(p3.get("value"), dice, dice_min)["met"]
    return row


def collect_ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ratio row of a ``bench.json`` record's bundle sections (``results["bundles"]``); a failed bundle
    gives one ``error`` row."""
    rows = []
    for name, record in results.get("bundles", {}).items():
        if not isinstance(record, dict):
            continue
        if "error" in record:
            rows.append(error_row(name, record["error"]))
            continue
        if "variants" not in record:
            continue
        anchor = record.get("anchor")
        for variant, numbers in record["variants"].items():
            default = numbers.get("default")
            p1_key = "P1_bf16" if numbers.get("bf16") else "P1_fp32"
            rows.append(judge(p1_key, numbers.get("p1"), name, variant, default))
            rows.append(judge("P2", numbers.get("p2"), name, variant, default))
            if anchor and anchor.get("value_key") in numbers:
                rows.append(judge(anchor_target(anchor), numbers[anchor["value_key"]], name, variant, default))
        if isinstance(record.get("p3"), dict):
            rows.append(p3_row(record["p3"], name))
        if "training" in record:
            rows.append(judge("P4", record["training"].get("p4"), name))
        if "memory" in record:
            three_d = record["memory"].get("three_d", False)
            rows.append(judge("P5", record["memory"].get("peak_rss_gib"), name, informative=not three_d))
    return rows
