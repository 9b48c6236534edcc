"""What the VM brands (kvm, xen) share for live changes: how a disk or a nic is known across updates,
the boot-time vCPU maximum, the diff of an updated device list, and scratch domains with other
devices (to render or prepare only the ones being added)."""

from __future__ import annotations

from ...errors import NotLive
from ..base import Domain


def boot_max_vcpus(cfg: dict) -> int:
    """The vCPUs a VM can grow to while it runs: max_vcpus, never fewer than vcpus."""
    return max(int(cfg.get("vcpus", 1)), int(cfg.get("max_vcpus") or 0))


def disk_key(disk: dict) -> str:
    """What identifies a disk across updates: its path, else its id, else its image."""
    for field in ("path", "id", "image"):
        if disk.get(field):
            return f"{field} {disk[field]}"
    return "disk without a path"


def nic_key(nic: dict) -> str:
    """What identifies a nic across updates: its MAC."""
    return mac_key(nic.get("mac"))


def mac_key(mac) -> str:
    return str(mac or "").lower()


def device_diff(what: str, key, old: list, new: list) -> tuple[dict, dict, list, list]:
    """(old by key, new by key, keys removed, keys added) of a `disks` or `nics` list. A device whose
    settings changed takes them at the next start: NotLive."""
    olds = {key(d): d for d in old}
    news = {key(d): d for d in new}
    for k in olds.keys() & news.keys():
        if olds[k] != news[k]:
            raise NotLive(f"{what} {k}: a changed {what} takes its new settings at the next start")
    return olds, news, [k for k in olds if k not in news], [k for k in news if k not in olds]


def with_devices(dom: Domain, kind: str, items: list, backend: dict | None = None) -> Domain:
    """A scratch copy of `dom` whose `kind` ("disks" or "nics") is `items`."""
    return Domain(dom.uuid, {**dom.config, kind: items}, backend if backend is not None else {}, dom.data_dir,
                  dom.run_dir)
