"""strokeseg.metrics"""
