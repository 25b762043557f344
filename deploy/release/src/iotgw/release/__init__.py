"""iotgw release tooling: semantic versions from commit messages, the workload policy."""
