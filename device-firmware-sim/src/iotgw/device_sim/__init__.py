"""iotgw device firmware simulator."""
