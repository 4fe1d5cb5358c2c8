"""Experiments built from many runs: sweeps and the reproduced study."""
