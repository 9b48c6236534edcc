"""The container brand end to end: `python -m eveadm --root TMP ...` with real runc and crun."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from eveadm.backends.base import wait_until

TRAP_TERM = "trap 'echo GOT-TERM; exit 0' TERM"
FOREVER = "while true; do sleep 1 & wait; done"
LOOP = f"{TRAP_TERM}; {FOREVER}"


def payload(rootfs, cmd, **extra):
    p = {"brand": "container", "ram": 64, "image": str(rootfs), "cmd": cmd}
    p.update(extra)
    return p


def log_of(cli, uuid) -> str:
    proc = cli("info", uuid, "--log")
    return proc.stdout if proc.returncode == 0 else ""


def get(cli, uuid) -> dict:
    return cli.json("get", uuid)


def events(cli, uuid) -> list[dict]:
    return [json.loads(line) for line in cli.ok("events", "-j", uuid).stdout.splitlines() if line.strip()]


def test_lifecycle_paused_start_stop_delete(ecli, rootfs, runtime):
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", f"{TRAP_TERM}; echo READY $GREETING $(pwd); {FOREVER}"],
                              alias="life", env={"GREETING": "hi"}, workdir="/tmp"), "--paused")
    uuid = dom["uuid"]
    assert dom["state"] == "paused"
    pid = dom["pid"]
    assert pid and Path(f"/proc/{pid}").exists(), "the container process exists while paused"
    assert b"/bin/sh" not in Path(f"/proc/{pid}/cmdline").read_bytes(), "the program has not started"
    assert "READY" not in log_of(ecli, uuid)
    assert dom["backend"]["runtime"] == runtime

    ecli.ok("start", uuid)
    assert get(ecli, uuid)["state"] == "running"
    assert wait_until(lambda: "READY hi /tmp" in log_of(ecli, uuid), 10)
    assert ecli("start", uuid).returncode == 0  # no-op

    t0 = time.monotonic()
    ecli.ok("stop", uuid)
    assert time.monotonic() - t0 < 10, "a program that honours TERM stops at once (the budget is 60 s)"
    dom = get(ecli, uuid)
    assert (dom["state"], dom["exit_status"]) == ("stopped", 0)
    assert "GOT-TERM" in log_of(ecli, uuid)

    ecli.ok("start", uuid)
    assert get(ecli, uuid)["state"] == "running"
    proc = ecli.ok("delete", uuid)
    assert "removed" in proc.stderr
    assert ecli("get", uuid).returncode == 4
    data_dir = ecli.root / "domains" / uuid
    assert not data_dir.exists()
    with open("/proc/self/mounts") as fh:
        assert str(data_dir) not in fh.read(), "overlay rootfs unmounted"


def test_paused_domain_stops_without_running_the_program(ecli, rootfs):
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", "echo SHOULD-NOT-RUN"]), "--paused")
    uuid, pid = dom["uuid"], dom["pid"]
    ecli.ok("stop", uuid)
    assert get(ecli, uuid)["state"] == "stopped"
    assert not Path(f"/proc/{pid}").exists()
    assert "SHOULD-NOT-RUN" not in log_of(ecli, uuid)
    ecli.ok("delete", uuid)


def test_stop_forces_a_program_ignoring_term(ecli, rootfs):
    dom = ecli.create(payload(rootfs, ["/bin/sleep", "1000"]))
    uuid = dom["uuid"]
    t0 = time.monotonic()
    ecli.ok("stop", uuid, "-t", "1")
    took = time.monotonic() - t0
    assert 1 <= took < 8, took
    dom = get(ecli, uuid)
    assert (dom["state"], dom["exit_status"]) == ("stopped", 137)
    kinds = [e["type"] for e in events(ecli, uuid)]
    assert "stop.graceful_sent" in kinds and "stop.forced" in kinds


def test_program_exiting_by_itself_is_stopped_with_status(ecli, rootfs):
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", "echo working; sleep 0.2; exit 5"]))
    uuid = dom["uuid"]
    assert wait_until(lambda: get(ecli, uuid)["state"] == "stopped", 10)
    dom = get(ecli, uuid)
    assert dom["exit_status"] == 5 and "error" not in dom
    assert "working" in log_of(ecli, uuid)


def test_immediate_exit_at_create(ecli, rootfs):
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", "exit 0"]))
    assert wait_until(lambda: get(ecli, dom["uuid"])["state"] == "stopped", 10)
    assert get(ecli, dom["uuid"])["exit_status"] == 0


def test_killed_from_outside_is_failed(ecli, rootfs):
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", LOOP]))
    uuid = dom["uuid"]
    os.kill(dom["pid"], signal.SIGKILL)
    assert wait_until(lambda: get(ecli, uuid)["state"] == "failed", 10)
    dom = get(ecli, uuid)
    assert "SIGKILL" in dom["error"]["message"] and "outside" in dom["error"]["message"]
    ecli.ok("delete", uuid)


def test_kill_verb_delivers_a_signal(ecli, rootfs):
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", "trap 'echo GOT-HUP' HUP; echo TRAPPED; " + LOOP]))
    uuid = dom["uuid"]
    assert wait_until(lambda: "TRAPPED" in log_of(ecli, uuid), 10)  # a signal before the trap is dropped
    ecli.ok("kill", uuid, "-s", "HUP")
    assert wait_until(lambda: "GOT-HUP" in log_of(ecli, uuid), 10)
    assert get(ecli, uuid)["state"] == "running"
    ecli.ok("delete", uuid)


def test_env_cwd_cmd_and_cloud_init_reach_the_program(ecli, rootfs):
    dom = ecli.create(payload(
        rootfs, ["/bin/sh", "-c", 'echo "ARGS=$0 CWD=$(pwd) A=$A B=$B HOST=$(hostname)"; exit 0', "zero"],
        alias="envtest", env={"A": "from env"}, workdir="/etc",
        cloud_init={"user_data": "B:from cloud-init\nthis line has no colon\n"}))
    uuid = dom["uuid"]
    assert wait_until(lambda: get(ecli, uuid)["state"] == "stopped", 10)
    assert "ARGS=zero CWD=/etc A=from env B=from cloud-init HOST=envtest" in log_of(ecli, uuid)


def test_limits_in_rendered_config_and_cgroup(ecli, rootfs, tmp_path):
    p = payload(rootfs, ["/bin/sh", "-c", LOOP], vcpus=2, ram=80, cpus="0", readonly_root=True)
    (tmp_path / "p.json").write_text(json.dumps(p))
    spec = json.loads(ecli.ok("validate", "create", "-f", tmp_path / "p.json", "--render").stdout)
    res = spec["linux"]["resources"]
    assert res["memory"]["limit"] == 80 << 20 and res["cpu"]["quota"] == 200000 and res["cpu"]["cpus"] == "0"
    assert spec["root"]["readonly"] is True
    dom = ecli.create(p)
    bundle_cfg = json.loads(Path(dom["backend"]["config"]).read_text())
    assert bundle_cfg["linux"]["resources"] == res
    # the runtime applied them: the container's memory cgroup (v1 here, or v2)
    assert cgroup_limits(dom["pid"])[0] == 80 << 20
    ecli.ok("delete", dom["uuid"])


def cgroup_limits(pid: int) -> tuple[int, int]:
    """(memory limit in bytes, CPU quota in us per 100 ms) of a process's cgroup, v1 or v2."""
    cg = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(","):
            cg[c] = path
    if "memory" in cg:
        memory = Path(f"/sys/fs/cgroup/memory{cg['memory']}/memory.limit_in_bytes").read_text()
        quota = Path(f"/sys/fs/cgroup/cpu{cg['cpu']}/cpu.cfs_quota_us").read_text()
    else:
        memory = Path(f"/sys/fs/cgroup{cg['']}/memory.max").read_text()
        quota = Path(f"/sys/fs/cgroup{cg['']}/cpu.max").read_text().split()[0]
    return int(memory), int(quota)


