"""`python -m iotgw.device_sim` is `iotgw-sim`."""

from iotgw.device_sim.cli import main

main()
