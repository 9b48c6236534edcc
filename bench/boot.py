#!/usr/bin/env python3
"""kvm brand: eveadm against QEMU by hand, side by side.

  create-to-ready  `eveadm create` (autoboot) from exec until the guest prints
                   EVEADM-GUEST-READY on its serial log, against the same QEMU argv
                   (as KvmBackend renders it, minus -S) started by hand with Popen.
  stop             `eveadm stop UUID` from exec until it returns (guest confirmed
                   gone, files released), against a minimal script run by the same
                   interpreter that connects to the same kind of QMP socket, sends
                   system_powerdown and waits until QEMU exits (the hand QEMU runs
                   without -no-shutdown, so it exits by itself on poweroff).

Pairs are interleaved, and the side that goes first alternates from pair to pair
(eveadm-hand, hand-eveadm, ...), because the first run of a pair is slower; the
ratio printed is the median of the per-pair ratios. Targets: create-to-ready <= 1.15x, stop <= 1.2x.

usage: python3 bench/boot.py [--pairs N] [--guest DIR] [--json]
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
import time
import uuid as _uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

READY = b"EVEADM-GUEST-READY"
TARGET_CREATE = 1.15
TARGET_STOP = 1.2

# the hand-written baseline for stop: same interpreter, same QMP library
MINIMAL_STOP = r"""
import asyncio, os, sys, time
from qemu.qmp import QMPClient
sock, pid = sys.argv[1], int(sys.argv[2])
def alive():
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
async def main():
    qmp = QMPClient("bench")
    await qmp.connect(sock)
    await qmp.execute("system_powerdown")
    try:
        await qmp.disconnect()
    except Exception:
        pass
    while alive():
        await asyncio.sleep(0.005)
asyncio.run(main())
"""


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO / "src") + os.pathsep + e.get("PYTHONPATH", "")
    return e


def eveadm(root: Path, *args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "eveadm", "--root", str(root), *args], input=stdin,
                          capture_output=True, env=env(), timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"eveadm {' '.join(args)} failed: {proc.stderr.decode().strip()}")
    return proc


def wait_for(path: Path, marker: bytes, timeout: float = 120) -> float:
    """Poll the log every 2 ms (this is the measurement itself); return the time it appeared."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            if marker in path.read_bytes():
                return time.perf_counter()
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise SystemExit(f"{marker!r} never appeared in {path}")


def our_qemus() -> list[int]:
    """QEMU processes started by this benchmark (their paths are under /tmp/evb-*)."""
    pids = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if cmd.startswith(b"qemu-system") and b"/evb-" in cmd:
            pids.append(int(pid))
    return pids


def settle(timeout: float = 30) -> None:
    """Before a measured run: wait until no QEMU of an earlier run is still exiting."""
    deadline = time.perf_counter() + timeout
    while our_qemus() and time.perf_counter() < deadline:
        time.sleep(0.01)


def payload(guest: Path, uuid: str) -> dict:
    return {"uuid": uuid, "brand": "kvm", "kernel": str(guest / "vmlinuz"),
            "initrd": str(guest / "initramfs.cpio.gz"), "cmdline": "console=ttyS0 quiet panic=-1"}


