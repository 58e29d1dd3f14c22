"""Check 8: the multi-GPU overlay parses and its references resolve."""

from __future__ import annotations

from strokeseg.errors import BundleError
from strokeseg.tools.verify.common import _Context, _Skipped
from strokeseg.tools.verify.hygiene import _dangling_references

# ---------------------------------------------------------------------------------------------- check 8


def _check_multi_gpu(ctx: _Context) -> str:
    overlay = ctx.configs / "multi_gpu_train.json"
    if not overlay.is_file():
        raise _Skipped("skipped because the bundle has no configs/multi_gpu_train.json", applies=False)
    ctx.require(ctx.train_config)
    problems = _dangling_references([ctx.train_config, overlay], ctx.meta)
    if problems:
        raise BundleError("; ".join(f"configs/train.json + configs/multi_gpu_train.json: {p}" for p in problems))
    return "configs/train.json + configs/multi_gpu_train.json parse and every reference resolves"
