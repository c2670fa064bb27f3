"""Processes by /proc (no psutil): who is under whom, alive or not, and with what command line."""

from __future__ import annotations

import os
from pathlib import Path

# A process is (pid, start time in clock ticks since boot), so a reused pid is never mistaken for ours.
Proc = tuple[int, int]


def pids() -> list[int]:
    """Every process's pid, now."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def environ(pid: int) -> list[bytes]:
    """The process's environment as ``KEY=VALUE`` entries; [] once it is gone or not ours to read."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, ..., starttime at [19]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cmdline(pid: int) -> list[str]:
    """The process's arguments; [] once it is gone."""
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def descendants(root: int) -> set[Proc]:
    """Every live process under ``root``."""
    children: dict[int, list[Proc]] = {}
    for pid in pids():
        if (stat := stat_fields(pid)) is not None:
            children.setdefault(int(stat[1]), []).append((pid, int(stat[19])))
    found: set[Proc] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def proc_of(pid: int) -> Proc | None:
    """The process ``pid`` is now, as a ``Proc``; None once it is gone."""
    stat = stat_fields(pid)
    return None if stat is None else (pid, int(stat[19]))


def alive(proc: Proc) -> bool:
    stat = stat_fields(proc[0])
    return stat is not None and stat[0] != "Z" and int(stat[19]) == proc[1]
