"""The Prometheus endpoint over real HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from iotgw.edge_agent.metrics import serve_metrics
from iotgw.localstack.processes import free_ports


def test_metrics_served_as_prometheus_text() -> None:
    (port,) = free_ports(1)
    server = serve_metrics(
        port, lambda: {"iotgw_agent_acked_total": 7, "iotgw_agent_connected": 1.0}, "127.0.0.1"
    )
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert "iotgw_agent_acked_total 7\n" in body
        assert "iotgw_agent_connected 1.0\n" in body
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
