"""The wire: protocol adapters that serve the point table (Modbus TCP, MQTT and its embedded
broker).
"""
