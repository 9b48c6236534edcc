"""Helpers of the kvm integration tests (a uniquely named module: other brands' test
directories have their own conftest.py, and all of them are importable as `conftest`)."""

from __future__ import annotations

import os
import sys
import uuid as _uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from eveadm.backends.host import wait_until  # noqa: E402

READY = b"EVEADM-GUEST-READY"
BOOT_TIMEOUT = 60  # s; a TCG boot takes ~2.5 s alone, more when two run at once on 2 cores


def artifacts_dir() -> Path:
    return Path(os.environ.get("EVEADM_ARTIFACTS", "/var/cache/eveadm/artifacts"))


def qemus_under(path: Path) -> list[int]:
    """Pids of QEMU processes whose command line mentions `path`."""
    return qemus_matching(os.fsencode(str(path)))


def qemus_matching(needle: bytes) -> list[int]:
    """Pids of QEMU processes whose command line (NUL-separated) contains `needle`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if cmd.startswith(b"qemu-system") and needle in cmd:
            pids.append(int(entry))
    return pids


def socket_dirs_of(root: Path) -> list[Path]:
    """The QEMU socket directories made for domains under state root `root` (their `owner` names
    a run directory inside it)."""
    from eveadm.backends.kvm.argv import socket_base

    base = socket_base()
    found = []
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        try:
            owner = (d / "owner").read_text().strip()
        except OSError:
            continue
        if owner.startswith(str(root) + os.sep):
            found.append(d)
    return found


def remove_socket_dirs_of(root: Path) -> None:
    import shutil

    for d in socket_dirs_of(root):
        shutil.rmtree(d, ignore_errors=True)


def config(guest: Path, **over) -> dict:
    """A kvm config as schema.py hands it to the backend (defaults applied by schema.normalize)."""
    from eveadm import schema

    payload = {
        "uuid": str(_uuid.uuid4()), "brand": "kvm",
        "kernel": str(guest / "vmlinuz"), "initrd": str(guest / "initramfs.cpio.gz"),
        "cmdline": "console=ttyS0 quiet panic=-1",
    }
    extra = over.pop("extra_cmdline", None)
    payload.update(over)
    if extra:
        payload["cmdline"] += " " + extra
    return schema.normalize(payload)


def log_bytes(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return b""


def wait_log(path, marker: bytes, count: int = 1, timeout: float = BOOT_TIMEOUT) -> bytes:
    """Wait until `marker` appears `count` times in the log; return the log."""
    ok = wait_until(lambda: log_bytes(path).count(marker) >= count, timeout)
    text = log_bytes(path)
    assert ok, f"{marker!r} x{count} not seen in {path} within {timeout}s; tail: {text[-600:]!r}"
    return text


def console_exchange(argv: list[str], line: bytes, answer: bytes, env: dict | None = None,
                     timeout: float = 20) -> bytes:
    """Run a console attach (argv), type `line`, wait until `answer` is seen, then detach with Ctrl-]
    and expect exit 0. Waits on the answer, not on a quiet spell: a starved TCG guest may pause."""
    import subprocess

    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    got = b""
    try:
        proc.stdin.write(b"\n" + line + b"\n")
        proc.stdin.flush()
        os.set_blocking(proc.stdout.fileno(), False)

        def answered() -> bool:
            nonlocal got
            try:
                got += proc.stdout.read() or b""
            except BlockingIOError:
                pass
            return answer in got

        assert wait_until(answered, timeout), got
        proc.stdin.write(b"\x1d")  # Ctrl-] detaches
        proc.stdin.flush()
        assert proc.wait(10) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return got


def boot(backend, dom) -> None:
    """prepare + create paused + unpause, as the engine does."""
    dom.data_dir.mkdir(parents=True, exist_ok=True)
    dom.run_dir.mkdir(parents=True, exist_ok=True)
    backend.prepare(dom)
    backend.create_paused(dom)
    backend.unpause(dom)
