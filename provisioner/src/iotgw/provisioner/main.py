"""`iotgw-provisioner`: consume purchases and provision per-client stacks until SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from prometheus_client import start_http_server

from iotgw.contracts.jsonlog import configure_logging
from iotgw.contracts.settings import load_settings
from iotgw.provisioner.app import Provisioner, build_target
from iotgw.provisioner.settings import ProvisionerSettings

log = logging.getLogger("iotgw.provisioner")


def main() -> int:
    """Run the provisioner; exit 1 when a worker dies (the orchestrator restarts it)."""
    settings = load_settings(ProvisionerSettings)
    configure_logging(settings.log_level)
    provisioner = Provisioner(settings, build_target(settings))
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=provisioner.metrics.registry)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signum})
        provisioner.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    provisioner.start()
    log.info("started", extra={"target": settings.provisioner_target})
    while not provisioner.stop.wait(1.0):
        if not provisioner.alive():
            log.error("a worker stopped; exiting")
            provisioner.close()
            return 1
    provisioner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
