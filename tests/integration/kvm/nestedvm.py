"""A Linux machine nested in QEMU TCG, with an emulated IOMMU and a spare e1000, in which eveadm's kvm
brand passes that e1000 through to a guest of its own (vfio-pci).

The machine (L1) runs Debian's standard kernel with `intel_iommu=on` and a busybox initramfs that
loads virtio-9p, e1000 and vfio-pci, mounts the host's / read-only (virtio-9p tag "host") and
chroots into it, with private proc, sys, dev, /tmp and /run. So eveadm, Python, QEMU and the test
guest run in L1 from the host's own files, at the host's paths, and eveadm's state is L1's alone.
Commands travel as in tests/integration/xen/xenvm.py (whose XenVM this reuses): a short `x N` on
the serial line runs the file cmd/N.sh of the work dir (shared read-write, tag "work").

Artifacts (`build()`, cached under $EVEADM_ARTIFACTS/kvm-nested, rebuilt when this file changes):
the kernel and its modules from linux-image-amd64, busybox from busybox-static, both fetched with
`apt-get download`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "xen"))
from xenvm import XenVM  # noqa: E402

PCI_ADDR = "0000:00:06.0"  # the spare e1000, as in the Xen harness
E1000_ID = "8086:100e"
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "e1000", "vfio_pci", "vfio_iommu_type1")
# the emulated VT-d runs without interrupt remapping (intremap=off): vfio must be told that is fine here
MODULE_ARGS = {"vfio_iommu_type1": "allow_unsafe_interrupts=1"}

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do
    insmod /lib/modules/$m.ko $(cat /lib/modules/$m.args 2>/dev/null) || echo "EVEADM-L1 insmod $m failed"
done
mkdir -p /host /x
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host /host
mount -t 9p -o trans=virtio,version=9p2000.L,cache=none work /x
# the root eveadm runs in: the host's files, with L1's own kernel file systems and scratch space
mount -t proc proc /host/proc; mount -t sysfs sysfs /host/sys; mount -t devtmpfs devtmpfs /host/dev
# the checkout (and its .venv) stays visible when it lies under /tmp or /run, as a CI clone may
i=0; for P in $(cat /x/keep); do mkdir -p /keep$i && mount --bind "/host$P" /keep$i; i=$((i+1)); done
mount -t tmpfs tmpfs /host/tmp; mount -t tmpfs tmpfs /host/run
i=0; for P in $(cat /x/keep); do mkdir -p "/host$P" && mount --bind /keep$i "/host$P"; i=$((i+1)); done
W=$(cat /x/hostpath)
mkdir -p "/host$W" && mount --bind /x "/host$W"
stty -echo </dev/ttyS0
export PS1=''
echo "EVEADM-DOM0-SHELL uptime=$(cut -d' ' -f1 /proc/uptime)"
while true; do setsid -c sh </dev/ttyS0 >/dev/ttyS0 2>&1; done
"""
# `x N`: run the work dir's cmd/N.sh in the host's root, then print the marker XenVM waits for
RUNNER = r"""#!/bin/sh
W=$(cat /x/hostpath)
chroot /host /bin/sh -c "cd '$W/cmd' && sh $1.sh >$1.out 2>$1.err"
echo "__EVXE$1=$?"
"""


def artifacts_dir() -> Path:
    return Path(os.environ.get("EVEADM_ARTIFACTS", "/var/cache/eveadm/artifacts")) / "kvm-nested"


