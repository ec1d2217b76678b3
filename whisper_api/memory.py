"""Giving memory back to the operating system once a job is done.

A job's decoded audio, mel batches and decoder caches are freed when it ends, but the C
allocator keeps freed blocks in its arenas (glibc gives each Waitress thread its own), so a server
that once held an hour of audio stays that large while idle: on a Radeon 780M the model and
Windows share that RAM. `give_back()` collects Python's garbage and asks the allocator to return
its free pages (glibc's malloc_trim on Linux, the CRT's _heapmin on Windows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys
from functools import lru_cache

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _trim():
    """The platform's "return free heap pages" call, or None where there is none."""
    try:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            trim = libc.malloc_trim
            trim.argtypes = [ctypes.c_size_t]
            trim.restype = ctypes.c_int
            return lambda: trim(0)
        if sys.platform == "win32":  # the Universal CRT's heap, which CPython and its wheels use
            return ctypes.cdll.ucrtbase._heapmin
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        log.debug("no allocator trim on this platform: freed memory stays with the process until reused")
    return None


# glibc's mallopt parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# Blocks up to this size (glibc's largest: encoder activations, decoder caches, mel batches) are
# served from the arenas and reused from one model call to the next. Mapped on their own instead,
# each would be unmapped when freed and its every 4 KB page faulted in again at the next call: four
# million page faults for a 10-minute lecture with a 4 MB threshold, a tenth of its time on two
# cores. Larger blocks (an hour of decoded audio) are still mapped and unmapped.
MMAP_THRESHOLD_BYTES = 32 << 20
# Free memory at the top of an arena is not handed back at every free() (nor faulted in again at
# the next call) while a job runs: `give_back()` hands all of it back, pages inside the arenas
# too, when a job ends.
TRIM_THRESHOLD_BYTES = 1 << 30
# Arenas for all threads together: each Waitress thread would otherwise get its own, every one
# grown to the largest job that thread ever ran.
ARENA_MAX = 2


def configure_allocator() -> None:
    """For a server process, before its threads start (glibc only; elsewhere nothing to do)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        libc.mallopt(M_ARENA_MAX, ARENA_MAX)
    except (OSError, AttributeError):
        pass


def settle_after_start_up() -> None:
    """Once the model is loaded: the objects alive now (the model's modules, the tokenizer, the
    libraries: about 400,000 for Whisper base) stay for the life of the server, so the cyclic
    garbage collector stops scanning them (`gc.freeze`). Each full collection otherwise takes
    about 0.2 s on two cores, holding the interpreter lock: `give_back()` makes one after every
    job, and the model's steps for the other jobs wait meanwhile."""
    gc.collect()
    gc.freeze()


def give_back() -> None:
    gc.collect()
    trim = _trim()
    if trim is not None:
        trim()


def note_job() -> None:
    """Mark this request as one that ran a job: its memory is given back when it ends."""
    from flask import g

    g.memory_to_give_back = True


def init_app(app) -> None:
    from flask import g

    @app.teardown_request
    def give_back_after_a_job(_error: BaseException | None) -> None:
        # teardown: the upload and its decoded samples are no longer referenced
        if g.pop("memory_to_give_back", False):
            give_back()
