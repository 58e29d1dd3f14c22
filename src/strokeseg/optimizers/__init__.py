"""Optimisers the seeds use and PyTorch lacks, one module each (import from the submodules): DeepMedic's RMSProp."""
