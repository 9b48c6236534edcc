"""KvmBackend against real QEMU (TCG on this host), below the lifecycle engine."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmtest import READY, REPO, boot, console_exchange, log_bytes, qemus_under, remove_socket_dirs_of, wait_log
from eveadm import backends
from eveadm.backends.base import ABSENT, CRASHED, FORCED, GRACEFUL, PAUSED, RUNNING, SHUTDOWN
from eveadm.backends.host import BackendContext, pid_alive, wait_until
from eveadm.backends.kvm import argv as kvm_argv
from eveadm.backends.kvm.qmp import qmp
from eveadm.errors import BackendError, BackendUnavailable, PermanentError

pytestmark = pytest.mark.kvm


def test_accel_auto_refuses_pvm_kvm_and_says_why(backend, make_dom, monkeypatch):
    accel, why = kvm_argv._detect_accel()
    flags = Path("/proc/cpuinfo").read_text()
    if os.path.exists("/sys/module/kvm_pvm") or not ({"vmx", "svm"} & set(flags.split())):
        assert accel == "tcg" and why.startswith("software emulation")
    dom = make_dom()
    assert f"-accel {accel}" in backend.render(dom)
    assert backend.host_info()["accel"] == accel
    monkeypatch.setenv("EVEADM_KVM_ACCEL", "tcg")
    assert backend.accel(dom) == ("tcg", "tcg: host setting kvm.accel")
    assert backend.accel(make_dom(accel="kvm"))[0] == "kvm"  # an explicit request is honoured


def test_create_paused_unpause_graceful_stop(backend, make_dom):
    dom = make_dom()
    dom.data_dir.mkdir(parents=True)
    dom.run_dir.mkdir(parents=True)
    backend.prepare(dom)
    assert Path(dom.backend["argv_file"]).read_text() == backend.render(dom)
    created = backend.create_paused(dom)
    pid = dom.backend["pid"]
    assert (created.state, created.pid) == (PAUSED, pid)
    assert dom.backend["accel"] in ("tcg", "kvm") and dom.backend["accel_reason"]
    st = backend.status([dom])[dom.uuid]
    assert (st.state, st.pid, st.detail["qemu_status"]) == (PAUSED, pid, "prelaunch")
    # owner-only run directory and sockets
    assert stat.S_IMODE(os.stat(dom.run_dir).st_mode) == 0o700
    for key in ("qmp", "qmp_events", "serial"):
        assert stat.S_IMODE(os.stat(dom.backend[key]).st_mode) == 0o600
    # vCPUs stopped: the kernel prints nothing while paused (checked after the boot took ~0.5 s elsewhere)
    assert READY not in log_bytes(dom.backend["serial_log"])

    verified = backend.unpause(dom)
    assert (verified.state, verified.pid, verified.detail["qemu_status"]) == (RUNNING, pid, "running")
    assert backend.status([dom])[dom.uuid].state == RUNNING
    wait_log(dom.backend["serial_log"], READY)

    t0 = time.monotonic()
    backend.shutdown(dom, GRACEFUL, 10)
    assert backend.wait_gone(dom, 30)
    took = time.monotonic() - t0
    assert took < 10, f"graceful stop took {took:.2f}s"  # well inside the budget (the guest needs ~0.1 s)
    assert b"EVEADM-GUEST-POWERDOWN" in log_bytes(dom.backend["serial_log"])
    assert backend.status([dom])[dom.uuid].state == SHUTDOWN  # the guest powered off, cleanly
    assert pid_alive(pid)  # QEMU lingers (-no-shutdown) until eveadm ends it: status only looks
    backend.release(dom)
    assert not pid_alive(pid)  # release let the lingering QEMU go
    assert backend.status([dom])[dom.uuid].state == ABSENT
    assert not dom.run_dir.exists()
    assert Path(dom.backend["serial_log"]).exists()  # the console log outlives a stop


def test_paused_guest_runs_nothing_until_unpause(backend, make_dom):
    dom = make_dom()
    backend.prepare(dom)
    backend.create_paused(dom)
    # a running guest would print its ready line in ~2.5 s; give a paused one twice that
    assert not wait_until(lambda: READY in log_bytes(dom.backend["serial_log"]), 5)
    assert qmp(dom.backend["qmp"], "query-status")[0]["status"] == "prelaunch"
    backend.unpause(dom)
    wait_log(dom.backend["serial_log"], READY)
    backend.destroy(dom, 5)
    assert backend.status([dom])[dom.uuid].state == ABSENT


def test_guest_ignoring_powerbutton_is_forced(backend, make_dom):
    dom = make_dom(extra_cmdline="eveadm.ignore_powerbutton")
    boot(backend, dom)
    wait_log(dom.backend["serial_log"], READY)
    backend.shutdown(dom, GRACEFUL, 10)
    assert not backend.wait_gone(dom, 1.5)
    assert backend.status([dom])[dom.uuid].state == RUNNING
    backend.shutdown(dom, FORCED, 10)
    t0 = time.monotonic()
    assert backend.wait_gone(dom, 10)
    assert time.monotonic() - t0 < 5
    assert backend.status([dom])[dom.uuid].state == ABSENT  # eveadm ended it: not a crash


def test_guest_poweroff_by_itself_is_shutdown(backend, make_dom):
    dom = make_dom(extra_cmdline="eveadm.poweroff")
    boot(backend, dom)
    pid = dom.backend["pid"]
    assert backend.wait_gone(dom, 60)
    assert b"EVEADM-GUEST-POWEROFF" in log_bytes(dom.backend["serial_log"])
    st = backend.status([dom])[dom.uuid]
    assert (st.state, st.error, st.detail["qemu_status"]) == (SHUTDOWN, None, "shutdown")
    assert pid_alive(pid) and backend.status([dom])[dom.uuid].state == SHUTDOWN  # asking twice changes nothing
    # the engine, having recorded the poweroff, destroys what remains: eveadm's doing, not a crash
    backend.destroy(dom, 5)
    assert not pid_alive(pid)
    assert backend.status([dom])[dom.uuid].state == ABSENT


@pytest.mark.parametrize("how", ["SIGKILL from outside", "kill SIGTERM"])
def test_dead_qemu_is_crashed(backend, make_dom, how):
    dom = make_dom()
    boot(backend, dom)
    pid = dom.backend["pid"]
    if how == "SIGKILL from outside":
        os.kill(pid, signal.SIGKILL)
    else:
        backend.kill(dom, signal.SIGTERM)
    assert backend.wait_gone(dom, 10)
    st = backend.status([dom])[dom.uuid]
    assert st.state == CRASHED
    assert "qemu crashed - please restart application instance" in st.error
    assert f"pid {pid} died" in st.error
    if how == "kill SIGTERM":
        # QEMU's own last words, from its log, without -msg's timestamp
        assert "died: qemu-system-x86_64: terminating on signal 15" in st.error
    backend.release(dom)
    assert backend.status([dom])[dom.uuid].state == ABSENT


def test_destroy_and_release_are_idempotent(backend, make_dom):
    dom = make_dom()
    boot(backend, dom)
    pid = dom.backend["pid"]
    backend.destroy(dom)
    assert not pid_alive(pid)
    backend.destroy(dom)  # already gone: no error
    assert backend.status([dom])[dom.uuid].state == ABSENT
    backend.release(dom)
    backend.release(dom, delete=True)
    assert not dom.data_dir.exists()
    with pytest.raises(BackendError):
        backend.kill(dom, signal.SIGKILL)


def test_failed_start_reports_qemu_words(backend, make_dom, root):
    missing = root / "no-such.img"
    missing.write_bytes(b"x" * 512)
    dom = make_dom(disks=[{"path": str(missing), "format": "qcow2"}])  # raw bytes claimed to be qcow2
    backend.prepare(dom)
    with pytest.raises(PermanentError) as err:  # no retry reads the image differently
        backend.create_paused(dom)
    assert str(err.value).startswith("qemu-system-x86_64 failed to start (exit 1): qemu-system-x86_64: -drive ")
    assert "qcow2" in str(err.value).lower() or "image" in str(err.value).lower()
    assert not qemus_under(root)


def test_paths_with_commas_are_escaped(guest, tmp_path_factory):
    from kvmtest import config
    from eveadm.backends.base import Domain
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="ev,k-", dir="/tmp"))
    try:
        b = backends.load("kvm", BackendContext(base))
        cfg = config(guest)
        dom = Domain(cfg["uuid"], cfg, {}, base / "domains" / cfg["uuid"], base / "run" / cfg["uuid"])
        assert ",," in b.render(dom)
        b.prepare(dom)
        b.create_paused(dom)
        assert b.status([dom])[dom.uuid].state == PAUSED
        assert "," in dom.backend["serial_log"] and Path(dom.backend["serial_log"]).exists()  # logfile=
        b.destroy(dom)
        assert b.status([dom])[dom.uuid].state == ABSENT
    finally:
        for pid in qemus_under(base):
            os.kill(pid, signal.SIGKILL)
        remove_socket_dirs_of(base)
        shutil.rmtree(base, ignore_errors=True)


def test_a_state_root_of_any_length_works(guest):
    """Sockets do not live under the state root (a unix socket path has at most 107 bytes): a root
    far deeper than that boots, answers QMP, shows its console and is released without a trace."""
    from kvmtest import config, socket_dirs_of
    from eveadm.backends.base import Domain
    from eveadm.backends.kvm.argv import socket_base
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="evk-", dir="/tmp"))
    deep = base / ("d" * 100) / ("e" * 100)
    try:
        b = backends.load("kvm", BackendContext(deep))
        cfg = config(guest)
        dom = Domain(cfg["uuid"], cfg, {}, deep / "domains" / cfg["uuid"], deep / "run" / cfg["uuid"])
        assert len(str(dom.run_dir)) > 200
        boot(b, dom)
        wait_log(dom.backend["serial_log"], READY)
        (sock_dir,) = socket_dirs_of(deep)
        assert Path(dom.backend["sock_dir"]) == sock_dir and sock_dir.parent == socket_base()
        assert os.stat(sock_dir).st_mode & 0o777 == 0o700
        assert all(len(os.fsencode(dom.backend[k])) <= 107 for k in ("qmp", "qmp_events", "serial"))
        assert b.status([dom])[dom.uuid].state == RUNNING
        b.shutdown(dom, GRACEFUL, 10)
        assert b.wait_gone(dom, 30)
        b.release(dom, delete=True)
        assert not sock_dir.exists() and socket_dirs_of(deep) == [] and not qemus_under(base)
    finally:
        for pid in qemus_under(base):
            os.kill(pid, signal.SIGKILL)
        remove_socket_dirs_of(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("made_by", ["open to all", "another user"])
def test_a_socket_directory_someone_else_can_enter_is_refused(backend, make_dom, made_by):
    from eveadm.backends.kvm.argv import socket_dir

    dom = make_dom()
    backend.prepare(dom)
    os.makedirs(socket_dir(dom), mode=0o700)
    if made_by == "open to all":
        os.chmod(socket_dir(dom), 0o777)
    else:
        os.chown(socket_dir(dom), 65534, 65534)
    try:
        with pytest.raises(PermanentError, match="refusing state directory"):
            backend.create_paused(dom)
    finally:
        os.rmdir(socket_dir(dom))


def test_a_text_file_is_not_a_kernel(backend, make_dom, root):
    text = root / "notes.txt"
    text.write_text("not a kernel\n" * 100)
    dom = make_dom(kernel=str(text))
    assert backend.validate(dom.config) == [("kernel", f"{text} is not a kernel (no bzImage header, not an ELF or PE file)")]
    backend.prepare(dom)  # validation skipped: create still refuses before starting QEMU, for good
    with pytest.raises(PermanentError, match="is not a kernel"):
        backend.create_paused(dom)
    assert not qemus_under(root)


@pytest.mark.parametrize("what", ["kernel", "initrd"])
def test_qemus_words_on_a_file_it_cannot_load_make_a_permanent_error(backend, make_dom, root, what):
    """An ELF that is no kernel passes the magic check; QEMU refuses it. A missing initrd too."""
    over = {"kernel": "/bin/true"} if what == "kernel" else {"initrd": str(root / "gone.cpio.gz")}
    dom = make_dom(**over)
    backend.prepare(dom)
    with pytest.raises(PermanentError) as err:
        backend.create_paused(dom)
    expected = "Error loading uncompressed kernel" if what == "kernel" else "gone.cpio.gz cannot be read"
    assert expected in str(err.value)
    assert not qemus_under(root)


def test_a_guest_kernel_panic_is_crashed_guest_panicked(backend, make_dom):
    dom = make_dom(extra_cmdline="eveadm.panic")
    assert ["-device", "pvpanic"] in backend.argv(dom) and ["-action", "panic=pause"] in backend.argv(dom)
    boot(backend, dom)
    wait_log(dom.backend["serial_log"], b"EVEADM-GUEST-PANIC")
    assert backend.wait_gone(dom, 30)  # the event monitor sees the guest-panicked stop
    st = backend.status([dom])[dom.uuid]
    assert (st.state, st.error, st.detail["qemu_status"]) == (CRASHED, "guest panicked", "guest-panicked")
    assert pid_alive(dom.backend["pid"])  # paused, not gone: the engine destroys it
    backend.destroy(dom)
    backend.release(dom, delete=True)


def test_missing_qemu_names_the_package(backend, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendUnavailable) as err:
        backend.check_available()
    assert str(err.value) == "brand kvm needs qemu-system-x86_64: apt-get install qemu-system-x86"


def _disk_lines(log: bytes) -> dict[str, str]:
    out = {}
    for line in log.decode(errors="replace").splitlines():
        if line.startswith("EVEADM-DISK "):
            _, dev, before = line.split()
            out[dev] = before.removeprefix("BEFORE=")
    return out


def test_disk_copy_semantics(backend, make_dom, root):
    user = {}
    for name in ("inplace", "fresh", "preserved"):
        user[name] = root / f"{name}.img"
        user[name].write_bytes(f"ORIG-{name}".ljust(16, "-").encode()[:16] + bytes(1024 * 1024 - 16))
    blank_at = root / "blank-at.img"
    dom = make_dom(
        extra_cmdline="eveadm.vda",
        disks=[
            {"path": str(user["inplace"])},                      # vda: used in place
            {"path": str(user["fresh"]), "preserve": False},     # vdb: fresh overlay each start
            {"path": str(user["preserved"]), "preserve": True},  # vdc: private copy kept
            {"size": 4},                                         # vdd: blank under data_dir
            {"size": 4, "path": str(blank_at), "format": "qcow2"},  # vde: blank created at path
        ],
    )
    seen = []
    for run in range(2):
        boot(backend, dom)
        log = wait_log(dom.backend["serial_log"], b"EVEADM-DISKS-DONE", count=run + 1)
        seen.append(_disk_lines(log.rsplit(b"EVEADM-GUEST-READY", 1)[1]))
        kinds = {d["index"]: d["kind"] for d in dom.backend["disks"]}
        assert kinds == {0: "user", 1: "fresh", 2: "preserved", 3: "blank", 4: "blank-at"}
        backend.shutdown(dom, GRACEFUL, 10)
        assert backend.wait_gone(dom, 30)
        removed = backend.release(dom)
        fresh_copy = dom.backend["disks"][1]["path"]
        assert removed == [fresh_copy] and Path(fresh_copy).parent.name == "fresh"  # only it goes at a stop
    first, second = seen
    assert first["vda"].startswith("ORIG-inplace") and second["vda"] == "WRITTEN-BY-GUEST"
    assert first["vdb"].startswith("ORIG-fresh") and second["vdb"].startswith("ORIG-fresh")
    assert first["vdc"].startswith("ORIG-preserved") and second["vdc"] == "WRITTEN-BY-GUEST"
    assert first["vdd"] == "." * 16 and second["vdd"] == "WRITTEN-BY-GUEST"
    assert second["vde"] == "WRITTEN-BY-GUEST"
    # the user's files: written only where used in place
    assert user["inplace"].read_bytes().startswith(b"WRITTEN-BY-GUEST")
    assert user["fresh"].read_bytes().startswith(b"ORIG-fresh")
    assert user["preserved"].read_bytes().startswith(b"ORIG-preserved")
    preserved_copy = Path(dom.backend["disks"][2]["path"])
    assert preserved_copy.read_bytes().startswith(b"WRITTEN-BY-GUEST")

    removed = backend.release(dom, delete=True)
    assert str(preserved_copy) in removed and str(blank_at) in removed
    assert not preserved_copy.exists() and not blank_at.exists()
    for f in user.values():
        assert f.exists(), f"{f} is the user's: never deleted"


def test_existing_file_with_size_is_not_owned(backend, make_dom, root):
    mine = root / "mine.img"
    mine.write_bytes(b"MINE" + bytes(4092))
    dom = make_dom(disks=[{"size": 4, "path": str(mine)}])
    backend.prepare(dom)
    assert dom.backend["disks_owned"] == []
    backend.release(dom, delete=True)
    assert mine.read_bytes().startswith(b"MINE")


def test_two_domains_at_once_and_cloud_init(backend, make_dom):
    a = make_dom(alias="a", extra_cmdline="eveadm.cidata",
                 cloud_init={"user_data": "#cloud-config\nhostname: eveadm-a\n"})
    b = make_dom(alias="b", machine="pc")
    for dom in (a, b):
        backend.prepare(dom)
        backend.create_paused(dom)
    assert {s.state for s in backend.status([a, b]).values()} == {PAUSED}
    for dom in (a, b):
        backend.unpause(dom)
    assert {s.state for s in backend.status([a, b]).values()} == {RUNNING}
    log_a = wait_log(a.backend["serial_log"], b"EVEADM-CIDATA")
    wait_log(b.backend["serial_log"], READY)
    assert b"EVEADM-CIDATA cidata #cloud-config" in log_a
    assert a.backend["pid"] != b.backend["pid"]
    info = backend.info(a)
    assert any(blk["file"] == a.backend["cidata"] for blk in info["block"])
    # stopping one leaves the other running
    backend.shutdown(a, GRACEFUL, 10)
    assert backend.wait_gone(a, 30)
    states = backend.status([a, b])
    assert states[a.uuid].gone and states[b.uuid].state == RUNNING
    backend.shutdown(b, FORCED, 10)
    assert backend.wait_gone(b, 10)


def test_console_attach_pipes_both_ways(backend, make_dom):
    dom = make_dom()
    boot(backend, dom)
    wait_log(dom.backend["serial_log"], READY)
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from eveadm.backends import console as serial\n"
        "sys.exit(serial.attach(%r, %r))\n"
    ) % (str(REPO / "src"), dom.backend["serial"], str(Path(dom.run_dir) / "console.lock"))
    console_exchange([sys.executable, "-c", code], b"echo CONSOLE-$((6*7))", b"CONSOLE-42")
    assert backend.console_log(dom) == Path(dom.backend["serial_log"])
    assert b"CONSOLE-42" in log_bytes(backend.console_log(dom))
    backend.destroy(dom)


def test_wait_gone_polls_when_the_event_monitor_is_taken(backend, make_dom):
    import socket

    dom = make_dom()
    boot(backend, dom)
    wait_log(dom.backend["serial_log"], READY)
    hog = socket.socket(socket.AF_UNIX)
    hog.connect(dom.backend["qmp_events"])  # QEMU serves one client per monitor
    try:
        backend.shutdown(dom, GRACEFUL, 10)
        t0 = time.monotonic()
        assert backend.wait_gone(dom, 20)
        assert time.monotonic() - t0 < 8
        assert backend.status([dom])[dom.uuid].state == SHUTDOWN
    finally:
        hog.close()


def test_console_on_a_tty_restores_the_terminal(backend, make_dom):
    import pty
    import termios

    dom = make_dom()
    boot(backend, dom)
    wait_log(dom.backend["serial_log"], READY)
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    code = (
        "import sys, termios; sys.path.insert(0, %r)\n"
        "from eveadm.backends import console as serial\n"
        "rc = serial.attach(%r, %r)\n"
        "sys.exit(rc if termios.tcgetattr(0) == %r else 99)\n"
    ) % (str(REPO / "src"), dom.backend["serial"], str(Path(dom.run_dir) / "console.lock"), before)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    got = b""
    try:
        def read_until(needle):
            def seen():
                nonlocal got
                import select
                while select.select([master], [], [], 0)[0]:
                    try:
                        got += os.read(master, 4096)
                    except OSError:
                        break
                return needle in got
            return wait_until(seen, 20)

        assert read_until(b"Ctrl-]"), got
        os.write(master, b"echo TTY-$((6*7))\r")
        assert read_until(b"TTY-42"), got
        os.write(master, b"\x1d")
        assert proc.wait(10) == 0, got  # 99 would mean the terminal was left in raw mode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    backend.destroy(dom)


def test_rich_config_is_accepted_by_qemu(backend, make_dom, root):
    iso = root / "media.iso"
    src = root / "isosrc"
    src.mkdir()
    (src / "hello.txt").write_text("hi\n")
    subprocess.run(["genisoimage", "-quiet", "-o", str(iso), "-V", "MEDIA", str(src)], check=True)
    dom = make_dom(
        vcpus=2, ram=256, max_ram=512, cpus="0",
        disks=[{"size": 4, "model": "scsi"}, {"size": 4, "model": "ide", "format": "qcow2"},
               {"path": str(iso), "media": "cdrom", "model": "ide"},
               {"path": str(iso), "media": "cdrom", "boot": True}],
        nics=[{"mac": "02:00:00:00:00:01", "model": "virtio"}, {"mac": "02:00:00:00:00:02", "model": "e1000"}],
        vnc_port=0, vnc_password="secret",
        cloud_init={"user_data": "#cloud-config\n"},
    )
    backend.prepare(dom)
    backend.create_paused(dom)
    pid = dom.backend["pid"]
    assert os.sched_getaffinity(pid) == {0}
    backend.unpause(dom)
    st, block, vnc, cpus = qmp(dom.backend["qmp"], "query-status", "query-block", "query-vnc",
                                       "query-cpus-fast")
    assert st["status"] == "running"
    files = sorted((b.get("inserted") or {}).get("file", "") for b in block)
    assert files.count(str(iso)) == 2 and dom.backend["cidata"] in files
    assert vnc["enabled"] and vnc["auth"] == "vnc"
    assert len(cpus) == 2
    info = backend.info(dom)
    assert info["accel"] == dom.backend["accel"] and info["qemu_status"] == "running"
    backend.destroy(dom)
    removed = backend.release(dom, delete=True)
    assert iso.exists() and str(iso) not in removed
    assert not dom.data_dir.exists()


def test_nic_on_a_bridge_gets_its_tap_enslaved(backend, make_dom):
    import uuid as _u

    bridge = "evkbr" + _u.uuid4().hex[:6]
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        dom = make_dom(nics=[{"mac": "02:00:00:00:00:03", "model": "virtio", "bridge": bridge, "mtu": 1400}])
        tap = f"ek{dom.uuid[:8]}.0"
        backend.prepare(dom)
        backend.create_paused(dom)
        backend.unpause(dom)
        assert Path(f"/sys/class/net/{tap}/master").resolve().name == bridge
        assert Path(f"/sys/class/net/{tap}/mtu").read_text().strip() == "1400"
        assert backend.info(dom)["nics"][0]["tap"] == tap and backend.info(dom)["nics"][0]["bridge"] == bridge
        backend.destroy(dom)
        # eveadm made the tap, so it outlives QEMU until release deletes it
        assert Path(f"/sys/class/net/{tap}").exists()
        backend.release(dom)
        assert not Path(f"/sys/class/net/{tap}").exists()
        assert "taps" not in dom.backend
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False)


def test_a_qemu_whose_pid_was_never_recorded_is_found_by_its_pid_file(backend, make_dom):
    """eveadm killed between starting QEMU and persisting dom.backend: no orphan."""
    dom = make_dom()
    backend.prepare(dom)
    backend.create_paused(dom)
    pid = dom.backend["pid"]
    dom.backend.clear()  # what the engine would have persisted had it died mid-create
    assert backend.status([dom])[dom.uuid].state == PAUSED
    assert dom.backend == {}  # found, not recorded: status only reads
    backend.destroy(dom)
    assert not pid_alive(pid)
    assert backend.status([dom])[dom.uuid].state == ABSENT


def _what_status_could_touch(root: Path, doms) -> tuple:
    """Everything a status() must leave as it was: the backend dicts, the command log, the domains' files."""
    import copy

    files = {d.uuid: sorted(str(p) for top in (d.run_dir, d.data_dir) for p in top.rglob("*")) for d in doms}
    return copy.deepcopy([d.backend for d in doms]), log_bytes(root / "log" / "commands.jsonl"), files


