"""REST API, BOPTEST-compatible interface and web console of a live rig."""
