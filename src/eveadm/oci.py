"""OCI plumbing for the `container` brand: images, the runtime spec, and the shim.

Three things live here, all free of eveadm's policy:

* Images. `image` is either a root filesystem directory or `oci:DIR[:TAG]`, an
  OCI image layout. A layout is unpacked once with umoci into
  `<cache>/oci/<manifest digest>/rootfs` and shared by every domain using it;
  its image config (Entrypoint, Cmd, Env, WorkingDir, User) is read straight
  from the layout's blobs, so `render` never needs the unpacked tree.
* The runtime spec: `build_spec()` turns a normalized domain config into an
  OCI `config.json` (docker's default capabilities, masked paths, cgroup
  limits from ram / vcpus / cpus, bind mounts for directory disks).
* The shim, run as `python3 -I -S oci.py shim ...` (stdlib only, ~10 ms to
  start). It is what conmon is to podman: a small per-container process that
  makes itself a child subreaper (PR_SET_CHILD_SUBREAPER) and then runs
  `<runtime> create`. When create returns, the container's init process is
  re-parented to the shim, so the shim is the one that reaps it and sees the
  real wait status: it writes `exit.json` (exit code or signal, time) into the
  domain's run dir and exits. This is how eveadm learns the exit status of a
  detached container without putting anything inside the container (an
  in-container wrapper would change PID 1 and its signal handling, and needs
  a shell in the image). With `terminal: true` the runtime hands the pty
  master to the shim over `--console-socket` (SCM_RIGHTS); the shim keeps it,
  copies everything the program writes to the console log, and serves it on
  `console.sock` (one attached client at a time) for `eveadm console`.

crun 1.8 refuses `create`/`run` on a hybrid cgroup host ("cgroups in hybrid
mode not supported"); it works in a private mount namespace without the
cgroup2 mount at /sys/fs/cgroup/unified (the host keeps its mounts). The shim
does that itself in its child before exec'ing `crun create` (`--hide-mount`:
unshare(CLONE_NEWNS), make / rprivate, umount2(MNT_DETACH), all through
ctypes, no shell, no extra process). The runtime probe uses the same
workaround as an argv: `unshare --mount --propagation private -- python3 -I -S
-c 'import oci...' umount-exec /sys/fs/cgroup/unified -- crun run ...`.

Module-level imports stay minimal (os, sys, time: `json` alone costs ~6 ms of
start-up because it pulls in `re`) because the shim and the helper run this
file with a bare interpreter (`python3 -I -S -c 'import oci'`, see
`launcher_argv`, which also lets it use its cached bytecode, unlike a script).
"""

from __future__ import annotations

import os
import sys
import time

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
HYBRID_CGROUP2 = "/sys/fs/cgroup/unified"


# --------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------
class ImageError(Exception):
    """A bad `image` value; the message is for the operator."""


def parse_image(image: str) -> tuple[str, str, str | None]:
    """("dir", path, None) or ("oci", layout_dir, tag_or_None)."""
    if image.startswith("oci:"):
        rest = image[4:]
        path, tag = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and "/" not in tail:
            path, tag = head, tail or None
        return "oci", path, tag
    return "dir", image, None


def _read_json(path: str) -> dict:
    import json

    with open(path) as fh:
        return json.load(fh)


