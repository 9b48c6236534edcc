"""Per-domain locks: a second command on the same domain waits, then fails with exit 5 naming the holder;
commands on different domains never wait for each other."""

import os
import subprocess
import sys

from clitest import SRC

HOLD = """
import sys, time
from pathlib import Path
from eveadm.store import Store
store = Store(Path(sys.argv[1]))
with store.lock(sys.argv[2], 5, what="eveadm stop slow-one"):
    print("held", flush=True)
    sys.stdin.read()   # hold until the test closes our stdin
"""


def hold_lock(root, uuid):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root), uuid], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=SRC))
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_same_domain_fails_with_exit_5_naming_holder(cli):
    a = cli.create({"brand": "null", "alias": "a"})
    holder = hold_lock(cli.root, a["uuid"])
    try:
        proc = cli("stop", "a", env={"EVEADM_LOCK_TIMEOUT": "0.3"})
        assert proc.returncode == 5
        assert proc.stderr.startswith(f"eveadm: domain {a['uuid']} is busy: held by pid {holder.pid} "
                                      "(eveadm stop slow-one) since 20")
        assert cli.json("get", "a")["state"] == "running"  # reads do not wait for the lock
    finally:
        holder.stdin.close()
        holder.wait(10)
    cli.ok("stop", "a", env={"EVEADM_LOCK_TIMEOUT": "5"})


def test_waiter_proceeds_when_holder_releases(cli):
    a = cli.create({"brand": "null", "alias": "a"})
    holder = hold_lock(cli.root, a["uuid"])
    waiter = subprocess.Popen([sys.executable, "-m", "eveadm", "--root", str(cli.root), "stop", "a"],
                              env=dict(cli.env, EVEADM_LOCK_TIMEOUT="30"), stderr=subprocess.PIPE, text=True)
    lock_file = str(cli.root / "locks" / f"{a['uuid']}.lock")

    def waiter_is_trying():
        try:
            return any(os.readlink(f"/proc/{waiter.pid}/fd/{fd}") == lock_file
                       for fd in os.listdir(f"/proc/{waiter.pid}/fd"))
        except OSError:
            return False

    try:
        from eveadm.backends.host import wait_until

        assert wait_until(waiter_is_trying, 30), "the waiter never tried the lock"
        assert waiter.poll() is None  # it is waiting, not failed
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert waiter.wait(30) == 0
    assert cli.json("get", "a")["state"] == "stopped"


def test_other_domains_do_not_wait(cli):
    a = cli.create({"brand": "null", "alias": "a"})
    cli.create({"brand": "null", "alias": "b"})
    holder = hold_lock(cli.root, a["uuid"])
    try:
        cli.ok("stop", "b", env={"EVEADM_LOCK_TIMEOUT": "0"})
        cli.ok("start", "b", env={"EVEADM_LOCK_TIMEOUT": "0"})
    finally:
        holder.stdin.close()
        holder.wait(10)


def test_lock_of_a_killed_holder_is_free(cli):
    a = cli.create({"brand": "null", "alias": "a"})
    holder = hold_lock(cli.root, a["uuid"])
    holder.kill()
    holder.wait(10)
    cli.ok("stop", "a", env={"EVEADM_LOCK_TIMEOUT": "0"})
