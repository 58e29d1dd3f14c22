"""Bench hook of ``stroke_dwi_edd_muscle``: the MUSCLE cascade's candidates and the paper's per-scan anchor.

The generic harness measures the EDD Net (the bundle's ``network_def``) and the whole cascade end to end; this
hook adds what only this method has:

- the number of small EDD candidates that MUSCLE classifies in the benchmark case (from the EDD logits of the
  recorded fp32 calls), since the cascade's extra time grows with it;
- seconds per ≈20-slice DWI scan, scaled from the end-to-end seconds per slice, against the paper's 0.90 s per
  scan on a Tesla K80 (Chen, Bentley and Rueckert 2017; indicative: other hardware).
"""

from __future__ import annotations

from typing import Any

import torch

from strokeseg.engines.muscle import find_small_candidates

__all__ = ["bench_hook", "PAPER_SECONDS_PER_SCAN", "PAPER_EDD_SECONDS_PER_SCAN", "PAPER_SLICES_PER_SCAN"]

# Chen, Bentley and Rueckert 2017, §5.5: 0.90 s per DWI scan on a Tesla K80 (0.63 s of it the EDD Net), scans of
# about 20 slices.
PAPER_SECONDS_PER_SCAN = 0.90
PAPER_EDD_SECONDS_PER_SCAN = 0.63
PAPER_SLICES_PER_SCAN = 20
SCAN_KEY = "end_to_end_seconds_per_20_slice_scan"
MUSCLE_NOTE = (
    "the number of small EDD candidates that MUSCLE classifies depends on the weights, and with it a (small) part "
    "of the end-to-end time"
)


def muscle_candidates(calls: list) -> int:
    """Small EDD candidates (``find_small_candidates``) in the recorded EDD logits of one case.

    Args:
        calls: the generic harness's recorded calls of the EDD Net, each with ``output`` ``(N, 2, H, W)``.
    """
    logits = torch.cat([c.output for c in calls])
    prob = torch.softmax(logits, dim=1)[:, 1].permute(1, 2, 0).contiguous()  # (H, W, N slices)
    return len(find_small_candidates(prob))


def bench_hook(context: dict[str, Any]) -> dict[str, Any]:
    """Candidates for MUSCLE, seconds per 20-slice scan per variant, and the paper anchor."""
    record = context["record"]
    slices = record["case"]["items"]
    candidates = muscle_candidates(context["calls"])
    variants = {
        name: {SCAN_KEY: round(v["end_to_end_median_s"] / slices * PAPER_SLICES_PER_SCAN, 3)}
        for name, v in record["variants"].items()
    }
    weights_note = f"; {MUSCLE_NOTE}" if record["weights"].startswith("untrained") else ""
    return {
        "muscle_candidates": candidates,
        "weights": record["weights"] + weights_note,
        "variants": variants,
        "notes": [f"{candidates} small EDD candidates for MUSCLE."],
        "anchor": {
            "value_key": SCAN_KEY,
            "column": "s per 20-slice scan",
            "description": "end-to-end seconds per ≈20-slice scan (indicative; paper: 0.90 s on a Tesla K80)",
            "op": "<=",
            "threshold": PAPER_SECONDS_PER_SCAN,
            "paper_seconds_per_scan_k80": PAPER_SECONDS_PER_SCAN,
            "paper_edd_seconds_per_scan_k80": PAPER_EDD_SECONDS_PER_SCAN,
            "slices_per_scan": PAPER_SLICES_PER_SCAN,
            "aim_seconds_per_scan": PAPER_SECONDS_PER_SCAN,
            "text": (
                f"Paper anchor (Chen et al. 2017): {PAPER_SECONDS_PER_SCAN} s per DWI scan of ≈{PAPER_SLICES_PER_SCAN} "
                f"slices on a Tesla K80 ({PAPER_EDD_SECONDS_PER_SCAN} s EDD); other hardware, indicative."
            ),
        },
    }
