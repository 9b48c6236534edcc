"""Counters of running containers (`eveadm stats`, the agent's metrics), read from their cgroups.

A container's cgroup is /eveadm/<uuid> in every mounted hierarchy (parts.py). Each field is read
from whichever hierarchy has it, cgroup v1 first, then v2 (a hybrid host has both):

    cpu_seconds    v1 cpuacct.usage (ns); v2 cpu.stat usage_usec
    memory_bytes   the working set, as `docker stats` shows it: v1 memory.usage_in_bytes minus
                   memory.stat total_inactive_file; v2 memory.current minus inactive_file
    disk_*         v2 io.stat rbytes, wbytes, rios, wios, summed over the block devices, where the
                   container's cgroup2 has the io controller. Elsewhere read_bytes and write_bytes of
                   /proc/PID/io summed over the container's processes (no ops: the kernel counts none
                   per process): a process's counts include those of the children it reaped, and the
                   container's init reaps every orphan, so they cover the container's life. cgroup v1's
                   blkio.throttle.* files are not used: since Linux 6.9 they count only on a device
                   with a throttle limit set, and read 0 everywhere else
    net_*          the host side of each nic's veth (/sys/class/net/VETH/statistics), turned to the
                   container's side: what the veth transmitted, the container received

Reading is pure: files under /sys only, no command.
"""

from __future__ import annotations

import os

from ..host import guest_side_traffic
from .parts import CGROUP_PARENT, cgroup_pids, cgroup_roots


def read(targets: dict[str, list[str]]) -> dict[str, dict]:
    """{uuid: host-side veth names} -> {uuid: stats}; a container without a cgroup is left out."""
    roots = cgroup_roots()
    out = {}
    for uuid, veths in targets.items():
        dirs = [d for d in (os.path.join(root, CGROUP_PARENT, uuid) for root in roots) if os.path.isdir(d)]
        stats = cgroup_stats(dirs)
        if stats:
            stats.update(guest_side_traffic(veths))
            out[uuid] = stats
    return out


def cgroup_stats(dirs: list[str]) -> dict:
    out: dict = {}
    for d in dirs:
        if "cpu_seconds" not in out:
            if (ns := _number(d, "cpuacct.usage")) is not None:
                out["cpu_seconds"] = ns / 1e9
            elif (usec := _keyed(d, "cpu.stat").get("usage_usec")) is not None:
                out["cpu_seconds"] = usec / 1e6
        if "memory_bytes" not in out:
            if (used := _number(d, "memory.usage_in_bytes")) is not None:
                out["memory_bytes"] = max(0, used - _keyed(d, "memory.stat").get("total_inactive_file", 0))
            elif (used := _number(d, "memory.current")) is not None:
                out["memory_bytes"] = max(0, used - _keyed(d, "memory.stat").get("inactive_file", 0))
        if "disk_read_bytes" not in out:
            out.update(_io_stat(d))
    if out and "disk_read_bytes" not in out:
        out.update(_proc_io(cgroup_pids(dirs)))
    return out


def _read(d: str, name: str) -> str | None:
    try:
        with open(os.path.join(d, name)) as fh:
            return fh.read()
    except OSError:
        return None


def _number(d: str, name: str) -> int | None:
    text = _read(d, name)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _keyed(d: str, name: str) -> dict[str, int]:
    """A flat keyed file: `key value` lines (cpu.stat, memory.stat) or `key: value` (/proc/PID/io)."""
    out = {}
    for line in (_read(d, name) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key.rstrip(":")] = int(value)
    return out


def _proc_io(pids) -> dict:
    """read_bytes / write_bytes of /proc/PID/io, summed; {} when no process could be read."""
    out, seen = {"disk_read_bytes": 0, "disk_write_bytes": 0}, False
    for pid in pids:
        counters = _keyed(f"/proc/{pid}", "io")
        if "read_bytes" in counters:
            out["disk_read_bytes"] += counters["read_bytes"]
            out["disk_write_bytes"] += counters.get("write_bytes", 0)
            seen = True
    return out if seen else {}


def _io_stat(d: str) -> dict:
    """cgroup v2: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N ...` lines of io.stat."""
    text = _read(d, "io.stat")
    if text is None:
        return {}
    names = {"rbytes": "disk_read_bytes", "wbytes": "disk_write_bytes", "rios": "disk_read_ops",
             "wios": "disk_write_ops"}
    out = dict.fromkeys(names.values(), 0)
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key in names and value.isdigit():
                out[names[key]] += int(value)
    return out
