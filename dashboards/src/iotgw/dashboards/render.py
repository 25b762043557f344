"""Render the catalog with Grafana's foundation SDK into dashboard JSON."""

from __future__ import annotations

import json
from typing import Literal

from grafana_foundation_sdk.builders import common as gcommon
from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.dashboard import (
    Panel as PanelModel,
)

from iotgw.dashboards.alerts import DATASOURCE_UID
from iotgw.dashboards.model import Dashboard, Panel, Query, Variable

DATASOURCE = DataSourceRef(type_val="influxdb", uid=DATASOURCE_UID)

ResultFormat = Literal["time_series", "table"]


class InfluxQLTarget(cogvariants.Dataquery):
    """A raw InfluxQL target (the SDK ships no InfluxDB query type)."""

    def __init__(self, query: Query, result_format: ResultFormat) -> None:
        self.query = query
        self.result_format = result_format

    def to_json(self) -> dict[str, object]:
        """The target as Grafana's InfluxDB plugin stores it."""
        payload: dict[str, object] = {
            "refId": self.query.ref_id,
            "datasource": DATASOURCE.to_json(),
            "query": self.query.influxql,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.query.alias:
            payload["alias"] = self.query.alias
        return payload


class InfluxQLTargetBuilder(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder wrapper so targets plug into the SDK's panel builders."""

    def __init__(self, query: Query, result_format: ResultFormat) -> None:
        self._target = InfluxQLTarget(query, result_format)

    def build(self) -> cogvariants.Dataquery:
        """The target."""
        return self._target


PanelBuilder = timeseries.Panel | stat.Panel | table.Panel | statetimeline.Panel


def _legend() -> gcommon.VizLegendOptions:
    # Explicit options: a panel whose `options` is null relies on Grafana's migration defaults.
    return (
        gcommon.VizLegendOptions()
        .show_legend(True)
        .display_mode(LegendDisplayMode.LIST)
        .placement(LegendPlacement.BOTTOM)
    )


def _panel(panel_id: int, panel: Panel) -> cogbuilder.Builder[PanelModel]:
    builder: PanelBuilder
    if panel.kind == "stat":
        # A stat shows the latest value, not the mean over the range.
        builder = stat.Panel().reduce_options(gcommon.ReduceDataOptions().calcs(["lastNotNull"]))
    elif panel.kind == "table":
        builder = table.Panel().show_header(True)
    elif panel.kind == "state-timeline":
        builder = statetimeline.Panel().legend(_legend())
    else:
        builder = timeseries.Panel().legend(_legend())
    result_format: ResultFormat = "table" if panel.kind == "table" else "time_series"
    builder.id(panel_id).title(panel.title).datasource(DATASOURCE)
    builder.height(panel.height).span(panel.width)
    if panel.description:
        builder.description(panel.description)
    if panel.unit:
        builder.unit(panel.unit)
    builder.targets([InfluxQLTargetBuilder(query, result_format) for query in panel.queries])
    return builder


def _variable(variable: Variable) -> cogbuilder.Builder[object]:
    if variable.textbox:
        return gdash.TextBoxVariable(variable.name).label(variable.label)
    return (
        gdash.QueryVariable(variable.name)
        .label(variable.label)
        .datasource(DATASOURCE)
        .query(variable.query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def build(dashboard: Dashboard) -> gdash.Dashboard:
    """The SDK builder for one dashboard of the catalog."""
    builder = (
        gdash.Dashboard(dashboard.title)
        .uid(dashboard.uid)
        .description(dashboard.description)
        .tags(list(dashboard.tags))
        .time("now-6h", "now")
        .refresh("30s")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .readonly()
    )
    for variable in dashboard.variables:
        builder.with_variable(_variable(variable))  # type: ignore[arg-type]
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        builder.with_panel(_panel(panel_id, panel))
    return builder


def to_json(dashboard: Dashboard) -> str:
    """The dashboard's JSON, stable byte for byte (sorted keys, two-space indent, newline)."""
    return json.dumps(build(dashboard).build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
