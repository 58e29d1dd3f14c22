"""strokeseg: five published stroke-lesion segmentation methods as MONAI bundles.

Three floors, each importing only the floors below it (``tests/test_layering.py`` keeps this true):

* *core* — every package not named below: ``layers``, ``networks``, ``losses``, ``optimizers``,
  ``transforms``, ``inferers``, ``postprocessing``, ``metrics``, ``fitting``, ``data``, ``engines`` and the
  small base modules (``errors``, ``atomic_io``, ``lesions``, ``naming``);
* *runtime* (:mod:`strokeseg.runtime`) — what bundle configs instantiate at run time: checkpoints, inference
  inputs, one-line errors, knobs, handlers, precision, hardware detection;
* *tools* (:mod:`strokeseg.tools`) — what drives bundles from outside: the ``strokeseg`` command, ``verify``,
  ``bench``, ``profile``, ``demo`` and the ``train`` / ``infer`` front door.

Every package resolves its submodules on first attribute access, so a bundle config needs only
``$import strokeseg`` to reach ``strokeseg.runtime.checkpoint.StrictCheckpointLoader``. Importing strokeseg
imports none of its submodules and changes no environment variable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "lazy_submodules"]


def lazy_submodules(package: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports ``package.<name>`` when ``name`` is first accessed.

    An attribute that is neither defined nor a submodule raises ``AttributeError`` as usual; an error *inside*
    the submodule's import propagates unchanged.
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__


__getattr__ = lazy_submodules(__name__)
