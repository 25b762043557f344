"""The live view (rich) and the end summary."""

from __future__ import annotations

from rich.console import Group
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from iotgw.device_sim.fleet import Totals


def progress_bar(total_s: float) -> Progress:
    """A bar for the run's duration."""
    progress = Progress(
        TextColumn("[bold]simulating"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
        TimeRemainingColumn(),
    )
    progress.add_task("run", total=total_s)
    return progress


def table(t: Totals, title: str = "fleet") -> Table:
    """The counters, one per row (fits a narrow terminal)."""
    grid = Table(title=title, expand=False)
    grid.add_column("counter")
    grid.add_column("value", justify="right")
    columns = {
        "modules": t.modules,
        "connected": t.connected,
        "sent": t.sent,
        "acknowledged": t.acked,
        "buffered": t.buffered,
        "in flight": t.inflight,
        "dropped": t.dropped,
        "reconnects": max(0, t.connects - t.modules),
        "extra (faults)": t.extra_sent,
        "rate ack/s": f"{t.rate_acked_per_s:,.0f}",
    }
    for name, value in columns.items():
        grid.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    return grid


def live(progress: Progress, t: Totals) -> Group:
    """What the live display renders."""
    return Group(progress, table(t))
