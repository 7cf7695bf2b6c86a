"""Reference systems under test: separate processes that talk to the rig over the network.

* `rig.sut.controller` -- a plant controller on Modbus TCP (leak isolation, heat-pump and
  facility-pump standby), variants ``reference`` and ``no-isolate``;
* `rig.sut.leak_detector` -- a leak detector on MQTT telemetry (spot sensors and reservoir
  mass balance), variants ``reference`` and ``high-threshold``;
* `rig.sut.pointmap` -- the exported point list (``heatrig points --format json``) read
  into lookups, with a Modbus codec of its own.

They use nothing of the twin but its exception classes: like real devices, they know the
plant only through the point list and the wire.
"""
