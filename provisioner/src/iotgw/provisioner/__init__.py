"""iotgw provisioner: purchases become per-client stacks."""
