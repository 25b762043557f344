"""InfluxDB writers: v1 `/write` through httpx (default) and v2 through `influxdb-client`.

Both raise the same two errors, which is all the flusher needs to know:
- `WriteRejectedError`: InfluxDB refused the data itself (400, 413); sending it again cannot help,
  though the other lines of the same request may be fine (InfluxDB 1.x writes those);
- `WriteUnavailableError`: anything else (down, slow, 5xx, 429, 401/403/404 misconfiguration);
  try again later, the data is fine.
"""

from __future__ import annotations

import logging
from typing import Protocol, cast

import httpx
import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from iotgw.cloud_bridge.ingest.settings import IngestSettings

log = logging.getLogger(__name__)

# Statuses that mean "this data is bad": bisect the batch to find the lines at fault.
DATA_REJECTED = frozenset({400, 413, 422})
OK = frozenset({200, 204})
_NS = cast(WritePrecision, WritePrecision.NS)  # a str constant the stubs type as the class


class WriteRejectedError(Exception):
    """InfluxDB refused (part of) the data; the message is its explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class WriteUnavailableError(Exception):
    """InfluxDB could not take the write now; retry later."""


class LineWriter(Protocol):
    """Writes newline-separated line protocol with nanosecond timestamps."""

    def write(self, body: bytes) -> None:
        """Write `body`; return only once InfluxDB answered 2xx."""

    def ensure_database(self) -> None:
        """Create the target database if the API allows it (idempotent)."""

    def close(self) -> None:
        """Release connections."""


class V1Writer:
    """`POST /write?db=...&precision=ns` (InfluxDB 1.x, and 2.x/3.x through their v1 API)."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.database = database
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._client = httpx.Client(base_url=url, timeout=timeout_s, auth=auth)
        self._params = {"db": database, "precision": "ns"}

    def write(self, body: bytes) -> None:
        """Write `body` to the database."""
        try:
            response = self._client.post("/write", params=self._params, content=body)
        except httpx.HTTPError as exc:
            raise WriteUnavailableError(f"influxdb unreachable: {exc!r}") from exc
        if response.status_code == 404 and "database not found" in response.text:
            # Dropped under us (or never created): create it, then let the flusher retry.
            self.ensure_database()
        _check(response.status_code, response.text)

    def ensure_database(self) -> None:
        """`CREATE DATABASE` (a no-op when it exists)."""
        try:
            response = self._client.post(
                "/query", params={"q": f'CREATE DATABASE "{self.database}"'}
            )
        except httpx.HTTPError as exc:
            raise WriteUnavailableError(f"influxdb unreachable: {exc!r}") from exc
        if response.status_code not in OK or '"error"' in response.text:
            raise WriteUnavailableError(
                f"creating database {self.database}: {response.status_code} {response.text}"
            )

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


class V2Writer:
    """`POST /api/v2/write` through influxdb-client (InfluxDB 2.x/3.x, Cloud, VictoriaMetrics)."""

    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_s: float) -> None:
        self.bucket = bucket
        self.org = org
        self._client = InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout_s * 1000))
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: bytes) -> None:
        """Write `body` to the bucket."""
        try:
            self._api.write(bucket=self.bucket, org=self.org, record=body, write_precision=_NS)
        except ApiException as exc:
            _check(int(exc.status or 0), str(exc.body or exc.reason))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise WriteUnavailableError(f"influxdb unreachable: {exc!r}") from exc

    def ensure_database(self) -> None:
        """Buckets are created by whoever owns the org (a token here may not be allowed to)."""

    def close(self) -> None:
        """Close the client."""
        self._api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]


def _check(status: int, text: str) -> None:
    if status in OK:
        return
    if status in DATA_REJECTED:
        raise WriteRejectedError(status, text.strip()[:1000])
    raise WriteUnavailableError(f"influxdb answered {status}: {text.strip()[:300]}")


def make_writer(settings: IngestSettings) -> LineWriter:
    """The writer the settings ask for."""
    if settings.influx_api == "v2":
        assert settings.influx_token
        assert settings.influx_org
        assert settings.influx_bucket
        return V2Writer(
            settings.influx_url,
            settings.influx_token.get_secret_value(),
            settings.influx_org,
            settings.influx_bucket,
            settings.influx_timeout_s,
        )
    password = settings.influx_password.get_secret_value() if settings.influx_password else None
    return V1Writer(
        settings.influx_url,
        settings.influx_database,
        username=settings.influx_username,
        password=password,
        timeout_s=settings.influx_timeout_s,
    )
