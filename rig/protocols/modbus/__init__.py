"""Modbus TCP: the register map generated from the point table, and the server that serves it."""
