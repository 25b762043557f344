"""iotgw edge agent (runs on the IoT module)."""
