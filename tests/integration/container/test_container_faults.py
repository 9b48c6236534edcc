"""Issue 9 for the container brand, with real runc/crun under conmon:

- an `eveadm create` killed (SIGKILL at each kill point of eveadm.faults, or SIGKILL/SIGTERM/SIGINT
  while the runtime creates) leaves nothing that the next read, `doctor --fix` and `delete` cannot find;
- `doctor` finds what eveadm made for domains it no longer has (runtime containers, conmon monitors,
  overlay mounts, cgroups) and `--fix` removes it, never what someone else made;
- a program the image does not have fails at once (PermanentError), not after 3 tries;
- what the backend writes under the state root is owner-only.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid as uuidlib
from pathlib import Path

import faultwalk
import pytest

from clitest import processes

from eveadm.backends.container import parts
from eveadm.backends.container.backend import program_missing
from eveadm.backends.host import wait_until
from eveadm.errors import PermanentError
from eveadm.store import Store

LOOP = "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"


def payload(rootfs, cmd, **extra):
    return {"brand": "container", "ram": 64, "image": str(rootfs), "cmd": cmd, **extra}


def remains(root: Path, uuid: str) -> list[str]:
    """Every part of domain `uuid` still on the host: runtime containers, conmon monitors, mounts,
    cgroups (and processes in them)."""
    found = [f"runtime container {p}" for p in (root / "run" / "container").glob(f"*/{uuid}")]
    found += [f"conmon {pid}" for pid, u in parts.monitors_under(str(root / "run")).items() if u == uuid]
    with open("/proc/self/mounts") as fh:
        found += [f"mount {line.split()[1]}" for line in fh if uuid in line.split()[1]]
    cgroups = parts.cgroup_dirs(uuid)
    found += [f"cgroup {p}" for p in cgroups]
    found += [f"process {pid} in its cgroups" for pid in parts.cgroup_pids(cgroups)]
    return found


def doctor_findings(cli) -> list[str]:
    proc = cli("doctor", "-j")  # exit 1 when it found something
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)["findings"]


@pytest.fixture
def bystander(ecli, rootfs):
    """A running container no fault may touch (its creation also makes the runtime probe's verdict,
    so the traced create passes no probe command)."""
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", LOOP], alias="bystander"))
    yield dom
    ecli("delete", dom["uuid"])


def check_bystander(cli, dom):
    got = cli.json("get", dom["uuid"])
    assert (got["state"], got["pid"]) == ("running", dom["pid"]), "the bystander changed"
    assert Path(f"/proc/{dom['pid']}").exists()


def check_no_orphan(cli, point, uuid, bystander):
    """After any interruption: a truthful read, a clean `doctor --fix`, then nothing of the domain left
    once it is deleted (or, gone or stopped, already now)."""
    state = faultwalk.check_after_kill(cli, point, uuid, bystander["uuid"], "running")
    if state in (None, "stopped", "failed"):  # doctor --fix stops a failed domain that still runs
        assert remains(cli.root, uuid) == [], f"{point}: left as {state}"
    return state


# --------------------------------------------------------------------------
def test_sigkill_at_each_point_of_a_create_leaves_no_orphan(ecli, rootfs, bystander, runtime):
    """Every point with runc (what auto picks on most hosts); with crun, the points of the runtime's
    create only (what differs between them), to keep the walk short."""
    create = ["create", "-j"]
    traced = payload(rootfs, ["/bin/sh", "-c", LOOP])
    points = faultwalk.trace(ecli, create, json.dumps(dict(traced, alias="traced")))
    ecli.ok("delete", "traced")
    backend_points = [p for p in points if p.startswith(("run:mount", "run:conmon", "backend.create_paused"))]
    assert len(backend_points) == 6, points  # mount, conmon (the runtime's create) and the primitive, each side
    walked = []
    t0 = time.monotonic()
    for point in points if runtime == "runc" else backend_points:
        uuid = str(uuidlib.uuid4())
        faultwalk.killed_at(ecli, point, create, json.dumps(dict(traced, uuid=uuid)))
        state = check_no_orphan(ecli, point, uuid, bystander)
        faultwalk.usable_or_gone(ecli, point, uuid, state)
        if state is not None:
            assert ecli("get", uuid).returncode == 4, f"{point}: delete left the record"
        assert remains(ecli.root, uuid) == [], f"{point}: after delete"
        walked.append((point, state))
    check_bystander(ecli, bystander)
    print(f"\n{len(walked)} kill points of a container create in {time.monotonic() - t0:.1f}s: {walked}")


def start_cli(cli, *args, stdin_text: str, env: dict):
    proc = subprocess.Popen([sys.executable, "-m", "eveadm", "--root", str(cli.root), *args],
                            env={**cli.env, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(stdin_text)
    proc.stdin.close()
    return proc


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_signal_while_the_runtime_creates_leaves_no_orphan(ecli, rootfs, bystander, sig):
    """The signal arrives while conmon runs the runtime's `create`: conmon is held still (SIGSTOP) until the
    signal is sent, so eveadm cannot have had its answer and finished first."""
    uuid = str(uuidlib.uuid4())
    proc = start_cli(ecli, "create", "-j", stdin_text=json.dumps(payload(rootfs, ["/bin/sh", "-c", LOOP], uuid=uuid)),
                     env={})
    try:
        # polled every 2 ms: the runtime's create takes ~70 ms
        assert wait_until(lambda: processes("conmon", needle=uuid.encode()), 20, first=0.001, cap=0.002)
        held: set[int] = set()
        while new := set(processes("conmon", needle=uuid.encode())) - held:  # the launcher forks the monitor
            for pid in new:
                os.kill(pid, signal.SIGSTOP)
            held |= new
        proc.send_signal(sig)
        for pid in held:
            os.kill(pid, signal.SIGCONT)
        rc = proc.wait(30)
        stderr = proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    # SIGKILL: killed; SIGTERM/SIGINT: the CLI stops at a safe point with 128 + N, or had already finished
    expected = {-signal.SIGKILL} if sig == signal.SIGKILL else {0, 128 + sig, -sig}
    assert rc in expected, (rc, stderr)
    state = check_no_orphan(ecli, signal.Signals(sig).name, uuid, bystander)
    if state is not None:
        ecli.ok("delete", uuid)
    assert remains(ecli.root, uuid) == []
    check_bystander(ecli, bystander)


# --------------------------------------------------------------------------
def forget(root: Path, uuid: str) -> None:
    """Delete a domain's record row and nothing else (what an interrupted or buggy delete could leave)."""
    store = Store(root)
    store.remove(store.get(uuid), ("test.forgotten", {}))


