#!/usr/bin/env python3
"""CLI start-up cost: median wall time of `eveadm get` and `eveadm list` with 1, 100 and 1000 null
domains in the store, each as a ratio to `python3 -c pass` run with the same interpreter,
interleaved in the same run (so machine load affects both sides alike).

    python3 bench/cli.py [--runs 21] [--sizes 1,100,1000]
"""

from __future__ import annotations

import argparse
import os
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


def timed(argv, env) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--sizes", default="1,100,1000")
    args = ap.parse_args()
    # byte-compile first: with PYTHONDONTWRITEBYTECODE set, every run would compile from source
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "src"), quiet=1)
    base = [sys.executable, "-c", "pass"]
    cmd = eveadm_command()
    print(f"interpreter: {sys.executable} ({sys.version.split()[0]}), eveadm: {' '.join(cmd[1:])}")
    print(f"{'domains':>8}  {'command':<6}  {'eveadm ms':>9}  {'python ms':>9}  {'ratio':>6}")
    for n in (int(s) for s in args.sizes.split(",")):
        root = Path(tempfile.mkdtemp(prefix=f"eveadm-bench-{n}-"))
        try:
            uuid = populate(root, n)
            env = dict(os.environ, EVEADM_ROOT=str(root))
            for name, argv in (("get", cmd + ["get", uuid]), ("list", cmd + ["list"])):
                timed(argv, env)  # warm the page cache and .pyc files
                ours, theirs = [], []
                for _ in range(args.runs):
                    ours.append(timed(argv, env))
                    theirs.append(timed(base, env))
                mo, mb = statistics.median(ours), statistics.median(theirs)
                print(f"{n:>8}  {name:<6}  {mo * 1000:>9.1f}  {mb * 1000:>9.1f}  {mo / mb:>6.2f}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
