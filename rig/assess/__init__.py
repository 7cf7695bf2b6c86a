"""Judging a run: the fault catalog and its scheduling, expectations and their verdicts."""
