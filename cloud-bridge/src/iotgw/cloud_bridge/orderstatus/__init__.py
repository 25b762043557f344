"""Order status from the provisioner's events (q.api.status) into the registry."""