def build(out: Path | None = None) -> Path:
    """vmlinuz + initramfs.cpio.gz of the nested machine in `out` (cached by this file's digest)."""
    out = Path(out or artifacts_dir())
    recipe = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    stamp = out / "recipe"
    if stamp.exists() and stamp.read_text().strip() == recipe:
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eveadm-nested-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o777)  # apt-get download runs as the _apt sandbox user
        subprocess.run(["apt-get", "download", "-q", _kernel_package(), "busybox-static"], cwd=work,
                       check=True, stdout=subprocess.DEVNULL)
        for deb in work.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
        (kver,) = os.listdir(work / "x" / "lib" / "modules")
        root = work / "root"
        for d in ("bin", "proc", "sys", "dev", "tmp", "lib/modules"):
            (root / d).mkdir(parents=True)
        shutil.copy(work / "x" / "bin" / "busybox", root / "bin" / "busybox")
        order = _with_dependencies(work / "x" / "lib" / "modules" / kver / "kernel", MODULES)
        for name, path in order:
            shutil.copy(path, root / "lib" / "modules" / f"{name}.ko")
        (root / "lib" / "modules" / "order").write_text("".join(name + "\n" for name, _ in order))
        for name, args in MODULE_ARGS.items():
            (root / "lib" / "modules" / f"{name}.args").write_text(args + "\n")
        for name, text in (("init", INIT), ("bin/x", RUNNER)):
            (root / name).write_text(text)
            os.chmod(root / name, 0o755)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        cpio = subprocess.run([str(root / "bin" / "busybox"), "cpio", "-o", "-H", "newc", "-R", "0:0"], cwd=root,
                              input=("\n".join(["."] + files) + "\n").encode(), capture_output=True, check=True)
        (out / "initramfs.cpio.gz").write_bytes(gzip.compress(cpio.stdout, compresslevel=1))
        shutil.copy(next((work / "x" / "boot").glob("vmlinuz-*")), out / "vmlinuz")
    stamp.write_text(recipe + "\n")
    return out


def _kernel_package() -> str:
    """The versioned package linux-image-amd64 names now."""
    text = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True).stdout
    for line in text.splitlines():
        word = line.strip().removeprefix("Depends: ")
        if word.startswith("linux-image-") and word[len("linux-image-"):][:1].isdigit():
            return word
    raise RuntimeError("cannot resolve linux-image-amd64 (apt-get update?)")


def _with_dependencies(base: Path, wanted) -> list[tuple[str, Path]]:
    """(name, .ko path) of `wanted` and every module they depend on, in load order (a module's
    `depends=` in its .modinfo names them)."""
    paths = {p.name[:-3].replace("-", "_"): p for p in base.rglob("*.ko")}
    order: list[str] = []

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in order:
            return
        data = paths[name].read_bytes()
        at = data.find(b"\0depends=")
        if at >= 0:
            for dep in data[at + 9:data.index(b"\0", at + 1)].decode().split(","):
                if dep:
                    visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    return [(name, paths[name]) for name in order]


class NestedVM(XenVM):
    """L1: Linux (no Xen) under QEMU TCG, q35 with an emulated VT-d and the spare e1000."""

    def __init__(self, art: Path, workdir: Path, mem_mib: int = 2048):
        super().__init__(art, workdir, mem_mib=mem_mib, machine="q35")
        (self.workdir / "hostpath").write_text(str(self.workdir) + "\n")
        checkout = HERE.parents[2]  # the repository, with the .venv the tests run from
        hidden = [str(checkout)] if str(checkout).startswith(("/tmp/", "/run/")) else []
        (self.workdir / "keep").write_text("".join(p + "\n" for p in hidden))

    def qemu_argv(self) -> list[str]:
        return [
            "qemu-system-x86_64", "-M", self.machine, "-accel", "tcg", "-cpu", "max",
            "-m", str(self.mem_mib), "-smp", "2", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot",
            "-chardev", f"socket,id=c0,path={self.sock},server=on,wait=off,logfile={self.log}",
            "-serial", "chardev:c0",
            "-device", "intel-iommu,intremap=off", "-device", f"e1000,addr=0x{PCI_ADDR[8:10]}",
            "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={self.workdir},mount_tag=work,security_model=none,multidevs=remap",
            "-kernel", str(self.art / "vmlinuz"), "-initrd", str(self.art / "initramfs.cpio.gz"),
            "-append", "console=ttyS0 intel_iommu=on panic=-1 quiet",
        ]

    def driver(self, address: str = PCI_ADDR) -> str | None:
        """The name of the driver `address` is bound to in L1 (None: none)."""
        rc, out = self.sh(f"readlink /sys/bus/pci/devices/{address}/driver")
        return out.strip().rsplit("/", 1)[-1] if rc == 0 and out.strip() else None
