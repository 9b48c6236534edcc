"""brand rkt: rkt with the stage1-xen flavour, exactly as domainmgr.go called it.

    create   env STAGE1_XL_OPTS=-p STAGE1_SEED_XL_CFG=CFG
             rkt --dir=D --insecure-options=image run HASH --stage1-path=S --uuid-file-save=F [--set-env-file=E]
             (E: cloud_init.user_data's KEY=VALUE and Key:Value lines, then `env`; EVE's rktRun passed
             them as --set-env, and built no cloud-init ISO for a pod: neither does eveadm)
             (pod uuid read from F), then xl domid NAME
    activate xenstore write KEY 0 (x10 per VIF, on the pod's Xen domain), xl unpause NAME
    status   rkt --dir=D status POD --format=json
    stop     rkt --dir=D stop POD (GRACEFUL) / rkt --dir=D stop POD --force=true (FORCED)
    destroy  rkt --dir=D rm POD, or, while rkt still runs the pod (it refuses to remove
             it then), rkt --dir=D stop POD --force=true: one command per call, chosen
             by `rkt status`; the exited pod is removed by the next destroy or by release

stage1-xen builds its own xl cfg from the seed cfg CFG (it replaces the kernel,
ramdisk, extra and disk lines and boots the pod's rootfs over 9p), so CFG is the
xl cfg rendered as for brand xen. rkt is retired upstream and not packaged by
Debian; the test-suite drives this backend against a strict simulator
(tests/integration/rkt/).

Settings: rkt.bin (default "rkt"), rkt.dir (default <root>/rkt; EVE used
/persist/rkt), rkt.stage1 (default /usr/sbin/stage1-xen.aci), and the xen.*
settings for xl/xenstore.

Status asks `xl list` once for every pod's domain (paused or running is a Xen
fact: rkt says "running" for a pod whose domain is still paused) and `rkt status`
only for pods whose domain is no longer listed, to learn whether the pod exited
or is gone.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Iterable

from .. import privatedir
from ..errors import BackendError, BackendUnavailable
from .base import ABSENT, CRASHED, FORCED, PAUSED, SHUTDOWN, SHUTDOWN_KINDS, Domain, Status
from .host import last_output_line, which
from .xen import XenBackend, device_models, output_text, request_timeout

RKT_HINT = "rkt (with stage1-xen) is retired upstream and not packaged by Debian; install it by hand"
DEFAULT_STAGE1 = "/usr/sbin/stage1-xen.aci"


class RktBackend(XenBackend):
    # -- settings ----------------------------------------------------------------------
    @property
    def rkt(self) -> str:
        return str(self.ctx.setting("rkt.bin", "rkt"))

    @property
    def rkt_dir(self) -> Path:
        return Path(self.ctx.setting("rkt.dir", None) or self.ctx.root / "rkt")

    @property
    def stage1(self) -> str:
        return str(self.ctx.setting("rkt.stage1", DEFAULT_STAGE1))

    def uuid_file(self, dom: Domain) -> Path:
        # domainmgr shared one /persist/rkt/uuid_file between all pods; one per domain cannot race
        return Path(dom.run_dir) / "rkt-pod-uuid"

    # -- the command line ------------------------------------------------------------------
    def run_argv(self, dom: Domain) -> list[str]:
        argv = [self.rkt, f"--dir={self.rkt_dir}", "--insecure-options=image", "run", dom.config["image"],
                f"--stage1-path={self.stage1}", f"--uuid-file-save={self.uuid_file(dom)}"]
        if self.pod_env(dom.config):
            # EVE passed --set-env=K=V; values can be secrets, and an argv is readable by every local user
            # (and kept in the command log): they go in an owner-only file instead
            argv.append(f"--set-env-file={self.env_file(dom)}")
        return argv

    @staticmethod
    def pod_env(config: dict) -> dict[str, str]:
        """The pod's environment: cloud-init user data's variables (as EVE's rktRun), then `env` over them."""
        from .container.spec import user_data_env

        env = user_data_env((config.get("cloud_init") or {}).get("user_data"))
        env.update({str(k): str(v) for k, v in (config.get("env") or {}).items()})
        return env

    def seed_wanted(self, config: dict) -> bool:
        return False  # a pod gets cloud-init user data as environment variables, not as a seed ISO

    def env_file(self, dom: Domain) -> Path:
        return Path(dom.data_dir) / "rkt.env"

    def run_env(self, dom: Domain) -> dict:
        return {"STAGE1_XL_OPTS": "-p", "STAGE1_SEED_XL_CFG": str(self.cfg_path(dom))}

    def _rkt(self, args: list[str], *, check: bool = True, timeout: float = 60, env: dict | None = None):
        proc = self.ctx.run([self.rkt, f"--dir={self.rkt_dir}", *args], check=False, timeout=timeout,
                            env=env, install_hint=RKT_HINT)
        if check and proc.returncode != 0:
            raise BackendError(self._rkt_failure(args, proc))
        return proc

    @staticmethod
    def _rkt_failure(args, proc) -> str:
        # not host.command_error: that names argv[1:3], which for rkt is --dir=... and the subcommand
        line = last_output_line(proc)
        return f"rkt {' '.join(args[:2])} failed (exit {proc.returncode})" + (f": {line}" if line else "")

    # -- availability / validation / render -----------------------------------------------------
    def check_available(self) -> None:
        if which(self.rkt) is None:
            raise BackendUnavailable(f"brand rkt needs {self.rkt}: {RKT_HINT}")
        if not Path(self.stage1).exists():
            raise BackendUnavailable(f"brand rkt needs the stage1-xen image {self.stage1} "
                                     "(set rkt.stage1 to its path)")
        super().check_available()

    def validate(self, config: dict) -> list[tuple[str, str]]:
        errs = []
        if str(config.get("image", "")).startswith("-"):
            errs.append(("image", "brand rkt: an image hash or path, not something rkt would read as an option"))
        for k, v in (config.get("env") or {}).items():
            if "\n" in str(v):
                errs.append((f"env.{k}", "brand rkt: a value must be a single line"))
        return errs

    def xl_type(self, dom: Domain) -> str:
        return "pvh"  # domainmgr: a container's VirtualizationMode defaulted to PV, written as pvh

    def render(self, dom: Domain) -> str:
        env = self.run_env(dom)
        cmd = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        cmd += " " + " ".join(shlex.quote(a) for a in self.run_argv(dom))
        return (cmd + "\n\n# STAGE1_SEED_XL_CFG " + env["STAGE1_SEED_XL_CFG"] + ":\n"
                + self.render_cfg(dom))

    # -- lifecycle -----------------------------------------------------------------------------
    def prepare(self, dom: Domain) -> None:
        self.rkt_dir.mkdir(parents=True, exist_ok=True)
        Path(dom.run_dir).mkdir(parents=True, exist_ok=True)
        super().prepare(dom)
        env = self.pod_env(dom.config)
        if env:
            privatedir.write_private(self.env_file(dom), "".join(f"{k}={v}\n" for k, v in env.items()))

    def create_paused(self, dom: Domain) -> Status:
        failed_earlier = self._remove_exited_pod(dom)  # a previous try's pod (the engine retries create)
        if failed_earlier:
            raise BackendError(failed_earlier)
        uf = self.uuid_file(dom)
        uf.unlink(missing_ok=True)  # never read a previous run's pod
        proc = self.ctx.run(self.run_argv(dom), env=self.run_env(dom), check=False, timeout=300,
                            install_hint=RKT_HINT)
        if proc.returncode != 0:
            try:  # a pod rkt made before failing: remember it so destroy ends it and release removes it
                pod = uf.read_text().strip()
                if pod:
                    dom.backend["pod"] = pod
            except OSError:
                pass
            raise BackendError(self._rkt_failure(["run", dom.config["image"]], proc))
        try:
            pod = uf.read_text().strip()
        except OSError as exc:
            raise BackendError(f"rkt run succeeded but wrote no pod uuid to {uf}: {exc.strerror}") from None
        if not pod:
            raise BackendError(f"rkt run succeeded but {uf} is empty")
        dom.backend["pod"] = pod
        dom.backend["name"] = dom.name
        dom.backend["domid"] = self._domid(dom)
        st = self.status([dom])[dom.uuid]
        if st.state != PAUSED:
            raise BackendError(f"rkt run made pod {pod} but Xen reports its domain {self.xen_name(dom)} {st.state}"
                               + (f": {st.error}" if st.error else ""))
        return st

    # unpause: inherited (offload writes on the pod's domain, `xl unpause NAME`, the verified status)

    def shutdown(self, dom: Domain, kind: str, timeout: float) -> None:
        if kind not in SHUTDOWN_KINDS:
            raise ValueError(f"unknown shutdown kind {kind!r}")
        pod = dom.backend.get("pod")
        if not pod:
            return
        args = ["stop", pod] + (["--force=true"] if kind == FORCED else [])
        proc = self._rkt(args, check=False, timeout=request_timeout(timeout))
        if proc.returncode != 0 and not self._pod_gone(proc) and not self._pod_not_running(proc):
            raise BackendError(self._rkt_failure(args, proc))

    def destroy(self, dom: Domain, timeout: float = 10) -> None:
        pod = dom.backend.get("pod")
        if not pod:
            # `rkt run` failed before writing the pod uuid: stage1 may still have made the paused domain
            if self.xen_name(dom) in self._xl_list():
                XenBackend.destroy(self, dom, timeout)
            return
        data = self.pod_state(pod)
        if data is None:
            dom.backend.pop("pod", None)  # rkt no longer has it
            return
        # rkt refuses to remove a pod it runs (a paused one too): end it now instead; the engine's
        # next destroy (or release) removes the exited pod
        args = ["stop", pod, "--force=true"] if data.get("state") == "running" else ["rm", pod]
        proc = self._rkt(args, check=False, timeout=request_timeout(timeout))
        if proc.returncode != 0 and not self._pod_gone(proc):
            raise BackendError(self._rkt_failure(args, proc))
        if args[0] == "rm":
            dom.backend.pop("pod", None)

    @staticmethod
    def _pod_gone(proc) -> bool:
        text = output_text(proc).lower()
        return "no such" in text or "no matches found" in text or "not found" in text

    @staticmethod
    def _pod_not_running(proc) -> bool:
        return "pod is not running" in output_text(proc).lower()

    def pod_state(self, pod: str) -> dict | None:
        proc = self._rkt(["status", pod, "--format=json"], check=False)
        if proc.returncode != 0:
            if self._pod_gone(proc):
                return None
            raise BackendError(self._rkt_failure(["status", pod], proc))
        try:
            return json.loads((proc.stdout or b"").decode(errors="replace"))
        except ValueError:
            raise BackendError(f"rkt status {pod} printed no JSON") from None

    def status(self, doms: Iterable[Domain]) -> dict[str, Status]:
        doms = list(doms)
        if not doms:
            return {}
        listing = self._xl_list()
        models = device_models()
        out = {}
        for dom in doms:
            pod = dom.backend.get("pod")
            row = listing.get(self.xen_name(dom))
            if row is not None:
                st = self._status_one(dom, row, models)
            elif not pod:
                st = Status(ABSENT)
            else:
                try:
                    st = self._pod_status(pod)
                except BackendError as exc:  # one broken pod must not hide every other domain
                    st = Status(CRASHED, error=f"rkt cannot tell the state of pod {pod}: {exc}")
            if pod:
                st.detail["pod"] = pod
            out[dom.uuid] = st
        return out

    def _pod_status(self, pod: str) -> Status:
        """The pod's domain is not listed by xl: what does rkt say of the pod?"""
        data = self.pod_state(pod)
        if data is None:
            return Status(ABSENT)
        state = data.get("state")
        codes = data.get("app_exit_codes") or {}
        exit_status = next(iter(codes.values()), None) if isinstance(codes, dict) else None
        if state in ("exited", "garbage", "deleting", "aborted prepare"):
            return Status(SHUTDOWN, exit_status=exit_status, detail={"rkt_state": state})
        if state == "running":
            # rkt believes the pod runs, but its Xen domain is gone
            return Status(CRASHED, error="the pod's Xen domain is gone while rkt reports it running",
                          detail={"rkt_state": state})
        return Status(ABSENT, detail={"rkt_state": state})

    def has_device_model(self, dom: Domain) -> bool:
        return True  # domainmgr: stage1-xen serves the pod's 9p rootfs from a qemu in dom0

    def _remove_exited_pod(self, dom: Domain) -> str | None:
        """`rkt rm` the pod still recorded (one that destroy ended but did not remove, after a failed
        create or unpause); its error in one line, or None. A failed one stays recorded."""
        pod = dom.backend.get("pod")
        if not pod:
            return None
        proc = self._rkt(["rm", pod], check=False)
        if proc.returncode != 0 and not self._pod_gone(proc):
            return self._rkt_failure(["rm", pod], proc)
        dom.backend.pop("pod", None)
        return None

    def release(self, dom: Domain, *, delete: bool = False) -> list[str]:
        pod_error = self._remove_exited_pod(dom)
        uf = self.uuid_file(dom)
        removed = []
        if uf.exists():
            uf.unlink()
            removed.append(str(uf))
        removed += super().release(dom, delete=delete)
        if delete and self.env_file(dom).exists():
            self.env_file(dom).unlink()
            removed.append(str(self.env_file(dom)))
        if pod_error:
            raise BackendError(pod_error)
        return removed

    def info(self, dom: Domain) -> dict:
        out = super().info(dom)
        pod = dom.backend.get("pod")
        if pod:
            out["pod"] = pod
            try:
                out["rkt"] = self.pod_state(pod)
            except BackendError as exc:
                out["rkt_error"] = str(exc)
        return out

    def host_info(self) -> dict:
        return {"rkt": self.rkt, "dir": str(self.rkt_dir), "stage1": self.stage1,
                "stage1_present": Path(self.stage1).exists()}
