"""What every benchmark's results file needs: the machine it ran on, and the file itself."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1/5/15-minute load averages, as a results file quotes them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def write_report(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Write the Markdown ``lines`` to ``path`` (folders made) and echo them."""
    text = "\n".join(lines)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    return path
