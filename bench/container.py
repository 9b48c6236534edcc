#!/usr/bin/env python3
"""Container start cost: eveadm against the OCI runtime driven by hand, side by side in one run.

1. Ready time: `eveadm create` (autoboot) of a container that prints a line and
   waits, from exec until the line is in its log, against `<rt> run --detach`
   of the same config.json (rendered by eveadm) on the same image by hand,
   until the line is in its output file. Interleaved, median of --runs.
   Overhead = eveadm - by hand, compared with the interpreter's start-up
   (`python3 -c pass`) + 50 ms, the target.
   Also the memory of each container's monitor (conmon): VmRSS and RssAnon
   from /proc/PID/status, read while the container runs.
2. One nic's cost: the backend's prepare -> ready line of a container with one
   nic (a veth on a bridge, an address from host-local through the CNI plugins)
   against none, interleaved in the same run; target: <= 30 ms more. Measured
   in a network namespace the bench creates (a bridge with 10.78.0.1/24), by
   this script re-run under `nsenter --net` (--nic-child).
3. Throughput: N containers created with P commands in parallel, eveadm against
   the runtime by hand.
4. Images: a local registry (scripts/local-registry.sh) holding the busybox image
   (plus --image-mb of random data as a second layer, so the copy dominates).
   `eveadm image pull` into a fresh state root against `skopeo copy` of the same
   image into a fresh OCI layout, interleaved; target <= 1.1x. Then containers from
   the pulled image against containers from the plain directory, interleaved, exec ->
   ready line: the second and later ones unpack nothing (umoci runs once); target:
   no dearer than from a directory.

    python3 bench/container.py [--runtime auto|runc|crun] [--runs 11] [-n 20] [-p 4]

Needs root, runc or crun, and the busybox rootfs (scripts/build-rootfs.sh builds it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
MARK = "EVEADM-BENCH-READY"
NIC_BRIDGE = "evbench0"  # in the bench's own network namespace
CMD = ["/bin/sh", "-c", f"echo {MARK}; trap 'exit 0' TERM; while true; do sleep 1 & wait; done"]


def eveadm_command() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "eveadm"
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "eveadm"]


def wait_for(path: Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if text in path.read_text():
                return
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {text!r} never appeared in {path}")
        time.sleep(0.001)  # measurement polling, 1 ms resolution


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="eveadm-bench-"))
        self.root = self.tmp / "root"
        self.env = dict(os.environ, PYTHONPATH=str(REPO / "src"), EVEADM_CREATE_RETRY_DELAY="0")
        # measure eveadm as installed: from cached bytecode (the warm-up run writes it)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        if args.runtime != "auto":
            self.env["EVEADM_CONTAINER_RUNTIME"] = os.environ["EVEADM_CONTAINER_RUNTIME"] = args.runtime
        self.eveadm = eveadm_command() + ["--root", str(self.root)]
        artifacts = Path(os.environ.get("EVEADM_ARTIFACTS", "/var/cache/eveadm/artifacts"))
        self.rootfs = artifacts / "rootfs"
        subprocess.run([str(REPO / "scripts" / "build-rootfs.sh"), str(self.rootfs)], check=True)
        self.hand_ids: list[str] = []

    # -- eveadm side -----------------------------------------------------------
    def payload(self, alias: str) -> str:
        return json.dumps({"brand": "container", "alias": alias, "ram": 64, "image": str(self.rootfs), "cmd": CMD})

    def eveadm_create(self, alias: str) -> tuple[float, float, str]:
        """(seconds until create returned, seconds until the line is in the log, uuid)."""
        t_ret, t_ready, dom = self.eveadm_create_dom(alias)
        return t_ret, t_ready, dom["uuid"]

    def eveadm_create_dom(self, alias: str) -> tuple[float, float, dict]:
        t0 = time.perf_counter()
        proc = subprocess.run(self.eveadm + ["create", "-j"], input=self.payload(alias), env=self.env,
                              capture_output=True, text=True)
        t_ret = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"bench: eveadm create failed: {proc.stderr.strip()}")
        dom = json.loads(proc.stdout)
        wait_for(Path(dom["backend"]["log"]), MARK)
        return t_ret, time.perf_counter() - t0, dom

    def eveadm_delete(self, uuid: str) -> None:
        proc = subprocess.run(self.eveadm + ["delete", uuid], env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"bench: eveadm delete {uuid} failed: {proc.stderr.strip()}")

    # -- the backend alone (in this process: no CLI start-up, no engine) --------------
    def backend_create(self, alias: str, nics: list | None = None) -> tuple[float, object]:
        """(seconds from prepare until the line is in the log, domain): the container backend's own part."""
        import uuid as uuidlib

        from eveadm.backends.base import Domain
        from eveadm.backends.container import ContainerBackend
        from eveadm.backends.host import BackendContext

        root = self.tmp / "lib-root"
        if not hasattr(self, "lib"):
            self.lib = ContainerBackend(BackendContext(root))
        uid = str(uuidlib.uuid4())
        config = {"uuid": uid, "brand": "container", "alias": alias, "vcpus": 1, "ram": 64, "disks": [],
                  "nics": nics or [], "image": str(self.rootfs), "cmd": CMD, "env": {}, "terminal": False,
                  "readonly_root": False, "cloud_init": {}}
        dom = Domain(uid, config, {}, root / "domains" / uid, root / "run" / uid)
        t0 = time.perf_counter()
        self.lib.prepare(dom)
        self.lib.create_paused(dom)
        self.lib.unpause(dom)
        deadline = time.monotonic() + 20
        while MARK not in self.lib.console_log_text(dom):
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {MARK!r} never appeared in {self.lib.console_log(dom)}")
            time.sleep(0.001)  # measurement polling, 1 ms resolution
        return time.perf_counter() - t0, dom

    def backend_delete(self, dom) -> None:
        self.lib.destroy(dom)
        self.lib.wait_gone(dom, 10)
        self.lib.release(dom, delete=True)

    # -- by hand -------------------------------------------------------------------
    def setup_hand(self) -> None:
        """A bundle with eveadm's own config.json, on an overlay of the same image (mounted once)."""
        from eveadm.backends.host import BackendContext
        from eveadm.backends.container import ContainerBackend

        rt = ContainerBackend(BackendContext(self.root)).runtime()
        self.rt = rt
        self.hand_root = str(self.tmp / "hand-state")
        self.bundle = self.tmp / "hand-bundle"
        rootfs = self.bundle / "rootfs"
        for d in (rootfs, self.tmp / "hand-upper", self.tmp / "hand-work"):
            d.mkdir(parents=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.rootfs},upperdir={self.tmp / 'hand-upper'},workdir={self.tmp / 'hand-work'}",
                        str(rootfs)], check=True)
        pfile = self.tmp / "p.json"
        pfile.write_text(self.payload("hand"))
        spec = json.loads(subprocess.run(self.eveadm + ["validate", "create", "-f", str(pfile), "--render"],
                                         env=self.env, capture_output=True, text=True, check=True).stdout)
        spec["root"]["path"] = str(rootfs)
        for mount in spec["mounts"]:  # files eveadm writes at prepare: the same by hand
            if mount["type"] == "bind" and not os.path.exists(mount["source"]):
                mount["source"] = str(self.tmp / f"hand-{os.path.basename(mount['source'])}")
                Path(mount["source"]).write_text("{}\n")
        spec["linux"]["cgroupsPath"] = "/eveadm-bench/hand"
        self.spec = spec
        (self.bundle / "config.json").write_text(json.dumps(spec))

    def hand_run(self, cid: str) -> tuple[float, float]:
        out = self.tmp / f"hand-{cid}.out"
        spec = dict(self.spec, linux=dict(self.spec["linux"], cgroupsPath=f"/eveadm-bench/{cid}"))
        bundle = self.tmp / f"hand-bundle-{cid}"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(spec))
        argv = [self.rt.path, "--root", self.hand_root, "run", "--detach", "--bundle", str(bundle), cid]
        if self.rt.wrap:  # by hand as research/backend-scripts/crun-wrap.sh does it
            argv = ["unshare", "-m", "sh", "-c", 'umount /sys/fs/cgroup/unified && exec "$0" "$@"', *argv]
        t0 = time.perf_counter()
        with open(out, "w") as fh:
            subprocess.run(argv, stdout=fh, stderr=fh, stdin=subprocess.DEVNULL, check=True)
        t_ret = time.perf_counter() - t0
        self.hand_ids.append(cid)
        wait_for(out, MARK)
        return t_ret, time.perf_counter() - t0

    def hand_delete(self, cid: str) -> None:
        subprocess.run([self.rt.path, "--root", self.hand_root, "delete", "--force", cid],
                       capture_output=True, check=True)
        self.hand_ids.remove(cid)
        shutil.rmtree(self.tmp / f"hand-bundle-{cid}", ignore_errors=True)

    def interp(self) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.perf_counter() - t0

    # -- the two measurements ---------------------------------------------------------
    def ready(self) -> dict:
        rows = {"interp": [], "ev_ret": [], "ev_ready": [], "hand_ret": [], "hand_ready": [],
                "rss": [], "anon": [], "lib_ready": []}
        # one warm-up each (runtime probe, page cache)
        _, _, u = self.eveadm_create("warm")
        self.eveadm_delete(u)
        self.hand_run("warm")
        self.hand_delete("warm")
        for i in range(self.args.runs):
            rows["interp"].append(self.interp())
            r, t, dom = self.eveadm_create_dom(f"r{i}")
            rows["ev_ret"].append(r)
            rows["ev_ready"].append(t)
            rss, anon = monitor_memory(dom)
            rows["rss"].append(rss)
            rows["anon"].append(anon)
            self.eveadm_delete(dom["uuid"])
            t, ldom = self.backend_create(f"lib{i}")
            rows["lib_ready"].append(t)
            self.backend_delete(ldom)
            r, t = self.hand_run(f"r{i}")
            rows["hand_ret"].append(r)
            rows["hand_ready"].append(t)
            self.hand_delete(f"r{i}")
        return {k: (statistics.median(v), min(v)) for k, v in rows.items()}

    def parallel(self) -> dict:
        n, p = self.args.n, self.args.p
        t0 = time.perf_counter()
        with ThreadPoolExecutor(p) as pool:
            uuids = [u for _, _, u in pool.map(self.eveadm_create, [f"par{i}" for i in range(n)])]
        ev = time.perf_counter() - t0
        running = json.loads(subprocess.run(self.eveadm + ["list", "-j"], env=self.env, capture_output=True,
                                            text=True, check=True).stdout)
        assert sum(d["state"] == "running" for d in running) == n, "all containers running"
        with ThreadPoolExecutor(p) as pool:
            list(pool.map(self.eveadm_delete, uuids))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(p) as pool:
            list(pool.map(self.hand_run, [f"par{i}" for i in range(n)]))
        hand = time.perf_counter() - t0
        for cid in list(self.hand_ids):
            self.hand_delete(cid)
        return {"eveadm": ev, "hand": hand}

    def nic_cost(self) -> dict:
        """{"none": (median, best), "nic": (median, best)} in s: this script under `nsenter --net` of a
        namespace made for it, so every veth and address stays inside."""
        import secrets

        ns = f"eveadm-bench-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            for argv in (["link", "set", "lo", "up"], ["link", "add", NIC_BRIDGE, "type", "bridge"],
                         ["addr", "add", "10.78.0.1/24", "dev", NIC_BRIDGE], ["link", "set", NIC_BRIDGE, "up"]):
                subprocess.run(["ip", "-n", ns, *argv], check=True)
            child = ["nsenter", f"--net=/run/netns/{ns}", "--", sys.executable, __file__, "--nic-child",
                     "--runs", str(self.args.runs), "--runtime", self.args.runtime]
            proc = subprocess.run(child, env=self.env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"bench: the nic measurement failed: {proc.stderr.strip()}")
            rows = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        return {k: (statistics.median(v), min(v)) for k, v in rows.items()}

    def nic_child(self) -> None:
        """(in the bench's namespace) interleaved backend creates with no nic and with one; JSON rows."""
        rows = {"none": [], "nic": []}
        nic = [{"bridge": NIC_BRIDGE, "mac": "02:00:00:78:00:02"}]
        for i in range(self.args.runs + 1):  # the first pair warms up (runtime probe, page cache)
            for key, nics in (("none", None), ("nic", nic)):
                t, dom = self.backend_create(f"{key}{i}", nics)
                self.backend_delete(dom)
                if i:
                    rows[key].append(t)
        print(json.dumps(rows))

    # -- images ---------------------------------------------------------------------
    def image_layout(self) -> Path:
        """The busybox OCI layout, with --image-mb MiB of random data added as a second layer."""
        artifacts = Path(os.environ.get("EVEADM_ARTIFACTS", "/var/cache/eveadm/artifacts"))
        base = artifacts / "oci-busybox"
        subprocess.run([str(REPO / "scripts" / "build-rootfs.sh"), "--oci", str(base), str(self.rootfs)], check=True)
        layout = self.tmp / "bench-layout"
        shutil.copytree(base, layout)
        if self.args.image_mb:
            extra = self.tmp / "extra"
            (extra / "data").mkdir(parents=True)
            with open(extra / "data" / "random", "wb") as fh:
                fh.write(os.urandom(self.args.image_mb * 2 ** 20))
            subprocess.run(["umoci", "insert", "--image", f"{layout}:latest", str(extra), "/"], check=True,
                           capture_output=True)
        return layout

    def images(self) -> dict:
        reg_dir = self.tmp / "registry"
        host = subprocess.run([str(REPO / "scripts" / "local-registry.sh"), "start", str(reg_dir)], check=True,
                              capture_output=True, text=True).stdout.split()[-1]
        try:
            ref = f"{host}/bench:1"
            subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{self.image_layout()}:latest",
                            f"docker://{ref}"], check=True)
            rows = {"eveadm_pull": [], "skopeo_copy": [], "from_image": [], "from_dir": []}
            for i in range(self.args.runs + 1):  # the first pair warms up (page cache, bytecode)
                root = self.tmp / f"pull-{i}"
                t0 = time.perf_counter()
                subprocess.run(eveadm_command() + ["--root", str(root), "image", "pull", "--tls-verify=false", ref],
                               env=self.env, check=True, capture_output=True)
                ev = time.perf_counter() - t0
                t0 = time.perf_counter()
                subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                                f"oci:{self.tmp / f'copy-{i}'}:bench"], check=True)
                sk = time.perf_counter() - t0
                shutil.rmtree(root)
                shutil.rmtree(self.tmp / f"copy-{i}")
                if i:
                    rows["eveadm_pull"].append(ev)
                    rows["skopeo_copy"].append(sk)
            subprocess.run(self.eveadm + ["image", "pull", "--tls-verify=false", ref], env=self.env, check=True,
                           capture_output=True)
            first = None
            for i in range(self.args.runs + 1):
                for key, image in (("from_image", ref), ("from_dir", str(self.rootfs))):
                    payload = json.dumps({"brand": "container", "ram": 64, "image": image, "cmd": CMD})
                    t0 = time.perf_counter()
                    proc = subprocess.run(self.eveadm + ["create", "-j"], input=payload, env=self.env,
                                          capture_output=True, text=True, check=True)
                    dom = json.loads(proc.stdout)
                    wait_for(Path(dom["backend"]["log"]), MARK)
                    took = time.perf_counter() - t0
                    if key == "from_image" and first is None:
                        first = dom["uuid"]  # kept: the unpacked tree has a user for the whole run
                    else:
                        self.eveadm_delete(dom["uuid"])
                    if i:
                        rows[key].append(took)
            self.eveadm_delete(first)
            log = (self.root / "log" / "commands.jsonl").read_text().splitlines()
            unpacks = sum(json.loads(line)["argv"][:2] == ["umoci", "unpack"] for line in log)
        finally:
            subprocess.run([str(REPO / "scripts" / "local-registry.sh"), "stop", str(reg_dir)], capture_output=True)
        out = {k: (statistics.median(v), min(v)) for k, v in rows.items()}
        out["unpacks"] = unpacks
        return out

    def cleanup(self) -> None:
        # domains a failed run left behind: their containers, conmons and overlay mounts outlive the run
        proc = subprocess.run(self.eveadm + ["list", "-j"], env=self.env, capture_output=True, text=True)
        for dom in json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else []:
            subprocess.run(self.eveadm + ["delete", dom["uuid"]], env=self.env, capture_output=True)
        for cid in list(self.hand_ids):
            subprocess.run([self.rt.path, "--root", self.hand_root, "delete", "--force", cid], capture_output=True)
        if hasattr(self, "bundle"):
            subprocess.run(["umount", "--lazy", str(self.bundle / "rootfs")], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def monitor_memory(dom: dict) -> tuple[float, float]:
    """(VmRSS, RssAnon) in kB of the container's monitor (conmon), from /proc/PID/status."""
    pid = dom["backend"].get("conmon_pid")
    if not pid:
        raise SystemExit("bench: the domain record names no conmon pid")
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return float(fields["VmRSS"].split()[0]), float(fields["RssAnon"].split()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", default="auto", choices=["auto", "runc", "crun"])
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("-n", type=int, default=20, help="containers in the parallel run")
    ap.add_argument("-p", type=int, default=4, help="commands in parallel")
    ap.add_argument("--image-mb", type=int, default=256, help="MiB of random data in the bench image's second layer")
    ap.add_argument("--images-only", action="store_true", help="only the image measurements (section 4)")
    ap.add_argument("--nic-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    b = Bench(args)
    if args.nic_child:
        try:
            b.nic_child()
        finally:
            shutil.rmtree(b.tmp, ignore_errors=True)
        return 0
    try:
        if args.images_only:
            img = b.images()
            print(json.dumps(img))
            return 0
        b.setup_hand()
        wrap = " (unshare workaround)" if b.rt.wrap else ""
        print(f"runtime: {b.rt.name}{wrap}; {args.runs} interleaved runs")
        m = b.ready()
        med = {k: v[0] * 1000 for k, v in m.items() if k not in ("rss", "anon")}
        best = {k: v[1] * 1000 for k, v in m.items() if k not in ("rss", "anon")}
        print(f"{'':40s}{'median':>9s}{'best':>9s}")
        for key, label in (("interp", "python3 -c pass"),
                           ("hand_ret", f"by hand: {b.rt.name} run --detach returns"),
                           ("hand_ready", "by hand: exec -> ready line"),
                           ("lib_ready", "backend alone: prepare -> ready line"),
                           ("ev_ret", "eveadm create returns (running)"),
                           ("ev_ready", "eveadm: exec -> ready line")):
            print(f"  {label:38s}{med[key]:7.1f}ms{best[key]:7.1f}ms")
        print(f"  monitor (conmon) per container: VmRSS {m['rss'][0]:.0f} kB, RssAnon {m['anon'][0]:.0f} kB "
              "(median; the Python shim it replaced: VmRSS ~11900 kB, RssAnon ~5500 kB)")
        print(f"  {'ratio eveadm / by hand (ready)':38s}{med['ev_ready'] / med['hand_ready']:7.2f}x "
              f"{best['ev_ready'] / best['hand_ready']:7.2f}x")
        print(f"  backend's own overhead (median): {med['lib_ready'] - med['hand_ready']:.1f} ms "
              "(mount, conmon, a separate start; no interpreter, no engine)")
        for name, v in (("median", med), ("best", best)):
            over, target = v["ev_ready"] - v["hand_ready"], v["interp"] + 50
            print(f"  eveadm overhead ({name}): {over:.1f} ms; target < interpreter + 50 ms = {target:.1f} ms: "
                  f"{'met' if over < target else 'NOT met'}")
        nic = {k: (v[0] * 1000, v[1] * 1000) for k, v in b.nic_cost().items()}
        print(f"  {'backend alone, no nic -> ready line':38s}{nic['none'][0]:7.1f}ms{nic['none'][1]:7.1f}ms")
        print(f"  {'backend alone, one nic -> ready line':38s}{nic['nic'][0]:7.1f}ms{nic['nic'][1]:7.1f}ms")
        extra = nic["nic"][0] - nic["none"][0]
        print(f"  one nic costs (median): {extra:.1f} ms; target <= 30 ms: {'met' if extra <= 30 else 'NOT met'}")
        img = b.images()
        print(f"images ({args.image_mb} MiB random layer over busybox):")
        for key, label in (("skopeo_copy", "skopeo copy alone"), ("eveadm_pull", "eveadm image pull"),
                           ("from_dir", "container from a directory: ready"),
                           ("from_image", "container from the pulled image: ready")):
            print(f"  {label:38s}{img[key][0] * 1000:7.1f}ms{img[key][1] * 1000:7.1f}ms")
        ratio = img["eveadm_pull"][0] / img["skopeo_copy"][0]
        print(f"  pull ratio eveadm / skopeo (median): {ratio:.2f}x; target <= 1.1x: {'met' if ratio <= 1.1 else 'NOT met'}")
        cost = img["from_image"][0] / img["from_dir"][0]
        print(f"  container from the image / from a directory (median): {cost:.2f}x with {img['unpacks']} unpack(s) "
              f"for {2 * args.runs + 1} containers; target: no dearer: "
              f"{'met' if cost <= 1.05 and img['unpacks'] == 1 else 'NOT met'}")
        par = b.parallel()
        print(f"{args.n} containers, {args.p} commands in parallel:")
        print(f"  by hand {par['hand']:6.2f} s   eveadm {par['eveadm']:6.2f} s   "
              f"ratio {par['eveadm'] / par['hand']:5.2f}x   ({par['eveadm'] / args.n * 1000:.0f} ms per container)")
    finally:
        b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
