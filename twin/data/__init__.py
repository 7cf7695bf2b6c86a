"""Shipped data of the twin: precomputed refrigerant cycle maps (tools/build_cycle_maps.py)."""
