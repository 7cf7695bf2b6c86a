"""heatrig twin: the pure simulation of a data-center cooling plant with heat recovery.

Nothing in this package opens a socket, reads the wall clock or writes a file.
"""
