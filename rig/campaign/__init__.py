"""Fault campaigns: scenario x parameter x seed x system-under-test matrices on Dask."""
