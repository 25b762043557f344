"""The supervisor starts, kills, restarts and stops real processes."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from iotgw.localstack.supervisor import Supervisor

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]
# Ignores SIGTERM, so stop_all has to escalate to SIGKILL.
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
]


def test_kill_is_seen_and_restart_brings_it_back(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        first = sup.start("sleeper", SLEEPER, os.environ)
        assert sup.exited() == []
        sup.kill("sleeper")
        assert sup.exited() == [f"sleeper (exit {-signal.SIGKILL})"]
        second = sup.restart("sleeper")
        assert second.alive
        assert second.proc.pid != first.proc.pid
    assert not second.alive
    assert "up" in (tmp_path / "sleeper.log").read_text()


def test_stop_all_escalates_to_sigkill(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    stubborn = sup.start("stubborn", STUBBORN, os.environ)
    sup.stop_all(timeout=1)
    assert stubborn.proc.returncode == -signal.SIGKILL
