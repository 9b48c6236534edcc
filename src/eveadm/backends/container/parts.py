"""The parts of a container domain on the host, found from the state root and the UUID alone.

A create killed before eveadm saved its notes, or a record deleted while its
container lived, leaves parts that no record points at. Each is where eveadm
puts it by construction, so destroy, release and doctor find it without one:

    runtime container   <run_root>/container/<runtime>/<uuid>       (each runtime's --root)
    monitor             the conmon whose --persist-dir is <run_root>/<uuid>
    root filesystem     the overlay mounted on <root>/domains/<uuid>/bundle/rootfs
    cgroups             /eveadm/<uuid> in every cgroup hierarchy (v1 controllers, cgroup2)

Reading is pure (/proc, /sys, directory listings); the removers re-check what
they remove just before removing it.
"""

from __future__ import annotations

import os
import re
import signal

from ..host import proc_argv

CGROUP_PARENT = "eveadm"  # the container's cgroupsPath is /eveadm/<uuid> (see backend._spec)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_OCTAL = re.compile(r"\\([0-7]{3})")


def is_uuid(name: str) -> bool:
    return bool(UUID_RE.match(name))


def listdir(path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _mounts() -> list[tuple[str, str]]:
    """(fstype, mount point) of this mount namespace; the kernel escapes blanks as \\040."""
    try:
        with open("/proc/self/mounts") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) >= 3:
            out.append((fields[2], _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[1])))
    return out


def overlay_mounts_under(domains_dir: str) -> dict[str, str]:
    """{uuid: mount point} of the overlays mounted on <domains_dir>/<uuid>/bundle/rootfs."""
    found = {}
    prefix = domains_dir.rstrip("/") + "/"
    for fstype, target in _mounts():
        if fstype != "overlay" or not target.startswith(prefix):
            continue
        uuid, _, rest = target[len(prefix):].partition("/")
        if rest == "bundle/rootfs" and is_uuid(uuid):
            found[uuid] = target
    return found


def is_overlay_mount(target: str) -> bool:
    return ("overlay", target) in _mounts()


# -- cgroups ---------------------------------------------------------------------------
def cgroup_roots() -> list[str]:
    """Every mounted cgroup hierarchy (one per v1 controller, the cgroup2 one)."""
    return sorted({target for fstype, target in _mounts() if fstype in ("cgroup", "cgroup2")})


def cgroup_dirs(uuid: str) -> list[str]:
    """The domain's cgroup in every hierarchy where one exists."""
    out = []
    for root in cgroup_roots():
        path = os.path.join(root, CGROUP_PARENT, uuid)
        if os.path.isdir(path):
            out.append(path)
    return out


def cgroups_by_uuid() -> dict[str, list[str]]:
    """{uuid: [its cgroup in each hierarchy]} for every /eveadm/<uuid> cgroup on the host."""
    found: dict[str, list[str]] = {}
    for root in cgroup_roots():
        parent = os.path.join(root, CGROUP_PARENT)
        for name in listdir(parent):
            if is_uuid(name) and os.path.isdir(os.path.join(parent, name)):
                found.setdefault(name, []).append(os.path.join(parent, name))
    return found


def cgroup_pids(paths: list[str]) -> set[int]:
    """The processes in these cgroups (and their children cgroups)."""
    pids: set[int] = set()
    for path in paths:
        for here, _dirs, files in os.walk(path):
            if "cgroup.procs" not in files:
                continue
            try:
                with open(os.path.join(here, "cgroup.procs")) as fh:
                    pids.update(int(p) for p in fh.read().split())
            except (OSError, ValueError):
                pass
    return pids


def kill_cgroup_members(uuid: str) -> int:
    """SIGKILL every process in the domain's cgroups (a runtime's init left by a create cut in
    half). Returns how many were signalled."""
    pids = cgroup_pids(cgroup_dirs(uuid))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def remove_cgroups(paths: list[str]) -> list[str]:
    """rmdir each cgroup (children first); one a process still holds cannot go (EBUSY): the
    paths that remain are returned."""
    left = []
    for path in paths:
        for here, _dirs, _files in os.walk(path, topdown=False):  # children before their parent
            try:
                os.rmdir(here)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(here)
    return left


# -- monitors ------------------------------------------------------------------------------
def monitor_uuid(pid: int, run_root: str) -> str | None:
    """The domain UUID of a conmon that eveadm started under `run_root` (its --persist-dir is
    <run_root>/<uuid> and its --cid the same UUID), else None."""
    args = proc_argv(pid)
    if not args or os.path.basename(args[0]) != b"conmon":
        return None
    try:
        persist = os.fsdecode(args[args.index(b"--persist-dir") + 1])
        cid = os.fsdecode(args[args.index(b"--cid") + 1])
    except (ValueError, IndexError):
        return None
    parent, name = os.path.split(persist)
    if parent != run_root.rstrip("/") or name != cid or not is_uuid(cid):
        return None
    return cid


def monitors_under(run_root: str) -> dict[int, str]:
    """{pid: uuid} of every live conmon eveadm started under `run_root`."""
    found = {}
    for name in listdir("/proc"):
        if name.isdigit():
            uuid = monitor_uuid(int(name), run_root)
            if uuid and not _zombie(int(name)):
                found[int(name)] = uuid
    return found


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def kill_monitor(pid: int, run_root: str, uuid: str) -> None:
    """SIGKILL conmon `pid` if it still is the monitor of `uuid` under `run_root`; through a
    pidfd so a pid reused meanwhile is never hit."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if monitor_uuid(pid, run_root) == uuid:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
