"""brand `container`: OCI containers run by runc or crun under conmon (EVE's containerd path, without containerd).

Per domain:

    <data_dir>/bundle/config.json   rendered runtime spec (`render()` returns its text)
    <data_dir>/bundle/rootfs        overlayfs mount: lower = the image's root filesystem (never
                                    written), upper/work = <data_dir>/upper, <data_dir>/work;
                                    mounted before create (`mount -t overlay`), unmounted by release
    <run_dir>/console.log           everything the program writes, conmon's k8s-file format
                                    (`console_log_text` gives the program's own text)
    <run_dir>/exit, conmon.pid ...  conmon's files of the current run (see monitor.py)
    <data_dir>/bundle/attach        terminal:true: conmon's attach socket, relayed by `eveadm console`

The root filesystem is an overlay mount, not a copy: creating a domain costs one
`mount`, the image directory (or the unpacked OCI layout in the cache) stays
untouched, and the container's own changes live in `upper`, kept across
stop/start (as docker keeps a container's layer) and removed by delete.

Two phases as domainmgr: `create_paused` = conmon running `<rt> create` (the
runtime's init waits on its exec fifo: the process exists, the user's program
has not started), `unpause` = `<rt> start`. conmon stays as the subreaper of the
container's init: it records the exit status, keeps the log and serves the
terminal. Each runtime keeps its state under `<run_root>/container/<runtime>`
(its `--root`), so two eveadm roots never see each other's containers.

How an ending reads (status): conmon writes the exit status, 128 + N for a
death by signal N. eveadm notes in dom.backend["signals_sent"] every signal it
sends to a live program (stop, kill, destroy) before sending it; a death by a
signal it sent is a stop (SHUTDOWN), a death by any other signal was caused
from outside eveadm (CRASHED, the error names the signal; an OOM kill says so).
A program that exits with a status above 128 by itself reads the same way
(docker and podman have the same ambiguity: the exit file holds one number).

Runtime choice: setting `container.runtime` = auto (default) | runc | crun.
Each candidate is probed once per boot (a real `run` of the host's `true` in a
read-only container) and the verdict is cached in `<cache>/container/runtime.json`.
auto prefers crun when it works as is, then runc (works as is on hybrid-cgroup
hosts), then crun through the hybrid-cgroup workaround: crun 1.8 refuses to
create on a hybrid host, so conmon runs `unshare --mount --propagation private
-- python3 umount_exec.py /sys/fs/cgroup/unified -- crun ...` as its runtime
(create in a private mount namespace without the cgroup2 mount; the host keeps
its mounts). container.runtime=crun forces crun (with the workaround if needed).

status(): one `<rt> list` per runtime for all domains asked about, plus pid
checks and conmon's exit files; nothing is written or waited for.

Interrupted creates and doctor: every part of a container is where eveadm puts
it by construction (parts.py: the runtime root per runtime, the UUID as
container id, conmon's files in run_dir, the overlay on bundle/rootfs, the
/eveadm/<uuid> cgroups), so status, destroy and release find them without
dom.backend (lost when eveadm is SIGKILLed inside create_paused), and
`orphans` finds them for UUIDs that have no record.
"""

from __future__ import annotations

import json
import os
import signal as _signal
import stat
import sys
import time

from ... import privatedir
from ...errors import BackendError, BackendUnavailable, LiveChangeFailed, NotSupported, PermanentError

TYPE_CHECKING = False  # typing and pathlib cost create's start-up (its paths are text); annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path
from ..base import (
    ABSENT, CRASHED, FORCED, PAUSED, RUNNING, SHUTDOWN, Backend, Domain, Orphan, Status,
)
from ..host import BackendContext, command_error, logrus_message, pid_alive, read_pid, wait_until, which
from . import cni, image, monitor, parts, spec

INSTALL_HINT = "brand container needs runc or crun: apt-get install runc"
RUNTIMES = ("runc", "crun")
PROBE_TIMEOUT = 20
PROBE_VERSION = 2  # bump when the probe container changes: cached verdicts are then redone
PROBE_RETRY_AFTER = 600  # s: a failed probe is redone after this (a success holds until reboot)
HYBRID_CGROUP2 = "/sys/fs/cgroup/unified"
METADATA_PATH = "/run/eveadm/metadata.json"  # customer_metadata inside the container
ENDING_WAIT = 2.0  # s: create/unpause saw the program end at once: wait this long for conmon's record
OCI_STATES = {"created": PAUSED, "running": RUNNING, "paused": PAUSED, "pausing": PAUSED}


def _rmtree(path, ignore_errors: bool = False) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)


