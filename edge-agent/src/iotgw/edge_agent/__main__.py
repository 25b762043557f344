"""`python -m iotgw.edge_agent` is `iotgw-agent`."""

from iotgw.edge_agent.agent import main

main()