def test_memory_and_cpu_limits_change_while_the_program_runs(ecli, rootfs):
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", LOOP], ram=80, vcpus=1))
    uuid, pid = dom["uuid"], dom["pid"]
    assert cgroup_limits(pid) == (80 << 20, 100_000)
    result = ecli.json("update", uuid, "ram=96", "vcpus=2", "-j")
    assert {k: v["applied"] for k, v in result["changes"].items()} == {"ram": "live", "vcpus": "live"}
    assert cgroup_limits(pid) == (96 << 20, 200_000)  # the same process, new limits
    shown = get(ecli, uuid)
    assert (shown["pid"], shown["ram"], shown["vcpus"], shown["state"]) == (pid, 96, 2, "running")
    # what the runtime cannot change in a running container waits for the next start
    result = ecli.json("update", uuid, "-j", input=json.dumps({"env": {"MODE": "new"}}))
    assert result["changes"]["env"]["applied"] == "pending"
    assert get(ecli, uuid)["pending_restart"] == {"env": {"MODE": "new"}}
    ecli.ok("delete", uuid)


def test_oci_image_layout_round_trip(ecli, oci_layout):
    dom = ecli.create({"brand": "container", "ram": 64, "image": f"oci:{oci_layout}:latest"})
    uuid = dom["uuid"]
    assert dom["state"] == "running"
    assert wait_until(lambda: "EVEADM-OCI-READY cwd=/tmp image=busybox" in log_of(ecli, uuid), 10)
    ecli.ok("stop", uuid)
    assert get(ecli, uuid)["exit_status"] == 0
    ecli.ok("delete", uuid)


