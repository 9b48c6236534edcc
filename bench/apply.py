#!/usr/bin/env python3
"""`eveadm apply` of N null domains against N sequential `eveadm create` calls, side by side in one run.

Both start from an empty state root and end with the same N running null domains. The figures are
CPU time of the child processes (user + sys, getrusage(RUSAGE_CHILDREN)) and wall time, medians of
--runs, with the ratio apply / creates. apply should win: one process start, one plan, instead of
N interpreters each parsing, validating and opening the store. Also timed: a second apply of the
same file (the plan finds nothing to do) — the cost of checking that a node has converged.

    .venv/bin/python bench/apply.py [--domains 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli import compile_src, eveadm_command, measured  # noqa: E402  (bench/cli.py)


def measured_all(argvs: list[list[str]], env: dict, inputs: list[str | None]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of running each argv in turn."""
    runs = [measured(argv, env, text) for argv, text in zip(argvs, inputs)]
    return sum(c for c, _ in runs), sum(w for _, w in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    compile_src()
    cmd = eveadm_command()
    payloads = [{"brand": "null", "alias": f"d{i}", "ram": 256, "tags": {"i": i}} for i in range(args.domains)]
    work = Path(tempfile.mkdtemp(prefix="eveadm-bench-apply-"))
    doc = work / "node.json"
    doc.write_text(json.dumps({"domains": payloads}))
    rows: dict[str, list[tuple[float, float]]] = {"creates": [], "apply": [], "apply again": []}
    try:
        for run in range(args.runs):
            for name in ("creates", "apply") if run % 2 == 0 else ("apply", "creates"):
                root = work / f"root-{name}-{run}"
                env = dict(os.environ, EVEADM_ROOT=str(root))
                if name == "creates":
                    rows[name].append(measured_all([cmd + ["create"] for _ in payloads], env,
                                               [json.dumps(p) for p in payloads]))
                else:
                    rows[name].append(measured_all([cmd + ["apply", "-f", str(doc)]], env, [None]))
                    rows["apply again"].append(measured_all([cmd + ["apply", "-f", str(doc)]], env, [None]))
                    got = subprocess.run(cmd + ["list", "-H", "-o", "uuid"], env=env, capture_output=True,
                                         text=True, check=True).stdout.split()
                    assert len(got) == args.domains, f"apply made {len(got)} domains, not {args.domains}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base_cpu = statistics.median(c for c, _ in rows["creates"])
    base_wall = statistics.median(w for _, w in rows["creates"])
    print(f"{args.domains} null domains, median of {args.runs} runs; ratio = against {args.domains} creates")
    print(f"{'':<24}{'cpu s':>8}{'ratio':>8}{'wall s':>9}{'ratio':>8}")
    for name, label in (("creates", f"{args.domains} x eveadm create"), ("apply", "eveadm apply (empty node)"),
                        ("apply again", "eveadm apply (converged)")):
        cpu = statistics.median(c for c, _ in rows[name])
        wall = statistics.median(w for _, w in rows[name])
        print(f"{label:<24}{cpu:>8.2f}{cpu / base_cpu:>8.2f}{wall:>9.2f}{wall / base_wall:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
