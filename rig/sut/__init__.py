"""Reference systems under test: separate processes that talk to the rig over the network.

* `rig.sut.controller` -- a plant controller on Modbus TCP (leak isolation, heat-pump and
  facility-pump standby);
* `rig.sut.leak_detector` -- a leak detector on MQTT telemetry (spot sensors and reservoir
  mass balance, a heartbeat);
* `rig.sut.pointmap` -- the exported point list (``heatrig points --format json``) read
  into lookups, with a Modbus codec of its own.

They use nothing of the twin but its exception classes: like real devices, they know the
plant only through the point list and the wire.

The variants each can run as (``--controller``, ``--leak-detector``, ``sut:`` of a scenario)
are listed here, so that the command line and the scenario schema need no edit when one is
added; every variant but ``reference`` is a deliberate defect (docs/expectations.md).
"""

CONTROLLER_VARIANTS: tuple[str, ...] = ("reference", "no-isolate", "reset-loop", "no-standby")
"""Variants of `rig.sut.controller`."""

LEAK_DETECTOR_VARIANTS: tuple[str, ...] = ("reference", "high-threshold", "alarm-flood")
"""Variants of `rig.sut.leak_detector`."""
