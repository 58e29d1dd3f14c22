"""Dataset layouts (real ISLES trees → MONAI datalists) and the synthetic stroke phantom generator."""
