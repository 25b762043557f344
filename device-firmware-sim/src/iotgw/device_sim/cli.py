"""`iotgw-sim`: run N simulated modules for a while, live view, summary, `--json` for scripts."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.live import Live

from iotgw.contracts.jsonlog import configure_logging
from iotgw.contracts.settings import load_settings
from iotgw.device_sim.faults import FaultPlan
from iotgw.device_sim.fleet import Fleet, FleetConfig
from iotgw.device_sim.identities import fleet, load_credentials, provision
from iotgw.device_sim.settings import SimSettings
from iotgw.device_sim.view import live, progress_bar, table
from iotgw.edge_agent.metrics import serve_metrics

VIEW_REFRESH_S = 0.5

# flag -> settings field (flags override the environment)
FLAGS: dict[str, tuple[str, type]] = {
    "--count": ("sim_count", int),
    "--rate": ("sim_rate_hz", float),
    "--jitter": ("sim_jitter", float),
    "--duration": ("sim_duration_s", float),
    "--client": ("sim_client", str),
    "--prefix": ("sim_prefix", str),
    "--vhost": ("sim_vhost", str),
    "--state-dir": ("sim_state_dir", Path),
    "--window": ("sim_window", int),
    "--connect-parallel": ("sim_connect_parallel", int),
    "--time-scale": ("sim_time_scale", float),
    "--drain-timeout": ("sim_drain_timeout_s", float),
    "--credentials": ("sim_credentials", Path),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(prog="iotgw-sim", description=__doc__)
    for flag, (field, kind) in FLAGS.items():
        parser.add_argument(flag, dest=field, type=kind, help=f"overrides IOTGW_{field.upper()}")
    parser.add_argument("--provision", action="store_true", help="create the broker users first")
    parser.add_argument("--json", action="store_true", help="no live view; print JSON totals")
    faults = parser.add_argument_group("faults")
    for name in FaultPlan.__dataclass_fields__:
        faults.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=0.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the simulator."""
    args = parse(argv)
    overrides: dict[str, Any] = {
        field: getattr(args, field)
        for field, _ in FLAGS.values()
        if getattr(args, field) is not None
    }
    if args.provision:
        overrides["sim_provision"] = True
    settings = load_settings(SimSettings, **overrides)
    # Logs go to stderr: stdout carries the view or the JSON summary.
    configure_logging(settings.log_level, stream=sys.stderr)
    logging.getLogger("iotgw.edge_agent.session").setLevel(logging.WARNING)
    passwords: dict[str, str] = {}
    if settings.sim_credentials is not None:
        identities, passwords = load_credentials(settings.sim_credentials)
    else:
        identities = fleet(settings.sim_client, settings.sim_prefix, settings.sim_count)
    secret = settings.sim_secret.get_secret_value() if settings.sim_secret else ""
    if settings.sim_provision:
        provision(
            settings.rabbitmq_management_url,
            (settings.sim_admin_user, settings.sim_admin_password.get_secret_value()),
            settings.sim_vhost or "/",
            identities,
            secret,
        )
    plan_fields = {n: getattr(args, n) for n in FaultPlan.__dataclass_fields__}
    if not plan_fields["slow_pause_s"]:
        plan_fields["slow_pause_s"] = 1.0
    with tempfile.TemporaryDirectory(prefix="iotgw-sim-") as tmp:
        config = FleetConfig(
            identities=identities,
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            secret=secret,
            passwords=passwords,
            state_dir=settings.sim_state_dir or Path(tmp),
            vhost=settings.sim_vhost,
            rate_hz=settings.sim_rate_hz,
            jitter=settings.sim_jitter,
            window=settings.sim_window,
            keepalive_s=settings.sim_keepalive_s,
            connect_parallel=settings.sim_connect_parallel,
            time_scale=settings.sim_time_scale,
        )
        totals = run(Fleet(config, FaultPlan(**plan_fields)), settings, args.json)
    if args.json:
        print(json.dumps(totals))
    sys.exit(0 if totals["buffered"] == 0 else 1)


def run(sim: Fleet, settings: SimSettings, as_json: bool) -> dict[str, Any]:
    """Start, run for the duration (live view unless `as_json`), drain, stop; totals."""
    signal.signal(signal.SIGTERM, lambda s, f: sim.loop.stop())
    signal.signal(signal.SIGINT, _interrupt(sim))
    if settings.metrics_port:
        serve_metrics(
            settings.metrics_port,
            lambda: {
                f"iotgw_sim_{k}": v
                for k, v in sim.totals().as_dict().items()
                if isinstance(v, int | float)
            },
        )
    sim.start()
    duration = settings.sim_duration_s
    if as_json:
        sim.run_for(duration)
    else:
        console = Console()
        progress = progress_bar(duration)
        with Live(live(progress, sim.totals()), console=console, refresh_per_second=4) as view:

            def refresh() -> None:
                totals = sim.totals()
                progress.update(progress.task_ids[0], completed=min(duration, totals.elapsed_s))
                view.update(live(progress, totals))
                sim.loop.call_later(VIEW_REFRESH_S, refresh)

            refresh()
            sim.run_for(duration)
    drained = sim.drain(settings.sim_drain_timeout_s)
    sim.stop()
    totals = sim.totals()
    result: dict[str, Any] = {
        **totals.as_dict(),
        "drained": drained,
        "storms": sim.faults.storms,
        "outages": sim.faults.outages,
        "open_files_limit": sim.open_files,
    }
    if not as_json:
        Console().print(table(totals, "summary"))
    return result


def _interrupt(sim: Fleet) -> Any:
    def handler(signum: int, frame: FrameType | None) -> None:
        sim.loop.stop()

    return handler