def run_eveadm(root: Path, guest: Path) -> tuple[float, float, str]:
    uuid = str(_uuid.uuid4())
    log = root / "domains" / uuid / "serial.log"
    settle()
    t0 = time.perf_counter()
    create = subprocess.Popen([sys.executable, "-m", "eveadm", "--root", str(root), "create"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    create.stdin.write(json.dumps(payload(guest, uuid)).encode())
    create.stdin.close()
    ready = wait_for(log, READY)
    if create.wait(60) != 0:
        raise SystemExit(f"eveadm create failed: {create.stderr.read().decode().strip()}")
    create.stderr.close()
    accel = json.loads(eveadm(root, "get", uuid).stdout)["backend"]["accel"]
    t1 = time.perf_counter()
    eveadm(root, "stop", uuid)
    t2 = time.perf_counter()
    eveadm(root, "delete", uuid)
    return ready - t0, t2 - t1, accel


def run_hand(root: Path, guest: Path) -> tuple[float, float]:
    from eveadm.backends.base import Domain
    from eveadm.backends.host import BackendContext
    from eveadm.backends.kvm import argv as qemu_argv

    uuid = str(_uuid.uuid4())
    cfg = dict(payload(guest, uuid), vcpus=1, ram=256, disks=[], nics=[], pci_devices=[], vnc_port=-1,
               accel="auto", machine="q35")
    dom = Domain(uuid, cfg, {}, root / "hand" / uuid, root / "hrun" / uuid)
    argv = [a for a in qemu_argv.flat(qemu_argv.groups(BackendContext(root), dom)) if a not in ("-S", "-no-shutdown")]
    dom.data_dir.mkdir(parents=True)
    dom.run_dir.mkdir(parents=True, mode=0o700)
    log = dom.data_dir / "serial.log"
    settle()
    t0 = time.perf_counter()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = wait_for(log, READY)
        t1 = time.perf_counter()
        subprocess.run([sys.executable, "-c", MINIMAL_STOP, str(dom.run_dir / "qmp.sock"), str(qemu.pid)],
                       check=True, timeout=60)
        t2 = time.perf_counter()
    finally:
        if qemu.poll() is None:
            qemu.kill()
        qemu.wait()
    shutil.rmtree(dom.data_dir, ignore_errors=True)
    shutil.rmtree(dom.run_dir, ignore_errors=True)
    return ready - t0, t2 - t1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--guest", type=Path,
                    default=Path(os.environ.get("EVEADM_ARTIFACTS", "/var/cache/eveadm/artifacts")) / "guest")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args()
    if args.pairs < 1:
        ap.error("--pairs must be >= 1")
    subprocess.run(["sh", str(REPO / "scripts" / "build-guest.sh"), str(args.guest)], check=True,
                   stdout=subprocess.DEVNULL)
    # byte-compile first: with PYTHONDONTWRITEBYTECODE set, every eveadm run would compile from source
    import compileall

    compileall.compile_dir(str(REPO / "src"), quiet=1)
    root = Path(tempfile.mkdtemp(prefix="evb-", dir="/tmp"))  # short: unix socket paths
    rows = []
    accel = "?"
    try:
        for i in range(args.pairs):
            # alternate which side goes first: the first run of a pair is measurably slower
            # (the previous pair's QEMU is still being torn down), so a fixed order would bias it
            if i % 2 == 0:
                e_ready, e_stop, accel = run_eveadm(root, args.guest)
                h_ready, h_stop = run_hand(root, args.guest)
            else:
                h_ready, h_stop = run_hand(root, args.guest)
                e_ready, e_stop, accel = run_eveadm(root, args.guest)
            rows.append((e_ready, h_ready, e_stop, h_stop))
            if not args.json:
                print(f"pair {i + 1}: create-to-ready eveadm {e_ready:.3f}s hand {h_ready:.3f}s | "
                      f"stop eveadm {e_stop:.3f}s hand {h_stop:.3f}s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = statistics.median
    result = {
        "accel": accel,
        "pairs": args.pairs,
        "create_to_ready": {"eveadm_s": med(r[0] for r in rows), "hand_s": med(r[1] for r in rows),
                            "ratio": med(r[0] / r[1] for r in rows), "target": TARGET_CREATE},
        "stop": {"eveadm_s": med(r[2] for r in rows), "hand_s": med(r[3] for r in rows),
                 "ratio": med(r[2] / r[3] for r in rows), "target": TARGET_STOP},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"accelerator: {accel}")
        for name in ("create_to_ready", "stop"):
            r = result[name]
            verdict = "ok" if r["ratio"] <= r["target"] else "OVER TARGET"
            print(f"{name:16} eveadm {r['eveadm_s']:.3f}s  hand {r['hand_s']:.3f}s  "
                  f"ratio {r['ratio']:.2f}x (target {r['target']}x) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
