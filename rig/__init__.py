"""heatrig rig: clock, protocol adapters, recording, faults, expectations and the CLI."""
