"""Fill a panel's InfluxQL the way Grafana does: macros, then template variables."""

from __future__ import annotations

import re
from collections.abc import Mapping

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def fill(
    query: str, variables: Mapping[str, str], time_range: str = "1h", interval_s: int = 60
) -> str:
    """`query` with `$timeFilter` as the last `time_range`, `$__interval[_ms]` as `interval_s`
    and each `$name`/`${name}` from `variables`; an unknown variable raises KeyError."""
    macros = {
        "timeFilter": f"time > now() - {time_range}",
        "__interval": f"{interval_s}s",
        "__interval_ms": str(interval_s * 1000),
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in macros:
            return macros[name]
        return variables[name]

    return _VARIABLE.sub(replace, query)
