"""ContainerBackend driven directly (BackendContext + Domain), with real runc and crun under conmon."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from clitest import processes
from eveadm.backends.base import ABSENT, CRASHED, FORCED, GRACEFUL, PAUSED, RUNNING, SHUTDOWN
from eveadm.backends.container import ContainerBackend, image, monitor, spec
from eveadm.backends.container.backend import INSTALL_HINT, hybrid_cgroups
from eveadm.backends.host import BackendContext, pid_alive, read_pid, wait_until
from eveadm.errors import BackendError, BackendUnavailable, NotSupported


# PID 1 of a pid namespace ignores signals it has no handler for: test programs
# trap TERM, and sleep in the background + `wait` so the trap runs at once.
TRAP_TERM = "trap 'echo GOT-TERM; exit 3' TERM"
FOREVER = "while true; do sleep 1 & wait; done"
LOOP = f"{TRAP_TERM}; {FOREVER}"


def log_text(backend, dom) -> str:
    return backend.console_log_text(dom)


def wait_log(backend, dom, text, timeout=10) -> bool:
    return wait_until(lambda: text in log_text(backend, dom), timeout)


def start(backend, dom):
    backend.prepare(dom)
    assert backend.create_paused(dom).state == PAUSED
    return backend.unpause(dom)


def conmon_pid(dom) -> int:
    return int((dom.run_dir / "conmon.pid").read_text())


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


# --------------------------------------------------------------------------
def test_render_carries_limits_and_payload(cconfig, rootfs, tmp_path, make_domain):
    vol = tmp_path / "vol"
    vol.mkdir()
    cfg = cconfig(
        rootfs, ["/bin/app", "--flag"], alias="web-1", vcpus=2, ram=96, cpus="0",
        env={"A": "1"}, workdir="/srv", readonly_root=True, terminal=True,
        cloud_init={"user_data": "KEY:val:with:colons\nno colon here\n # comment: x\n"},
        disks=[{"path": str(vol), "readonly": True, "format": "raw", "media": "disk"}],
    )
    backend = ContainerBackend(BackendContext(tmp_path / "root"))
    assert backend.validate(cfg) == []
    dom = make_domain(cfg)
    spec = json.loads(backend.render(dom))
    assert spec["process"]["args"] == ["/bin/app", "--flag"]
    assert spec["process"]["cwd"] == "/srv"
    assert spec["process"]["terminal"] is True
    env = dict(e.split("=", 1) for e in spec["process"]["env"])
    assert env["A"] == "1" and env["KEY"] == "val:with:colons" and env["HOSTNAME"] == "web-1"
    assert "no colon here" not in " ".join(env)
    res = spec["linux"]["resources"]
    assert res["memory"]["limit"] == 96 * 1024 * 1024
    assert res["cpu"]["quota"] == 2 * res["cpu"]["period"]
    assert res["cpu"]["cpus"] == "0"
    assert spec["hostname"] == "web-1"
    assert spec["root"]["readonly"] is True
    assert {"destination": "/mnt/disk0", "type": "bind", "source": str(vol),
            "options": ["rbind", "ro"]} in spec["mounts"]
    assert not dom.data_dir.exists(), "render must not write anything"


def test_user_data_env_tolerates_lines_without_colon():
    assert spec.user_data_env("A:1\nB : two:2\njunk\n\n:novalue\n") == {"A": "1", "B": "two:2"}


def test_validate_reports_bad_images(cconfig, tmp_path, rootfs):
    backend = ContainerBackend(BackendContext(tmp_path / "root"))
    missing = cconfig(tmp_path / "nope", ["/bin/true"])
    assert [p for p, _ in backend.validate(missing)] == ["image"]
    (tmp_path / "notlayout").mkdir()
    bad_layout = cconfig(f"oci:{tmp_path / 'notlayout'}")
    probs = dict(backend.validate(bad_layout))
    assert "not an OCI image layout" in probs["image"]
    no_cmd = cconfig(rootfs)
    assert [p for p, _ in backend.validate(no_cmd)] == ["cmd"]
    file_disk = cconfig(rootfs, ["/bin/true"], disks=[{"path": str(rootfs / "bin" / "busybox")}])
    assert [p for p, _ in backend.validate(file_disk)] == ["disks.0.path"]


def test_validate_reports_unknown_oci_tag(cconfig, tmp_path, oci_layout):
    backend = ContainerBackend(BackendContext(tmp_path / "root"))
    probs = dict(backend.validate(cconfig(f"oci:{oci_layout}:nosuchtag")))
    assert "no tag 'nosuchtag'" in probs["image"] and "latest" in probs["image"]
    assert backend.validate(cconfig(f"oci:{oci_layout}:latest")) == []


def test_missing_runtime_names_the_package(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("EVEADM_CONTAINER_RUNTIME", "auto")
    with pytest.raises(BackendUnavailable) as exc:
        ContainerBackend(BackendContext(tmp_path / "root")).check_available()
    assert str(exc.value) == INSTALL_HINT


def test_bad_runtime_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("EVEADM_CONTAINER_RUNTIME", "docker")
    with pytest.raises(BackendUnavailable, match="auto, runc or crun"):
        ContainerBackend(BackendContext(tmp_path / "root")).check_available()


def test_probe_is_cached_per_host(tmp_path, monkeypatch):
    monkeypatch.setenv("EVEADM_CONTAINER_RUNTIME", "auto")
    ctx = BackendContext(tmp_path / "root")
    first = ContainerBackend(ctx).runtime()
    verdicts = json.loads((Path(ctx.cache_dir("container")) / "runtime.json").read_text())
    assert any(v["error"] is None for v in verdicts.values())
    runs_before = ctx.command_log.read_text().count('"run"')
    second = ContainerBackend(ctx).runtime()
    assert second == first
    assert ctx.command_log.read_text().count('"run"') == runs_before, "second lookup must not re-probe"
    if hybrid_cgroups():  # this host: crun refuses as is, so auto picks runc
        assert verdicts["crun"]["error"] and "hybrid" in verdicts["crun"]["error"]
        assert first.name == "runc"


# --------------------------------------------------------------------------
def test_full_lifecycle(cconfig, backend, rootfs, make_domain):
    dom = make_domain(cconfig(
        rootfs, ["/bin/sh", "-c", f"{TRAP_TERM}; echo READY $GREETING $(pwd) $(hostname); {FOREVER}"],
        alias="life", env={"GREETING": "hello"}, workdir="/tmp"))
    backend.prepare(dom)
    created = backend.create_paused(dom)
    assert os.path.ismount(dom.data_dir / "bundle" / "rootfs")
    st = backend.status([dom])[dom.uuid]
    assert st.state == PAUSED and st.pid
    assert (created.state, created.pid) == (PAUSED, st.pid), "create_paused returns what it verified"
    assert "conmon" in cmdline(conmon_pid(dom))[0], "the container runs under conmon"
    # the process exists but the user's program has not started: it is still the runtime's init
    assert "/bin/sh" not in cmdline(st.pid)
    assert "READY" not in log_text(backend, dom)

    started = backend.unpause(dom)
    st = backend.status([dom])[dom.uuid]
    assert st.state == RUNNING == started.state
    assert wait_log(backend, dom, "READY hello /tmp life")
    assert cmdline(st.pid)[0] == "/bin/sh"

    backend.shutdown(dom, GRACEFUL, 10)
    assert backend.wait_gone(dom, 10)
    st = backend.status([dom])[dom.uuid]
    assert (st.state, st.exit_status) == (SHUTDOWN, 3)
    assert "exit_timestamp" in st.detail
    assert "GOT-TERM" in log_text(backend, dom)

    removed = backend.release(dom)
    assert not os.path.ismount(dom.data_dir / "bundle" / "rootfs")
    st = backend.status([dom])[dom.uuid]
    assert st.state == ABSENT and st.exit_status == 3
    assert (dom.data_dir / "upper").is_dir(), "the writable layer is kept across stop/start"
    assert not any("upper" in p for p in removed)

    # start again: same domain, fresh process
    assert start(backend, dom).state == RUNNING
    backend.destroy(dom)
    assert backend.wait_gone(dom, 10)
    removed = backend.release(dom, delete=True)
    assert str(dom.data_dir / "upper") in removed
    assert not (dom.data_dir / "bundle").exists()


def test_program_exiting_by_itself(cconfig, backend, rootfs, make_domain):
    dom = make_domain(cconfig(rootfs, ["/bin/sh", "-c", "echo bye; exit 7"]))
    start(backend, dom)
    assert wait_until(lambda: backend.status([dom])[dom.uuid].gone, 10)
    st = backend.status([dom])[dom.uuid]
    assert (st.state, st.exit_status, st.error) == (SHUTDOWN, 7, None)
    assert st.detail["exit_timestamp"].endswith("Z")
    backend.destroy(dom)
    backend.release(dom)


def test_killed_from_outside_is_crashed(cconfig, backend, rootfs, make_domain):
    dom = make_domain(cconfig(rootfs, ["/bin/sh", "-c", LOOP]))
    pid = start(backend, dom).pid
    os.kill(pid, signal.SIGKILL)
    assert backend.wait_gone(dom, 10)
    st = backend.status([dom])[dom.uuid]
    assert st.state == CRASHED
    assert "SIGKILL" in st.error and "outside" in st.error
    assert st.exit_status == 128 + signal.SIGKILL
    backend.destroy(dom)  # a later destroy must not turn the outside kill into a requested one
    assert backend.status([dom])[dom.uuid].state == CRASHED
    backend.release(dom, delete=True)


def test_program_ignoring_term_needs_force(cconfig, backend, rootfs, make_domain):
    # plain `sleep` as PID 1 has no TERM handler: the kernel drops TERM
    dom = make_domain(cconfig(rootfs, ["/bin/sleep", "1000"]))
    start(backend, dom)
    backend.shutdown(dom, GRACEFUL, 10)
    assert not backend.wait_gone(dom, 0.5)
    assert backend.status([dom])[dom.uuid].state == RUNNING
    backend.shutdown(dom, FORCED, 10)
    assert backend.wait_gone(dom, 10)
    st = backend.status([dom])[dom.uuid]
    assert (st.state, st.exit_status, st.detail["signal"]) == (SHUTDOWN, 137, "SIGKILL")
    backend.release(dom, delete=True)


def test_kill_signal(cconfig, backend, rootfs, make_domain):
    dom = make_domain(cconfig(
        rootfs, ["/bin/sh", "-c", "trap 'echo GOT-USR1' USR1; echo TRAPPED; while true; do sleep 1 & wait; done"]))
    start(backend, dom)
    assert wait_log(backend, dom, "TRAPPED")  # PID 1 without a handler yet would drop the signal
    backend.kill(dom, signal.SIGUSR1)
    assert wait_log(backend, dom, "GOT-USR1")
    assert backend.status([dom])[dom.uuid].state == RUNNING
    backend.destroy(dom)
    assert backend.wait_gone(dom, 10)
    backend.release(dom, delete=True)


def test_readonly_root_disks_and_image_untouched(cconfig, backend, rootfs, make_domain, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    before = sorted(os.listdir(rootfs))
    script = ("touch /rootfile 2>/dev/null && echo ROOT-WRITABLE || echo ROOT-READONLY; "
              "echo data > /mnt/disk0/out && echo DISK-OK; "
              "touch /mnt/disk1/x 2>/dev/null && echo RO-DISK-WRITABLE || echo RO-DISK-OK; "
              "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; "
              "exit 0")
    ro = tmp_path / "ro"
    ro.mkdir()
    dom = make_domain(cconfig(rootfs, ["/bin/sh", "-c", script], readonly_root=True, ram=48, disks=[
        {"path": str(vol)}, {"path": str(ro), "readonly": True}]))
    start(backend, dom)
    assert wait_until(lambda: backend.status([dom])[dom.uuid].gone, 10)
    text = log_text(backend, dom)
    assert "ROOT-READONLY" in text and "DISK-OK" in text and "RO-DISK-OK" in text, text
    assert str(48 * 1024 * 1024) in text, "memory limit applied to the container's cgroup"
    assert (vol / "out").read_text() == "data\n"
    assert sorted(os.listdir(rootfs)) == before
    backend.destroy(dom)
    backend.release(dom, delete=True)


def test_writes_go_to_the_overlay_not_the_image(cconfig, backend, rootfs, make_domain):
    dom = make_domain(cconfig(rootfs, ["/bin/sh", "-c", "echo x > /etc/eveadm-test; exit 0"]))
    start(backend, dom)
    assert wait_until(lambda: backend.status([dom])[dom.uuid].gone, 10)
    assert (dom.data_dir / "upper" / "etc" / "eveadm-test").exists()
    assert not (rootfs / "etc" / "eveadm-test").exists()
    backend.destroy(dom)
    backend.release(dom, delete=True)


def test_oci_image_layout(cconfig, backend, oci_layout, make_domain):
    cfg = cconfig(f"oci:{oci_layout}", env={"EXTRA": "yes"})
    assert backend.validate(cfg) == []
    dom = make_domain(cfg)
    spec = json.loads(backend.render(dom))
    assert spec["process"]["cwd"] == "/tmp"  # WorkingDir from the image config
    st = start(backend, dom)
    assert st.state == RUNNING
    assert wait_log(backend, dom, "EVEADM-OCI-READY cwd=/tmp image=busybox")
    _, digest = image.resolve_manifest(str(oci_layout), "latest")
    cached = Path(backend.ctx.cache_dir("container"), "oci", digest.replace(":", "_"), "rootfs")
    assert (cached / "bin" / "busybox").exists()
    assert dom.backend["lower"] == str(cached)
    # a second domain from the same image reuses the unpacked tree
    dom2 = make_domain(cconfig(f"oci:{oci_layout}:latest", ["/bin/sh", "-c", "echo SECOND $EXTRA"],
                                        env={"EXTRA": "yes"}))
    log_before = backend.ctx.command_log.read_text().count("umoci")
    start(backend, dom2)
    assert backend.ctx.command_log.read_text().count("umoci") == log_before
    assert wait_log(backend, dom2, "SECOND yes")
    for d in (dom, dom2):
        backend.destroy(d)
        assert backend.wait_gone(d, 10)
        backend.release(d, delete=True)


def test_console_on_terminal(cconfig, backend, rootfs, make_domain):
    # a cooked-mode reader, not an interactive shell: busybox's line editor queries the
    # terminal (ESC[6n) and drops input until a terminal answers, which makes a test racy
    prog = 'echo "TERM=$TERM TTY=$(tty)"; read line; echo "GOT:$line"; exit 4'
    dom = make_domain(cconfig(rootfs, ["/bin/sh", "-c", prog], terminal=True))
    st = start(backend, dom)
    assert st.state == RUNNING
    sock_path = dom.data_dir / "bundle" / "attach"  # conmon's attach socket (--full-attach)
    assert sock_path.is_socket()
    bundle_fd = os.open(sock_path.parent, os.O_PATH)  # the test's path is longer than sun_path's 108 bytes
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(10)
        sock.connect(f"/proc/self/fd/{bundle_fd}/attach")
        os.close(bundle_fd)
        sock.send(b"hello console\n")
        seen = b""
        while b"GOT:hello console" not in seen:
            packet = sock.recv(65536)
            assert packet, seen
            assert packet[:1] == b"\x02", "every packet starts with its stream: 2 = stdout (the pty)"
            seen += packet[1:]
    assert backend.wait_gone(dom, 10)
    st = backend.status([dom])[dom.uuid]
    assert (st.state, st.exit_status) == (SHUTDOWN, 4)
    text = log_text(backend, dom)
    assert "TERM=xterm TTY=/dev/pts/0" in text and "GOT:hello console" in text, "pty output is kept in the log"
    raw = backend.console_log(dom).read_text()
    assert " stdout F TERM=xterm" in raw, "the kept log is conmon's k8s-file format"
    backend.destroy(dom)
    backend.release(dom, delete=True)
    assert not sock_path.exists()


def test_console_without_terminal_points_to_the_log(cconfig, backend, rootfs, make_domain):
    dom = make_domain(cconfig(rootfs, ["/bin/true"]))
    with pytest.raises(NotSupported, match=f"eveadm info {dom.uuid} --log"):
        backend.console(dom)


def test_failed_create_reports_runtime_error(cconfig, backend, rootfs, make_domain):
    dom = make_domain(cconfig(rootfs, ["/no/such/program"]))
    backend.prepare(dom)
    try:
        backend.create_paused(dom)
        backend.unpause(dom)
    except Exception as exc:  # runc fails at create, crun at start: either way, the runtime's words
        assert "no such" in str(exc).lower() or "not found" in str(exc).lower(), exc
    else:
        st = backend.status([dom])[dom.uuid]
        assert st.gone and st.exit_status and st.exit_status != 0
    backend.destroy(dom)
    assert backend.wait_gone(dom, 10)
    backend.release(dom, delete=True)
    assert not (dom.data_dir / "bundle").exists()


def test_status_asks_the_runtime_once(cconfig, backend, rootfs, make_domain):
    doms = [make_domain(cconfig(rootfs, ["/bin/sh", "-c", LOOP])) for _ in range(3)]
    for d in doms:
        start(backend, d)
    other = ContainerBackend(backend.ctx)  # another command: knows nothing of these domains
    before = backend.ctx.command_log.read_text().count('"list"')
    states = other.status(doms)
    assert {s.state for s in states.values()} == {RUNNING}
    assert backend.ctx.command_log.read_text().count('"list"') == before + 1
    for d in doms:
        backend.destroy(d)
        assert backend.wait_gone(d, 10)
        backend.release(d, delete=True)


def test_status_is_a_pure_read(cconfig, backend, rootfs, make_domain):
    dom = make_domain(cconfig(rootfs, ["/bin/sh", "-c", LOOP]))
    start(backend, dom)
    saved = json.dumps(dom.backend, sort_keys=True)
    log = backend.ctx.command_log
    before = log.read_text().count("\n")
    assert backend.status([dom])[dom.uuid].state == RUNNING
    issued = [json.loads(line)["argv"] for line in log.read_text().splitlines()[before:]]
    assert [a[3] for a in issued] == ["list"], issued
    assert json.dumps(dom.backend, sort_keys=True) == saved, "status writes nothing to dom.backend"
    backend.destroy(dom)
    assert backend.wait_gone(dom, 10)
    backend.release(dom, delete=True)


def test_ending_not_yet_recorded_is_not_gone(cconfig, backend, rootfs, make_domain):
    # conmon stopped: the program dies but its exit status cannot be recorded yet
    dom = make_domain(cconfig(rootfs, ["/bin/sh", "-c", LOOP]))
    pid = start(backend, dom).pid
    monitor_pid = conmon_pid(dom)
    os.kill(monitor_pid, signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not Path(f"/proc/{pid}").exists() or
                          Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 5)
        st = backend.status([dom])[dom.uuid]
        assert not st.gone and st.detail["monitor"] == "recording the exit", st
        assert not backend.wait_gone(dom, 0.2), "gone only once conmon has said how it ended"
    finally:
        os.kill(monitor_pid, signal.SIGCONT)
    assert backend.wait_gone(dom, 10)
    st = backend.status([dom])[dom.uuid]
    assert st.state == CRASHED and "SIGKILL" in st.error and "outside" in st.error
    backend.destroy(dom)
    backend.release(dom, delete=True)


def test_out_of_memory_is_crashed_and_says_so(cconfig, backend, rootfs, make_domain):
    # `tail` of a file without newlines keeps it all in memory: beyond the 16 MiB limit the kernel kills it
    dom = make_domain(cconfig(rootfs, ["/bin/sh", "-c", "exec tail /dev/zero"], ram=16))
    start(backend, dom)
    assert backend.wait_gone(dom, 20)
    st = backend.status([dom])[dom.uuid]
    assert st.state == CRASHED and st.exit_status == 137, st
    assert "out of memory" in st.error
    backend.destroy(dom)
    backend.release(dom, delete=True)


def test_interrupted_create_is_found_and_cleaned(cconfig, backend, rootfs, make_domain):
    # eveadm killed right after conmon answered: what it noted in dom.backend was never saved
    cfg = cconfig(rootfs, ["/bin/sh", "-c", LOOP])
    dom = make_domain(cfg)
    backend.prepare(dom)
    pid = backend.create_paused(dom).pid
    lost = make_domain(cfg)  # the same domain as the store still has it: nothing about the run
    st = backend.status([lost])[lost.uuid]
    assert (st.state, st.pid) == (PAUSED, pid), "found by its runtime state directory"
    monitor_pid = conmon_pid(dom)
    backend.destroy(lost)
    assert backend.wait_gone(lost, 10)
    assert not Path(f"/proc/{monitor_pid}").exists() or not Path(f"/proc/{monitor_pid}/cmdline").read_bytes()
    backend.release(lost, delete=True)
    assert not os.path.ismount(dom.data_dir / "bundle" / "rootfs")
    assert not (Path(backend.runtime().root) / dom.uuid).exists()


def test_hung_runtime_create_fails_within_the_handshake_timeout(cconfig, backend, rootfs, make_domain,
                                                               monkeypatch, tmp_path):
    # a create that never answers: conmon and the runtime under it are ended, the error says so
    dom = make_domain(cconfig(rootfs, ["/bin/true"]))
    backend.prepare(dom)
    spawned = []
    real_spawn = monitor.spawn

    def spawn_with_frozen_runtime(ctx, command, files, timeout=None):
        # the runtime conmon starts stops itself before it does anything: create never returns
        at = command.index("--runtime") + 1
        frozen = tmp_path / "frozen-runtime"
        frozen.write_text(f'#!/bin/sh\nkill -STOP $$\nexec {command[at]} "$@"\n')
        frozen.chmod(0o700)
        spawned.append(files)
        return real_spawn(ctx, [*command[:at], str(frozen), *command[at + 1:]], files, 1)

    monkeypatch.setattr(monitor, "spawn", spawn_with_frozen_runtime)
    with pytest.raises(BackendError, match="no answer from conmon"):
        backend.create_paused(dom)
    conmon = read_pid(spawned[0].conmon_pid)
    assert conmon and wait_until(lambda: not pid_alive(conmon), 5), "conmon ended"
    assert wait_until(lambda: not processes("frozen-runtime"), 5), "the runtime under it ended"
    backend.destroy(dom)
    backend.release(dom, delete=True)


def test_crun_workaround_runs_create_in_a_private_mount_namespace(cconfig, backend, rootfs, make_domain):
    if backend.runtime().name != "crun" or not hybrid_cgroups():
        pytest.skip("only crun on a hybrid-cgroup host needs the workaround")
    assert backend.runtime().wrap
    dom = make_domain(cconfig(rootfs, ["/bin/sh", "-c", LOOP]))
    assert start(backend, dom).state == RUNNING
    entry = [json.loads(line) for line in backend.ctx.command_log.read_text().splitlines()
             if "conmon" in line][-1]
    argv = entry["argv"]
    rt_path = argv[argv.index("--runtime") + 1]
    assert rt_path.endswith("unshare") and "--runtime-arg=/sys/fs/cgroup/unified" in argv, argv
    assert "/sys/fs/cgroup/unified" in Path("/proc/self/mounts").read_text(), "the host keeps its mounts"
    backend.destroy(dom)
    assert backend.wait_gone(dom, 10)
    backend.release(dom, delete=True)


def test_metadata_file_belongs_to_the_containers_user(cconfig, rootfs, tmp_path, make_domain):
    backend = ContainerBackend(BackendContext(tmp_path / "root"))
    dom = make_domain(cconfig(rootfs, ["/bin/true"], customer_metadata={"a": "1"}))
    (dom.data_dir / "bundle").mkdir(parents=True)
    backend._write_guest_files(dom, {"uid": 1234, "gid": 4321})
    path = dom.data_dir / "bundle" / "metadata.json"
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1234, 4321, 0o400)
    assert json.loads(path.read_text()) == {"a": "1"}
    assert not (dom.data_dir / "bundle" / "resolv.conf").exists(), "no nics: the image's resolv.conf"


def test_spec_keeps_its_own_network_namespace_and_binds_resolv_conf_only_with_nics(
        cconfig, rootfs, tmp_path, make_domain):
    backend = ContainerBackend(BackendContext(tmp_path / "root"))
    plain = json.loads(backend.render(make_domain(cconfig(rootfs, ["/bin/true"]))))
    assert {"type": "network"} in plain["linux"]["namespaces"]
    targets = [m["destination"] for m in plain["mounts"]]
    assert "/run/eveadm/metadata.json" in targets and "/etc/resolv.conf" not in targets
    wired = json.loads(backend.render(make_domain(cconfig(rootfs, ["/bin/true"], nics=[{"bridge": "br0"}]))))
    assert {"type": "network"} in wired["linux"]["namespaces"]
    assert "/etc/resolv.conf" in [m["destination"] for m in wired["mounts"]]
