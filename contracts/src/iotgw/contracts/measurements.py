"""InfluxDB measurements the platform writes, and the tags they carry.

The single place writers (ingest, provisioner) and readers (api, dashboards, alert rules) agree on.
Grafana reads only InfluxDB (InfluxQL), so pipeline and provisioning health are written here too,
not only exposed as Prometheus metrics.
"""

from __future__ import annotations

# One point per reading. Tags: client, device. Fields: every metric of the reading, plus `seq`.
# Time: the device's timestamp (skew-guarded by ingest), so a replay rewrites the same point.
TELEMETRY = "telemetry"

# One point per status message. Tags: client, device. Fields: online (1/0), epoch.
PRESENCE = "presence"

# Ingest's own health, one point per flush. Tags: instance. Fields: received, written,
# dead_lettered, batch_size, write_ms, queue_depth, skew_corrected.
INGEST = "ingest"

# Dead letters, one point per dead-lettered message. Tags: queue, reason. Fields: count (1).
DEAD_LETTERS = "dead_letters"

# Provisioning outcomes, one point per status event. Tags: client, product, status
# (ready/failed/cancelled). Fields: trace_id (string), latency_ms, reason (string, on failure).
PROVISIONING = "provisioning"

TAG_CLIENT = "client"
TAG_DEVICE = "device"
