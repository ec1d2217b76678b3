"""Peak resident memory of this process, on Linux, macOS and Windows."""

from __future__ import annotations

import sys


def peak_rss_bytes() -> int:
    if sys.platform == "win32":
        import psutil  # bench/requirements.txt

        return int(psutil.Process().memory_info().peak_wset)
    if sys.platform.startswith("linux"):
        # VmHWM, not getrusage: a child started by fork + exec inherits its parent's ru_maxrss
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS
