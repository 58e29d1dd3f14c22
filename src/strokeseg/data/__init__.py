"""Dataset layouts (real ISLES trees → MONAI datalists) and the synthetic stroke phantom generator."""

from __future__ import annotations

from strokeseg import lazy_submodules

__getattr__ = lazy_submodules(__name__)
