"""The kvm brand end to end through the CLI (`python -m eveadm --root ROOT ...`), real QEMU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmtest import READY, REPO, console_exchange, log_bytes, qemus_under, wait_log
from eveadm.backends.host import pid_alive, wait_until

pytestmark = pytest.mark.kvm


def cli_env(env: dict | None = None) -> dict:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("EVEADM_ROOT", None)
    full_env["EVEADM_CREATE_RETRY_DELAY"] = "0"
    full_env.update(env or {})
    return full_env


def cli_argv(root: Path, *args) -> list[str]:
    return [sys.executable, "-m", "eveadm", "--root", str(root), *map(str, args)]


def ev(root: Path, *args, stdin: bytes | None = None, env: dict | None = None, check: bool = True):
    proc = subprocess.run(cli_argv(root, *args), input=stdin, capture_output=True, env=cli_env(env), timeout=180)
    if check:
        assert proc.returncode == 0, f"eveadm {' '.join(map(str, args))} -> {proc.returncode}: {proc.stderr.decode()}"
    return proc


def payload(guest: Path, **over) -> bytes:
    p = {"brand": "kvm", "kernel": str(guest / "vmlinuz"), "initrd": str(guest / "initramfs.cpio.gz"),
         "cmdline": "console=ttyS0 quiet panic=-1"}
    extra = over.pop("extra_cmdline", None)
    p.update(over)
    if extra:
        p["cmdline"] += " " + extra
    return json.dumps(p).encode()


def create(root, guest, *flags, **over) -> dict:
    out = ev(root, "create", "-j", *flags, stdin=payload(guest, **over))
    return json.loads(out.stdout)


def get(root, uuid) -> dict:
    return json.loads(ev(root, "get", uuid).stdout)


def test_lifecycle_create_stop_start_force_delete(root, guest):
    dom = create(root, guest, alias="life")
    uuid = dom["uuid"]
    assert dom["state"] == "running"
    assert dom["backend"]["accel"] in ("tcg", "kvm")
    pid = dom["domain_id"]
    assert pid and pid_alive(pid)
    log = dom["backend"]["serial_log"]
    wait_log(log, READY)
    assert ev(root, "info", uuid, "--log", "5").returncode == 0

    t0 = time.monotonic()
    ev(root, "stop", uuid)
    took = time.monotonic() - t0
    assert took < 10, f"graceful stop took {took:.2f}s (the guest powers off in ~0.1 s; the budget is 60 s)"
    got = get(root, uuid)
    assert got["state"] == "stopped" and not pid_alive(pid)
    assert b"EVEADM-GUEST-POWERDOWN" in log_bytes(log)

    ev(root, "start", uuid)
    got = get(root, uuid)
    assert got["state"] == "running" and got["domain_id"] != pid
    wait_log(log, READY, count=2)

    t0 = time.monotonic()
    ev(root, "stop", "-F", uuid)
    assert time.monotonic() - t0 < 8
    assert get(root, uuid)["state"] == "stopped"
    types = [json.loads(line)["type"] for line in ev(root, "events", "-j", uuid).stdout.splitlines()]
    assert "stop.forced" in types

    out = ev(root, "delete", uuid)
    assert b"qemu.argv" in out.stderr + out.stdout
    assert ev(root, "get", uuid, check=False).returncode == 4
    assert not qemus_under(root)


def test_create_paused_keeps_vcpus_stopped_until_start(root, guest):
    from eveadm.backends.kvm.qmp import qmp

    dom = create(root, guest, "--paused")
    uuid = dom["uuid"]
    assert dom["state"] == "paused"
    sock = dom["backend"]["qmp"]
    assert qmp(sock, "query-status")[0]["status"] in ("prelaunch", "paused")
    # a running guest prints its ready line in ~2.5 s: a paused one must not within 4 s
    assert not wait_until(lambda: READY in log_bytes(dom["backend"]["serial_log"]), 4)
    assert get(root, uuid)["state"] == "paused"
    ev(root, "start", uuid)
    assert qmp(sock, "query-status")[0]["status"] == "running"
    wait_log(dom["backend"]["serial_log"], READY)
    assert get(root, uuid)["state"] == "running"
    ev(root, "delete", uuid)


def test_killed_qemu_is_failed_and_kill_works(root, guest):
    dom = create(root, guest)
    uuid = dom["uuid"]
    os.kill(dom["domain_id"], signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(dom["domain_id"]), 10)  # SIGKILL is sent, not yet done
    got = get(root, uuid)
    assert got["state"] == "failed"
    assert "qemu crashed - please restart application instance" in got["error"]["message"]
    assert "died" in got["error"]["message"]

    ev(root, "start", uuid)  # from failed
    got = get(root, uuid)
    assert got["state"] == "running"
    ev(root, "kill", "-s", "TERM", uuid)
    assert wait_until(lambda: not pid_alive(got["domain_id"]), 10)
    got = get(root, uuid)
    assert got["state"] == "failed"
    assert "terminating on signal 15" in got["error"]["message"]
    ev(root, "delete", uuid)


def test_guest_ignoring_power_button_is_forced_after_t(root, guest):
    dom = create(root, guest, extra_cmdline="eveadm.ignore_powerbutton")
    uuid = dom["uuid"]
    wait_log(dom["backend"]["serial_log"], READY)
    t0 = time.monotonic()
    ev(root, "stop", "-t", "1", uuid)
    took = time.monotonic() - t0
    assert 1 <= took < 8, took  # the 1 s graceful budget, then the forced rung
    assert get(root, uuid)["state"] == "stopped"
    types = [json.loads(line)["type"] for line in ev(root, "events", "-j", uuid).stdout.splitlines()]
    assert types.index("stop.graceful_sent") < types.index("stop.forced")
    assert not qemus_under(root)


def test_guest_poweroff_by_itself_is_stopped(root, guest):
    dom = create(root, guest, extra_cmdline="eveadm.poweroff")
    uuid = dom["uuid"]
    wait_log(dom["backend"]["serial_log"], b"EVEADM-GUEST-POWEROFF")
    assert wait_until(lambda: get(root, uuid)["state"] == "stopped", 10)
    assert get(root, uuid).get("error") in (None, {})
    assert wait_until(lambda: not qemus_under(root), 10)


def test_disks_through_cli(root, guest):
    user = root / "user.img"
    user.write_bytes(b"USER" + bytes(1024 * 1024 - 4))
    dom = create(root, guest, "--paused", disks=[{"path": str(user), "preserve": True}, {"size": 8}])
    uuid = dom["uuid"]
    copies = [Path(d["path"]) for d in dom["backend"]["disks"]]
    assert all(c.exists() and c != user for c in copies)
    out = ev(root, "delete", uuid)
    text = (out.stdout + out.stderr).decode()
    for c in copies:
        assert not c.exists() and str(c) in text
    assert user.read_bytes().startswith(b"USER")


def test_two_domains_at_once(root, guest):
    a = create(root, guest, alias="one")
    b = create(root, guest, alias="two")
    wait_log(a["backend"]["serial_log"], READY)
    wait_log(b["backend"]["serial_log"], READY)
    rows = ev(root, "list", "-p", "-o", "alias,state").stdout.decode().split()
    assert sorted(rows) == ["one:running", "two:running"]
    ev(root, "stop", "one")
    rows = ev(root, "list", "-p", "-o", "alias,state").stdout.decode().split()
    assert sorted(rows) == ["one:stopped", "two:running"]
    assert pid_alive(b["domain_id"]) and not pid_alive(a["domain_id"])
    ev(root, "delete", "two")
    ev(root, "delete", "one")
    assert not qemus_under(root)


def test_console_through_cli(root, guest):
    dom = create(root, guest)
    wait_log(dom["backend"]["serial_log"], READY)
    console_exchange(cli_argv(root, "console", dom["uuid"]), b"echo CONSOLE-$((6*7))", b"CONSOLE-42", env=cli_env())
    ev(root, "delete", dom["uuid"])


def test_missing_qemu_gives_install_hint(root, guest, tmp_path):
    out = ev(root, "create", stdin=payload(guest), env={"PATH": str(tmp_path)}, check=False)
    assert out.returncode == 1
    assert b"brand kvm needs qemu-system-x86_64: apt-get install qemu-system-x86" in out.stderr
    assert b"Traceback" not in out.stderr


def test_stop_of_a_guest_that_answers_nothing_keeps_to_the_budgets(root, guest):
    """SIGSTOP QEMU: neither the ACPI button nor QMP quit is answered, so the stop climbs every rung.
    It must be done within the sum of the budgets its own journal shows."""
    dom = create(root, guest)
    uuid, pid = dom["uuid"], dom["domain_id"]
    wait_log(dom["backend"]["serial_log"], READY)
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    ev(root, "stop", "-t", "2", uuid, env={"EVEADM_FORCE_TIMEOUT": "2", "EVEADM_DESTROY_TIMEOUT": "5"})
    took = time.monotonic() - t0

    events = {}
    for line in ev(root, "events", "-j", uuid).stdout.splitlines():
        event = json.loads(line)
        events[event["type"]] = event  # the last of each type: this stop's
    budgets = [events[t]["timeout"] for t in ("stop.graceful_sent", "stop.forced", "stop.destroyed")]
    assert budgets == [2, 2, 5]
    assert "error" in events["stop.graceful_sent"] and "error" in events["stop.forced"]  # neither was answered
    assert events["stop.gone"]["seconds"] <= sum(budgets)
    assert get(root, uuid)["state"] == "stopped"
    assert not pid_alive(pid) and not qemus_under(root)
    assert took <= sum(budgets) + 1.5, f"stop took {took:.2f}s, budgets {budgets}"


def test_xen_virt_mode_is_refused_once_with_the_backends_words(root):
    out = ev(root, "validate", "create", "-j", stdin=json.dumps({"brand": "kvm", "virt_mode": "pv"}).encode(),
             check=False)
    assert out.returncode != 0
    text = (out.stdout + out.stderr).decode()
    assert text.count("pv is a xen mode; kvm runs hvm or fml") == 1, text


def test_a_state_root_deeper_than_a_socket_path_allows(root, guest):
    """Issue 9: any root works; QEMU's sockets do not live under it."""
    from kvmtest import socket_dirs_of

    deep = root / ("d" * 100) / ("e" * 30)
    assert len(str(deep)) > 120
    dom = create(deep, guest, alias="deep")
    uuid = dom["uuid"]
    assert dom["state"] == "running" and socket_dirs_of(deep) == [Path(dom["backend"]["sock_dir"])]
    wait_log(dom["backend"]["serial_log"], READY)
    assert "EVEADM-GUEST-READY" in ev(deep, "info", uuid, "--log", "50").stdout.decode()
    console_exchange(cli_argv(deep, "console", uuid), b"echo DEEP-$((6*7))", b"DEEP-42", env=cli_env())
    ev(deep, "stop", uuid)
    assert get(deep, uuid)["state"] == "stopped" and not qemus_under(deep) and socket_dirs_of(deep) == []
    ev(deep, "delete", uuid)
    assert ev(deep, "get", uuid, check=False).returncode == 4


