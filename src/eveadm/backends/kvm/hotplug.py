"""Live changes to a running kvm domain over QMP: disks, nics, memory and vCPUs (hotplug).

What QEMU gets at boot so that these can change later (`boot_args`, `boot_commands`):

  - on q35, `kvm.hotplug_ports` (default 4) spare PCIe root ports `hotplug0`..: a hot-added disk or
    nic goes on a free one, one device per port, because q35's root bus (pcie.0, where the devices
    of the boot configuration sit) takes no hotplug. On `pc` the PCI bus itself takes hot-added
    devices (ACPI hotplug), boot devices included.
  - a virtio-balloon device `balloon0`: QEMU gets max(ram, max_ram) MiB, and the balloon takes the
    guest down to `ram` before it runs. A ram change up to that boot-time size is a `balloon`
    request, confirmed by `query-balloon`; more needs a restart.
  - `-smp VCPUS,maxcpus=MAX_VCPUS`: vCPUs up to max_vcpus are `device_add`ed into the free slots
    `query-hotpluggable-cpus` names; those (not the ones the domain booted with) can be removed,
    under KVM only (QEMU 7.2's TCG corrupts its heap when a vCPU is added after one was removed).

A removal is `device_del` and then QEMU's DEVICE_DELETED event, which comes once the guest has let
the device go, within `kvm.unplug_timeout` seconds (default 20: PCIe native hotplug alone waits 5 s).

What runs is recorded in dom.backend["hotplug"], per run of QEMU (`run` is the start time of the
QEMU it describes, so a new boot starts afresh from its configuration): the device of each disk (by
path, id or image) and nic (by mac), and the port each hot-added one sits on (vCPUs are counted
from QEMU's own list). The devices a domain booted with have the ids argv gives them (disk<i>, nic<i>/net<i>).

Each function raises NotLive when the change can only take effect at the next start, before it
changed anything, and LiveChangeFailed with what runs now when it failed part-way.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ...errors import EveadmError, LiveChangeFailed, NotLive, PermanentError
from ..base import Domain
from ..host import BackendContext, wait_until
from ..vm import disks as vm_disks
from ..vm.live import boot_max_vcpus, device_diff, disk_key, mac_key, nic_key, with_devices
from . import nics as host_nics
from .argv import is_q35, paths
from .qmp import QmpError, device_del, qmp

MiB = 1024 * 1024
PORT_PREFIX = "hotplug"  # the spare root ports' ids: hotplug0, hotplug1, ...
CHASSIS_BASE = 100  # chassis numbers of the spare ports (unique among a machine's root ports)
MAX_PORTS = 32
DEFAULT_PORTS = 4
BALLOON = "balloon0"
UNPLUG_TIMEOUT = 20.0  # s: for the guest to let a device go
BALLOON_TIMEOUT = 10.0  # s: for the guest's balloon driver to reach a new size


# -- at boot ----------------------------------------------------------------------------------------

def port_count(ctx: BackendContext) -> int:
    raw = ctx.setting("kvm.hotplug_ports", DEFAULT_PORTS)
    try:
        n = int(raw)
    except (TypeError, ValueError):
        n = -1
    if not 0 <= n <= MAX_PORTS:
        raise PermanentError(f"setting kvm.hotplug_ports: {raw!r} is not a number from 0 to {MAX_PORTS}")
    return n


def boot_memory(cfg: dict) -> int:
    """MiB QEMU gets: the most the guest may balloon up to without a restart."""
    return max(int(cfg.get("ram", 256)), int(cfg.get("max_ram") or 0))


def memory_args(cfg: dict) -> list[list[str]]:
    return [["-m", f"{boot_memory(cfg)}M"]]


def smp_args(cfg: dict) -> list[list[str]]:
    vcpus, top = int(cfg.get("vcpus", 1)), boot_max_vcpus(cfg)
    return [["-smp", f"{vcpus},maxcpus={top}" if top > vcpus else str(vcpus)]]


def boot_args(ctx: BackendContext, cfg: dict) -> list[list[str]]:
    """The balloon and the spare root ports; last on the command line, so the devices before them
    keep the PCI addresses they had without them."""
    out = [["-device", f"virtio-balloon-pci,id={BALLOON}"]]
    if is_q35(cfg):
        out += [["-device", f"pcie-root-port,id={PORT_PREFIX}{i},chassis={CHASSIS_BASE + i}"]
                for i in range(port_count(ctx))]
    return out


def boot_commands(cfg: dict) -> list[tuple[str, dict]]:
    """QMP commands before the guest first runs: the balloon down to `ram` when QEMU got more."""
    ram = int(cfg.get("ram", 256))
    return [("balloon", {"value": ram * MiB})] if boot_memory(cfg) > ram else []


# -- live changes ---------------------------------------------------------------------------------------

def change(ctx: BackendContext, dom: Domain, key: str, old, new) -> None:
    apply = _APPLY.get(key)
    if apply is None or new is None:
        raise NotLive(f"{key} changes at the next start")
    apply(Live(ctx, dom), old, new)


def _seconds(ctx: BackendContext, key: str, default: float) -> float:
    raw = ctx.setting(key, default)
    try:
        return max(0.1, float(raw))
    except (TypeError, ValueError):
        raise PermanentError(f"setting {key}: {raw!r} is not a number of seconds") from None


class Live:
    """One live change: the domain, its QMP monitor, and the record of what runs."""

    def __init__(self, ctx: BackendContext, dom: Domain):
        self.ctx, self.dom = ctx, dom
        self.sock = Path(dom.backend.get("qmp") or paths(dom)["qmp"])
        self.events = Path(dom.backend.get("qmp_events") or paths(dom)["events"])
        self.state = self._state()

    def _state(self) -> dict:
        """What runs in this QEMU: recorded by earlier changes of this run, else its boot configuration
        (dom.config is exactly that until the first live change)."""
        dom = self.dom
        run = dom.backend.get("started")
        st = dom.backend.get("hotplug")
        if isinstance(st, dict) and st.get("run") == run:
            return st
        cfg = dom.config
        st = {"run": run, "boot_ram": boot_memory(cfg), "max_vcpus": boot_max_vcpus(cfg), "q35": is_q35(cfg),
              "next": 0, "nics": {},
              "disks": {disk_key(d): {"dev": f"disk{i}", "boot": True} for i, d in enumerate(cfg.get("disks") or [])}}
        for entry in host_nics.plan(self.ctx, dom):
            i = entry["index"]
            rec = {"dev": f"nic{i}", "netdev": f"net{i}", "tap": entry["tap"], "boot": True}
            if entry["tap"] and entry["network"] and entry["ip"]:
                rec["name"] = [entry["network"], f"{dom.uuid}/{i}"]
            st["nics"][mac_key(entry["mac"])] = rec
        dom.backend["hotplug"] = st
        return st

    def qmp(self, *commands):
        return qmp(self.sock, *commands)

    def new_id(self) -> int:
        n = self.state["next"]
        self.state["next"] = n + 1
        return n

    def check_removable(self, what: str, key: str, rec: dict | None) -> None:
        if rec is None:
            raise NotLive(f"{what} {key} is not attached to the running domain")
        if rec.get("boot") and self.state["q35"]:
            raise NotLive(f"{what} {key} sits on q35's root bus since boot, where it cannot be unplugged")

    def free_ports(self, n: int) -> list[str | None]:
        """`n` root ports with nothing on them (q35); on pc the bus takes the device itself (None)."""
        if n == 0 or not self.state["q35"]:
            return [None] * n
        children = self.qmp(("qom-list", {"path": "/machine/peripheral"}))[0]
        ports = [c["name"] for c in children
                 if c["name"].startswith(PORT_PREFIX) and "pcie-root-port" in c.get("type", "")]
        used = {r.get("port") for r in (*self.state["disks"].values(), *self.state["nics"].values())}
        free = sorted((p for p in ports if p not in used), key=lambda p: int(p[len(PORT_PREFIX):] or 0))
        if len(free) < n:
            raise NotLive(f"no free hotplug port: {len(ports)} reserved at boot (setting kvm.hotplug_ports), "
                          f"{len(ports) - len(free)} in use")
        return free[:n]

    def unplug(self, dev: str, child_event: bool = False) -> bool:
        """device_del, then wait for the guest to let the device go, up to the unplug timeout."""
        return device_del(self.events, self.sock, dev, _seconds(self.ctx, "kvm.unplug_timeout", UNPLUG_TIMEOUT),
                          child_event)

    def refused(self, what: str) -> str:
        return f"the guest did not release {what} within {_seconds(self.ctx, 'kvm.unplug_timeout', UNPLUG_TIMEOUT):g} s"


# -- memory ---------------------------------------------------------------------------------------------

def _ram(live: Live, old: int, new: int) -> None:
    top = live.state["boot_ram"]
    if new > top:
        raise NotLive(f"above the boot-time maximum (max_ram {top})")
    try:
        live.qmp(("balloon", {"value": new * MiB}))
    except QmpError as exc:
        raise NotLive(f"no balloon to resize: {exc}") from None
    timeout = _seconds(live.ctx, "kvm.balloon_timeout", BALLOON_TIMEOUT)

    def reached() -> bool:
        return abs(live.qmp("query-balloon")[0]["actual"] - new * MiB) < MiB

    if wait_until(reached, timeout, cap=0.2):
        return
    live.qmp(("balloon", {"value": old * MiB}))  # back to what the record says runs
    raise NotLive(f"the guest did not resize its balloon to {new} MiB within {timeout:g} s "
                  "(no virtio-balloon driver?)")


# -- vCPUs ------------------------------------------------------------------------------------------------

def _slot_order(slot: dict) -> tuple:
    props = slot.get("props") or {}
    return tuple(props.get(k, 0) for k in ("socket-id", "die-id", "core-id", "thread-id"))


def _vcpus(live: Live, old: int, new: int) -> None:
    """Counted from QEMU's own list of CPU slots (a guest may let a CPU go after eveadm stopped
    waiting): added into the free slots in order, removed (under KVM) from the last one added."""
    top = live.state["max_vcpus"]
    if new > top:
        raise NotLive(f"above the boot-time maximum (max_vcpus {top})")
    slots = sorted(live.qmp("query-hotpluggable-cpus")[0], key=_slot_order)
    count = sum(1 for s in slots if s.get("qom-path"))
    if new > count:
        free = [s for s in slots if not s.get("qom-path")]
        if len(free) < new - count:
            raise NotLive(f"above the boot-time maximum (max_vcpus {count + len(free)})")
        for slot in free[:new - count]:
            try:
                live.qmp(("device_add", {"driver": slot["type"], "id": f"hpcpu{live.new_id()}", **slot["props"]}))
            except QmpError as exc:
                raise LiveChangeFailed(str(exc), in_effect=count) from None
            count += 1
        return
    if live.dom.backend.get("accel") == "tcg":
        raise NotLive("vCPUs are not removed live under software emulation (TCG): QEMU 7.2 corrupts its memory "
                      "when a vCPU is added after one was removed")
    peripheral = "/machine/peripheral/"
    hot = [s["qom-path"][len(peripheral):] for s in reversed(slots)
           if str(s.get("qom-path", "")).startswith(peripheral)]
    if count - new > len(hot):
        raise NotLive(f"only hot-added vCPUs can be removed while the domain runs ({len(hot)} of {count})")
    for dev in hot[:count - new]:
        try:
            released = live.unplug(dev, child_event=True)
        except QmpError as exc:
            raise LiveChangeFailed(str(exc), in_effect=count) from None
        if not released:
            why = live.refused(f"vCPU {dev}")
            if count == old:
                raise NotLive(why)
            raise LiveChangeFailed(why, in_effect=count)
        count -= 1


# -- disks ------------------------------------------------------------------------------------------------

def _device_diff(live: Live, what: str, key, old: list, new: list) -> tuple[dict, dict, list, list]:
    """vm.live.device_diff, and a device the guest booted with that cannot be unplugged
    (check_removable) makes the whole change wait too."""
    olds, news, removed, added = device_diff(what, key, old, new)
    for k in removed:
        live.check_removable(what, k, live.state[what + "s"].get(k))
    return olds, news, removed, added


def _disks(live: Live, old: list | None, new: list) -> None:
    dom = live.dom
    old = list(old or [])
    olds, news, removed, added = _device_diff(live, "disk", disk_key, old, new)
    planned = {disk_key(u.disk): u for u in vm_disks.plan(with_devices(dom, "disks", new))}
    for k in added:
        disk = news[k]
        if disk.get("media", "disk") != "disk":
            raise NotLive(f"disk {k}: a {disk['media']} is attached at the next start")
        if disk.get("model", "virtio") != "virtio":
            raise NotLive(f"disk {k}: only virtio disks are hot-plugged; a {disk['model']} disk is attached "
                          "at the next start")
        alone = vm_disks.plan(with_devices(dom, "disks", [disk]))[0]
        if alone.path != planned[k].path:  # a blank disk named by its position (no id)
            raise NotLive(f"disk {k}: a blank disk without an id is attached at the next start")
    ports = live.free_ports(len(added))
    running = list(old)
    try:
        for k in removed:
            rec = live.state["disks"][k]
            if not live.unplug(rec["dev"]):
                raise LiveChangeFailed(live.refused(f"disk {k}") + "; it stays attached")
            if rec.get("node"):
                try:
                    live.qmp(("blockdev-del", {"node-name": rec["node"]}))
                except QmpError:
                    pass  # the guest no longer sees the disk; the node goes with QEMU
            del live.state["disks"][k]
            running.remove(olds[k])
        for k, port in zip(added, ports):
            _plug_disk(live, k, news[k], port)
            running.append(news[k])
    except EveadmError as exc:
        raise LiveChangeFailed(str(exc), in_effect=running) from None
    finally:
        _note_disk_files(dom, running)


def _plug_disk(live: Live, key: str, disk: dict, port: str | None) -> None:
    """Make the disk's file as a start would (vm.disks.prepare, for this disk alone), then
    blockdev-add it and device_add a virtio-blk-pci on `port`."""
    dom = live.dom
    scratch = with_devices(dom, "disks", [disk], {"disks_owned": list(dom.backend.get("disks_owned") or [])})
    use = vm_disks.prepare(live.ctx, scratch)[0]
    dom.backend["disks_owned"] = sorted({*dom.backend.get("disks_owned", []), *scratch.backend["disks_owned"]})
    dom.backend.setdefault("disks", []).extend(scratch.backend["disks"])
    n = live.new_id()
    node, dev = f"hpdrive{n}", f"hpdisk{n}"
    try:
        is_block = stat.S_ISBLK(os.stat(use.path).st_mode)
    except OSError:
        is_block = False
    live.qmp(("blockdev-add", {"driver": use.format, "node-name": node, "read-only": use.readonly,
                               "file": {"driver": "host_device" if is_block else "file", "filename": str(use.path)}}))
    _device_add(live, {"driver": "virtio-blk-pci", "id": dev, "drive": node}, port,
                ("blockdev-del", {"node-name": node}))
    live.state["disks"][key] = {"dev": dev, "node": node, "port": port}


def _device_add(live: Live, device: dict, port: str | None, undo: tuple) -> None:
    """device_add on `port` (a root port; None: the bus itself); when QEMU refuses, `undo` removes the
    backend (block node, netdev) added for it."""
    if port:
        device["bus"] = port
    try:
        live.qmp(("device_add", device))
    except QmpError:
        try:
            live.qmp(undo)
        except QmpError:
            pass  # it goes with QEMU
        raise


def _note_disk_files(dom: Domain, running: list) -> None:
    """dom.backend["disks"] (what `info` shows, what the next prepare reads) for the disks that run,
    indexed by their place in the configuration."""
    try:
        uses = vm_disks.plan(with_devices(dom, "disks", running))
    except EveadmError:
        return
    by_path = {d.get("path"): d for d in dom.backend.get("disks") or [] if isinstance(d, dict)}
    dom.backend["disks"] = [dict(by_path.get(str(u.path)) or {"kind": u.kind, "path": str(u.path),
                                                              "format": u.format}, index=u.index) for u in uses]


# -- nics ---------------------------------------------------------------------------------------------------

def _nics(live: Live, old: list | None, new: list) -> None:
    old = list(old or [])
    olds, news, removed, added = _device_diff(live, "nic", nic_key, old, new)
    ports = live.free_ports(len(added))
    running = list(old)
    try:
        for k in removed:
            _unplug_nic(live, k)
            running.remove(olds[k])
        for k, port in zip(added, ports):
            _plug_nic(live, news[k], new.index(news[k]), port)
            running.append(news[k])
    except EveadmError as exc:
        raise LiveChangeFailed(str(exc), in_effect=running) from None


def _free_tap(live: Live) -> str:
    """A tap name of this domain that no interface has (boot names taps by position, which a removal
    shifts)."""
    taps = {r.get("tap") for r in live.state["nics"].values()}
    n = len(live.state["nics"])
    while True:
        name = host_nics.tap_name(live.dom, n, {})
        if name not in taps and not (host_nics.SYS_NET / name).exists():
            return name
        n += 1


def _plug_nic(live: Live, nic: dict, index: int, port: str | None) -> None:
    """Make the tap as a start does (nics.create_taps, join_bridges), then netdev_add + device_add.
    What was made is undone when a later step fails."""
    dom, ctx = live.dom, live.ctx
    n = live.new_id()
    rec: dict = {"dev": f"hpnic{n}", "netdev": f"hpnet{n}", "port": port}
    netdev: dict = {"type": "user", "id": rec["netdev"]}
    mtu = None
    try:
        if nic.get("bridge") or nic.get("network"):
            tap = rec["tap"] = nic.get("vif") or _free_tap(live)
            scratch = with_devices(dom, "nics", [dict(nic, vif=tap)])
            entry = host_nics.plan(ctx, scratch)[0]
            if entry.get("missing"):
                raise NotLive(f"nic {nic.get('mac')}: {entry['missing']}")
            taps = dom.backend.setdefault("taps", [])
            if tap not in taps:  # recorded first: release deletes it whatever happens next
                taps.append(tap)
            host_nics.create_taps(ctx, scratch)
            # joined without its address: the name of a static address is registered under its own index
            host_nics.join_bridges(ctx, with_devices(dom, "nics", [dict(nic, vif=tap, ip=None)]))
            if entry["network"] and entry["ip"]:
                from ...network import names as hostnames

                rec["name"] = [entry["network"], f"{dom.uuid}/{index}"]
                hostnames.name_domain(ctx, dom.uuid, dom.alias or dom.uuid, [(index, entry["network"], entry["ip"])])
            netdev = {"type": "tap", "id": rec["netdev"], "ifname": tap, "script": "no", "downscript": "no"}
            mtu = entry["mtu"]
        live.qmp(("netdev_add", netdev))
        model = nic.get("model", "virtio")
        device = {"driver": {"virtio": "virtio-net-pci"}.get(model, model), "id": rec["dev"],
                  "netdev": rec["netdev"], "mac": nic["mac"]}
        if mtu and device["driver"] == "virtio-net-pci":
            device["host_mtu"] = int(mtu)
        _device_add(live, device, port, ("netdev_del", {"id": rec["netdev"]}))
    except EveadmError:
        _forget_host_side(live, rec)
        raise
    live.state["nics"][mac_key(nic["mac"])] = rec


def _unplug_nic(live: Live, key: str) -> None:
    rec = live.state["nics"][key]
    if not live.unplug(rec["dev"]):
        raise LiveChangeFailed(live.refused(f"nic {key}") + "; it stays attached")
    try:
        live.qmp(("netdev_del", {"id": rec["netdev"]}))
    except QmpError:
        pass  # the guest no longer sees the nic; the netdev goes with QEMU
    del live.state["nics"][key]
    _forget_host_side(live, rec)


def _forget_host_side(live: Live, rec: dict) -> None:
    """Delete a nic's tap (when it is this domain's) and the name of its static address."""
    tap = rec.get("tap")
    if tap:
        host_nics.remove_orphan_tap(live.ctx, tap, live.dom.uuid)
        if not (host_nics.SYS_NET / tap).exists() and tap in live.dom.backend.get("taps", []):
            live.dom.backend["taps"].remove(tap)
    if rec.get("name"):
        from ...network import names as hostnames

        hostnames.drop_name(live.ctx, *rec["name"])


_APPLY = {"ram": _ram, "vcpus": _vcpus, "disks": _disks, "nics": _nics}