def test_status_is_a_pure_read(backend, make_dom, root):
    running = make_dom(alias="running")
    paused = make_dom(alias="paused")
    off = make_dom(alias="off", extra_cmdline="eveadm.poweroff")
    boot(backend, running)
    boot(backend, off)
    backend.prepare(paused)
    backend.create_paused(paused)
    wait_log(running.backend["serial_log"], READY)
    assert wait_until(lambda: qmp(off.backend["qmp"], "query-status")[0]["status"] == "shutdown", 60)
    doms = [running, paused, off]
    before = _what_status_could_touch(root, doms)
    assert before[1], "the command log should hold QEMU's start"

    for _ in range(2):
        states = backend.status(doms)
        assert {d.alias: states[d.uuid].state for d in doms} == {"running": RUNNING, "paused": PAUSED,
                                                                 "off": SHUTDOWN}
        for dom in doms:
            assert backend.status([dom])[dom.uuid] == states[dom.uuid]

    assert _what_status_could_touch(root, doms) == before
    # the powered-off guest's QEMU is still there, still in run state shutdown: status did not quit it
    assert pid_alive(off.backend["pid"])
    assert qmp(off.backend["qmp"], "query-status")[0]["status"] == "shutdown"
    for dom in doms:
        backend.destroy(dom, 5)
        assert backend.status([dom])[dom.uuid].state == ABSENT


