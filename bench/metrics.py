#!/usr/bin/env python3
"""The agent's scrape cost: CPU time per `/metrics` scrape against `eveadm list`, on the same node, in one run.

The node holds N running null domains. Side by side, interleaved (machine load weighs on all alike):

    eveadm list          one CLI process: start-up, verify every domain with its backend, print the table
                         (CPU of the child process, getrusage(RUSAGE_CHILDREN))
    Node.list()          the same listing in-process, without the interpreter's start-up
    /metrics scrape      one HTTP GET of `eveadm agent --metrics`: the agent's CPU for it (its own
                         utime + stime from /proc/PID/stat, over --scrapes scrapes, divided); the agent
                         runs with --interval 3600, so its own verification ticks do not count

Figures are medians of --runs; the ratio is against `eveadm list`. A scrape does what `list` does
(one truth-on-read pass), plus one `stats` call per brand and the journal written since the scrape
before, in a process that is already running.

    .venv/bin/python bench/metrics.py [--domains 100] [--runs 5] [--scrapes 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli import compile_src, eveadm_command, measured, populate  # noqa: E402  (bench/cli.py)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def in_process_list(root: Path) -> float:
    import eveadm

    node = eveadm.Node(root=root)
    t0 = time.process_time()
    node.list(fields=["uuid", "type", "ram", "state", "alias"])
    return time.process_time() - t0


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def scrapes(agent_pid: int, url: str, n: int) -> float:
    """The agent's CPU seconds per scrape, over n scrapes."""
    before = process_cpu(agent_pid)
    for _ in range(n):
        scrape(url)
    return (process_cpu(agent_pid) - before) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scrapes", type=int, default=50)
    args = ap.parse_args()
    compile_src()
    cmd = eveadm_command()
    work = Path(tempfile.mkdtemp(prefix="eveadm-bench-metrics-"))
    root = work / "root"
    env = dict(os.environ, EVEADM_ROOT=str(root))
    populate(root, args.domains)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    agent = subprocess.Popen(cmd + ["agent", "--interval", "3600", "--metrics", str(port)], env=env,
                             stderr=subprocess.PIPE, text=True)
    rows: dict[str, list[float]] = {"list": [], "node": [], "scrape": []}
    try:
        for line in agent.stderr:  # the agent says where it serves once it does
            if "metrics on" in line:
                break
        else:
            raise SystemExit("bench: the agent ended before serving metrics")
        body = scrape(url)  # the first scrape reads the whole journal: not what a scrape costs after
        series = sum(1 for ln in body.decode().splitlines() if ln and not ln.startswith("#"))
        for _ in range(args.runs):
            rows["list"].append(measured(cmd + ["list"], env)[0])
            rows["node"].append(in_process_list(root))
            rows["scrape"].append(scrapes(agent.pid, url, args.scrapes))
    finally:
        agent.terminate()
        agent.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(rows["list"])
    print(f"{args.domains} running null domains, median of {args.runs} runs; a scrape is {len(body)} bytes, "
          f"{series} samples; ratio = against eveadm list")
    print(f"{'':<36}{'cpu ms':>8}{'ratio':>8}")
    for name, label in (("list", "eveadm list (a CLI process)"), ("node", "Node.list() in-process"),
                        ("scrape", f"/metrics scrape (agent CPU, /{args.scrapes})")):
        cpu = statistics.median(rows[name])
        print(f"{label:<36}{cpu * 1000:>8.1f}{cpu / base:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