@pytest.mark.parametrize("image", ["/nonexistent/rootfs", "oci:/nonexistent/layout", "oci:{layout}:notag",
                                   "relative/dir"])
def test_bad_image_is_exit_3(ecli, oci_layout, tmp_path, image):
    p = {"brand": "container", "image": image.format(layout=oci_layout), "cmd": ["/bin/true"]}
    (tmp_path / "p.json").write_text(json.dumps(p))
    proc = ecli("validate", "create", "-f", tmp_path / "p.json")
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert [b["property"] for b in report["bad_values"]] == ["image"]
    proc = ecli("create", "-f", tmp_path / "p.json")
    assert proc.returncode == 3 and proc.stderr.startswith("eveadm: ")
    assert ecli.json("list", "-j") == []


def test_console_without_terminal_says_how_to_read_the_log(ecli, rootfs):
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", LOOP]))
    proc = ecli("console", dom["uuid"])
    assert proc.returncode == 1
    assert f"eveadm info {dom['uuid']} --log" in proc.stderr
    ecli.ok("delete", dom["uuid"])


def test_console_attach_on_terminal(ecli, rootfs):
    # a cooked-mode loop (an interactive busybox shell would query the terminal, see test_backend)
    dom = ecli.create(payload(rootfs, ["/bin/sh", "-c", 'while read l; do echo "ECHO:$l"; done'],
                              terminal=True))
    uuid = dom["uuid"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: `eveadm console` on a real terminal
        os.environ.update(ecli.env)
        os.execvp(sys.executable, [sys.executable, "-m", "eveadm", "--root", str(ecli.root), "console", uuid])
    seen = b""

    def read_until(marker: bytes, timeout=10) -> bool:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
            try:
                seen += os.read(fd, 4096)
            except OSError:
                return False
        return True

    try:
        assert read_until(b"Ctrl-] to detach", 30)
        # the banner comes as the attach socket connects; a line typed in that instant can reach conmon
        # before it relays to the pty, so type it again (at most 3 times) rather than fail on timing
        for _ in range(3):
            os.write(fd, b"MARK42\n")
            if read_until(b"ECHO:MARK42", 10):
                break
        assert b"ECHO:MARK42" in seen, (seen, log_of(ecli, uuid))  # what the program wrote, if it did
        os.write(fd, b"\x1d")  # detach
        assert read_until(b"Detached")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
    assert get(ecli, uuid)["state"] == "running", "detaching leaves the program running"
    assert "ECHO:MARK42" in log_of(ecli, uuid)
    ecli.ok("stop", uuid, "-F")  # sh as PID 1 without a TERM trap ignores TERM: no graceful wait
    ecli.ok("delete", uuid)
