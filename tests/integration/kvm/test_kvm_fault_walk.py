"""Issue 9: SIGKILL eveadm at every kill point of create, stop and delete of a real kvm domain.

After each kill: the next read is truthful, `doctor --fix` leaves no orphan (no QEMU of a domain eveadm
does not have, no socket directory, no lock file), the bystander domain is untouched, the domain is
usable or cleanly gone, and no QEMU of that domain is left unless it is recorded running or paused.

Bounded for a 2-core machine: create is walked fully; stop and delete walk their points until the
file's time budget is spent (each walk reports how many it did).
"""

from __future__ import annotations

import json
import time
import uuid as _uuid

import pytest

from clitest import Cli
from faultwalk import check_after_kill, killed_at, trace, usable_or_gone
from kvmtest import qemus_matching, socket_dirs_of

pytestmark = pytest.mark.kvm

BUDGET = 85.0  # s for the whole file; create is walked fully whatever it takes
EXTRA_ARGS = {"update": ["ram=128", "stop_timeout=1"]}  # an update of a running kvm domain


@pytest.fixture(scope="module")
def file_started() -> float:
    """When the first test of this file began (the budget's start; not import time: pytest imports
    every file before it runs any)."""
    return time.monotonic()


def qemus_of(uuid: str) -> list[int]:
    """Pids of QEMU processes started for domain `uuid` (its `-uuid` option)."""
    return qemus_matching(b"-uuid\0" + uuid.encode() + b"\0")


@pytest.fixture
def cli(root):
    return Cli(root / "state")


def payload(guest, uuid: str) -> str:
    # stop_timeout 1: the graceful rung is walked, and a guest still booting (it ignores the power
    # button) costs 1 s before the forced rung
    return json.dumps({"uuid": uuid, "brand": "kvm", "kernel": str(guest / "vmlinuz"),
                       "initrd": str(guest / "initramfs.cpio.gz"), "cmdline": "console=ttyS0 quiet panic=-1",
                       "stop_timeout": 1})


def walk(cli, guest, command: str, bystander: str, deadline: float | None) -> tuple[int, int]:
    """Kill `eveadm COMMAND` at each of its points in turn, each time on a fresh domain, and check the
    invariants. Returns (points, walked)."""
    def fresh() -> tuple[str, list[str], str | None]:
        uuid = str(_uuid.uuid4())
        if command == "create":
            return uuid, ["create"], payload(guest, uuid)
        cli.create(dict(json.loads(payload(guest, uuid)), autoboot=command != "start"))  # start: from stopped
        return uuid, [command, uuid, *EXTRA_ARGS.get(command, [])], None

    uuid, args, stdin = fresh()
    points = trace(cli, args, stdin)
    if command != "delete":
        cli.ok("delete", uuid)
    walked = 0
    for point in points:
        if deadline is not None and time.monotonic() > deadline:
            break
        uuid, args, stdin = fresh()
        killed_at(cli, point, args, stdin)
        state = check_after_kill(cli, point, uuid, bystander, "running")
        left = qemus_of(uuid)
        if state in ("running", "paused"):
            assert len(left) == 1, f"{point}: {state} with QEMU processes {left}"
        else:
            assert left == [], f"{point}: {state or 'gone'} but QEMU {left} is left"
        if state is not None:
            cli.ok("update", uuid, "stop_timeout=0")  # the walked command had its graceful rung; save time
        usable_or_gone(cli, point, uuid, state)
        assert qemus_of(uuid) == [], f"{point}: QEMU left after delete"
        assert not [d for d in socket_dirs_of(cli.root) if (d / "owner").read_text().strip().endswith(uuid)], point
        walked += 1
    return len(points), walked


@pytest.fixture
def bystander(cli, guest):
    dom = cli.create(json.loads(payload(guest, str(_uuid.uuid4()))))
    yield dom
    got = cli.json("get", dom["uuid"])
    assert (got["state"], got["domain_id"]) == ("running", dom["domain_id"]), "the bystander was touched"
    cli.ok("delete", dom["uuid"])


def test_create_killed_at_every_point(file_started, cli, guest, bystander):
    points, walked = walk(cli, guest, "create", bystander["uuid"], deadline=None)
    assert points >= 10 and walked == points  # store, prepare, QEMU's start, create_paused, unpause


@pytest.mark.parametrize("command", ["start", "update"])
def test_start_and_update_killed_at_every_point(cli, guest, bystander, command):
    points, walked = walk(cli, guest, command, bystander["uuid"], deadline=None)  # ~20 s each on 2 cores
    print(f"{command}: walked {walked} of {points} kill points")
    assert walked == points and points >= (1 if command == "update" else 8)


@pytest.mark.parametrize("command", ["stop", "delete"])
def test_stop_and_delete_killed_at_their_points(file_started, cli, guest, bystander, command):
    # as many points as fit in what is left of the file's budget, and at least 25 s each
    deadline = max(file_started + BUDGET, time.monotonic() + 25)
    points, walked = walk(cli, guest, command, bystander["uuid"], deadline=deadline)
    print(f"{command}: walked {walked} of {points} kill points within the budget")
    assert points >= 3 and walked >= 1
