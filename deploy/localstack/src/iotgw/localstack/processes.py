"""Small process and port helpers for the services the stack runs (no shell anywhere)."""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

# The hard open-files limit on these machines is 20,000; a broker holding 10,000 MQTT
# connections needs most of it.
WANTED_NOFILE = 20_000
# free_ports picks from [PORT_FLOOR, start of the ephemeral range), never these: the local
# stack's defaults and the standard ports of services that may already run on the machine.
PORT_FLOOR = 10_000
DEFAULT_EPHEMERAL_LOW = 32_768
RESERVED_PORTS = frozenset({15672, 15682, 25672, 25682, 27017})


class StackError(RuntimeError):
    """A service could not be started, stopped or reached; the message says which and why."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on (or holds) `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def require_free(ports: Mapping[str, int]) -> None:
    """Raise StackError naming every port of `ports` (label -> number) that is taken."""
    taken = [f"{port} ({label})" for label, port in ports.items() if port_in_use(port)]
    if taken:
        raise StackError("port already in use: " + ", ".join(taken))


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now on 127.0.0.1, below the kernel's ephemeral range.

    Why not bind(0): it hands out ports from the ephemeral range, which every outgoing
    connection on the machine draws from too (thousands of MQTT clients in load tests), so such a
    port was often taken again before the service bound it (RabbitMQ then stops with
    `eaddrinuse`). Ports below that range are only ever taken by an explicit bind.
    """
    rng = random.SystemRandom()
    high = _ephemeral_low()
    chosen: list[int] = []
    socks = []
    try:
        for _ in range(count * 200):
            if len(chosen) == count:
                break
            port = rng.randrange(PORT_FLOOR, high)
            if port in chosen or port in RESERVED_PORTS:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            socks.append(sock)
            chosen.append(port)
        while len(chosen) < count:  # a crowded range: fall back to the kernel's choice
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
            chosen.append(sock.getsockname()[1])
        return chosen
    finally:
        for sock in socks:
            sock.close()


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW
    return low if low > PORT_FLOOR + 1000 else DEFAULT_EPHEMERAL_LOW


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when a TCP connection to `host:port` succeeds."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll `check` until it returns True; raise StackError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise StackError(f"{what} did not become ready within {timeout:.0f} s")


def service_user(name: str) -> pwd.struct_passwd | None:
    """The system user to drop to when running as root, if the package created one."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def chown_tree(path: Path, user: pwd.struct_passwd | None) -> None:
    """Give `path` and everything below it to `user` (no-op when not dropping privileges)."""
    if user is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(WANTED_NOFILE, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def spawn(
    argv: list[str],
    *,
    env: Mapping[str, str],
    log_file: Path,
    user: pwd.struct_passwd | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running service detached from our session, output to `log_file`.

    Running as root, the process drops to `user` directly (not through `su`, which would reset
    the open-files limit to 1024).
    """
    program = shutil.which(argv[0]) or argv[0]
    with log_file.open("ab") as log:
        return subprocess.Popen(
            [program, *argv[1:]],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_raise_nofile,  # noqa: PLW1509 - only setrlimit, no locks taken
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )


def run(
    argv: list[str],
    *,
    env: Mapping[str, str] | None = None,
    user: pwd.struct_passwd | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion, capturing its output."""
    return subprocess.run(
        argv,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
    )


def live_pid(pid_file: Path) -> int | None:
    """The pid written in `pid_file` if that process is alive (postgres writes more lines)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pid_file.read_text().split()[0])
        if pid_alive(pid):
            return pid
    return None


def pid_alive(pid: int) -> bool:
    """True when a process with `pid` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate(pid: int, timeout: float = 30) -> None:
    """SIGTERM `pid`, wait for it to go, SIGKILL if it will not."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        _reap(pid)
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)


def _reap(pid: int) -> None:
    # A child of ours stays a zombie (and "alive") until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 20) -> str:
    """Last `lines` lines of a log file, for error messages."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
