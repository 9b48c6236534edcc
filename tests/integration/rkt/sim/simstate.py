"""Shared state of the rkt / xl / xenstore simulators (tests only).

One JSON file (path in $EVEADM_SIM_STATE) under an exclusive flock holds the Xen
side: domains by name (domid, run state, the pid of a stand-in device model) and
the xenstore keys written. rkt's own pod state lives in its --dir, as real rkt's.
"""

import contextlib
import fcntl
import json
import os
import subprocess
import sys

STATE = os.environ.get("EVEADM_SIM_STATE")


@contextlib.contextmanager
def xen_state():
    if not STATE:
        die("simulator: EVEADM_SIM_STATE is not set", 1)
    with open(STATE + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(STATE) as fh:
                st = json.load(fh)
        except FileNotFoundError:
            st = {"next_domid": 1, "domains": {}, "xenstore": {}, "calls": []}
        yield st
        tmp = STATE + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(st, fh, indent=1)
        os.replace(tmp, STATE)


def die(msg: str, rc: int) -> None:
    sys.stderr.write(msg + "\n")
    sys.exit(rc)


def start_device_model(domid: int) -> int:
    """A stand-in for the qemu that serves the pod's 9p rootfs: argv carries `-xen-domid N`."""
    p = subprocess.Popen([sys.executable, "-c", "import signal; signal.alarm(900); signal.pause()", "qemu-system-i386",
                          "-xen-domid", str(domid), "-xen-attach", "-M", "xenpv"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    return p.pid


def kill(pid) -> None:
    if pid:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def create_domain(st: dict, name: str, nvifs: int, paused: bool) -> int:
    if name in st["domains"]:
        die(f'libxl: error: libxl_create.c: Domain {st["domains"][name]["domid"]}:A domain with name "{name}" '
            "already exists.", 3)
    domid = st["next_domid"]
    st["next_domid"] += 1
    st["domains"][name] = {"domid": domid, "state": "paused" if paused else "running",
                           "dm_pid": start_device_model(domid), "vifs": nvifs}
    for i in range(nvifs):
        st["xenstore"][f"/local/domain/0/backend/vif/{domid}/{i}/feature-sg"] = "1"
        st["xenstore"][f"/local/domain/{domid}/device/vif/{i}/feature-sg"] = "1"
    return domid


def remove_domain(st: dict, name: str) -> None:
    dom = st["domains"].pop(name, None)
    if dom:
        kill(dom.get("dm_pid"))
