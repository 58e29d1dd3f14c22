"""Optimisers the papers use and PyTorch lacks, one module each (import from the submodules): DeepMedic's RMSProp."""

from __future__ import annotations

from strokeseg import lazy_submodules

__getattr__ = lazy_submodules(__name__)
