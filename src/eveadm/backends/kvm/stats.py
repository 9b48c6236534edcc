"""Counters of running kvm domains (`eveadm stats`, the agent's metrics), all read in one pass.

    cpu_seconds    utime + stime of the QEMU process (/proc/PID/stat): its vCPU threads and QEMU's
                   own work (device emulation, and under TCG the translation), what the domain costs
    memory_bytes   VmRSS of the QEMU process (/proc/PID/status): guest RAM touched so far plus QEMU's own
    disk_*         QMP `query-blockstats`, summed over every block device of the domain (its disks,
                   the cloud-init CD, the UEFI variable store); one QMP session per domain, all at once
    net_*          the host side of each tap (/sys/class/net/TAP/statistics), turned to the guest's side:
                   what the tap transmitted, the guest received

A monitor that does not answer within STATS_TIMEOUT (busy with another client) costs that domain its
disk fields for this reading, never the others' or its CPU and memory.
"""

from __future__ import annotations

import os

from ..host import guest_side_traffic
from .qmp import qmp_many

STATS_TIMEOUT = 1.5  # s: as status, how long a reading waits for a busy monitor
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BLOCK_FIELDS = (("rd_bytes", "disk_read_bytes"), ("wr_bytes", "disk_write_bytes"),
                ("rd_operations", "disk_read_ops"), ("wr_operations", "disk_write_ops"))


def read(targets: dict[str, tuple[int, str, list[str]]]) -> dict[str, dict]:
    """{uuid: (QEMU pid, QMP socket, tap names)} of live QEMUs -> {uuid: stats}."""
    out = {uuid: process_stats(pid) for uuid, (pid, _, _) in targets.items()}
    answers = qmp_many({u: (sock, ["query-blockstats"]) for u, (_, sock, _) in targets.items()},
                       timeout=STATS_TIMEOUT)
    for uuid, answer in answers.items():
        if not isinstance(answer, BaseException):
            out[uuid].update(block_totals(answer[0]))
    for uuid, (_, _, taps) in targets.items():
        out[uuid].update(guest_side_traffic(taps))
    return {uuid: stats for uuid, stats in out.items() if stats}


def process_stats(pid: int) -> dict:
    """cpu_seconds and memory_bytes of one process; {} when it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()  # the name before ")" may hold blanks
        out["cpu_seconds"] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    out["memory_bytes"] = int(line.split()[1]) * 1024
                    break
    except (OSError, IndexError, ValueError):
        pass  # it ended meanwhile: what was read stands
    return out


def block_totals(blockstats: list[dict]) -> dict:
    """query-blockstats' answer -> the disk_* fields, summed over the devices."""
    out = {field: 0 for _, field in BLOCK_FIELDS}
    for dev in blockstats:
        counters = dev.get("stats") or {}
        for key, field in BLOCK_FIELDS:
            out[field] += int(counters.get(key) or 0)
    return out
