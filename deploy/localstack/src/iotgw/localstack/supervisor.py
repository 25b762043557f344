"""Start the platform's processes, watch them, kill or stop them: for the demo and fault drills.

Each process runs detached from our terminal's process group (Ctrl-C reaches only us, and we
stop the children in reverse start order), with its output in its own log file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


@dataclass
class Managed:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None


@dataclass
class Supervisor:
    """Owns a set of named processes; stops all of them on exit."""

    log_dir: Path
    processes: dict[str, Managed] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: Mapping[str, str]) -> Managed:
        """Start `argv` as `name` (a running one of that name is an error)."""
        if name in self.processes and self.processes[name].alive:
            raise RuntimeError(f"{name} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        program = shutil.which(argv[0]) or argv[0]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [program, *argv[1:]],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        managed = Managed(name, argv, dict(env), log_path, proc)
        self.processes[name] = managed
        return managed

    def restart(self, name: str) -> Managed:
        """Start `name` again with the same command and environment."""
        old = self.processes[name]
        return self.start(name, old.argv, old.env)

    def kill(self, name: str) -> None:
        """SIGKILL `name` (a crash: no shutdown code runs) and reap it."""
        managed = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            managed.proc.send_signal(signal.SIGKILL)
        managed.proc.wait(timeout=30)

    def exited(self) -> list[str]:
        """Names of processes that stopped on their own, with their exit codes."""
        return [
            f"{m.name} (exit {m.proc.returncode})" for m in self.processes.values() if not m.alive
        ]

    def stop_all(self, timeout: float = 20) -> None:
        """SIGTERM every process, newest first; SIGKILL what is still there after `timeout`."""
        for managed in reversed(list(self.processes.values())):
            if managed.alive:
                with contextlib.suppress(ProcessLookupError):
                    managed.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for managed in self.processes.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                managed.proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(managed.proc.pid, signal.SIGKILL)
                managed.proc.wait(timeout=10)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
