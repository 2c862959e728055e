"""What the host did beside a measurement: on a shared (virtual) machine the
hypervisor's steal time says which runs were disturbed."""
from __future__ import annotations

import os


def steal_s() -> float:
    """Seconds of all CPUs' time the hypervisor gave to other guests since boot
    (/proc/stat's steal column); 0 where the host does not report it."""
    try:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0
