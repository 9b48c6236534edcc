"""Walk every kill point of a command (eveadm.faults): after a SIGKILL at each, the next read must be
truthful, `doctor --fix` must leave nothing behind, other domains must be untouched, and the domain must
be usable or cleanly gone. Shared by the unit (null) and the real-backend fault walks."""

import json
import os
import signal

TRANSIENT = {"provisioning", "booting", "stopping"}


def trace(cli, args, payload=None, env=None) -> list[str]:
    """The kill points one run of `eveadm ARGS` passes, in order (POINT@N)."""
    path = cli.root.parent / f"trace-{os.getpid()}-{len(os.listdir(cli.root.parent))}"
    proc = cli(*args, input=payload, env={**(env or {}), "EVEADM_FAULT_TRACE": str(path)})
    assert proc.returncode == 0, proc.stderr
    points = path.read_text().split()
    path.unlink()
    return points


def killed_at(cli, point, args, payload=None, env=None):
    proc = cli(*args, input=payload, env={**(env or {}), "EVEADM_FAULT": point})
    assert proc.returncode == -signal.SIGKILL, f"{point}: exit {proc.returncode}: {proc.stderr}"
    return proc


def check_after_kill(cli, point, ident, bystander, bystander_state):
    """The invariants that must hold after any kill."""
    got = cli("get", ident)
    if got.returncode == 4:
        state = None  # created-then-killed before the record, or deleted: cleanly gone
    else:
        assert got.returncode == 0, f"{point}: get: {got.stderr}"
        state = json.loads(got.stdout)["state"]
        assert state not in TRANSIENT, f"{point}: a read left the domain {state}"
    cli.ok("doctor", "--fix")
    again = cli("doctor", "-j")
    assert again.returncode == 0 and json.loads(again.stdout)["findings"] == [], f"{point}: {again.stdout}"
    assert cli.json("get", bystander)["state"] == bystander_state, f"{point}: the bystander changed"
    locks = cli.root / "locks"
    known = {d["uuid"] for d in cli.json("list", "-j")}
    stale = [p.name for p in locks.iterdir()] if locks.is_dir() else []
    assert not [n for n in stale if n.removesuffix(".lock") not in known], f"{point}: lock files {stale}"
    return state


def usable_or_gone(cli, point, ident, state):
    """A domain left behind can be started, stopped and deleted."""
    if state is None:
        return
    cli.ok("start", ident)
    assert cli.json("get", ident)["state"] == "running", point
    cli.ok("stop", ident)
    cli.ok("delete", ident)
