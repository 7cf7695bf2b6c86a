"""Generated Grafana dashboards, installed as package data ``heatrig_data.dashboards``.

This file only makes the folder an importable package so that `importlib.resources` finds
the JSON files in an editable install as well as in a wheel (see pyproject.toml). Grafana
reads only the ``*.json`` files of the folder.
"""
