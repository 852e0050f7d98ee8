"""Describe the machine a measurement ran on (benchmarks, reports and deploy statistics print it)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, Any]:
    """CPU, cores (total and usable by this process), memory, Python, platform, load average."""
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = float("nan")
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def describe_machine() -> str:
    """One line: CPU, cores, memory, Python, the torch version and GPU when torch is already imported."""
    info = machine_info()
    text = (
        f"{info['cpu']}, {info['cores_usable']} of {info['cores']} cores, {info['memory_gib']:.0f} GiB, "
        f"Python {info['python']}"
    )
    torch = sys.modules.get("torch")  # never import torch just to describe the machine
    if torch is not None:
        text += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name(0)}"
    if info["load_average"] is not None:
        text += f", load average {info['load_average'][0]:.2f}"
    return text
