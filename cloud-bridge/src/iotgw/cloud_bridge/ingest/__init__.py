"""Telemetry ingest: q.telemetry -> validated readings -> batched InfluxDB writes -> batch ack.

`points` is the domain (a message in, a line-protocol point out, no I/O); `batch` groups
deliveries; `writers` speak InfluxDB's v1 and v2 write APIs; `flusher` writes a batch with
retries and bisection; `consumer` is the pika transport; `main` the `iotgw-ingest` entry point.
"""
