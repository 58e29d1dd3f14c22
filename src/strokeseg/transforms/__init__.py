"""strokeseg.transforms"""
