"""MQTT: topics, telemetry, validated commands, protocol faults, the embedded broker and the
observer of what systems under test publish.
"""
