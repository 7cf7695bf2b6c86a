"""Keeping a run: the durable run store (SQLite), the recorder that feeds it, its data hash, and
the InfluxDB forwarder.
"""
