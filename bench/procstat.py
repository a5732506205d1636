"""Reading CPU time, memory and machine load from /proc (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces or parentheses: split after its closing one.
    return raw[raw.rfind(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    """Map every live pid to its direct children."""
    tree: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def descendants(root: int, tree: dict[int, list[int]] | None = None) -> list[int]:
    """Return root and all its live descendants."""
    tree = children_map() if tree is None else tree
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """Sum user+system CPU of the pids, including reaped children (cutime/cstime)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # utime, stime, cutime, cstime: a worker that died mid-run still counts via its parent.
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / CLK_TCK


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """Return (user, system) CPU seconds of the pids, reaped children included."""
    user = system = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            user += int(fields[11]) + int(fields[13])
            system += int(fields[12]) + int(fields[14])
    return user / CLK_TCK, system / CLK_TCK


def context_switches(pids: list[int]) -> int:
    """Return voluntary + involuntary context switches of every thread of the pids."""
    total = 0
    for pid in pids:
        try:
            tasks = list((PROC / str(pid) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
            except OSError:
                continue
    return total


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_kib(pid: int) -> int | None:
    """Return the process's peak resident set size (VmHWM) in KiB."""
    return _status_kib(pid, "VmHWM")


def rss_kib(pid: int) -> int | None:
    """Return the process's current resident set size in KiB."""
    return _status_kib(pid, "VmRSS")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (needs root or the same user), so peaks are per scenario."""
    try:
        (PROC / str(pid) / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class MachineCPU:
    """Machine-wide CPU jiffies from /proc/stat."""

    busy: int
    total: int
    steal: int

    @classmethod
    def read(cls) -> MachineCPU:
        """Read the aggregate cpu line."""
        with open(PROC / "stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
        busy = user + nice + system + irq + softirq + steal
        return cls(busy=busy, total=busy + idle + iowait, steal=steal)


def loadavg() -> float:
    """Return the 1-minute load average."""
    return float((PROC / "loadavg").read_text().split()[0])
