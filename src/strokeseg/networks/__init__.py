"""strokeseg.networks"""
