"""One module per network of the five papers."""

from __future__ import annotations

from strokeseg import lazy_submodules
from strokeseg.networks.eddnet import DeconvNetBranch, EDDNet, caffe_xavier_init_
from strokeseg.networks.musclenet import MuscleNet

__all__ = ["DeconvNetBranch", "EDDNet", "MuscleNet", "caffe_xavier_init_"]

__getattr__ = lazy_submodules(__name__)
