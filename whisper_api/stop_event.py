"""Windows' stop request from another process: a named kernel event per port. The server creates
it and waits on it; `python -m whisper_api stop` sets it. A process in another console (or with
none, started by a Scheduled Task) cannot be sent Ctrl+C, and TerminateProcess has no grace.

The event gets the server's default security: the user who started the server (and SYSTEM) may
set it, other users may not. It closes with the server's process, so it cannot outlive it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# "Global\" reaches a server in another session (a task that runs whether or not the user is
# logged on runs in session 0); "Local\" is the fallback when the global name cannot be had
# (another user's object of that name). The stop command tries them in this order too.
NAMESPACES = ("Global", "Local")
# How often the waiting thread looks whether the server closed the event.
POLL_MILLISECONDS = 500

EVENT_MODIFY_STATE = 0x0002
WAIT_OBJECT_0 = 0x00000000
WAIT_TIMEOUT = 0x00000102
ERROR_ALREADY_EXISTS = 183


def event_names(port: int) -> list[str]:
    """The event's names for a server on `port`, in the order both sides try them."""
    return [f"{namespace}\\whisper-api-stop-{port}" for namespace in NAMESPACES]


def _kernel32():
    """kernel32 with every function used here declared: HANDLE is pointer-sized (a default int
    return would cut a 64-bit handle), and the last error is kept per thread."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # its own instance: no one else's declarations
    kernel32.CreateEventW.argtypes = (wintypes.LPVOID, wintypes.BOOL, wintypes.BOOL, wintypes.LPCWSTR)
    kernel32.CreateEventW.restype = wintypes.HANDLE
    kernel32.OpenEventW.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.LPCWSTR)
    kernel32.OpenEventW.restype = wintypes.HANDLE
    kernel32.SetEvent.argtypes = (wintypes.HANDLE,)
    kernel32.SetEvent.restype = wintypes.BOOL
    kernel32.WaitForSingleObject.argtypes = (wintypes.HANDLE, wintypes.DWORD)
    kernel32.WaitForSingleObject.restype = wintypes.DWORD
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    kernel32.CloseHandle.restype = wintypes.BOOL
    return kernel32


def listen(port: int, on_stop: Callable[[str], None]) -> Callable[[], None]:
    """Create the event for `port` and call `on_stop("stop command")` each time it is set (an
    auto-reset event: a second stop command is a second stop request, like a second Ctrl+C).
    Returns a function that stops listening and closes the event."""
    import ctypes

    kernel32 = _kernel32()
    handle, error = None, 0
    for name in event_names(port):
        ctypes.set_last_error(0)
        # not inheritable (no security attributes), auto-reset, not set
        handle = kernel32.CreateEventW(None, False, False, name)
        error = ctypes.get_last_error()
        if handle and error == ERROR_ALREADY_EXISTS:
            # someone else made it: whoever may set it could stop this server; take the next name
            kernel32.CloseHandle(handle)
            handle = None
        if handle:
            break
    if not handle:
        log.warning("cannot create the stop event (error %d): `python -m whisper_api stop` cannot stop this "
                    "server gracefully; Ctrl+C in its window can", error)
        return lambda: None

    closing = threading.Event()

    def wait() -> None:
        while not closing.is_set():
            result = kernel32.WaitForSingleObject(handle, POLL_MILLISECONDS)
            if result == WAIT_OBJECT_0 and not closing.is_set():
                on_stop("stop command")
            elif result not in (WAIT_OBJECT_0, WAIT_TIMEOUT):  # WAIT_FAILED: the handle is unusable
                log.warning("waiting for the stop event failed (error %d)", ctypes.get_last_error())
                return

    waiter = threading.Thread(target=wait, name="whisper-api stop event", daemon=True)
    waiter.start()

    def close() -> None:
        closing.set()
        waiter.join(timeout=2 * POLL_MILLISECONDS / 1000)
        if not waiter.is_alive():  # never close a handle a thread still waits on
            kernel32.CloseHandle(handle)

    return close


def request_stop(port: int) -> bool:
    """Set the stop event of the server on `port`; False when there is none this user may set
    (no server of this version, one still loading its model, or another user's)."""
    kernel32 = _kernel32()
    for name in event_names(port):
        handle = kernel32.OpenEventW(EVENT_MODIFY_STATE, False, name)
        if handle:
            try:
                return bool(kernel32.SetEvent(handle))
            finally:
                kernel32.CloseHandle(handle)
    return False