def test_doctor_finds_and_removes_what_no_record_owns(ecli, rootfs, bystander):
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", LOOP]))
    uuid = dom["uuid"]
    forget(ecli.root, uuid)
    kinds_of = {}
    for line in doctor_findings(ecli):
        if uuid in line and "made by eveadm" in line:
            kinds_of.setdefault(line.split(": ", 1)[1].split()[0], []).append(line)
    assert {"container", "process", "mount"} <= set(kinds_of), kinds_of
    assert remains(ecli.root, uuid), "doctor without --fix changes nothing"
    ecli.ok("doctor", "--fix")
    assert doctor_findings(ecli) == []
    assert remains(ecli.root, uuid) == []
    assert not (ecli.root / "domains" / uuid).exists()
    check_bystander(ecli, bystander)


def test_doctor_removes_an_empty_cgroup_it_made_and_leaves_others(ecli, rootfs, bystander):
    ours, foreign = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    roots = parts.cgroup_roots()
    made = []
    try:
        for uuid in (ours, foreign):
            for root in roots:
                path = Path(root, parts.CGROUP_PARENT, uuid)
                path.mkdir(parents=True)
                made.append(path)
        (ecli.root / "run" / ours).mkdir(parents=True)  # what a create of `ours` under this root leaves
        findings = doctor_findings(ecli)
        assert sum(ours in f and "cgroup" in f for f in findings) == len(roots), findings
        assert not any(foreign in f for f in findings), "a cgroup with no trace here is another root's"
        ecli.ok("doctor", "--fix")
        assert parts.cgroup_dirs(ours) == []
        assert len(parts.cgroup_dirs(foreign)) == len(roots)
        assert doctor_findings(ecli) == []
    finally:
        for path in reversed(made):
            if path.exists():
                path.rmdir()
    check_bystander(ecli, bystander)


