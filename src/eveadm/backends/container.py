"""brand `container`: OCI containers run by runc or crun (EVE's containerd path, without containerd).

Per domain:

    <data_dir>/bundle/config.json   rendered runtime spec (`render()` returns its text)
    <data_dir>/bundle/rootfs        overlayfs mount: lower = the image's root filesystem (never
                                    written), upper/work = <data_dir>/upper, <data_dir>/work;
                                    mounted at create (by the shim: one mount(2), logged in
                                    commands.jsonl), unmounted by release
    <run_dir>/console.log           everything the program writes (stdout+stderr or its pty)
    <run_dir>/exit.json             written by the shim when the program ends (status, signal, time)
    <run_dir>/console.sock          terminal:true only: attach point served by the shim

The root filesystem is an overlay mount, not a copy: creating a domain costs one
`mount`, the image directory (or the unpacked OCI layout in the cache) stays
untouched, and the container's own changes live in `upper`, kept across
stop/start (as docker keeps a container's layer) and removed by delete.

Two phases as domainmgr: `create_paused` = `<rt> create` (the runtime's init
waits on its exec fifo: the process exists, the user's program has not
started), `unpause` = `<rt> start`. Each runtime keeps its state under
`<run_root>/container/<runtime>` (its `--root`), so two eveadm roots never see
each other's containers. How the exit status is captured (the shim, a child
subreaper) and how a terminal is kept attachable is described in
`eveadm.oci`.

Runtime choice: setting `container.runtime` = auto (default) | runc | crun.
Each candidate is probed once per boot (a real `run` of the host's `true` in a
read-only container) and the verdict is cached in `<cache>/container/runtime.json`.
auto prefers crun when it works as is, then runc (works as is on hybrid-cgroup
hosts), then crun through the hybrid-cgroup workaround (a private mount
namespace without /sys/fs/cgroup/unified for `create`, made by the shim; see
`eveadm.oci`). container.runtime=crun forces crun (with the workaround if needed).

status(): one `<rt> list` per runtime for all domains asked about, plus pid
checks and the shim's exit record (see `status` for the one shortcut).
"""

from __future__ import annotations

import json
import os
import shutil
import signal as _signal
import subprocess
import time
from pathlib import Path
from typing import Iterable

from ..errors import BackendError, BackendUnavailable, NotSupported
from .. import oci
from .base import (
    ABSENT, CRASHED, PAUSED, RUNNING, SHUTDOWN, Backend, BackendContext, Domain, Status,
    pid_alive, wait_until,
)

INSTALL_HINT = "brand container needs runc or crun: apt-get install runc"
RUNTIMES = ("runc", "crun")
PROBE_TIMEOUT = 20
CREATE_TIMEOUT = 60
PROBE_VERSION = 2  # bump when the probe container changes: cached verdicts are then redone
JUST_SEEN = 2.0  # s: see status()
OCI_NAMES = {PAUSED: "created", RUNNING: "running"}
PROBE_RETRY_AFTER = 600  # s: a failed probe is redone after this (a success holds until reboot)


def _overlay_escape(path) -> str:
    """overlayfs splits its options at ',' and lowerdir at ':'; a backslash escapes them."""
    return str(path).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


class Runtime:
    """One OCI runtime binary as used here (a plain class: dataclasses cost CLI start-up)."""

    __slots__ = ("name", "path", "root", "wrap")

    def __init__(self, name: str, path: str, root: str, wrap: bool):
        self.name = name  # runc | crun
        self.path = path  # absolute path of the binary
        self.root = root  # its --root state directory
        self.wrap = wrap  # crun on a hybrid-cgroup host: create/run go through unshare + umount

    def __eq__(self, other) -> bool:
        return isinstance(other, Runtime) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self) -> int:
        return hash((self.name, self.path, self.root, self.wrap))

    def __repr__(self) -> str:
        return f"Runtime({self.name!r}, {self.path!r}, wrap={self.wrap})"

    def argv(self, *args: str) -> list[str]:
        return [self.path, "--root", self.root, *args]

    def create_argv(self, *args: str) -> list[str]:
        """argv for `create` / `run` (the only subcommands that hit crun's hybrid-cgroup check)."""
        argv = self.argv(*args)
        if not self.wrap:
            return argv
        return ["unshare", "--mount", "--propagation", "private", "--",
                *oci.launcher_argv("umount-exec"), oci.HYBRID_CGROUP2, "--", *argv]

    @classmethod
    def of(cls, backend: dict) -> "Runtime | None":
        if not backend.get("runtime_path"):
            return None
        return cls(backend["runtime"], backend["runtime_path"], backend["runtime_root"],
                   bool(backend.get("runtime_wrap")))


