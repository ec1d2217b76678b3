"""`python -m whisper_api stop`: find the whisper-api server listening on a port, ask it to stop
gracefully (SIGTERM on POSIX, its stop event on Windows: the same path as Ctrl+C), wait until its
process has exited and say what happened in one line. Another program on the port is left running."""

from __future__ import annotations

import signal
import socket
import sys
import time
from dataclasses import dataclass

import psutil

from . import stop_event
from .config import config_path_from_environment, load_settings

# After the grace period the server gives a cancelled job up to 20 s to reach its next decoding
# step (server.UNWIND_SECONDS) before it closes; the default wait covers that and the exit.
WAIT_MARGIN_SECONDS = 30.0
# How long --force waits for a killed process to be gone.
KILL_WAIT_SECONDS = 10.0
FORCE_HINT = "with --force (run.ps1 -Stop -Force) it is ended at once, its running transcriptions lost"


@dataclass(frozen=True)
class Outcome:
    """What happened to one listener: the line printed, and the command's exit code."""

    message: str
    exit_code: int


def default_wait(grace_seconds: float) -> float:
    return grace_seconds + WAIT_MARGIN_SECONDS


def is_whisper_api(command_line: list[str]) -> bool:
    """A `python -m whisper_api` process. A path that merely contains the name (a project folder
    called whisper_api running some other program) does not count."""
    for index, argument in enumerate(command_line):
        if argument == "-mwhisper_api" or (argument == "-m" and command_line[index + 1:index + 2] == ["whisper_api"]):
            return True
    return False


def run_stop(config: str | None, port: int | None, wait_seconds: float | None, force: bool) -> int:
    """The command: print one line per listener on the port; 0 when no whisper-api runs there now."""
    if port is None or wait_seconds is None:
        server = load_settings(config_path_from_environment(config)).server
        port = server.port if port is None else port
        wait_seconds = default_wait(server.shutdown_grace_seconds) if wait_seconds is None else wait_seconds
    outcomes = stop(port, wait_seconds, force)
    for outcome in outcomes:
        print(outcome.message, flush=True)
    return max(outcome.exit_code for outcome in outcomes)


def stop(port: int, wait_seconds: float, force: bool) -> list[Outcome]:
    listeners, unseen = listening_processes(port)
    if not listeners:
        if unseen:
            return [Outcome(f"Port {port} is held by a program this user cannot look at (another user's?): "
                            "left running.", 1)]
        return [Outcome(f"No server is listening on port {port}: nothing to stop.", 0)]
    return [stop_listener(process_id, port, wait_seconds, force) for process_id in sorted(listeners)]


def listening_processes(port: int) -> tuple[set[int], bool]:
    """Ids of the processes listening on TCP `port`, and whether something listens there whose
    process is not known (another user's, to a user who is not root on Linux or macOS)."""
    connections, complete = _tcp_connections()
    listeners: set[int] = set()
    unseen = False
    for process_id, connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
            if process_id:
                listeners.add(process_id)
            else:
                unseen = True
    if not listeners and not unseen and not complete:
        unseen = port_answers(port)
    return listeners, unseen


def _tcp_connections() -> tuple[list, bool]:
    """(process id or None, connection) for the TCP sockets this user may see, and whether that is
    every socket on the machine."""
    try:
        return [(connection.pid, connection) for connection in psutil.net_connections(kind="tcp")], True
    except psutil.AccessDenied:  # macOS lists every process' sockets to root only: this user's
        found = []
        for process in psutil.process_iter():
            try:
                connections = getattr(process, "net_connections", None) or process.connections  # psutil < 6
                found += [(process.pid, connection) for connection in connections(kind="tcp")]
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        return found, False


def port_answers(port: int) -> bool:
    """Whether something accepts connections on the port on this PC."""
    for host in ("127.0.0.1", "::1"):
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            continue
    return False


def stop_listener(process_id: int, port: int, wait_seconds: float, force: bool) -> Outcome:
    try:
        process = psutil.Process(process_id)
        name = process.name()
        command_line = process.cmdline()
    except psutil.NoSuchProcess:
        return Outcome(f"No server is listening on port {port} any more: nothing to stop.", 0)
    except psutil.AccessDenied:  # another user's process
        name, command_line = "unknown", []
    if not is_whisper_api(command_line):
        return Outcome(f"Port {port} belongs to another program ({name}, process {process_id}): left running.", 1)
    label = f"whisper-api (process {process_id}) on port {port}"
    started = time.monotonic()
    try:
        asked = ask_to_stop(process, port)
    except psutil.NoSuchProcess:
        asked = True
    except psutil.AccessDenied:
        return Outcome(f"{label} is another user's: left running.", 1)
    if not asked:
        if force:
            return kill(process, label, "cannot be asked to stop gracefully")
        return Outcome(f"{label} cannot be asked to stop gracefully (it is still loading its model, or it is older "
                       f"than this command): left running; {FORCE_HINT}.", 1)
    if not wait_until_gone(process, wait_seconds):
        if force:
            return kill(process, label, f"did not stop within {wait_seconds:g} s")
        return Outcome(f"{label} is still running after {wait_seconds:g} s (its log says what it is waiting for): "
                       f"left running; {FORCE_HINT}.", 1)
    return Outcome(f"Stopped {label} gracefully in {time.monotonic() - started:.1f} s.", 0)


def ask_to_stop(process: psutil.Process, port: int) -> bool:
    """The graceful stop request, as Ctrl+C in its window would make it; False when the process
    cannot receive one."""
    if sys.platform == "win32":  # no signal reaches a process in another console (or none)
        return stop_event.request_stop(port)
    process.send_signal(signal.SIGTERM)
    return True


def kill(process: psutil.Process, label: str, why: str) -> Outcome:
    """--force: end the process at once (running transcriptions are lost, their clients get no answer)."""
    try:
        process.kill()
    except psutil.NoSuchProcess:
        pass
    except psutil.AccessDenied:
        return Outcome(f"{label} {why}, and this user may not end it: left running.", 1)
    if not wait_until_gone(process, KILL_WAIT_SECONDS):
        return Outcome(f"{label} {why}, and was still running {KILL_WAIT_SECONDS:g} s after being ended.", 1)
    return Outcome(f"{label} {why}: ended it at once (--force).", 0)


def wait_until_gone(process: psutil.Process, timeout_seconds: float) -> bool:
    """Whether the process exits within the time. An exited process its parent has not collected
    yet (a zombie, on POSIX) counts as gone: psutil's wait alone would wait for the parent."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            process.wait(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            return True
        except psutil.TimeoutExpired:
            pass
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