def test_a_container_runc_made_elsewhere_is_left_alone(ecli, rootfs, bystander, tmp_path):
    """Same runtime, an id shaped like eveadm's, a different --root: not eveadm's, whatever it looks like."""
    other_root, bundle = tmp_path / "other-runc-root", tmp_path / "bundle"
    bundle.mkdir()
    cid = str(uuidlib.uuid4())
    subprocess.run(["runc", "spec"], cwd=bundle, capture_output=True, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["process"].update(args=["/bin/sleep", "1000"], terminal=False)
    (bundle / "config.json").write_text(json.dumps(spec))
    runc = ["runc", "--root", str(other_root)]
    # the container keeps its stdio: no pipe, or run would wait for the container to close it
    subprocess.run([*runc, "run", "--detach", "--bundle", str(bundle), cid], check=True, timeout=30,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert doctor_findings(ecli) == []
        ecli.ok("doctor", "--fix")
        state = json.loads(subprocess.run([*runc, "state", cid], capture_output=True, check=True).stdout)
        assert state["status"] == "running"
    finally:
        subprocess.run([*runc, "delete", "--force", cid], capture_output=True, timeout=30)
    check_bystander(ecli, bystander)


# --------------------------------------------------------------------------
@pytest.mark.parametrize("message", [
    'runc create failed: unable to start container process: exec: "/no/such": stat /no/such: '
    'no such file or directory',
    'unable to start container process: exec: "nosuch": executable file not found in $PATH',
    "executable file `/no/such` not found in $PATH: No such file or directory",
])
def test_program_missing_messages(message):
    assert program_missing(message)


def test_program_missing_is_not_every_error():
    assert not program_missing("runc create failed: cgroup: cannot allocate memory")
    assert not program_missing("open /sys/fs/cgroup/x: no such file or directory")


def test_a_missing_program_fails_at_once_in_the_backend(backend, cconfig, rootfs, make_domain):
    dom = make_domain(cconfig(rootfs, ["/no/such/program"]))
    backend.prepare(dom)
    with pytest.raises(PermanentError, match="/no/such/program"):
        backend.create_paused(dom)
    backend.destroy(dom)
    backend.release(dom, delete=True)
    assert remains(dom.data_dir.parents[1], dom.uuid) == []


def test_an_unreadable_image_is_permanent(backend, cconfig, rootfs, make_domain, tmp_path):
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text("{not json")
    dom = make_domain(cconfig(f"oci:{layout}", ["/bin/true"]))
    with pytest.raises(PermanentError, match="index.json"):
        backend.prepare(dom)


def test_a_missing_program_is_not_retried(ecli, rootfs):
    # the engine fails at once on PermanentError: one create.failed in the journal, not one per try
    proc = ecli("create", "-j", input=json.dumps(payload(rootfs, ["/no/such/program"])),
                env={"EVEADM_CREATE_RETRY_DELAY": "0"})
    assert proc.returncode != 0 and "/no/such/program" in proc.stderr
    (dom,) = ecli.json("list", "-j")
    tries = [json.loads(line) for line in ecli.ok("events", "-j", dom["uuid"]).stdout.splitlines()]
    assert sum(e["type"] == "create.failed" for e in tries) == 1
    ecli.ok("delete", dom["uuid"])
    assert remains(ecli.root, dom["uuid"]) == []


# --------------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_what_the_backend_writes_is_owner_only(ecli, rootfs):
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", LOOP], env={"API_TOKEN": "s3cret"}))
    uuid = dom["uuid"]
    data, run = ecli.root / "domains" / uuid, ecli.root / "run" / uuid
    config = data / "bundle" / "config.json"
    assert "s3cret" in config.read_text()
    assert mode(config) == 0o600
    for d in (data, run, data / "bundle", data / "work"):
        assert mode(d) == 0o700, d
    for f in ("console.log", "conmon.pid", "container.pid"):
        assert mode(run / f) == 0o600, f
    for f in (ecli.root / "cache" / "container").glob("*.json"):
        assert mode(f) == 0o600, f
    assert mode(ecli.root / "cache" / "container") == 0o700
    # every regular file and directory eveadm made for the domain (not the container's own files)
    own = [p for base in (data, run) for p in [base, *base.rglob("*")]
           if not p.is_relative_to(data / "upper") and not p.is_relative_to(data / "bundle" / "rootfs")
           and not p.is_relative_to(data / "work")]
    loose = [str(p) for p in own if (p.is_file() or p.is_dir()) and not p.is_symlink() and mode(p) & 0o077]
    assert loose == []
    ecli.ok("delete", uuid)


def test_private_files_leave_the_container_its_own_modes(ecli, rootfs):
    """eveadm runs with umask 077; the container's / must still have the image root's mode and a
    volume eveadm makes must be enterable by a program running as any user."""
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", "ls -ld / /mnt/disk0; exit 0"], disks=[{"size": 10}]))
    uuid = dom["uuid"]
    assert wait_until(lambda: ecli.json("get", uuid)["state"] == "stopped", 10)
    lines = ecli.ok("info", uuid, "--log").stdout.splitlines()
    modes = {line.split()[-1]: line.split()[0] for line in lines if line.startswith("d")}
    assert modes["/"] == stat.filemode(os.stat(rootfs).st_mode), lines
    assert modes["/mnt/disk0"] == "drwxr-xr-x", lines
    assert mode(ecli.root / "domains" / uuid / "volumes") == 0o700
    ecli.ok("delete", uuid)
