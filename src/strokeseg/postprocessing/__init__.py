"""strokeseg.postprocessing"""