def _private_dir(path: str) -> None:
    """mkdir -p, and the directory itself owner-only (0700)."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o700)


def program_missing(message: str) -> bool:
    """Does a runtime's create/start error say the program cannot be found or run? (runc: `exec:
    "/x": stat /x: no such file or directory`, `exec: "x": executable file not found in $PATH`;
    crun: "executable file `/x` not found in $PATH: No such file or directory")"""
    text = message.lower()
    if "executable file" in text and "not found" in text:
        return True
    return 'exec: "' in text and ("no such file or directory" in text or "permission denied" in text)


def _overlay_escape(path) -> str:
    """overlayfs splits its options at ',' and lowerdir at ':'; a backslash escapes them."""
    return str(path).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def hybrid_cgroups() -> bool:
    """True on a "hybrid" host (v1 hierarchies + cgroup2 at /sys/fs/cgroup/unified with controllers)."""
    try:
        with open(os.path.join(HYBRID_CGROUP2, "cgroup.controllers")) as fh:
            return bool(fh.read().strip()) and os.path.isdir("/sys/fs/cgroup/memory")
    except OSError:
        return False


def runtime_message(proc) -> str:
    """The last line a runtime command printed, runc's logrus `msg="..."` reduced to the message."""
    for stream in (proc.stderr, proc.stdout):
        text = logrus_message(stream.decode(errors="replace") if isinstance(stream, bytes) else stream)
        if text:
            return text
    return ""


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _signame(sig: int | None) -> str:
    try:
        return _signal.Signals(sig).name
    except (ValueError, TypeError):
        return f"signal {sig}"


class Runtime:
    """One OCI runtime binary as used here (a plain class: dataclasses cost CLI start-up)."""

    __slots__ = ("name", "path", "root", "wrap")

    def __init__(self, name: str, path: str, root: str, wrap: bool):
        self.name = name  # runc | crun
        self.path = path  # absolute path of the binary
        self.root = root  # its --root state directory
        self.wrap = wrap  # crun on a hybrid-cgroup host: create/run in a mount namespace without cgroup2

    def __eq__(self, other) -> bool:
        return isinstance(other, Runtime) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self) -> int:
        return hash((self.name, self.path, self.root, self.wrap))

    def __repr__(self) -> str:
        return f"Runtime({self.name!r}, {self.path!r}, wrap={self.wrap})"

    def argv(self, *args: str) -> list[str]:
        return [self.path, "--root", self.root, *args]

    def _unshare_prefix(self) -> list[str]:
        return [which("unshare") or "/usr/bin/unshare", "--mount", "--propagation", "private", "--",
                sys.executable, "-I", "-S", monitor.UMOUNT_EXEC, HYBRID_CGROUP2, "--"]

    def create_argv(self, *args: str) -> list[str]:
        """argv for `run` (the probe): the only other subcommand that hits crun's hybrid-cgroup check."""
        return (self._unshare_prefix() if self.wrap else []) + self.argv(*args)

    def for_monitor(self) -> tuple[str, list[str]]:
        """(conmon --runtime, conmon --runtime-arg list): conmon appends `create --bundle ... ID`."""
        if not self.wrap:
            return self.path, ["--root", self.root]
        prefix = self._unshare_prefix()
        return prefix[0], prefix[1:] + [self.path, "--root", self.root]

    @classmethod
    def of(cls, backend: dict) -> "Runtime | None":
        if not backend.get("runtime_path"):
            return None
        return cls(backend["runtime"], backend["runtime_path"], backend["runtime_root"],
                   bool(backend.get("runtime_wrap")))


class ContainerBackend(Backend):

    def __init__(self, ctx: BackendContext, facts=None):
        super().__init__(ctx, facts)
        self._runtime: Runtime | None = None
        self._nic_plans: dict[str, list[dict]] = {}  # uuid -> resolved nics of the boot under way

    # ------------------------------------------------------------------
    # runtime selection
    # ------------------------------------------------------------------
    def _state_root(self, name: str) -> str:
        return os.path.join(self.ctx.run_root_dir, "container", name)

    def _probe_key(self, path: str) -> dict:
        st = os.stat(path)
        try:
            with open("/proc/sys/kernel/random/boot_id") as fh:
                boot = fh.read().strip()
        except OSError:
            boot = ""
        return {"probe": PROBE_VERSION, "path": path, "mtime": st.st_mtime, "size": st.st_size, "boot_id": boot}

    def _probe(self, name: str, path: str, wrap: bool) -> str | None:
        """Run the host's `true` in a throw-away container; None when that works, else why not (one line)."""
        cache = self.ctx.cache_dir("container")
        verdicts_file = os.path.join(cache, "runtime.json")
        label = f"{name}{'+unshare' if wrap else ''}"
        key = self._probe_key(path)
        try:
            with open(verdicts_file) as fh:
                verdicts = json.load(fh)
        except (OSError, ValueError):
            verdicts = {}
        known = verdicts.get(label)
        if known and known.get("key") == key and (
                known.get("error") is None or time.time() - known.get("time", 0) < PROBE_RETRY_AFTER):
            return known.get("error")
        true_bin = which("true") or "/bin/true"
        probe_dir = os.path.join(cache, "probe")
        rootfs = os.path.join(probe_dir, "rootfs")
        spec.make_probe_rootfs(rootfs)
        bundle = os.path.join(probe_dir, f"bundle-{os.getpid()}")
        os.makedirs(bundle, exist_ok=True)
        privatedir.write_private(os.path.join(bundle, "config.json"), json.dumps(spec.probe_spec(rootfs, true_bin)))
        rt = Runtime(name, path, os.path.join(probe_dir, f"state-{name}"), wrap)
        cid = f"eveadm-probe-{os.getpid()}"
        error = None
        try:
            proc = self.ctx.run(rt.create_argv("run", "--bundle", str(bundle), cid),
                                timeout=PROBE_TIMEOUT, check=False)
            if proc.returncode != 0:
                error = runtime_message(proc) or f"exit {proc.returncode}"
        except BackendError as exc:
            error = str(exc)
        finally:
            self.ctx.run(rt.argv("delete", "--force", cid), check=False, timeout=PROBE_TIMEOUT)
            _rmtree(bundle, ignore_errors=True)
        verdicts[label] = {"key": key, "error": error, "time": time.time()}
        privatedir.write_private(verdicts_file, json.dumps(verdicts, indent=1))
        return error

    def runtime(self) -> Runtime:
        """The runtime new containers use (probing once per boot); BackendUnavailable says why none works."""
        if self._runtime:
            return self._runtime
        choice = str(self.ctx.setting("container.runtime", "auto") or "auto").lower()
        if choice not in ("auto",) + RUNTIMES:
            raise BackendUnavailable(f"setting container.runtime={choice!r}: use auto, runc or crun")
        names = RUNTIMES if choice == "auto" else (choice,)
        found = {n: which(n) for n in names}
        if not any(found.values()):
            if choice == "auto":
                raise BackendUnavailable(INSTALL_HINT)
            raise BackendUnavailable(f"container.runtime is {choice} but {choice} is not installed: apt-get install {choice}")
        # auto: crun as is, runc, crun through the hybrid-cgroup workaround
        order = [("crun", False), ("runc", False), ("crun", True)] if choice == "auto" else \
            [(choice, False)] + ([("crun", True)] if choice == "crun" else [])
        why = []
        for name, wrap in order:
            path = found.get(name)
            if not path:
                continue
            if wrap and not (hybrid_cgroups() and which("unshare")):
                continue
            error = self._probe(name, path, wrap)
            if error is None:
                self._runtime = Runtime(name, path, self._state_root(name), wrap)
                return self._runtime
            why.append(f"{name}{' (unshare workaround)' if wrap else ''}: {error}")
        if choice == "auto":
            raise BackendUnavailable(f"no OCI runtime can run containers here: {'; '.join(why)}")
        raise BackendUnavailable(f"container.runtime is {choice}, which cannot run containers here: "
                                 f"{'; '.join(why)} (set container.runtime to auto or runc)")

    def check_available(self) -> None:
        self.runtime()
        monitor.conmon_path()

    def host_info(self) -> dict:
        try:
            rt = self.runtime()
        except BackendUnavailable as exc:
            return {"runtime": None, "error": str(exc)}
        return {"runtime": rt.name, "runtime_path": rt.path, "state_root": rt.root,
                "hybrid_cgroup_workaround": rt.wrap, "monitor": which("conmon")}

    # ------------------------------------------------------------------
    # validation and rendering
    # ------------------------------------------------------------------
    def validate(self, config: dict) -> list[tuple[str, str]]:
        bad: list[tuple[str, str]] = []
        ref = config.get("image")
        if not ref:
            return [("image", "brand container needs an image (a root filesystem directory, oci:DIR[:TAG] or a "
                              "stored image)")]
        found = None
        try:
            found = image.locate(ref, self.ctx.root_dir)  # (layout, digest): looked up once for both checks
        except image.ImageError as exc:
            bad.append(("image", str(exc)))
        if image.parse_image(ref)[0] == "dir" and not config.get("cmd"):
            bad.append(("cmd", "required with a root filesystem directory (it has no image config to take it from)"))
        if found and not config.get("cmd"):
            try:
                cfg = image.image_config(*found)
                if not (cfg.get("Entrypoint") or cfg.get("Cmd")):
                    bad.append(("cmd", f"required: image {ref} has no Entrypoint or Cmd"))
            except image.ImageError as exc:
                bad.append(("image", str(exc)))
        for i, disk in enumerate(config.get("disks") or []):
            p = disk.get("path")
            if p and not os.path.isdir(p) and not (disk.get("size") and not os.path.exists(p)):
                bad.append((f"disks.{i}.path", f"brand container mounts directories only: {p} is not a directory"))
            if disk.get("media") == "cdrom":
                bad.append((f"disks.{i}.media", "brand container has no cdrom"))
        for i, nic in enumerate(config.get("nics") or []):
            try:
                cni.resolve(self.ctx, self.ctx.root, i, nic)
            except PermanentError as exc:
                where, _, why = str(exc).partition(": ")
                bad.append((where, why))
        if config.get("nics") and not os.path.exists(os.path.join(cni.cni_dir(), "bridge")):
            bad.append(("nics", cni.INSTALL_HINT))
        if config.get("pci_devices"):
            bad.append(("pci_devices", "brand container does not assign PCI devices"))
        return bad

    def stored_image_ref(self, ref: str) -> str | None:
        kind, path, _ = image.parse_image(ref)
        return path if kind == "store" else None  # not a directory, not oci:LAYOUT

    def _paths(self, dom: Domain) -> dict[str, str]:
        data, run = dom.data_path, dom.run_path
        bundle = os.path.join(data, "bundle")
        return {
            "bundle": bundle,
            "rootfs": os.path.join(bundle, "rootfs"),
            "config": os.path.join(bundle, "config.json"),
            "upper": os.path.join(data, "upper"),
            "work": os.path.join(data, "work"),
            "volumes": os.path.join(data, "volumes"),
            "log": os.path.join(run, "console.log"),
            "console_lock": os.path.join(run, "console.lock"),
            "resolv": os.path.join(bundle, "resolv.conf"),
            "metadata": os.path.join(bundle, "metadata.json"),
        }

    @staticmethod
    def _files(dom: Domain) -> monitor.RunFiles:
        return monitor.RunFiles(dom.run_path, os.path.join(dom.data_path, "bundle"))

    def _image(self, dom: Domain, unpack: bool) -> tuple[str | None, dict]:
        """(lower root filesystem or None when not unpacked, image config)."""
        kind, path, tag = image.parse_image(dom.config["image"])
        if kind == "dir":
            return path, {}
        if kind == "store":
            return self._stored_image(dom, path, unpack)
        try:
            tag, digest = image.resolve_manifest(path, tag)
            cfg = image.image_config(path, digest)
        except image.ImageError as exc:  # no retry reads an unreadable image
            raise PermanentError(str(exc)) from None
        cached = os.path.join(self.ctx.cache_dir("container"), "oci", digest.replace(":", "_"))
        if os.path.isdir(os.path.join(cached, "rootfs")):
            return os.path.join(cached, "rootfs"), cfg
        if not unpack:
            return None, cfg
        tmp = f"{cached}.tmp-{os.getpid()}"
        _rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        self.ctx.run(["umoci", "unpack", "--image", f"{path}:{tag}", tmp], timeout=600,
                     install_hint="oci: images need umoci: apt-get install umoci")
        try:
            os.rename(tmp, cached)
        except OSError:  # another eveadm unpacked it meanwhile
            _rmtree(tmp, ignore_errors=True)
        return os.path.join(cached, "rootfs"), cfg

    def _stored_image(self, dom: Domain, ref: str, unpack: bool) -> tuple[str | None, dict]:
        """A stored image: the one this container first ran (its digest is kept until delete, so a
        name pulled again later never swaps the layers under its upper directory), else what `ref`
        names now. Unpacked once into the store's shared tree."""
        from ...images import lookup

        pinned = dom.backend.get("image_digest")
        try:
            info = (lookup(self.ctx.root_dir, pinned) if pinned else None) or image.stored(self.ctx.root_dir, ref)
            cfg = image.image_config(info["layout"], info["digest"])
        except image.ImageError as exc:  # no retry brings an image back
            raise PermanentError(str(exc)) from None
        rootfs = os.path.join(info["unpacked"], "rootfs")
        if unpack:
            if not os.path.isdir(rootfs):  # the image's first container: umoci unpacks it once
                from ...images import store as image_store  # (hashing, copying: not for the others)

                rootfs = image_store.unpack(self.ctx, info["digest"], what=ref)
            dom.backend["image_digest"] = info["digest"]
        return (rootfs if os.path.isdir(rootfs) else None), cfg

    def _disks(self, dom: Domain) -> list[dict]:
        disks = []
        for i, disk in enumerate(dom.config.get("disks") or []):
            disk = dict(disk)
            if not disk.get("path") and disk.get("size"):
                disk["source"] = os.path.join(dom.data_path, "volumes", f"disk{i}")
            disks.append(disk)
        return disks

    def _spec(self, dom: Domain, lower: str | None, image_cfg: dict) -> dict:
        config = dict(dom.config, disks=self._disks(dom))
        p = self._paths(dom)
        out = spec.build_spec(
            config, rootfs=p["rootfs"], image_cfg=image_cfg,
            hostname=dom.alias or dom.uuid, cgroups_path=f"/eveadm/{dom.uuid}",
            user_rootfs=lower,
        )
        # the spec always gives a container its own network namespace (loopback only without nics);
        # the nics are wired into it between create and start
        out["mounts"].append({"destination": METADATA_PATH, "type": "bind", "source": p["metadata"],
                              "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})
        if dom.config.get("nics"):
            out["mounts"].append({"destination": "/etc/resolv.conf", "type": "bind", "source": p["resolv"],
                                  "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})
        return out

    def _write_guest_files(self, dom: Domain, process_user: dict) -> None:
        """metadata.json (customer_metadata) and, with nics, resolv.conf, both bind-mounted read-only.
        metadata.json is 0400 and owned by the container's user: readable by its program whatever
        user it runs as, by no other host user (the bundle directory is 0700 besides)."""
        p = self._paths(dom)
        metadata = dom.config.get("customer_metadata") or {}
        privatedir.write_private(p["metadata"], json.dumps(metadata, indent=1) + "\n")
        os.chown(p["metadata"], int(process_user.get("uid", 0)), int(process_user.get("gid", 0)))
        os.chmod(p["metadata"], 0o400)
        if dom.config.get("nics"):
            servers: list[str] = []
            for where in self._nic_plan(dom, fresh=True):
                servers += [s for s in where["dns"] or ([where["gateway"]] if where["gateway"] else [])
                            if s not in servers]
            text = "".join(f"nameserver {s}\n" for s in servers)
            privatedir.write_private(p["resolv"], text)
            os.chmod(p["resolv"], 0o644)  # every user of the container resolves names

    def render(self, dom: Domain) -> str:
        lower, cfg = self._image(dom, unpack=False)
        return json.dumps(self._spec(dom, lower, cfg), indent=2) + "\n"

    # ------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------
    def prepare(self, dom: Domain) -> None:
        p = self._paths(dom)
        lower, cfg = self._image(dom, unpack=True)
        if not lower or not os.path.isdir(lower):
            raise PermanentError(f"image root filesystem {lower} is not a directory")
        # owner-only: config.json holds the env; the domain's dirs hold its data and its log
        for d in (dom.data_path, dom.run_path, p["bundle"], p["work"]):
            _private_dir(d)
        os.makedirs(p["rootfs"], exist_ok=True)
        if not os.path.isdir(p["upper"]):
            # overlayfs gives the container's / the mode and owner of `upper`: the image's own, not
            # eveadm's umask (a program running as another user must enter /); the 0700 dir above
            # keeps host users out
            os.mkdir(p["upper"])
            image_root = os.stat(lower)
            os.chown(p["upper"], image_root.st_uid, image_root.st_gid)
            os.chmod(p["upper"], stat.S_IMODE(image_root.st_mode))
        for disk in self._disks(dom):
            made = None
            if disk.get("source"):
                _private_dir(p["volumes"])
                if not os.path.isdir(disk["source"]):
                    made = disk["source"]
            elif disk.get("size") and disk.get("path") and not os.path.exists(disk["path"]):
                made = disk["path"]
                dom.backend.setdefault("created_dirs", []).append(disk["path"])
            if made is not None:
                os.makedirs(made)
                os.chmod(made, 0o755)  # a volume is the program's, whatever user it runs as (docker's mode)
        rendered = self._spec(dom, lower, cfg)
        self._write_guest_files(dom, rendered["process"]["user"])
        privatedir.write_private(p["config"], json.dumps(rendered, indent=2) + "\n")
        dom.backend.update(bundle=p["bundle"], config=p["config"], rootfs=p["rootfs"], lower=lower, log=p["log"])

    def create_paused(self, dom: Domain) -> Status:
        """Mount the root filesystem, then conmon runs `<rt> create`. Every part it makes is where
        destroy, release and doctor look without a record (see parts.py): an eveadm killed at any
        point here (before the engine saves dom.backend) leaves nothing they cannot find."""
        rt = self.runtime()
        conmon = monitor.conmon_path()
        p = self._paths(dom)
        files = self._files(dom)
        _private_dir(dom.run_path)
        for other in self._runtimes_holding(dom.uuid):  # left over from a crash: start clean
            self.ctx.run(other.argv("delete", "--force", dom.uuid), check=False)
        for path in files.leftovers():
            _unlink(path)
        for key in ("pid", "conmon_pid", "signals_sent", "released", "last_exit", "create_error", "nics"):
            dom.backend.pop(key, None)
        # the intent, before anything runs (saved by the engine even when this fails)
        dom.backend.update(runtime=rt.name, runtime_path=rt.path, runtime_root=rt.root,
                           runtime_wrap=rt.wrap, container_id=dom.uuid, monitor_pidfile=str(files.conmon_pid))
        # conmon appends to the log (0640 when it creates it): create it owner-only first
        os.close(os.open(files.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600))
        os.chmod(files.log, 0o600)
        if not os.path.ismount(p["rootfs"]):
            lower = dom.backend.get("lower") or self._image(dom, unpack=True)[0]
            esc = _overlay_escape
            self.ctx.run(["mount", "-t", "overlay", "overlay", "-o",
                          f"lowerdir={esc(lower)},upperdir={esc(p['upper'])},workdir={esc(p['work'])}",
                          p["rootfs"]])
        runtime, runtime_args = rt.for_monitor()
        command = monitor.argv(conmon, cid=dom.uuid, runtime=runtime, runtime_args=runtime_args, files=files,
                               terminal=bool(dom.config.get("terminal")))
        try:
            pid = monitor.spawn(self.ctx, command, files)
        except BackendError as exc:
            dom.backend["create_error"] = str(exc)
            # a program the image does not have stays missing however often create is retried
            error = PermanentError if program_missing(str(exc)) else BackendError
            raise error(f"{rt.name} create {dom.uuid} failed: {exc}") from None
        for path in (files.conmon_pid, files.container_pid):  # written by conmon / the runtime
            try:
                os.chmod(path, 0o600)
            except FileNotFoundError:
                pass
        dom.backend["pid"] = pid
        dom.backend["conmon_pid"] = monitor.conmon_alive(files, dom.uuid)
        if dom.config.get("nics"):
            self._wire(dom, pid)
        return self._verified(dom, rt, PAUSED, "created")

    # ------------------------------------------------------------------
    # nics (CNI)
    # ------------------------------------------------------------------
    def _nic_plan(self, dom: Domain, fresh: bool = False) -> list[dict]:
        """The nics resolved to bridge / subnet / gateway / address (cni.resolve), once per boot."""
        if fresh or dom.uuid not in self._nic_plans:
            self._nic_plans[dom.uuid] = [cni.resolve(self.ctx, self.ctx.root, i, nic)
                                         for i, nic in enumerate(dom.config.get("nics") or [])]
        return self._nic_plans[dom.uuid]

    def _wire(self, dom: Domain, pid: int) -> None:
        """CNI ADD of every nic into the created container's namespace (its init exists, the program
        has not started: the moment domainmgr writes its offload keys). Each config is saved before
        ADD so that release deletes what an interrupted wiring made."""
        self._unwire(dom)  # a previous run cut short left reservations: start clean
        netns = f"/proc/{pid}/ns/net"
        wired = []
        routed = False
        for i, where in enumerate(self._nic_plan(dom)):
            ifname = f"eth{i}"
            conf = cni.network_config(self.ctx.root, where, default_route=not routed)
            routed = routed or bool(conf.get("ipam", {}).get("routes"))
            cni.write_conf(dom.run_path, ifname, conf)
            result = cni.invoke(self.ctx, "ADD", dom.uuid, ifname, netns, conf)
            address, gateway = cni.result_address(result, ifname)
            veth = cni.host_veth(result, where["bridge"])
            name = cni.veth_name(dom.uuid, i)
            if veth and veth != name:
                # the bridge plugin names the host side at random: give it eveadm's name and mark it
                # ours (doctor tells our veths from anyone else's by name and alias)
                batch = (f"link set dev {veth} down\n"
                         f"link set dev {veth} name {name} alias {cni.veth_alias(dom.uuid, self.ctx.root)} up\n")
                self.ctx.run(["ip", "-batch", "-"], input=batch.encode())
            wired.append({"ifname": ifname, "veth": name if veth else None, "bridge": where["bridge"],
                          "network": where.get("network"), "mac": where.get("mac"), "address": address,
                          "ip": address.split("/")[0] if address else None, "gateway": gateway})
            dom.backend["nics"] = wired
        cni.register_names(self.ctx, dom.uuid, dom.alias or dom.uuid, wired)  # the spec's hostname

    def _unwire(self, dom: Domain) -> list[str]:
        """CNI DEL of every nic this run dir holds a config of; idempotent, also when the container
        is gone (then only the address reservation goes: its namespace took the veth with it)."""
        removed = []
        cni.drop_names(self.ctx, dom.uuid)
        for ifname, path in cni.saved_confs(dom.run_path):
            try:
                with open(path) as fh:
                    conf = json.load(fh)
            except (OSError, ValueError):
                _unlink(path)
                continue
            # no CNI_NETNS: the container is gone (release follows destroy) or about to be replaced;
            # its veth is removed below by name, never looked for through a pid that may be reused
            cni.invoke(self.ctx, "DEL", dom.uuid, ifname, "", conf)
            veth = cni.veth_name(dom.uuid, int(ifname[3:] or "0"))
            if veth in cni.link_names():  # the kernel tears a dead namespace down lazily
                self.ctx.run(["ip", "link", "del", veth], check=False)
            _unlink(path)
            removed.append(path)
        return removed

    def nic_addresses(self, dom: Domain) -> list[str | None]:
        """Each nic's IPv4 address: what CNI gave it in the current run, else its static `ip`."""
        wired = dom.backend.get("nics") or []
        out = []
        for i, nic in enumerate(dom.config.get("nics") or []):
            got = wired[i].get("ip") if i < len(wired) and not dom.backend.get("released") else None
            out.append(got or (str(nic["ip"]).split("/")[0] if nic.get("ip") else None))
        return out

    def change_live(self, dom: Domain, key: str, old, new) -> None:
        """The cgroup limits (the registry's `live` for this brand, the only keys the engine asks
        for): the runtime's `update` rewrites them in the running container."""
        rt = self._rt(dom)
        cpu, memory = spec.resource_limits({**dom.config, key: new})
        argv = ["update", "--memory", str(memory), "--cpu-period", str(cpu["period"]),
                "--cpu-quota", str(cpu["quota"])]
        if key == "cpus":  # back to every CPU when the set is removed
            argv += ["--cpuset-cpus", cpu.get("cpus") or _online_cpus()]
        proc = self.ctx.run(rt.argv(*argv, dom.uuid), check=False)
        if proc.returncode != 0:
            raise LiveChangeFailed(oci_error(rt, "update", proc), in_effect=old)

    def unpause(self, dom: Domain) -> Status:
        rt = self._rt(dom)
        proc = self.ctx.run(rt.argv("start", dom.uuid), check=False)
        if proc.returncode != 0:
            state = self._state(rt, dom.uuid)
            if not (state and state.get("status") == "paused"):  # frozen (`<rt> pause`): resume
                message = oci_error(rt, "start", proc)
                raise (PermanentError if program_missing(message) else BackendError)(message)
            self.ctx.run(rt.argv("resume", dom.uuid))
        return self._verified(dom, rt, RUNNING, "running")

    def _verified(self, dom: Domain, rt: Runtime, state: str, oci_status: str) -> Status:
        """The Status after a successful create / start: the runtime said `oci_status` by succeeding;
        what can change since (the program ending at once) shows as a dead pid, then conmon's record."""
        pid = dom.backend.get("pid")
        files = self._files(dom)
        if pid_alive(pid) and not os.path.exists(files.exit):
            return Status(state, domain_id=pid, pid=pid, detail={"runtime": rt.name, "oci_status": oci_status})
        conmon = monitor.conmon_alive(files, dom.uuid)
        if conmon:  # ended at once: conmon writes the record right after reaping it
            monitor.wait_exit(conmon, ENDING_WAIT)
        return self._status_one(dom, rt, None)

    def shutdown(self, dom: Domain, kind: str, timeout: float) -> None:
        self._signal(dom, _signal.SIGKILL if kind == FORCED else _signal.SIGTERM, timeout)

    def kill(self, dom: Domain, sig: int = _signal.SIGKILL) -> None:
        self._signal(dom, sig, 10)

    def _signal(self, dom: Domain, sig: int, timeout: float) -> None:
        rt = self._rt(dom)
        self._note_signal(dom, sig)
        proc = self.ctx.run(rt.argv("kill", dom.uuid, _signame(sig).removeprefix("SIG")), check=False,
                            timeout=max(timeout, 1))
        if proc.returncode != 0 and pid_alive(dom.backend.get("pid")):
            raise BackendError(oci_error(rt, "kill", proc))

    def _note_signal(self, dom: Domain, sig: int) -> None:
        """Remember a signal eveadm sends, so a death by it reads as a stop, not a crash. Only while
        the program lives: a destroy after an outside kill must not excuse that kill."""
        files = self._files(dom)
        if os.path.exists(files.exit) or not pid_alive(dom.backend.get("pid") or read_pid(files.container_pid)):
            return
        sent = dom.backend.setdefault("signals_sent", [])
        if int(sig) not in sent:
            sent.append(int(sig))

    def destroy(self, dom: Domain, timeout: float = 10) -> None:
        """SIGKILL (`<rt> kill KILL`), then `<rt> delete --force`: processes and runtime state gone.
        Between the two, wait (pidfd, within `timeout`) for conmon to have reaped the init: runc's
        delete --force of a live container polls for its death in 100 ms steps.

        A create still under way (its eveadm was killed while the runtime created) is let finish
        first, within `timeout`, so that it is deleted whole rather than cut in half; without a
        runtime container, a monitor left alive and any process left in the domain's cgroups go."""
        deadline = time.monotonic() + max(timeout, 1)
        files = self._files(dom)
        if monitor.conmon_alive(files, dom.uuid) and not os.path.exists(files.container_pid):
            wait_until(lambda: os.path.exists(files.container_pid) or not monitor.conmon_alive(files, dom.uuid),
                       max(0.0, deadline - time.monotonic()))
        rt = self._runtime_of(dom)
        if rt is None or not self._holds(rt, dom.uuid):
            if monitor.conmon_alive(files, dom.uuid):
                monitor.kill_monitor(files)
            parts.kill_cgroup_members(dom.uuid)
            return
        self._note_signal(dom, _signal.SIGKILL)
        conmon = monitor.conmon_alive(files, dom.uuid)
        if conmon and not os.path.exists(files.exit):
            self.ctx.run(rt.argv("kill", dom.uuid, "KILL"), check=False, timeout=max(timeout, 1))
            monitor.wait_exit(conmon, deadline - time.monotonic())
        proc = self.ctx.run(rt.argv("delete", "--force", dom.uuid), check=False,
                            timeout=max(1.0, deadline - time.monotonic()))
        if proc.returncode != 0 and self._holds(rt, dom.uuid):
            raise BackendError(oci_error(rt, "delete", proc))

    def wait_gone(self, dom: Domain, timeout: float) -> bool:
        """Event-driven: conmon exits right after it has reaped the container's init and written
        the exit status (pidfd on conmon); without a live conmon, poll status."""
        deadline = time.monotonic() + timeout
        conmon = monitor.conmon_alive(self._files(dom), dom.uuid)
        if conmon:
            monitor.wait_exit(conmon, timeout)
        left = max(0.0, deadline - time.monotonic())
        return wait_until(lambda: self.status([dom])[dom.uuid].gone, left)

    # ------------------------------------------------------------------
    # status
    # ------------------------------------------------------------------
    def _rt(self, dom: Domain) -> Runtime:
        rt = self._runtime_of(dom)
        if rt is None:
            raise BackendError(f"container {dom.uuid} was never created")
        return rt

    @staticmethod
    def _holds(rt: Runtime, cid: str) -> bool:
        """Does the runtime have container `cid` (its state directory under its --root)?"""
        return os.path.isdir(os.path.join(rt.root, cid))

    def _runtimes_holding(self, cid: str) -> list[Runtime]:
        """Every runtime with a container `cid` under eveadm's runtime roots. Only create needs the
        hybrid-cgroup wrapper (Runtime.wrap), so these serve every other subcommand."""
        out = []
        for name in RUNTIMES:
            root = self._state_root(name)
            if os.path.isdir(os.path.join(root, cid)):
                path = which(name)
                if path:
                    out.append(Runtime(name, path, root, False))
        return out

    def _runtime_of(self, dom: Domain) -> Runtime | None:
        """The runtime holding the domain's container: the recorded one, else whichever runtime
        root holds its id (a create killed before eveadm saved its notes, or a runtime changed
        since); with no container anywhere, the recorded one (None: never created)."""
        recorded = Runtime.of(dom.backend)
        if recorded is not None and self._holds(recorded, dom.uuid):
            return recorded
        found = self._runtimes_holding(dom.uuid)
        return found[0] if found else recorded

    def _list(self, rt: Runtime, members: list[Domain]) -> dict[str, dict]:
        """{id: state} of the runtime's containers: one `list`; per-domain `state` only when list fails
        (runc list fails when another command deletes a container while it reads the state dir)."""
        if not os.path.isdir(rt.root):
            return {}
        proc = self.ctx.run(rt.argv("list", "--format", "json"), check=False)
        if proc.returncode == 0:
            try:
                entries = json.loads(proc.stdout or b"null") or []
                return {e.get("id"): e for e in entries}
            except ValueError:
                pass
        found = {}
        for dom in members:
            if os.path.isdir(os.path.join(rt.root, dom.uuid)):
                state = self._state(rt, dom.uuid)
                if state:
                    found[dom.uuid] = state
        return found

    def _state(self, rt: Runtime, cid: str) -> dict | None:
        proc = self.ctx.run(rt.argv("state", cid), check=False)
        if proc.returncode != 0:
            return None
        try:
            return json.loads(proc.stdout)
        except ValueError:
            return None

    def status(self, doms: Iterable[Domain]) -> dict[str, Status]:
        """One `<rt> list` per runtime for all the domains, plus pid checks and conmon's exit files."""
        out: dict[str, Status] = {}
        groups: dict[Runtime, list[Domain]] = {}
        for dom in doms:
            rt = self._runtime_of(dom)
            if rt is not None and self._holds(rt, dom.uuid):
                groups.setdefault(rt, []).append(dom)
            else:  # no container: ended and released, never created, or a create under way
                out[dom.uuid] = self._status_one(dom, rt, None)
        for rt, members in groups.items():
            listed = self._list(rt, members)
            for dom in members:
                out[dom.uuid] = self._status_one(dom, rt, listed.get(dom.uuid))
        return out

    def stats(self, doms: Iterable[Domain]) -> dict[str, dict]:
        """A pure read of every container's cgroup and veth counters (container/stats.py)."""
        from .stats import read

        return read({d.uuid: [n["veth"] for n in d.backend.get("nics") or [] if n.get("veth")] for d in doms})

    def _absent(self, dom: Domain) -> Status:
        last = dom.backend.get("last_exit") or {}
        return Status(ABSENT, exit_status=last.get("exit_status"),
                      detail={k: v for k, v in last.items() if k != "exit_status"})

    def _status_one(self, dom: Domain, rt: Runtime | None, entry: dict | None) -> Status:
        files = self._files(dom)
        record = monitor.read_exit(files)
        state = (entry or {}).get("status")
        detail = {"runtime": rt.name if rt else None, "oci_status": state}
        if record is not None:
            return self._from_record(dom, record, detail)
        pid = (entry or {}).get("pid") or dom.backend.get("pid")
        if state in OCI_STATES and pid_alive(pid):
            return Status(OCI_STATES[state], domain_id=pid, pid=pid, detail=detail)
        if monitor.conmon_alive(files, dom.uuid):
            # the program has just ended (or create is under way) and conmon has not written the
            # exit status yet: it is not gone until conmon says how it ended (wait_gone waits for that)
            detail["monitor"] = "recording the exit" if entry else "creating"
            return Status(PAUSED if state in (None, "created") else RUNNING, domain_id=pid, pid=pid,
                          detail=detail)
        if entry is None:
            if dom.backend.get("create_error"):
                return Status(ABSENT, error=dom.backend["create_error"], detail=detail)
            return self._absent(dom)
        return Status(CRASHED, detail=detail,
                      error=f"container {dom.alias or dom.uuid}: its process ended and conmon, its monitor, "
                            "is gone without recording how")

    def _from_record(self, dom: Domain, record: monitor.ExitRecord, detail: dict) -> Status:
        detail = dict(detail, exit_timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.time)))
        sig = record.signal
        who = dom.alias or dom.uuid
        if sig:
            detail["signal"] = _signame(sig)
            if sig == _signal.SIGKILL and record.oom:
                return Status(CRASHED, exit_status=record.status, detail=detail,
                              error=f"container {who}: its program was killed by the kernel: out of memory "
                                    f"(ram {dom.config.get('ram')} MiB)")
            if sig not in (dom.backend.get("signals_sent") or []):
                return Status(CRASHED, exit_status=record.status, detail=detail,
                              error=f"container {who}: its program was killed by {_signame(sig)} from outside "
                                    f"eveadm (exit status {record.status})")
        return Status(SHUTDOWN, exit_status=record.status, detail=detail)

    # ------------------------------------------------------------------
    # release
    # ------------------------------------------------------------------
    def release(self, dom: Domain, *, delete: bool = False) -> list[str]:
        p = self._paths(dom)
        files = self._files(dom)
        removed: list[str] = []
        rt = self._runtime_of(dom)
        for holder in self._runtimes_holding(dom.uuid):
            self.ctx.run(holder.argv("delete", "--force", dom.uuid), check=False)
        conmon = monitor.conmon_alive(files, dom.uuid)
        if conmon and not monitor.wait_exit(conmon, ENDING_WAIT):  # its container is gone: it ends now
            monitor.kill_monitor(files)
        if rt and not dom.backend.get("released"):
            record = monitor.read_exit(files)
            if record is not None:
                st = self._from_record(dom, record, {"runtime": rt.name})
                dom.backend["last_exit"] = dict(st.detail, exit_status=st.exit_status)
        removed += self._unwire(dom)
        if os.path.ismount(p["rootfs"]):
            self._unmount(p["rootfs"])
        # the runtime removes them with its container; a create cut in half can leave them
        cgroups = parts.cgroup_dirs(dom.uuid)
        if cgroups:
            parts.kill_cgroup_members(dom.uuid)
            wait_until(lambda: not parts.cgroup_pids(cgroups), ENDING_WAIT)
            left = parts.remove_cgroups(cgroups)
            if left:
                raise BackendError(f"container {dom.uuid}: cannot remove its cgroups {', '.join(left)}")
        for path in files.leftovers() + [p["console_lock"]]:
            if os.path.lexists(path):
                os.unlink(path)
                removed.append(path)
        if rt:
            dom.backend["released"] = True
        if delete:
            dom.backend.pop("nics", None)
            for key in ("bundle", "upper", "work", "volumes"):
                if os.path.exists(p[key]):
                    _rmtree(p[key])
                    removed.append(p[key])
            for path in dom.backend.pop("created_dirs", []):
                if os.path.isdir(path):
                    _rmtree(path)
                    removed.append(path)
            if os.path.exists(p["log"]):
                os.unlink(p["log"])
                removed.append(p["log"])
            for d in (dom.run_path, dom.data_path):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        return removed

    def _unmount(self, target: str) -> None:
        proc = self.ctx.run(["umount", target], check=False)
        if proc.returncode != 0:
            self.ctx.run(["umount", "--lazy", target])

    # ------------------------------------------------------------------
    # doctor
    # ------------------------------------------------------------------
    def orphans(self, known: set[str]) -> list[Orphan]:
        """What eveadm made under this state root for domains not in `known`, in the order they
        are best removed: runtime containers (under each runtime's --root here), conmon monitors
        (--persist-dir under this run root), overlay mounts (on <root>/domains/<uuid>/bundle/rootfs),
        then empty /eveadm/<uuid> cgroups. Other state roots share the /eveadm cgroup parent: a
        cgroup is ours only when this root holds some other trace of its UUID."""
        found: list[Orphan] = []
        traces: set[str] = set()
        for name in RUNTIMES:
            root = self._state_root(name)
            for cid in parts.listdir(root):
                if parts.is_uuid(cid) and cid not in known:
                    found.append(Orphan("container", f"{name}:{cid}", cid, f"{name} container under {root}"))
                    traces.add(cid)
        run_root = str(self.ctx.run_root)
        for pid, uuid in sorted(parts.monitors_under(run_root).items()):
            if uuid not in known:
                found.append(Orphan("process", str(pid), uuid, f"conmon of container {uuid}"))
                traces.add(uuid)
        for uuid, target in sorted(parts.overlay_mounts_under(str(self.ctx.root / "domains")).items()):
            if uuid not in known:
                found.append(Orphan("mount", target, uuid, "overlay root filesystem"))
                traces.add(uuid)
        dirs = {name for parent in (self.ctx.root / "domains", self.ctx.run_root)
                for name in parts.listdir(parent) if parts.is_uuid(name)}
        for uuid, paths in sorted(parts.cgroups_by_uuid().items()):
            if uuid in known or not (uuid in traces or uuid in dirs) or parts.cgroup_pids(paths):
                continue  # a live one belongs to a container (found above, or another root's)
            found += [Orphan("cgroup", path, uuid, "empty cgroup") for path in paths]
        for veth, uuid in sorted(cni.eveadm_veths(self.ctx, self.ctx.root).items()):
            if uuid not in known:
                found.append(Orphan("veth", veth, uuid, "host side of a container nic"))
        for path, cid, ifname in cni.reservations(self.ctx.root):
            if parts.is_uuid(cid) and cid not in known:
                found.append(Orphan("address", str(path), cid,
                                    f"address {path.name} reserved for {ifname} on {path.parent.name}"))
        return found

    def remove_orphan(self, orphan: Orphan) -> None:
        """Remove one thing `orphans` found, checked again first; already gone is not an error."""
        if orphan.kind == "container":
            name, _, cid = orphan.ident.partition(":")
            for rt in self._runtimes_holding(cid):
                if rt.name == name:
                    proc = self.ctx.run(rt.argv("delete", "--force", cid), check=False)
                    if proc.returncode != 0 and self._holds(rt, cid):
                        raise BackendError(oci_error(rt, "delete", proc))
        elif orphan.kind == "process":
            parts.kill_monitor(int(orphan.ident), str(self.ctx.run_root), orphan.uuid)
        elif orphan.kind == "mount":
            if parts.is_overlay_mount(orphan.ident):
                self._unmount(orphan.ident)
        elif orphan.kind == "veth":
            if cni.eveadm_veths(self.ctx, self.ctx.root).get(orphan.ident) == orphan.uuid:
                proc = self.ctx.run(["ip", "link", "del", orphan.ident], check=False)
                if proc.returncode != 0 and orphan.ident in cni.link_names():
                    raise BackendError(command_error(["ip", "link", "del", orphan.ident], proc))
        elif orphan.kind == "address":
            # host-local's reservation: a file named by the address holding the container id
            if any(str(path) == orphan.ident and cid == orphan.uuid for path, cid, _ in cni.reservations(self.ctx.root)):
                os.unlink(orphan.ident)
        elif orphan.kind == "cgroup":
            left = parts.remove_cgroups([orphan.ident])
            if left:
                raise BackendError(f"cannot remove cgroup {orphan.ident}: a process is in it")
        else:
            super().remove_orphan(orphan)

    # ------------------------------------------------------------------
    # console, logs, info
    # ------------------------------------------------------------------
    def console_log(self, dom: Domain) -> Path | None:
        """conmon's k8s-file log (`TIME STREAM F|P TEXT` lines); console_log_text decodes it."""
        from pathlib import Path

        return Path(self._paths(dom)["log"])

    def console_log_text(self, dom: Domain, max_bytes: int = 256 * 1024) -> str:
        """What the program wrote (its last `max_bytes` of log), without conmon's line prefixes."""
        try:
            with open(self._paths(dom)["log"], "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - max_bytes))
                return monitor.log_text(fh.read())
        except FileNotFoundError:
            return ""

    def console(self, dom: Domain) -> int:
        from .. import console

        if not dom.config.get("terminal"):
            raise NotSupported(
                f"container {dom.alias or dom.uuid} has no terminal (created with terminal: false); "
                f"its output is in the log: eveadm info {dom.uuid} --log")
        files = self._files(dom)
        if not _is_socket(files.attach) or not monitor.conmon_alive(files, dom.uuid):
            raise BackendError(f"container {dom.alias or dom.uuid} is not running (no console socket)")
        return console.attach(files.attach, self._paths(dom)["console_lock"], name=dom.alias or dom.uuid,
                              framing="conmon", resize=lambda rows, cols: self._resize(files, rows, cols))

    @staticmethod
    def _resize(files: monitor.RunFiles, rows: int, cols: int) -> None:
        """conmon resizes the pty on a `1 ROWS COLS` line on its ctl fifo."""
        try:
            fd = os.open(files.ctl, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # conmon is gone: nothing to resize
        try:
            os.write(fd, f"1 {rows} {cols}\n".encode())
        except OSError:
            pass
        finally:
            os.close(fd)

    def info(self, dom: Domain) -> dict:
        p = self._paths(dom)
        files = self._files(dom)
        out = {"bundle": p["bundle"], "config": p["config"], "log": p["log"],
               "log_format": "k8s-file", "conmon_pid": monitor.conmon_alive(files, dom.uuid)}
        rt = Runtime.of(dom.backend)
        if rt:
            out["runtime"] = rt.name
            out["oci_state"] = self._state(rt, dom.uuid)
        if dom.config.get("nics"):
            out["nics"] = [{k: n.get(k) for k in ("ifname", "veth", "bridge", "network", "address", "mac")}
                           for n in (dom.backend.get("nics") or [])]
            out["metadata_path"] = METADATA_PATH
        return out


def _online_cpus() -> str:
    """The host's CPUs as a cpuset list ("0-1")."""
    try:
        with open("/sys/devices/system/cpu/online") as fh:
            return fh.read().strip()
    except OSError:
        return f"0-{(os.cpu_count() or 1) - 1}"


def oci_error(rt: Runtime, verb: str, proc) -> str:
    text = runtime_message(proc)
    return f"{rt.name} {verb} failed (exit {proc.returncode})" + (f": {text}" if text else "")
