"""Helpers shared by the benchmark scripts: running the CLI, machine info, tables, result files."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / ".bench"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def laionet_cmd(*args: str) -> list[str]:
    """The CLI of the installed package, run with this interpreter (same venv)."""
    return [sys.executable, "-m", "laionet", *map(str, args)]


def run_cli(args: list[str], env: dict | None = None) -> tuple[float, str]:
    """Run `laionet ARGS` as a whole process; (wall seconds, stderr). Raises with the output on failure."""
    cmd = laionet_cmd(*args)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return seconds, proc.stderr.strip()


class CliRun:
    """`laionet ARGS` started in the background; `wait()` -> (wall seconds, stderr) like `run_cli`."""

    def __init__(self, args: list[str], env: dict | None = None):
        self.cmd = laionet_cmd(*args)
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=None if env is None else {**os.environ, **env})

    def wait(self) -> tuple[float, str]:
        stdout, stderr = self.proc.communicate()
        seconds = time.perf_counter() - self.start
        if self.proc.returncode != 0:
            raise SystemExit(f"command failed ({self.proc.returncode}): {' '.join(self.cmd)}\n{stdout}{stderr}")
        return seconds, stderr.strip()


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    info = {"hostname": socket.gethostname(), "cpu": cpu, "cpu_count": os.cpu_count(), "memory_gib": memory_gib,
            "platform": platform.platform(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    try:
        info["loadavg_1m_5m_15m"] = [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        pass
    try:
        from laionet.io.manifest import package_versions

        info["versions"] = package_versions()
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info


def busy_warning(cores_needed: float = 1.0) -> str | None:
    """A warning when other processes keep the CPUs busy (timings then read low)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return None
    if load > cores_needed:
        return (f"warning: 1-minute load average is {load:.2f} before the benchmark starts; other processes "
                f"share the CPUs, so timings may read low")
    return None


def write_results(name: str, results: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{socket.gethostname()}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def print_table(rows: list[tuple], headers: tuple[str, ...]) -> None:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def rate(rows: int, seconds: float | None) -> float | None:
    return rows / seconds if seconds else None


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}x"
