"""SIGKILL at every kill point of start, stop, update and delete of a real container (runc under conmon):
the next read is truthful, `doctor --fix` leaves no orphan, the bystander is untouched, and the domain is
usable or cleanly gone. (Create is walked in test_container_faults.py.)"""

import time
import uuid as uuidlib

import faultwalk
import pytest

from test_container_faults import (LOOP, bystander, check_bystander, check_no_orphan,  # noqa: F401 (fixture)
                                   payload, remains)

# the domain's state before the command, and the command
CASES = {
    "start": ("stopped", lambda u: ["start", u]),
    "stop": ("running", lambda u: ["stop", u, "-t", "5"]),
    "update": ("running", lambda u: ["update", u, "ram=96"]),
    "delete": ("running", lambda u: ["delete", u]),
}


@pytest.mark.parametrize("runtime", ["runc"], indirect=True)
@pytest.mark.parametrize("command", list(CASES))
def test_sigkill_at_each_point_of_a_lifecycle_command_leaves_no_orphan(ecli, rootfs, bystander, runtime,
                                                                       command):
    state, argv = CASES[command]

    def fresh() -> str:
        uuid = str(uuidlib.uuid4())
        ecli.create(payload(rootfs, ["/bin/sh", "-c", LOOP], uuid=uuid, autoboot=state == "running"))
        return uuid

    traced = fresh()
    points = faultwalk.trace(ecli, argv(traced))
    ecli("delete", traced)
    assert points
    t0 = time.monotonic()
    for point in points:
        uuid = fresh()
        faultwalk.killed_at(ecli, point, argv(uuid))
        left = check_no_orphan(ecli, point, uuid, bystander)
        faultwalk.usable_or_gone(ecli, point, uuid, left)
        assert remains(ecli.root, uuid) == [], f"{point}: after delete"
    check_bystander(ecli, bystander)
    print(f"\n{command}: {len(points)} kill points in {time.monotonic() - t0:.1f}s")