def test_a_stopped_qemu_holds_up_no_one(backend, make_dom):
    """A QEMU that answers nothing (SIGSTOP): status of the others is not delayed past the status
    timeout, a stop request gives up within its budget, destroy still ends it."""
    from eveadm.backends.kvm.backend import STATUS_TIMEOUT

    hung, fine = make_dom(alias="hung"), make_dom(alias="fine")
    boot(backend, hung)
    boot(backend, fine)
    pid = hung.backend["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        states = backend.status([hung, fine])
        took = time.monotonic() - t0
        assert took < STATUS_TIMEOUT + 1.0, f"status of two took {took:.2f}s"  # slack for a loaded machine
        assert states[fine.uuid].detail["qemu_status"] == "running"
        assert states[hung.uuid].state == RUNNING  # the process is there: never called gone
        assert states[hung.uuid].detail["qmp_error"] == "no answer (timeout)"

        for kind in (GRACEFUL, FORCED):
            t0 = time.monotonic()
            with pytest.raises(BackendError, match=f"^QMP {'quit' if kind == FORCED else 'system_powerdown'} on "):
                backend.shutdown(hung, kind, 1)
            took = time.monotonic() - t0
            assert took < 2.5, f"{kind} request to a silent QEMU took {took:.2f}s with a 1 s budget"

        backend.destroy(hung, 5)  # SIGKILL ends a stopped process too
        assert not pid_alive(pid)
        assert backend.status([hung])[hung.uuid].state == ABSENT
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert backend.status([fine])[fine.uuid].state == RUNNING
    backend.destroy(fine, 5)


def test_doctor_finds_and_removes_only_qemus_of_domains_it_does_not_have(backend, make_dom, root):
    from eveadm.backends.kvm.argv import socket_dir

    kept, lost = make_dom(alias="kept"), make_dom(alias="lost")
    elsewhere_ctx = BackendContext(root / "elsewhere")  # another state root: none of this root's business
    elsewhere = backends.load("kvm", elsewhere_ctx)
    other = make_dom(alias="other")
    other = type(other)(other.uuid, other.config, {}, root / "elsewhere/domains" / other.uuid,
                        root / "elsewhere/run" / other.uuid)
    foreign_pidfile = root / "foreign.pid"  # a QEMU eveadm did not start
    subprocess.run(["qemu-system-x86_64", "-machine", "none", "-display", "none", "-S", "-daemonize",
                    "-pidfile", str(foreign_pidfile)], check=True, timeout=30)
    for b, dom in ((backend, kept), (backend, lost), (elsewhere, other)):
        b.prepare(dom)
        b.create_paused(dom)
    found = backend.orphans({kept.uuid})
    assert {(o.kind, o.uuid) for o in found} == {("process", lost.uuid), ("socket-dir", lost.uuid)}
    assert [o.ident for o in found if o.kind == "process"] == [str(lost.backend["pid"])]
    assert backend.orphans({kept.uuid, lost.uuid}) == []
    for orphan in found:
        backend.remove_orphan(orphan)
    assert not pid_alive(lost.backend["pid"]) and not socket_dir(lost).exists()
    assert backend.orphans({kept.uuid}) == []
    foreign_pid = int(foreign_pidfile.read_text())
    for pid in (kept.backend["pid"], other.backend["pid"], foreign_pid):
        assert pid_alive(pid)
    os.kill(foreign_pid, signal.SIGKILL)
    for b, dom in ((backend, kept), (elsewhere, other)):
        b.destroy(dom)
        b.release(dom, delete=True)
