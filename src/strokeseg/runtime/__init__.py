"""The run-time floor: what bundle configs instantiate (checkpoints, inference inputs, one-line errors, knobs,
handlers, precision, hardware detection). It imports the core packages and nothing of :mod:`strokeseg.tools`."""

from __future__ import annotations

from strokeseg import lazy_submodules

__getattr__ = lazy_submodules(__name__)
