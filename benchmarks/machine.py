"""What every benchmark records about the machine it ran on, so numbers stay comparable."""

from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    """CPU count, platform, Python and torch versions, torch threads, and the load average
    (a number measured on a busy shared machine is not that machine's speed)."""
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()),
    }