def _signame(sig: int | None) -> str:
    try:
        return _signal.Signals(sig).name
    except (ValueError, TypeError):
        return f"signal {sig}"


class ContainerBackend(Backend):
    brand = "container"
    default_stop_timeout = 10

    def __init__(self, ctx: BackendContext):
        super().__init__(ctx)
        self._runtime: Runtime | None = None
        # uuid -> (state, pid, monotonic time): what the runtime itself just told this object by
        # the success of `create` / `start` (see status())
        self._just: dict[str, tuple[str, int, float]] = {}

    # ------------------------------------------------------------------
    # runtime selection
    # ------------------------------------------------------------------
    def _state_root(self, name: str) -> str:
        return str(self.ctx.run_root / "container" / name)

    def _probe_key(self, path: str) -> dict:
        st = os.stat(path)
        try:
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            boot = ""
        return {"probe": PROBE_VERSION, "path": path, "mtime": st.st_mtime, "size": st.st_size, "boot_id": boot}

    def _probe(self, name: str, path: str, wrap: bool) -> str | None:
        """Run the host's `true` in a throw-away container; None when that works, else why not (one line)."""
        cache = self.ctx.cache_dir("container")
        verdicts_file = cache / "runtime.json"
        label = f"{name}{'+unshare' if wrap else ''}"
        key = self._probe_key(path)
        try:
            verdicts = json.loads(verdicts_file.read_text())
        except (OSError, ValueError):
            verdicts = {}
        known = verdicts.get(label)
        if known and known.get("key") == key and (
                known.get("error") is None or time.time() - known.get("time", 0) < PROBE_RETRY_AFTER):
            return known.get("error")
        true_bin = shutil.which("true") or "/bin/true"
        probe_dir = cache / "probe"
        rootfs = probe_dir / "rootfs"
        oci.make_probe_rootfs(str(rootfs))
        bundle = probe_dir / f"bundle-{os.getpid()}"
        bundle.mkdir(parents=True, exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(oci.probe_spec(str(rootfs), true_bin)))
        rt = Runtime(name, path, str(probe_dir / f"state-{name}"), wrap)
        cid = f"eveadm-probe-{os.getpid()}"
        error = None
        try:
            proc = self.ctx.run(rt.create_argv("run", "--bundle", str(bundle), cid),
                                timeout=PROBE_TIMEOUT, check=False)
            if proc.returncode != 0:
                error = oci.last_line(proc.stderr) or oci.last_line(proc.stdout) or f"exit {proc.returncode}"
        except BackendError as exc:
            error = str(exc)
        finally:
            self.ctx.run(rt.argv("delete", "--force", cid), check=False, timeout=PROBE_TIMEOUT)
            shutil.rmtree(bundle, ignore_errors=True)
        verdicts[label] = {"key": key, "error": error, "time": time.time()}
        tmp = verdicts_file.with_name(f"runtime.json.{os.getpid()}")
        tmp.write_text(json.dumps(verdicts, indent=1))
        os.replace(tmp, verdicts_file)
        return error

    def runtime(self) -> Runtime:
        """The runtime new containers use (probing once per boot); BackendUnavailable says why none works."""
        if self._runtime:
            return self._runtime
        choice = str(self.ctx.setting("container.runtime", "auto") or "auto").lower()
        if choice not in ("auto",) + RUNTIMES:
            raise BackendUnavailable(f"setting container.runtime={choice!r}: use auto, runc or crun")
        names = RUNTIMES if choice == "auto" else (choice,)
        found = {n: shutil.which(n) for n in names}
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
            if wrap and not (oci.hybrid_cgroups() and shutil.which("unshare")):
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

    def host_info(self) -> dict:
        try:
            rt = self.runtime()
        except BackendUnavailable as exc:
            return {"runtime": None, "error": str(exc)}
        return {"runtime": rt.name, "runtime_path": rt.path, "state_root": rt.root,
                "hybrid_cgroup_workaround": rt.wrap}

    # ------------------------------------------------------------------
    # validation and rendering
    # ------------------------------------------------------------------
    def validate(self, config: dict) -> list[tuple[str, str]]:
        bad: list[tuple[str, str]] = []
        image = config.get("image")
        if not image:
            return [("image", "brand container needs an image (a root filesystem directory or oci:DIR[:TAG])")]
        problem = oci.check_image(image)
        if problem:
            bad.append(("image", problem))
        kind, path, tag = oci.parse_image(image)
        if kind == "dir" and not config.get("cmd"):
            bad.append(("cmd", "required with a root filesystem directory (it has no image config to take it from)"))
        if kind == "oci" and not config.get("cmd") and not problem:
            try:
                _, digest = oci.resolve_manifest(path, tag)
                cfg = oci.image_config(path, digest)
                if not (cfg.get("Entrypoint") or cfg.get("Cmd")):
                    bad.append(("cmd", f"required: image {image} has no Entrypoint or Cmd"))
            except oci.ImageError as exc:
                bad.append(("image", str(exc)))
        for i, disk in enumerate(config.get("disks") or []):
            p = disk.get("path")
            if p and not os.path.isdir(p) and not (disk.get("size") and not os.path.exists(p)):
                bad.append((f"disks.{i}.path", f"brand container mounts directories only: {p} is not a directory"))
            if disk.get("media") == "cdrom":
                bad.append((f"disks.{i}.media", "brand container has no cdrom"))
        if config.get("nics"):
            bad.append(("nics", "brand container has no network interfaces yet (loopback only)"))
        if config.get("pci_devices"):
            bad.append(("pci_devices", "brand container does not assign PCI devices"))
        return bad

    def _paths(self, dom: Domain) -> dict[str, Path]:
        return {
            "bundle": dom.data_dir / "bundle",
            "rootfs": dom.data_dir / "bundle" / "rootfs",
            "config": dom.data_dir / "bundle" / "config.json",
            "upper": dom.data_dir / "upper",
            "work": dom.data_dir / "work",
            "volumes": dom.data_dir / "volumes",
            "log": dom.run_dir / "console.log",
            "exit": dom.run_dir / "exit.json",
            "pid": dom.run_dir / "container.pid",
            "console": dom.run_dir / "console.sock",
            "console_recv": dom.data_dir / "bundle" / "console-recv.sock",
            "shim_err": dom.run_dir / "shim.err",
        }

    def _image(self, dom: Domain, unpack: bool) -> tuple[str | None, dict]:
        """(lower root filesystem or None when not unpacked, image config)."""
        kind, path, tag = oci.parse_image(dom.config["image"])
        if kind == "dir":
            return path, {}
        try:
            tag, digest = oci.resolve_manifest(path, tag)
            cfg = oci.image_config(path, digest)
        except oci.ImageError as exc:
            raise BackendError(str(exc)) from None
        cached = self.ctx.cache_dir("container") / "oci" / digest.replace(":", "_")
        if (cached / "rootfs").is_dir():
            return str(cached / "rootfs"), cfg
        if not unpack:
            return None, cfg
        tmp = cached.with_name(f"{cached.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        self.ctx.run(["umoci", "unpack", "--image", f"{path}:{tag}", str(tmp)], timeout=600,
                     install_hint="oci: images need umoci: apt-get install umoci")
        try:
            os.rename(tmp, cached)
        except OSError:  # another eveadm unpacked it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        return str(cached / "rootfs"), cfg

    def _disks(self, dom: Domain) -> list[dict]:
        disks = []
        for i, disk in enumerate(dom.config.get("disks") or []):
            disk = dict(disk)
            if not disk.get("path") and disk.get("size"):
                disk["source"] = str(dom.data_dir / "volumes" / f"disk{i}")
            disks.append(disk)
        return disks

    def _spec(self, dom: Domain, lower: str | None, image_cfg: dict) -> dict:
        config = dict(dom.config, disks=self._disks(dom))
        return oci.build_spec(
            config, rootfs=str(self._paths(dom)["rootfs"]), image_cfg=image_cfg,
            hostname=dom.alias or dom.uuid, cgroups_path=f"/eveadm/{dom.uuid}",
            user_rootfs=lower,
        )

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
            raise BackendError(f"image root filesystem {lower} is not a directory")
        for d in (p["upper"], p["work"], p["rootfs"], dom.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        for disk in self._disks(dom):
            if disk.get("source"):
                Path(disk["source"]).mkdir(parents=True, exist_ok=True)
            elif disk.get("size") and disk.get("path") and not os.path.exists(disk["path"]):
                Path(disk["path"]).mkdir(parents=True)
                dom.backend.setdefault("created_dirs", []).append(disk["path"])
        text = json.dumps(self._spec(dom, lower, cfg), indent=2) + "\n"
        tmp = p["config"].with_name("config.json.tmp")
        tmp.write_text(text)
        os.replace(tmp, p["config"])
        dom.backend.update(bundle=str(p["bundle"]), config=str(p["config"]), rootfs=str(p["rootfs"]),
                           lower=lower, log=str(p["log"]))

    def create_paused(self, dom: Domain) -> None:
        rt = self.runtime()
        p = self._paths(dom)
        dom.run_dir.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(os.path.join(rt.root, dom.uuid)):  # left over from a crash: start clean
            self.ctx.run(rt.argv("delete", "--force", dom.uuid), check=False)
        for f in ("exit", "pid", "console", "console_recv"):
            try:
                p[f].unlink()
            except FileNotFoundError:
                pass
        for key in ("pid", "shim_pid", "signals_sent", "released", "last_exit", "create_error"):
            dom.backend.pop(key, None)
        dom.backend.update(runtime=rt.name, runtime_path=rt.path, runtime_root=rt.root,
                           runtime_wrap=rt.wrap, container_id=dom.uuid)
        terminal = bool(dom.config.get("terminal"))
        create = ["create", "--bundle", str(p["bundle"]), "--pid-file", str(p["pid"])]
        if terminal:
            # relative: the runtime chdirs into the bundle first, and sun_path holds only 108 bytes
            create += ["--console-socket", p["console_recv"].name]
        shim = [*oci.launcher_argv("shim"), "--id", dom.uuid,
                "--log", str(p["log"]), "--pid-file", str(p["pid"]), "--exit-file", str(p["exit"]),
                "--cmdlog", str(self.ctx.command_log)]
        if terminal:
            shim += ["--console-recv", str(p["console_recv"]), "--console", str(p["console"])]
        if not os.path.ismount(p["rootfs"]):  # mounted by the shim (logged as `mount -t overlay ...`)
            lower = dom.backend.get("lower") or self._image(dom, unpack=True)[0]
            esc = _overlay_escape
            shim += ["--overlay", f"lowerdir={esc(lower)},upperdir={esc(p['upper'])},workdir={esc(p['work'])}",
                     "--overlay-target", str(p["rootfs"])]
        if rt.wrap:  # crun on a hybrid-cgroup host: the shim unshares + unmounts in create's process
            shim += ["--hide-mount", oci.HYBRID_CGROUP2]
        shim += ["--", *rt.argv(*create, dom.uuid)]
        with open(p["shim_err"], "ab") as err:
            # cwd /: the shim lives as long as the container and must not pin the caller's directory
            proc = subprocess.Popen(shim, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                    start_new_session=True, close_fds=True, cwd="/")
        dom.backend["shim_pid"] = proc.pid
        reply = self._shim_reply(proc, p["shim_err"])
        if reply.get("timeout"):
            # the runtime hangs: end the shim and the runtime under it (its own process group)
            try:
                os.killpg(proc.pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        if not reply.get("ok"):
            dom.backend["create_error"] = reply.get("error")
            raise BackendError(f"{rt.name} create {dom.uuid} failed: {reply.get('error')}")
        dom.backend["pid"] = reply["pid"]
        self._just[dom.uuid] = (PAUSED, reply["pid"], time.monotonic())

    @staticmethod
    def _shim_reply(proc: subprocess.Popen, err_path: Path) -> dict:
        import select

        line = b""
        deadline = time.monotonic() + CREATE_TIMEOUT
        fd = proc.stdout.fileno()
        try:
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    return {"ok": False, "timeout": True,
                            "error": f"no answer from the runtime within {CREATE_TIMEOUT}s"}
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                line += chunk
        finally:
            proc.stdout.close()
        try:
            return json.loads(line)
        except ValueError:
            try:
                tail = oci.last_line(err_path.read_bytes())
            except OSError:
                tail = ""
            return {"ok": False, "error": f"eveadm shim ended early{': ' + tail if tail else ''}"}

    def unpause(self, dom: Domain) -> None:
        rt = self._rt(dom)
        self._just.pop(dom.uuid, None)
        proc = self.ctx.run(rt.argv("start", dom.uuid), check=False)
        if proc.returncode != 0:
            state = self._state(rt, dom.uuid)
            if not (state and state.get("status") == "paused"):  # frozen (`<rt> pause`): resume
                raise BackendError(oci_error(rt, "start", proc))
            self.ctx.run(rt.argv("resume", dom.uuid))
        if dom.backend.get("pid"):
            self._just[dom.uuid] = (RUNNING, dom.backend["pid"], time.monotonic())

    def shutdown(self, dom: Domain, force: bool = False) -> None:
        self._signal(dom, _signal.SIGKILL if force else _signal.SIGTERM)

    def kill(self, dom: Domain, sig: int = _signal.SIGKILL) -> None:
        self._signal(dom, sig)

    def _signal(self, dom: Domain, sig: int) -> None:
        rt = self._rt(dom)
        self._just.pop(dom.uuid, None)
        self._note_signal(dom, sig)
        proc = self.ctx.run(rt.argv("kill", dom.uuid, _signame(sig).removeprefix("SIG")), check=False)
        if proc.returncode != 0 and not self.status([dom])[dom.uuid].gone:
            raise BackendError(oci_error(rt, "kill", proc))

    def _note_signal(self, dom: Domain, sig: int) -> None:
        """Remember a signal eveadm sent, so a death by it reads as stopped, not crashed.
        Not once the program has ended: a later destroy must not excuse an outside kill."""
        if self._paths(dom)["exit"].exists():
            return
        sent = dom.backend.setdefault("signals_sent", [])
        if int(sig) not in sent:
            sent.append(int(sig))

    def destroy(self, dom: Domain) -> None:
        self._just.pop(dom.uuid, None)
        rt = Runtime.of(dom.backend)
        if rt is None:
            return
        self._note_signal(dom, _signal.SIGKILL)
        if not os.path.isdir(os.path.join(rt.root, dom.uuid)):
            return
        self.ctx.run(rt.argv("kill", dom.uuid, "KILL"), check=False)
        proc = self.ctx.run(rt.argv("delete", "--force", dom.uuid), check=False)
        if proc.returncode != 0 and os.path.isdir(os.path.join(rt.root, dom.uuid)):
            raise BackendError(oci_error(rt, "delete", proc))

    def wait_gone(self, dom: Domain, timeout: float) -> bool:
        """Event-driven: the shim exits right after the container's init is reaped (pidfd)."""
        deadline = time.monotonic() + timeout
        shim = dom.backend.get("shim_pid")
        if shim and self._is_shim(shim, dom.uuid):
            import select
            try:
                fd = os.pidfd_open(shim)
            except OSError:
                fd = None
            if fd is not None:
                try:
                    select.select([fd], [], [], max(0.0, timeout))
                finally:
                    os.close(fd)
        left = max(0.0, deadline - time.monotonic())
        return wait_until(lambda: self.status([dom])[dom.uuid].gone, left)

    # ------------------------------------------------------------------
    # status
    # ------------------------------------------------------------------
    def _rt(self, dom: Domain) -> Runtime:
        rt = Runtime.of(dom.backend)
        if rt is None:
            raise BackendError(f"container {dom.uuid} was never created")
        return rt

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
        """One `<rt> list` per runtime for all the domains, plus pid checks and the shim's exit records.

        Exception: a domain this same object created or started less than JUST_SEEN s ago is
        answered without `list`: the runtime itself said "created" / "running" by the success
        of that `create` / `start`, and what can change since (the program ending) shows as a
        dead pid or an exit record, which are checked. This saves two runtime executions per
        `eveadm create` (the engine confirms each phase at once)."""
        doms = list(doms)
        out: dict[str, Status] = {}
        groups: dict[Runtime, list[Domain]] = {}
        now = time.monotonic()
        for dom in doms:
            rt = Runtime.of(dom.backend)
            just = self._just.get(dom.uuid)
            if rt is None or dom.backend.get("released"):
                out[dom.uuid] = self._absent(dom)
            elif (just and now - just[2] < JUST_SEEN and just[1] == dom.backend.get("pid")
                  and pid_alive(just[1]) and not self._paths(dom)["exit"].exists()):
                out[dom.uuid] = Status(just[0], domain_id=just[1], pid=just[1],
                                       detail={"runtime": rt.name, "oci_status": OCI_NAMES[just[0]]})
            else:
                groups.setdefault(rt, []).append(dom)
        for rt, members in groups.items():
            listed = self._list(rt, members)
            for dom in members:
                out[dom.uuid] = self._status_one(dom, rt, listed.get(dom.uuid))
        return out

    def _absent(self, dom: Domain) -> Status:
        last = dom.backend.get("last_exit") or {}
        return Status(ABSENT, exit_status=last.get("exit_status"),
                      detail={k: v for k, v in last.items() if k != "exit_status"})

    def _status_one(self, dom: Domain, rt: Runtime, entry: dict | None) -> Status:
        p = self._paths(dom)
        state = (entry or {}).get("status")
        pid = (entry or {}).get("pid") or dom.backend.get("pid")
        detail = {"runtime": rt.name, "oci_status": state}
        if state in ("created", "running", "paused", "pausing") and pid_alive(pid):
            st = {"created": PAUSED, "running": RUNNING}.get(state, PAUSED)
            return Status(st, domain_id=pid, pid=pid, detail=detail)
        # not running: what the shim saw
        record = self._exit_record(dom, p["exit"])
        if record is None:
            if entry is None and not self._shim_alive(dom):
                if dom.backend.get("create_error"):
                    return Status(ABSENT, error=dom.backend["create_error"], detail=detail)
                return Status(ABSENT, detail=detail)
            return Status(CRASHED, error=f"container {dom.uuid}: its process ended and eveadm's shim "
                                         "could not record how (shim gone)", detail=detail)
        return self._from_record(dom, record, detail)

    def _exit_record(self, dom: Domain, path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            pass
        except ValueError:
            return None
        # the process may have just died: the shim writes the record right after reaping it
        if self._shim_alive(dom) and wait_until(path.exists, 2.0):
            return json.loads(path.read_text())
        return None

    def _from_record(self, dom: Domain, record: dict, detail: dict) -> Status:
        detail = dict(detail)
        when = record.get("time")
        if when:
            detail["exit_timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        sig = record.get("signal")
        if sig:
            detail["signal"] = _signame(sig)
            if sig not in (dom.backend.get("signals_sent") or []):
                return Status(CRASHED, exit_status=record.get("exit_status"), detail=detail,
                              error=f"container {dom.alias or dom.uuid}: its program was killed by "
                                    f"{_signame(sig)} from outside eveadm")
        if record.get("exit_status") is None:
            return Status(CRASHED, detail=detail,
                          error=f"container {dom.alias or dom.uuid}: its program ended, exit status unknown")
        return Status(SHUTDOWN, exit_status=record["exit_status"], detail=detail)

    def _is_shim(self, pid: int, uuid: str) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"shim" in cmdline and uuid.encode() in cmdline and pid_alive(pid)

    def _shim_alive(self, dom: Domain) -> bool:
        pid = dom.backend.get("shim_pid")
        return bool(pid) and self._is_shim(pid, dom.uuid)

    # ------------------------------------------------------------------
    # release
    # ------------------------------------------------------------------
    def release(self, dom: Domain, *, delete: bool = False) -> list[str]:
        self._just.pop(dom.uuid, None)
        p = self._paths(dom)
        removed: list[str] = []
        rt = Runtime.of(dom.backend)
        if rt and os.path.isdir(os.path.join(rt.root, dom.uuid)):
            self.ctx.run(rt.argv("delete", "--force", dom.uuid), check=False)
        if rt and not dom.backend.get("released"):
            st = self._status_one(dom, rt, None) if p["exit"].exists() else None
            if st is not None:
                dom.backend["last_exit"] = dict(st.detail, exit_status=st.exit_status)
        shim = dom.backend.get("shim_pid")
        if shim and self._is_shim(shim, dom.uuid):
            os.kill(shim, _signal.SIGKILL)
        if os.path.ismount(p["rootfs"]):
            proc = self.ctx.run(["umount", str(p["rootfs"])], check=False)
            if proc.returncode != 0:
                self.ctx.run(["umount", "--lazy", str(p["rootfs"])])
        for key in ("exit", "pid", "console", "console_recv", "shim_err"):
            if p[key].exists() or p[key].is_socket():
                p[key].unlink()
                removed.append(str(p[key]))
        if rt:
            dom.backend["released"] = True
        if delete:
            for key in ("bundle", "upper", "work", "volumes"):
                if p[key].exists():
                    shutil.rmtree(p[key])
                    removed.append(str(p[key]))
            for path in dom.backend.pop("created_dirs", []):
                if os.path.isdir(path):
                    shutil.rmtree(path)
                    removed.append(path)
            if p["log"].exists():
                p["log"].unlink()
                removed.append(str(p["log"]))
            for d in (dom.run_dir, dom.data_dir):
                try:
                    d.rmdir()
                except OSError:
                    pass
        return removed

    # ------------------------------------------------------------------
    # console, logs, info
    # ------------------------------------------------------------------
    def console_log(self, dom: Domain) -> Path | None:
        return self._paths(dom)["log"]

    def console(self, dom: Domain) -> int:
        if not dom.config.get("terminal"):
            raise NotSupported(
                f"container {dom.alias or dom.uuid} has no terminal (created with terminal: false); "
                f"its output is in the log: eveadm info {dom.uuid} --log")
        sock = self._paths(dom)["console"]
        if not sock.is_socket():
            raise BackendError(f"container {dom.alias or dom.uuid} is not running (no console socket)")
        return oci.attach(str(sock), dom.alias or dom.uuid)

    def info(self, dom: Domain) -> dict:
        p = self._paths(dom)
        out = {"bundle": str(p["bundle"]), "config": str(p["config"]), "log": str(p["log"]),
               "shim_pid": dom.backend.get("shim_pid")}
        rt = Runtime.of(dom.backend)
        if rt:
            out["runtime"] = rt.name
            out["oci_state"] = self._state(rt, dom.uuid)
        return out


def oci_error(rt: Runtime, verb: str, proc: subprocess.CompletedProcess) -> str:
    text = oci.last_line(proc.stderr) or oci.last_line(proc.stdout)
    return f"{rt.name} {verb} failed (exit {proc.returncode})" + (f": {text}" if text else "")