def _blob(layout: str, digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return os.path.join(layout, "blobs", algo, hexpart)


def resolve_manifest(layout: str, tag: str | None) -> tuple[str, str]:
    """(tag, manifest digest) of `tag` in an OCI image layout. Raises ImageError."""
    if not os.path.isdir(layout):
        raise ImageError(f"no such OCI image layout directory: {layout}")
    if not os.path.isfile(os.path.join(layout, "oci-layout")):
        raise ImageError(f"{layout} is not an OCI image layout (no oci-layout file)")
    try:
        index = _read_json(os.path.join(layout, "index.json"))
    except (OSError, ValueError) as exc:
        raise ImageError(f"{layout}: cannot read index.json: {exc}") from None
    manifests = [m for m in index.get("manifests") or [] if isinstance(m, dict) and m.get("digest")]
    tags = {(m.get("annotations") or {}).get("org.opencontainers.image.ref.name"): m for m in manifests}
    if tag is None:
        if "latest" in tags:
            tag = "latest"
        elif len(manifests) == 1:
            tag = (manifests[0].get("annotations") or {}).get("org.opencontainers.image.ref.name")
    known = sorted(t for t in tags if t)
    if tag is None or tag not in tags:
        want = f"tag {tag!r}" if tag else "a tag (several images, none named latest)"
        raise ImageError(f"{layout} has no {want}; tags: {', '.join(known) or 'none'}")
    digest = tags[tag]["digest"]
    if not os.path.isfile(_blob(layout, digest)):
        raise ImageError(f"{layout}: manifest blob {digest} is missing")
    return tag, digest


def image_config(layout: str, digest: str) -> dict:
    """The image's runtime defaults (`config` of the OCI image config): Entrypoint, Cmd, Env, WorkingDir, User."""
    try:
        manifest = _read_json(_blob(layout, digest))
        config = _read_json(_blob(layout, manifest["config"]["digest"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"{layout}: cannot read the image config of {digest}: {exc}") from None
    return config.get("config") or {}


def check_image(image: str) -> str | None:
    """The one-line problem with `image`, or None when it can be used."""
    kind, path, tag = parse_image(image)
    if not os.path.isabs(path):
        return f"image path must be absolute: {path}"
    if kind == "dir":
        if not os.path.isdir(path):
            return f"no such root filesystem directory: {path}"
        if any(c in path for c in ",:"):
            return f"root filesystem path must not contain ',' or ':' (overlayfs options): {path}"
        return None
    try:
        resolve_manifest(path, tag)
    except ImageError as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------
# environment from cloud-init user data (EVE's container convention)
# --------------------------------------------------------------------------
def user_data_env(user_data: str | None) -> dict[str, str]:
    """EVE's container cloud-init: each `Key:Val` line becomes an environment variable.

    Split at the first ':'; surrounding blanks are trimmed. Blank lines, `#`
    comments and lines without ':' are skipped (EVE's parser panicked on them).
    """
    env: dict[str, str] = {}
    for line in (user_data or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, val = line.partition(":")
        key = key.strip()
        if key and "=" not in key:
            env[key] = val.strip()
    return env


# --------------------------------------------------------------------------
# the runtime spec
# --------------------------------------------------------------------------
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

    cpu: dict = {"period": CPU_PERIOD, "quota": int(config.get("vcpus", 1)) * CPU_PERIOD}
    if config.get("cpus"):
        cpu["cpus"] = config["cpus"]
    ram = int(config.get("ram", 256)) * MiB
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


def hybrid_cgroups() -> bool:
    """True on a "hybrid" host (v1 hierarchies + cgroup2 at /sys/fs/cgroup/unified with controllers)."""
    try:
        with open(os.path.join(HYBRID_CGROUP2, "cgroup.controllers")) as fh:
            return bool(fh.read().strip()) and os.path.isdir("/sys/fs/cgroup/memory")
    except OSError:
        return False


# --------------------------------------------------------------------------
# console attach (client side of the shim's console.sock)
# --------------------------------------------------------------------------
DETACH_BYTE = b"\x1d"  # Ctrl-]


def _short_unix_path(path: str, dirfd_holder: list) -> str:
    if len(os.fsencode(path)) < 100:
        return path
    dirfd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY)
    dirfd_holder.append(dirfd)
    return f"/proc/self/fd/{dirfd}/{os.path.basename(path)}"


def _unix_socket(path: str, op: str):
    """An AF_UNIX stream socket bound or connected to `path`, however long (sun_path holds 108 bytes:
    longer paths go through /proc/self/fd)."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fds: list = []
    try:
        getattr(sock, op)(_short_unix_path(path, fds))
    finally:
        for fd in fds:
            os.close(fd)
    return sock


def bind_unix(path: str):
    """A listening AF_UNIX stream socket at `path` (a stale socket file there is replaced)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = _unix_socket(path, "bind")
    sock.listen(2)
    return sock


def connect_unix(path: str):
    """A connected AF_UNIX stream socket."""
    return _unix_socket(path, "connect")


def attach(sock_path: str, label: str) -> int:
    """Relay the calling terminal to the shim's console socket until Ctrl-] or the program ends."""
    import select
    import socket
    import termios
    import tty

    sock = connect_unix(sock_path)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = None
    if os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        tty.setraw(stdin)
    sys.stderr.write(f"Connected to the console of {label}; Ctrl-] detaches\r\n")
    sys.stderr.flush()
    try:
        while True:
            ready, _, _ = select.select([sock, stdin], [], [])
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    break
                os.write(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 4096)
                if not data:
                    break
                if DETACH_BYTE in data:
                    data = data.split(DETACH_BYTE, 1)[0]
                    if data:
                        sock.sendall(data)
                    break
                sock.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()
    sys.stderr.write("\r\nDetached.\n")
    return 0


# --------------------------------------------------------------------------
# the shim (python3 -I -S oci.py shim ...)
# --------------------------------------------------------------------------
def _dumps(value) -> str:
    """JSON for the shim's flat records (str/int/float/bool/None/list/dict) without importing json."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ord(ch) < 0x20:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_dumps(str(k))}: {_dumps(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(_dumps(v) for v in value) + "]"


def _write_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(_dumps(data))
    os.replace(tmp, path)


def _log_command(cmdlog: str | None, argv: list[str], rc, started: float, hidden: str | None) -> None:
    """Append to eveadm's command audit log, as BackendContext.run does."""
    if not cmdlog:
        return
    entry = {"time": started, "argv": argv, "rc": rc, "via": "eveadm-shim"}
    if hidden:
        entry["mount_ns"] = f"private, without {hidden}"
    try:
        os.makedirs(os.path.dirname(cmdlog), exist_ok=True)
        with open(cmdlog, "a") as fh:
            fh.write(_dumps(entry) + "\n")
    except OSError:
        pass


def last_line(data) -> str:
    """The last meaningful line a runtime printed (runc's logrus `msg="..."` reduced to the message)."""
    if not data:
        return ""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ""
    last = lines[-1]
    if 'msg="' in last:
        last = last.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return last


def _tail(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return last_line(fh.read())
    except OSError:
        return ""


def _shim(argv: list[str]) -> int:
    """shim --id UUID --log F --pid-file F --exit-file F [--cmdlog F] [--hide-mount PATH]
    [--overlay OPTIONS --overlay-target DIR] [--console-recv SOCK --console SOCK] -- RUNTIME create ...

    Prints one JSON line on stdout once create has returned ({"ok": true, "pid": N} or
    {"ok": false, "error": "..."}), then stays until the container's init has been reaped
    and its exit record written."""
    import ctypes
    import signal

    opts: dict[str, str] = {}
    while argv and argv[0] != "--":
        opts[argv[0].lstrip("-")] = argv[1]
        argv = argv[2:]
    cmd = argv[1:]
    out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)  # stray prints must not reach eveadm's pipe

    def report(data: dict) -> None:
        out.write(_dumps(data) + "\n")
        out.flush()
        out.close()

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the container, not us, gets stopped

    log = opts["log"]
    logfd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    offset = os.fstat(logfd).st_size
    listener = None
    if opts.get("console-recv"):
        listener = bind_unix(opts["console-recv"])

    if opts.get("overlay"):  # the root filesystem: one mount(2) here costs less than a `mount` process
        started = time.time()
        target = opts["overlay-target"]
        rc = 0
        if libc.mount(b"overlay", target.encode(), b"overlay", 0, opts["overlay"].encode()) != 0:
            rc = ctypes.get_errno()
        _log_command(opts.get("cmdlog"), ["mount", "-t", "overlay", "overlay", "-o", opts["overlay"], target],
                     rc, started, None)
        if rc:
            report({"ok": False, "rc": rc, "error": f"mount -t overlay on {target}: {os.strerror(rc)}"})
            return 1

    started = time.time()
    child = os.fork()
    if child == 0:  # the runtime's `create`
        try:
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            os.dup2(devnull, 0)
            os.dup2(logfd, 1)
            os.dup2(logfd, 2)
            if opts.get("hide-mount"):  # crun on a hybrid-cgroup host (see the module docstring)
                error = hide_mount(libc, opts["hide-mount"], unshare=True)
                if error:
                    os.write(2, f"eveadm shim: {error}\n".encode())
                    os._exit(125)
            os.execvp(cmd[0], cmd)
        except BaseException as exc:  # noqa: BLE001 - nothing else may run in the fork
            os.write(2, f"eveadm shim: cannot run {cmd[0]}: {exc}\n".encode())
        os._exit(127)

    master = None
    if listener is not None:
        import select
        import socket
        listener.settimeout(0)
        status = None
        deadline = time.monotonic() + 60
        while master is None and time.monotonic() < deadline:
            if status is None:
                pid, st = os.waitpid(child, os.WNOHANG)
                if pid:
                    status = st
                    if os.waitstatus_to_exitcode(st) != 0:
                        break
                    deadline = min(deadline, time.monotonic() + 5)
            ready, _, _ = select.select([listener], [], [], 0.02)
            if ready:
                conn, _ = listener.accept()
                conn.setblocking(True)
                _msg, fds, _flags, _addr = socket.recv_fds(conn, 1024, 1)
                conn.close()
                if fds:
                    master = fds[0]
        listener.close()
        os.unlink(opts["console-recv"])
        if status is None:
            _, status = os.waitpid(child, 0)
    else:
        _, status = os.waitpid(child, 0)
    rc = os.waitstatus_to_exitcode(status)
    _log_command(opts.get("cmdlog"), cmd, rc, started, opts.get("hide-mount"))
    if rc != 0:
        why = _tail(log, offset) or f"exit status {rc}"
        report({"ok": False, "rc": rc, "error": why})
        return 1
    try:
        with open(opts["pid-file"]) as fh:
            cpid = int(fh.read().strip())
    except (OSError, ValueError) as exc:
        report({"ok": False, "rc": rc, "error": f"no container pid after create: {exc}"})
        return 1
    if opts.get("console-recv") and master is None:
        report({"ok": False, "rc": rc, "error": "the runtime did not pass the console (pty) to eveadm"})
        return 1
    report({"ok": True, "pid": cpid})

    if master is not None:
        status = _serve_console(master, logfd, opts["console"], cpid)
    else:
        status = _reap(cpid)
    record: dict = {"pid": cpid, "time": time.time(), "exit_status": None, "signal": None}
    if status is not None:
        if os.WIFSIGNALED(status):
            record["signal"] = os.WTERMSIG(status)
            record["exit_status"] = 128 + os.WTERMSIG(status)
        else:
            record["exit_status"] = os.waitstatus_to_exitcode(status)
    _write_atomic(opts["exit-file"], record)
    return 0


def _reap(cpid: int) -> int | None:
    """Reap children until the container's init is gone; its wait status (None if it was not ours)."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == cpid:
            return status
    # not re-parented to us (should not happen): wait for it to vanish, status unknown
    try:
        fd = os.pidfd_open(cpid)
    except OSError:
        return None
    import select
    select.select([fd], [], [])
    return None


def _to_client(client, data: bytes):
    """Send to the attached console client without blocking; a client too slow to keep up loses
    output (the log keeps all of it); one that is gone is dropped. Returns the client or None."""
    try:
        client.send(data)
    except BlockingIOError:
        pass
    except OSError:
        client.close()
        return None
    return client


def _serve_console(master: int, logfd: int, sock_path: str, cpid: int) -> int | None:
    """Copy the pty master to the log and to one attached client; forward client input; until exit."""
    import select
    import socket

    server = bind_unix(sock_path)
    try:
        pidfd = os.pidfd_open(cpid)
    except OSError:
        pidfd = None
    client = None
    status = None
    master_open = True
    while True:
        watch = [server] + ([master] if master_open else []) + ([client] if client else [])
        if pidfd is not None and status is None:
            watch.append(pidfd)
        ready, _, _ = select.select(watch, [], [], None if pidfd is not None else 0.5)
        if pidfd is not None and pidfd in ready or pidfd is None:
            try:
                pid, st = os.waitpid(cpid, os.WNOHANG)
            except ChildProcessError:
                pid, st = cpid, None
            if pid:
                status = st
                # drain what the program wrote last, then stop
                os.set_blocking(master, False)
                try:
                    while data := os.read(master, 65536):
                        os.write(logfd, data)
                        if client:
                            client = _to_client(client, data)
                except OSError:
                    pass
                break
        if server in ready:
            conn, _ = server.accept()
            conn.setblocking(False)  # a client that stops reading must never stall the program
            if client:
                client.close()
            client = conn
        if master_open and master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if not data:
                master_open = False
                continue
            os.write(logfd, data)
            if client:
                client = _to_client(client, data)
        if client and client in ready:
            try:
                data = client.recv(4096)
            except OSError:
                data = b""
            if data:
                os.write(master, data)
            else:
                client.close()
                client = None
    if client:
        client.close()
    server.close()
    try:
        os.unlink(sock_path)
    except OSError:
        pass
    return status


CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 0x40000
MNT_DETACH = 2


def hide_mount(libc, path: str, unshare: bool) -> str | None:
    """In a private mount namespace of our own (made here when `unshare`), unmount `path`.
    The host's mounts are untouched. Returns an error text, or None."""
    import ctypes

    if unshare:
        if libc.unshare(CLONE_NEWNS) != 0:
            return f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}"
        if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            return f"mount --make-rprivate /: {os.strerror(ctypes.get_errno())}"
    if libc.umount2(path.encode(), MNT_DETACH) != 0:
        return f"umount {path}: {os.strerror(ctypes.get_errno())}"
    return None


def _umount_exec(argv: list[str]) -> int:
    """umount-exec PATH -- PROG ARGS: unmount PATH (run under `unshare --mount`) and exec PROG."""
    import ctypes

    path, sep, cmd = argv[0], argv[1], argv[2:]
    assert sep == "--" and cmd
    error = hide_mount(ctypes.CDLL(None, use_errno=True), path, unshare=False)
    if error:
        sys.stderr.write(f"eveadm: {error}\n")
        return 125
    os.execvp(cmd[0], cmd)
    return 127


def launcher_argv(entry: str) -> list[str]:
    """argv prefix that runs `entry` (shim | umount-exec) of this file in a bare interpreter.

    The file is imported as the top-level module `oci` (its directory appended
    to sys.path, after the standard library), not run as a script: imported,
    it uses its cached bytecode. `-I -S`: no user environment, no site-packages."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys; sys.path.append({here!r}); import oci; sys.exit(oci.main(sys.argv[1:]))"
    return [sys.executable, "-I", "-S", "-c", code, entry]


def main(argv: list[str]) -> int:
    if argv and argv[0] == "shim":
        return _shim(argv[1:])
    if argv and argv[0] == "umount-exec":
        return _umount_exec(argv[1:])
    sys.stderr.write("usage: oci.py shim OPTS -- RUNTIME ARGS | umount-exec PATH -- PROG ARGS\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
