"""BACnet/IP adapter: each twin device as a BACnet device object (bacpypes3)."""
