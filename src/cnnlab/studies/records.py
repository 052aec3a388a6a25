"""What a benchmark's result file records besides its numbers: the commit and whether the
tree was dirty, the machine, its load, the process's memory. Every script in
``benchmarks/`` and ``cnnlab bench`` write the same head (:func:`result_record`)."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import torch


def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def gpu_peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def load_avg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def commit() -> str:
    """The git commit of the source tree cnnlab runs from, else the package version
    (:func:`dirty` says whether that tree has uncommitted changes)."""
    sha = _git("rev-parse", "HEAD")
    if not sha:
        from cnnlab._version import __version__

        return f"cnnlab {__version__}"
    return sha


def dirty() -> bool | None:
    """Whether the source tree has uncommitted changes to tracked files (None: no git)."""
    if not _git("rev-parse", "HEAD"):
        return None
    return bool(_git("status", "--porcelain", "--untracked-files=no"))


def _git(*args: str) -> str:
    here = Path(__file__).resolve().parent
    try:
        return subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def result_record(kind: str, command: str, seeds, device: str = "cpu", **fields) -> dict:
    """The head every result file under benchmarks/results/ carries (kind, command, commit,
    date, machine, device, torch, seeds), then ``fields``."""
    return {
        "kind": kind,
        "command": command,
        "commit": commit(),
        "dirty": dirty(),
        "date": datetime.now().strftime("%Y-%m-%d"),
        "machine": machine_name(),
        "device": device,
        "torch": torch.__version__.split("+")[0],
        "seeds": list(seeds),
        **fields,
    }


def machine_name() -> str:
    """``<n>-core <CPU model>, <RAM> GiB`` (Linux), else the platform string."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        ram = f", {kb / 2**20:.0f} GiB"
    from cnnlab.runtime.device import available_cores

    return f"{available_cores()}-core {model}{ram}"


def machine() -> dict:
    d = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_avg": load_avg(),
    }
    if torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name(0)
    return d
