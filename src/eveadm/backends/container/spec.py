"""The OCI runtime spec (config.json) of a container domain.

`build_spec()` turns a normalized domain config into config.json (docker's
default capabilities, masked paths, cgroup limits from ram / vcpus / cpus, bind
mounts for directory disks, environment from the image, cloud-init user data and
the payload); `probe_spec()` is the throw-away container of the runtime probe.
"""

from __future__ import annotations

import os

MiB = 1024 * 1024
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# docker's default capability set (runc's `spec` default is far smaller)
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
CPU_PERIOD = 100_000  # us; quota = vcpus * period
DISK_MOUNT_DIR = "/mnt/disk{index}"  # where `disks[index]` (a directory) appears


def user_data_env(user_data: str | None) -> dict[str, str]:
    """EVE's container cloud-init: each `KEY=VALUE` line (EVE since 2020) or `Key:Value` line (EVE
    before) becomes an environment variable.

    The first of '=' and ':' in a line separates. `KEY=VALUE` is read as an env file is: KEY a
    variable name, VALUE as written. `Key:Value` has its blanks trimmed. Blank lines, `#` comments
    and other lines are skipped (EVE's parser refused the whole user data, or panicked, on them).
    """
    env: dict[str, str] = {}
    for line in (user_data or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        at = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        if at < 0:
            continue
        key, sep, val = line[:at], line[at], line[at + 1:]
        if sep == "=" and key.isascii() and key.isidentifier():  # [A-Za-z_][A-Za-z0-9_]*
            env[key] = val
        elif sep == ":" and key.strip():
            env[key.strip()] = val.strip()
    return env


def _user(spec_user: str | None, rootfs: str | None) -> dict:
    """OCI process.user from an image `User` ("uid[:gid]" or a name looked up in the rootfs)."""
    user, _, group = (spec_user or "").partition(":")
    uid = gid = 0

    def lookup(name: str, table: str, field: int) -> int:
        if name.isdigit():
            return int(name)
        if rootfs:
            try:
                with open(os.path.join(rootfs, "etc", table)) as fh:
                    for line in fh:
                        parts = line.rstrip("\n").split(":")
                        if parts[0] == name and len(parts) > field:
                            return int(parts[field])
            except (OSError, ValueError):
                pass
        return 0

    if user:
        uid = lookup(user, "passwd", 2)
        if not group and not user.isdigit() and rootfs:
            gid = lookup(user, "passwd", 3)
    if group:
        gid = lookup(group, "group", 2)
    return {"uid": uid, "gid": gid}


def resource_limits(config: dict) -> tuple[dict, int]:
    """The cgroup limits a config asks for: (OCI linux.resources.cpu, memory limit in bytes). Used at
    create and by a live update, so both give the container the same numbers."""
    cpu: dict = {"period": CPU_PERIOD, "quota": int(config.get("vcpus", 1)) * CPU_PERIOD}
    if config.get("cpus"):
        cpu["cpus"] = config["cpus"]
    return cpu, int(config.get("ram", 256)) * MiB


def build_spec(config: dict, *, rootfs: str, image_cfg: dict | None = None, hostname: str,
               cgroups_path: str, user_rootfs: str | None = None) -> dict:
    """The OCI runtime config.json for a normalized container config."""
    image_cfg = image_cfg or {}
    args = list(config.get("cmd") or [])
    if not args:
        args = list(image_cfg.get("Entrypoint") or []) + list(image_cfg.get("Cmd") or [])
    env: dict[str, str] = {}
    for item in image_cfg.get("Env") or [DEFAULT_PATH]:
        key, _, val = item.partition("=")
        env[key] = val
    env.setdefault("PATH", DEFAULT_PATH.partition("=")[2])
    if config.get("terminal"):
        env.setdefault("TERM", "xterm")
    env["HOSTNAME"] = hostname
    # later wins: image config < cloud-init user data (EVE's `Key:Val` lines) < the payload's env
    env.update(user_data_env((config.get("cloud_init") or {}).get("user_data")))
    env.update({str(k): str(v) for k, v in (config.get("env") or {}).items()})

    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    for index, disk in enumerate(config.get("disks") or []):
        source = disk.get("source") or disk.get("path")
        if not source:
            continue
        mounts.append({
            "destination": DISK_MOUNT_DIR.format(index=index), "type": "bind", "source": source,
            "options": ["rbind", "ro" if disk.get("readonly") else "rw"],
        })

    cpu, ram = resource_limits(config)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": bool(config.get("terminal")),
            "user": _user(image_cfg.get("User"), user_rootfs),
            "args": args,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": config.get("workdir") or image_cfg.get("WorkingDir") or "/",
            "capabilities": {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": bool(config.get("readonly_root"))},
        "hostname": hostname,
        "mounts": mounts,
        "annotations": {"org.lfedge.eveadm.uuid": config.get("uuid", "")},
        "linux": {
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": ram},  # as EVE: no swap limit (memsw is often not accounted)
                "cpu": cpu,
            },
            "cgroupsPath": cgroups_path,
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    }


def probe_spec(rootfs: str, true_bin: str) -> dict:
    """A container that runs the host's `true` from a read-only view of its /usr (runtime probe)."""
    mounts = [{"destination": "/proc", "type": "proc", "source": "proc"}]
    for name in ("usr", "bin", "lib", "lib64", "sbin"):
        host = "/" + name
        if os.path.isdir(host) and not os.path.islink(host):
            mounts.append({"destination": host, "type": "bind", "source": host, "options": ["rbind", "ro"]})
    return {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": [true_bin],
                    "env": [DEFAULT_PATH], "cwd": "/"},
        "root": {"path": rootfs, "readonly": True},
        "hostname": "eveadm-probe",
        "mounts": mounts,
        "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts", "network")]},
    }


def make_probe_rootfs(rootfs: str) -> None:
    """Empty mount points / symlinks mirroring the host's /usr layout (idempotent)."""
    for name in ("proc", "dev"):
        os.makedirs(os.path.join(rootfs, name), exist_ok=True)
    for name in ("usr", "bin", "lib", "lib64", "sbin"):
        host, inner = "/" + name, os.path.join(rootfs, name)
        if os.path.lexists(inner) or not os.path.lexists(host):
            continue
        if os.path.islink(host):
            try:
                os.symlink(os.readlink(host), inner)
            except FileExistsError:  # a concurrent first probe made it
                pass
        elif os.path.isdir(host):
            os.makedirs(inner, exist_ok=True)