def test_a_guest_kernel_panic_fails_the_domain(root, guest):
    dom = create(root, guest, extra_cmdline="eveadm.panic")
    uuid = dom["uuid"]
    wait_log(dom["backend"]["serial_log"], b"EVEADM-GUEST-PANIC")
    assert wait_until(lambda: get(root, uuid)["state"] == "failed", 30)
    got = get(root, uuid)
    assert got["error"]["message"] == "guest panicked"
    assert not qemus_under(root)  # the panicked QEMU (paused by -action panic=pause) was destroyed
    ev(root, "delete", uuid)


def test_a_text_file_as_kernel_is_refused_before_anything_is_made(root, guest):
    text = root / "kernel.txt"
    text.write_text("this is not a kernel\n")
    out = ev(root, "create", stdin=payload(guest, kernel=str(text)), check=False)
    assert out.returncode == 3 and b"is not a kernel" in out.stderr, out.stderr
    assert json.loads(ev(root, "list", "-j").stdout) == [] and not qemus_under(root)


def test_an_elf_that_is_no_kernel_fails_with_qemus_words(root, guest):
    out = ev(root, "create", stdin=payload(guest, kernel="/bin/true"), check=False)
    assert out.returncode == 1 and b"Error loading uncompressed kernel" in out.stderr, out.stderr
    assert not qemus_under(root)
