"""The operating system asking the server to stop: SIGINT (Ctrl+C), SIGTERM and SIGHUP on POSIX;
Ctrl+C, Ctrl+Break and closing the console window (or logging off, shutting down) on Windows, and
there `python -m whisper_api stop` from another process (stop_event.py: Windows has no signal for it).

Each is turned into one call of `on_stop(name)`; what a stop means is the server's business.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable

from . import stop_event

log = logging.getLogger(__name__)

# Windows gives a console's process about 5 s after these events, then ends it.
CONSOLE_CLOSE_WAIT_SECONDS = 4.5
_CONSOLE_EVENTS = {2: "console closed", 5: "user logging off", 6: "system shutting down"}


def install(on_stop: Callable[[str], None], finished: threading.Event, port: int | None = None) -> Callable[[], None]:
    """Route the stop signals to `on_stop`; returns a function that puts the old handlers back.
    `finished` is set by the server once it has stopped (Windows' console-close handler waits on
    it, since returning from that handler ends the process). `port`, the one the server listens
    on, names its Windows stop event."""
    names = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"]
    previous: dict[int, object] = {}
    for name in names:
        number = getattr(signal, name, None)
        if number is None:
            continue
        try:
            if signal.getsignal(number) is signal.SIG_IGN:
                continue  # ignored on purpose (SIGHUP under nohup): keep it so
            previous[number] = signal.signal(number, lambda received, frame: on_stop(signal.Signals(received).name))
        except (OSError, ValueError):  # not the main thread, or not a signal this platform can catch
            continue
    console_handler = _install_console_handler(on_stop, finished) if sys.platform == "win32" else None
    close_stop_event = stop_event.listen(port, on_stop) if sys.platform == "win32" and port is not None else None

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if console_handler is not None:
            _set_console_handler(console_handler, add=False)
        if close_stop_event is not None:
            close_stop_event()

    return restore


def _install_console_handler(on_stop: Callable[[str], None], finished: threading.Event):
    """Closing the console window sends CTRL_CLOSE_EVENT, which Python maps to no signal."""
    import ctypes
    from ctypes import wintypes

    @ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)
    def handler(event: int) -> bool:
        name = _CONSOLE_EVENTS.get(event)
        if name is None:
            return False  # Ctrl+C and Ctrl+Break: Python's own handler turns them into signals
        on_stop(name)
        on_stop(name)  # no time for a grace period: Windows ends the process within seconds
        finished.wait(CONSOLE_CLOSE_WAIT_SECONDS)
        return True

    _set_console_handler(handler, add=True)
    return handler


def _set_console_handler(handler, add: bool) -> None:
    import ctypes

    if not ctypes.windll.kernel32.SetConsoleCtrlHandler(handler, add):
        log.debug("SetConsoleCtrlHandler failed: closing the console will not stop the server gracefully")
