#!/usr/bin/env python3
"""CLI start-up cost: `eveadm get` and `eveadm list` against `python -c pass`, side by side in one run.

Both run with the interpreter eveadm is installed in (this one: run the script
with the project's venv python). Each pair is interleaved, so machine load
weighs on both sides alike; the figures are medians of --runs, as CPU time of
the whole child process (user + sys, from getrusage(RUSAGE_CHILDREN)) and as
wall time, with the ratio eveadm / python. The store holds N running null
domains (so `list` verifies them all with their backend).

    .venv/bin/python bench/cli.py [--runs 15] [--sizes 1000,10000]

Targets: with 1000 domains, `list` <= 3x and `get` <= 2x the CPU time of `python -c pass`. The row
`sqlite3` is the floor under both: `python -c "import sqlite3"`, what any Python CLI that reads
SQLite pays before doing anything.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def eveadm_command() -> list[str]:
    """The installed console script run by this interpreter (not a pyenv shim, not a shell wrapper)."""
    script = Path(sysconfig.get_path("scripts")) / "eveadm"
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "eveadm"]


def populate(root: Path, n: int) -> str:
    import eveadm

    node = eveadm.Node(root=root)
    first = None
    for i in range(n):
        dom = node.create({"brand": "null", "alias": f"d{i}", "ram": 256 + i % 7, "tags": {"i": i}})
        first = first or dom["uuid"]
    return first


def measured(argv, env, input: str | None = None) -> tuple[float, float]:
    """(CPU seconds user+sys, wall seconds) of one run of argv (stdin: `input`)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, input=input, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[1:])} failed: {proc.stderr.strip()}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def compile_src() -> None:
    """Byte-compile eveadm first: with PYTHONDONTWRITEBYTECODE set, every run would compile from source."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "src"), quiet=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--sizes", default="1000,10000")
    args = ap.parse_args()
    compile_src()
    base = [sys.executable, "-c", "pass"]
    # what any Python CLI reading SQLite costs the interpreter, before any work
    floor = [sys.executable, "-c", "import sqlite3"]
    cmd = eveadm_command()
    print(f"interpreter: {sys.executable} ({sys.version.split()[0]}), eveadm: {' '.join(cmd[1:])}")
    print(f"{'domains':>8}  {'command':<7}  {'cpu ms':>7}  {'python':>7}  {'ratio':>6}  "
          f"{'wall ms':>7}  {'python':>7}  {'ratio':>6}")
    for n in (int(s) for s in args.sizes.split(",")):
        root = Path(tempfile.mkdtemp(prefix=f"eveadm-bench-{n}-"))
        try:
            uuid = populate(root, n)
            env = dict(os.environ, EVEADM_ROOT=str(root))
            commands = [("list", cmd + ["list"])] + ([("get", cmd + ["get", uuid])] if n == 1000 else [])
            if n == min(int(s) for s in args.sizes.split(",")):
                commands.append(("sqlite3", floor))  # the floor: python -c 'import sqlite3'
            for name, argv in commands:
                measured(argv, env)  # warm the page cache and .pyc files
                ours, theirs = [], []
                for i in range(args.runs):
                    pair = [(ours, argv), (theirs, base)]
                    for out, run in (pair if i % 2 == 0 else pair[::-1]):  # alternate who goes first
                        out.append(measured(run, env))
                oc, bc = (statistics.median(c for c, _ in x) for x in (ours, theirs))
                ow, bw = (statistics.median(w for _, w in x) for x in (ours, theirs))
                print(f"{n:>8}  {name:<7}  {oc * 1000:>7.1f}  {bc * 1000:>7.1f}  {oc / bc:>6.2f}  "
                      f"{ow * 1000:>7.1f}  {bw * 1000:>7.1f}  {ow / bw:>6.2f}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
