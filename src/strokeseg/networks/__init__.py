"""One module per network of the five seeds."""

from __future__ import annotations

from strokeseg.networks.eddnet import DeconvNetBranch, EDDNet, caffe_xavier_init_
from strokeseg.networks.musclenet import MuscleNet

__all__ = ["DeconvNetBranch", "EDDNet", "MuscleNet", "caffe_xavier_init_"]
