"""Boot Xen 4.17 + a PV dom0 nested in QEMU TCG and run shell commands in dom0.

The artifacts come from scripts/build-xen.sh. The host's / is exported read-only over
virtio-9p; dom0 mounts it on /host and bind-mounts the pieces eveadm needs at the
same paths as on the host (the Python installation, the source tree, the artifacts,
the host's /usr/lib/x86_64-linux-gnu for Python's extension-module libraries), so
`python3 -m eveadm` runs *in dom0* with the real xl/xenstore, exactly as on a Xen
node. Commands go over the Xen console (QEMU serial on a unix socket) with an exit
marker; nothing here sleeps for synchronisation: every wait is for a pattern with a
deadline.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

MARK = "__EVX"
REPO = Path(__file__).resolve().parents[3]
ROOT = "/run/eveadm-xen"  # eveadm's state root inside dom0 (dom0's tmpfs)
PCI_ADDR = "0000:00:06.0"  # the spare e1000 given to dom0 for the pci tests


class XenVM:
    def __init__(self, art: Path, workdir: Path, *, extra_qemu: list[str] | None = None,
                 mem_mib: int = 1536, machine: str = "pc"):
        self.art = Path(art)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sock = self.workdir / "xen.serial"
        self.log = self.workdir / "xen-serial.log"
        self.extra_qemu = extra_qemu or []
        self.mem_mib = mem_mib
        self.machine = machine
        self.proc: subprocess.Popen | None = None
        self.s: socket.socket | None = None
        self.buf = b""
        self.boot_seconds = None
        self.seq = 0
        self.cmddir = self.workdir / "cmd"
        self.cmddir.mkdir(exist_ok=True)

    # -- boot / teardown -----------------------------------------------------------
    def qemu_argv(self) -> list[str]:
        a = self.art
        return [
            "qemu-system-x86_64", "-M", self.machine, "-accel", "tcg",
            "-cpu", "max,-smap",  # a PV dom0 dies at once under TCG when SMAP is exposed
            "-m", str(self.mem_mib), "-smp", "2", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot",
            "-chardev", f"socket,id=c0,path={self.sock},server=on,wait=off,logfile={self.log}",
            "-serial", "chardev:c0",
            "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={self.workdir},mount_tag=work,security_model=none,multidevs=remap",
            *self.extra_qemu,
            "-kernel", str(a / "xen.elf"),
            "-append", "console=com1 com1=115200,8n1 dom0_mem=512M,max:512M dom0_max_vcpus=1 noreboot",
            "-initrd", f"{a / 'vmlinuz'} console=hvc0 panic=-1 quiet,{a / 'dom0-initramfs.cpio.gz'}",
        ]

    def boot(self, timeout: float = 120) -> float:
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.qemu_argv(), stdin=subprocess.DEVNULL,
                                     stdout=open(self.workdir / "qemu.out", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        from eveadm.backends.host import wait_until

        if not wait_until(lambda: self.sock.exists() or self.proc.poll() is not None, 10) or not self.sock.exists():
            raise RuntimeError("qemu did not start: " + (self.workdir / "qemu.out").read_text()[-500:])
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(str(self.sock))
        self.s.settimeout(0.2)
        self._read_until(rb"EVEADM-DOM0-SHELL", timeout)
        if self.check("echo ok").strip() != "ok":
            raise RuntimeError("dom0 shell does not answer")
        self.boot_seconds = time.monotonic() - t0
        return self.boot_seconds

    def close(self) -> None:
        if self.s is not None:
            try:
                self.s.sendall(b"poweroff -f\n")
            except OSError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        if self.s is not None:
            self.s.close()

    # -- serial I/O ----------------------------------------------------------------
    def _read_until(self, pattern: bytes, timeout: float):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.S)
        while True:
            m = rx.search(self.buf)
            if m:
                out, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return out, m
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"qemu exited ({self.proc.returncode}); tail {self.buf[-400:]!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern!r} not seen in {timeout}s; tail {self.buf[-400:]!r}")
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise RuntimeError("serial closed")
            self.buf += data

    def run(self, cmd: str, timeout: float = 120) -> tuple[int, str, str]:
        """Run `cmd` (a shell command line) in dom0; return (exit status, stdout, stderr).

        Xen's console input ring is small and drops what dom0 does not read in time, so
        only a short `x N` travels on the serial line: the command itself is the file
        cmd/N.sh in the work dir (shared read-write with dom0 over virtio-9p, on /x),
        dom0's /bin/x runs it with its output to files there and prints a done marker.
        """
        self.seq += 1
        n = self.seq
        base = self.cmddir / str(n)
        Path(f"{base}.sh").write_text(cmd + "\n")
        self.s.sendall(f"x {n}\n".encode())
        _, m = self._read_until(rf"{MARK}E{n}=(\d+)".encode(), timeout)
        return (int(m.group(1)), Path(f"{base}.out").read_text(errors="replace"),
                Path(f"{base}.err").read_text(errors="replace"))

    def sh(self, cmd: str, timeout: float = 120) -> tuple[int, str]:
        """Like run(), stdout and stderr together."""
        rc, out, err = self.run(cmd, timeout)
        return rc, out + err

    def gpath(self, host_path: str | Path) -> str:
        """Where a file of the work dir is seen in dom0."""
        return "/x/" + str(Path(host_path).relative_to(self.workdir))

    def check(self, cmd: str, timeout: float = 120) -> str:
        rc, out = self.sh(cmd, timeout)
        if rc != 0:
            raise AssertionError(f"dom0: {cmd!r} exited {rc}: {out.strip()[-800:]}")
        return out

    def wait_for(self, cmd: str, predicate, timeout: float) -> str:
        """Re-run `cmd` in dom0 until predicate(rc, out) holds (the loop runs in dom0 time)."""
        deadline = time.monotonic() + timeout
        while True:
            rc, out = self.sh(cmd)
            if predicate(rc, out):
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"dom0: {cmd!r} never satisfied the condition; last rc={rc} {out[-400:]!r}")

    # -- host paths inside dom0 ------------------------------------------------------
    def bind_host(self, path: str | Path) -> None:
        """Make host `path` (read-only) visible at the same path in dom0."""
        p = shlex.quote(str(path))
        self.check(f"mkdir -p {p} && mount --bind /host{p} {p}")


SYSTEM_PREFIXES = ("/", "/usr", "/usr/local")


def expose_python(vm: XenVM, extra: list) -> None:
    """Make this interpreter (and `extra` dirs) runnable in dom0 at the same paths as here.

    dom0's own /usr holds xl and friends, so a system Python (prefix /usr) is exposed
    piecemeal (its stdlib, site dirs and executable) rather than by mounting /usr.
    The host's /usr/lib/x86_64-linux-gnu comes too, for the libraries of Python's
    extension modules; dom0's own libraries are in /lib/x86_64-linux-gnu, found first.
    """
    dirs = {str(Path(p)) for p in extra} | {"/usr/lib/x86_64-linux-gnu"}
    files = set()
    links = []
    for prefix in {sys.base_prefix, sys.prefix}:
        if prefix not in SYSTEM_PREFIXES:
            dirs.add(prefix)
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path and os.path.isdir(path):
            dirs.add(path)
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and os.path.isdir(libdir) and libdir not in ("/usr/lib", "/lib"):
        dirs.add(libdir)
    # the executable, and every symlink on the way to it
    p = sys.executable
    while os.path.islink(p):
        target = os.readlink(p)
        links.append((p, target))
        p = os.path.join(os.path.dirname(p), target)
    files.add(os.path.realpath(p))

    def covered(path):
        return any(path != d and path.startswith(d.rstrip("/") + "/") for d in dirs)

    for d in sorted(dirs):
        if not covered(d):
            vm.bind_host(d)
    for f in sorted(files):
        if not covered(f):
            q = shlex.quote(f)
            vm.check(f"mkdir -p $(dirname {q}) && touch {q} && mount --bind /host{q} {q}")
    for link, target in links:
        if not covered(link):
            vm.check(f"mkdir -p $(dirname {shlex.quote(link)}) && ln -sfn {shlex.quote(target)} {shlex.quote(link)}")


class Dom0:
    """The booted machine plus helpers to run eveadm and tools in dom0."""

    def __init__(self, vm: XenVM, art: Path):
        self.vm = vm
        self.art = art
        self.n = 0

    def sh(self, cmd: str, timeout: float = 120) -> tuple[int, str]:
        return self.vm.sh(cmd, timeout)

    def check(self, cmd: str, timeout: float = 120) -> str:
        return self.vm.check(cmd, timeout)

    def eveadm(self, *args, payload: dict | None = None, timeout: float = 300):
        """`python3 -m eveadm --root ROOT ARGS` in dom0 -> CompletedProcess-like (returncode, stdout, stderr)."""
        argv = [sys.executable, "-m", "eveadm", "--root", ROOT, *map(str, args)]
        if payload is not None:
            self.n += 1
            pf = self.vm.workdir / f"payload-{self.n}.json"
            pf.write_text(json.dumps(payload))
            argv += ["-f", self.vm.gpath(pf)]
        # xl destroy of a domain with a PCI device takes 10-20 s in this nested, emulated machine (the
        # device's reset): the destroy rung gets the time it needs here, not a production budget
        env = f"PYTHONPATH={shlex.quote(str(REPO / 'src'))} EVEADM_CREATE_RETRY_DELAY=1 EVEADM_DESTROY_TIMEOUT=60"
        rc, out, err = self.vm.run(f"cd / && {env} " + " ".join(shlex.quote(a) for a in argv) + " </dev/null",
                                   timeout)
        return subprocess.CompletedProcess(argv, rc, out, err)

    def ok(self, *args, **kw):
        r = self.eveadm(*args, **kw)
        assert r.returncode == 0, f"eveadm {' '.join(map(str, args))} -> {r.returncode}: {r.stderr.strip()}"
        return r

    def commands(self) -> list[dict]:
        rc, out = self.sh(f"cat {ROOT}/log/commands.jsonl 2>/dev/null || true")
        return [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]

    def argvs(self) -> list[list[str]]:
        return [c["argv"] for c in self.commands()]

    def xl_flags(self, name: str) -> str | None:
        rc, out = self.sh(f"xl list {shlex.quote(name)}")
        if rc != 0:
            return None
        return out.splitlines()[-1].split()[4]

    def xenstore(self, key: str) -> str | None:
        rc, out = self.sh(f"xenstore read {shlex.quote(key)}")
        return out.strip() if rc == 0 else None

    def wait_console(self, name: str, text: str = "EVEADM-GUEST-READY", timeout: float = 60) -> str:
        log = f"/var/log/xen/console/guest-{name}.log"
        return self.vm.wait_for(f"cat {log}", lambda rc, out: text in out, timeout)


