"""Example scenarios, installed as package data ``heatrig_data.scenarios``.

This file only makes the folder an importable package so that `importlib.resources` finds
the YAML files in an editable install as well as in a wheel (see pyproject.toml).
"""
