"""Validated names: whatever reaches Kubernetes, RabbitMQ, InfluxDB or a topic is checked here."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_LABEL_MAX = 63


def check_dns_label(value: str, what: str = "name") -> str:
    """Return `value` if it is an RFC 1123 DNS label, else raise ValueError naming `what`."""
    if len(value) > DNS_LABEL_MAX:
        raise ValueError(f"{what} must be at most {DNS_LABEL_MAX} characters")
    if not DNS_LABEL_RE.fullmatch(value):
        raise ValueError(
            f"{what} must be a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def is_dns_label(value: str) -> bool:
    """True when `value` is an RFC 1123 DNS label."""
    return len(value) <= DNS_LABEL_MAX and DNS_LABEL_RE.fullmatch(value) is not None


DnsLabel = Annotated[str, AfterValidator(check_dns_label)]
