"""Running a rig: the wall clock and pacing, offline, live and replayed runs, watchdogs and
systems-under-test processes.
"""
