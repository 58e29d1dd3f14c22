"""strokeseg.losses"""
