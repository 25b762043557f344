"""The supervisor starts, kills, restarts and stops real processes."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from iotgw.localstack.supervisor import Supervisor

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]
# Ignores SIGTERM, so stop_all has to escalate to SIGKILL.
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True);"
    " time.sleep(600)",
]


def _wait_for_output(log: Path, text: str, timeout: float = 10) -> None:
    """Wait until the process has written `text` (it is then past its start-up)."""
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {log}"
        time.sleep(0.02)


def test_kill_is_seen_and_restart_brings_it_back(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        first = sup.start("sleeper", SLEEPER, os.environ)
        _wait_for_output(first.log_path, "up")
        assert sup.exited() == []
        sup.kill("sleeper")
        assert sup.exited() == [f"sleeper (exit {-signal.SIGKILL})"]
        second = sup.restart("sleeper")
        assert second.alive
        assert second.proc.pid != first.proc.pid
    assert not second.alive


def test_stop_all_escalates_to_sigkill(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    stubborn = sup.start("stubborn", STUBBORN, os.environ)
    _wait_for_output(stubborn.log_path, "up")
    sup.stop_all(timeout=1)
    assert stubborn.proc.returncode == -signal.SIGKILL
