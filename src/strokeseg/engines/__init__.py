"""strokeseg.engines"""
