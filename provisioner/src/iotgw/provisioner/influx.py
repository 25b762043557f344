"""InfluxDB: the shared database and its retention policy, a client's series, outcome points.

Decision: one shared database (IOTGW_INFLUX_DATABASE) keyed by the `client` tag rather than a
database per client: one Grafana datasource serves every client, ingest batches points across
clients into one write, and cardinality grows with devices x metrics, not with databases. The
provisioner ensures the database and retention policy exist (both statements are idempotent)
and a cancellation drops the client's device series; provisioning outcomes are kept as audit.
"""

from __future__ import annotations

import threading
import time

import httpx

from iotgw.contracts import measurements
from iotgw.contracts.names import check_dns_label
from iotgw.provisioner.errors import PermanentError, TransientError, is_transient_status

CLIENT_DATA = (measurements.TELEMETRY, measurements.PRESENCE)


def _tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _string_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def outcome_line(
    client: str, product: str, status: str, trace_id: str, latency_ms: float, reason: str | None
) -> str:
    """One line-protocol point of `measurements.PROVISIONING` (time added by the caller)."""
    tags = f"client={_tag(client)},product={_tag(product)},status={_tag(status)}"
    fields = [f"trace_id={_string_field(trace_id)}", f"latency_ms={latency_ms:.3f}"]
    if reason:
        fields.append(f"reason={_string_field(reason[:1000])}")
    return f"{measurements.PROVISIONING},{tags} {','.join(fields)}"


class InfluxStore:
    """The v1 HTTP API (/query, /write) of InfluxDB 1.x or a compatible server."""

    def __init__(
        self,
        url: str,
        database: str,
        retention_policy: str,
        retention: str,
        timeout: float = 10.0,
        recheck_s: float = 60.0,
    ) -> None:
        self.database = database
        self.recheck_s = recheck_s
        self._ensured_at: float | None = None
        self._lock = threading.Lock()
        self.retention_policy = retention_policy
        self.retention = retention
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def ensure_storage(self) -> list[str]:
        """Create the database and its default retention policy if missing (idempotent).

        The two statements are schema writes on InfluxDB's side; once they succeeded they are
        repeated at most every `recheck_s` seconds, so a dropped database still comes back.
        """
        db, rp = self.database, self.retention_policy
        applied = [f"Database/{db}", f"RetentionPolicy/{rp}"]
        with self._lock:
            last = self._ensured_at
        if last is not None and time.monotonic() - last < self.recheck_s:
            return applied
        self._query(f'CREATE DATABASE "{db}"')
        policy = f'"{rp}" ON "{db}" DURATION {self.retention} REPLICATION 1 DEFAULT'
        try:
            self._query(f"CREATE RETENTION POLICY {policy}")
        except PermanentError as exc:
            # Exists with another duration: bring it to the configured one.
            if "already exists" not in exc.reason:
                raise
            self._query(f"ALTER RETENTION POLICY {policy}")
        with self._lock:
            self._ensured_at = time.monotonic()
        return applied

    def drop_client(self, client: str) -> list[str]:
        """Drop every series of the client's device data."""
        check_dns_label(client, "client")
        sources = ", ".join(f'"{m}"' for m in CLIENT_DATA)
        try:
            self._query(
                f"DROP SERIES FROM {sources} WHERE \"client\" = '{client}'", db=self.database
            )
        except PermanentError as exc:
            if "database not found" in exc.reason:
                return []  # nothing was ever stored
            raise
        return [f"Series/client={client}"]

    def write_outcome(
        self,
        client: str,
        product: str,
        status: str,
        trace_id: str,
        latency_ms: float,
        reason: str | None,
    ) -> None:
        """Write one provisioning outcome point (millisecond precision)."""
        line = outcome_line(client, product, status, trace_id, latency_ms, reason)
        body = f"{line} {time.time_ns() // 1_000_000}\n"
        self._send("POST", "/write", params={"db": self.database, "precision": "ms"}, content=body)

    def _query(self, statement: str, db: str | None = None) -> None:
        params = {"q": statement, **({"db": db} if db else {})}
        response = self._send("POST", "/query", params=params)
        for result in response.json().get("results", []):
            if "error" in result:
                raise PermanentError(
                    f"InfluxDB {statement.split(maxsplit=1)[0]}: {result['error']}"
                )

    def _send(
        self, method: str, path: str, *, params: dict[str, str], content: str | None = None
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, params=params, content=content)
        except httpx.HTTPError as exc:
            raise TransientError(f"InfluxDB {path}: {type(exc).__name__}") from exc
        if response.is_success:
            return response
        reason = f"InfluxDB {path}: HTTP {response.status_code} {response.text[:200]}"
        if is_transient_status(response.status_code):
            raise TransientError(reason)
        raise PermanentError(reason)
