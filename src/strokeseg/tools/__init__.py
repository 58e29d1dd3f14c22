"""The tools floor: what drives bundles from outside (the ``strokeseg`` command, ``verify``, ``bench``,
``profile``, ``demo``, the ``train`` / ``infer`` front door). Nothing else in strokeseg imports it."""

from __future__ import annotations

from strokeseg import lazy_submodules

__getattr__ = lazy_submodules(__name__)
