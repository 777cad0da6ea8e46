"""Experiments built on the library: in-context learning, scaling-law sweeps and fits, domain adaptation."""
