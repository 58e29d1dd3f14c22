"""strokeseg.layers"""
