"""The dashboards as plain data: panels, their InfluxQL queries, and the series each query must
return. Rendering (render.py) and the query test both read this, so a panel cannot ship a query
that nobody has run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PanelKind = Literal["timeseries", "stat", "table", "state-timeline"]


@dataclass(frozen=True)
class Expect:
    """What a query returns with the variables filled: the series' name, the tags it is grouped
    by (one series per combination), and the columns every series carries."""

    measurement: str
    group_by: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Query:
    """One target of a panel: raw InfluxQL with Grafana's macros and template variables."""

    ref_id: str
    influxql: str
    expect: Expect
    alias: str = ""


@dataclass(frozen=True)
class Panel:
    """One panel: a title, a visualisation and its queries."""

    title: str
    kind: PanelKind
    queries: tuple[Query, ...]
    unit: str = ""
    description: str = ""
    width: int = 12
    height: int = 8


@dataclass(frozen=True)
class Variable:
    """A template variable: a query over tag values, or a free text box (a trace id)."""

    name: str
    label: str
    query: str = ""
    textbox: bool = False


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: uid (stable, used in links and provisioning), title, variables, panels."""

    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...] = ()
    panels: tuple[Panel, ...] = ()
    tags: tuple[str, ...] = field(default=("iotgw",))
