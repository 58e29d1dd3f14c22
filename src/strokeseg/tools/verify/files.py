"""Check 1: the required files exist and the bundle describes itself (``"strokeseg"`` in the metadata)."""

from __future__ import annotations

from strokeseg.errors import BundleError
from strokeseg.tools.verify.common import REQUIRED_FILES, _Context


def _check_files(ctx: _Context) -> str:
    missing = [name for name in REQUIRED_FILES if not (ctx.bundle / name).is_file()]
    if missing:
        raise BundleError(f"missing in {ctx.bundle}: {', '.join(missing)}")
    if ctx.description is None:
        raise BundleError(str(ctx.description_error))
    desc = ctx.description
    networks = ", ".join(f"{n.id} -> {n.checkpoint}" for n in desc.networks)
    return (
        f"{', '.join(REQUIRED_FILES)} present; describes itself: layout {desc.layout}, "
        f"stages {', '.join(desc.stages)}, networks {networks}"
    )
