"""Names that a local network's dnsmasq answers for addresses it did not lease itself (a nic's static
`ip`, a container's IPAM address): kvm and container backends register them when they wire a nic and
drop them when they unwire it.

dnsmasq gives up root after start, so it cannot re-read a file in eveadm's private state directories;
instead each name is a --host-record argument, and a change restarts the network's dnsmasq (its
lease database persists, so leased guests keep their addresses). The names are kept in
<root>/networks/NAME/names.json; a change holds the network's lock, as `eveadm network` does.
"""

from __future__ import annotations

import json
import os
import re

from . import LOCK_PREFIX, all_networks, root_of, state_dir

HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")  # one DNS label (RFC 1123)


def _path(root: str, network: str) -> str:
    return os.path.join(state_dir(root, network), "names.json")


def names(ctx_root_dir_or_ctx, network: str) -> dict[str, list[str]]:
    """{key: [hostname, ip]} registered on the network."""
    try:
        with open(_path(root_of(ctx_root_dir_or_ctx), network), encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: not a name, or not JSON
        return {}


def host_records(root: str, network: str) -> list[str]:
    """dnsmasq --host-record arguments of the registered names."""
    return [f"--host-record={hostname},{ip}" for hostname, ip in sorted(names(root, network).values())]


def set_name(ctx_or_root, network: str, key: str, hostname: str, ip: str) -> bool:
    """Make `hostname` resolve to `ip` on a local network (key: who owns it, e.g. "UUID/0" for a
    domain's first nic). False when the network is not local (nothing to do)."""
    import ipaddress

    if not HOSTNAME_RE.match(hostname):
        raise ValueError(f"{hostname!r} is not a DNS label")
    ipaddress.IPv4Address(ip)
    return _change(ctx_or_root, network, lambda entries: entries.__setitem__(key, [hostname, ip]))


def drop_name(ctx_or_root, network: str, key: str) -> bool:
    """Forget what `key` registered (no-op if nothing)."""
    return _change(ctx_or_root, network, lambda entries: entries.pop(key, None))


def name_domain(ctx_or_root, uuid: str, hostname: str, nics: list[tuple[int, str | None, str | None]]) -> None:
    """Register a domain's `hostname` for each (index, network, ip) of its wired nics that is on a
    local network and has an address (key "UUID/index"). A hostname that is not a DNS label (an
    alias may be any text) is not registered."""
    if not HOSTNAME_RE.match(hostname or ""):
        return
    for index, network, ip in nics:
        if network and ip:
            set_name(ctx_or_root, network, f"{uuid}/{index}", hostname, ip.split("/")[0])


def unname_domain(ctx_or_root, uuid: str) -> None:
    """Drop every name the domain `uuid` registered, on every network (no-op where none)."""
    prefix = f"{uuid}/"

    def drop(entries: dict) -> None:
        for key in [k for k in entries if k.startswith(prefix)]:
            del entries[key]

    root = root_of(ctx_or_root)
    for cfg in all_networks(root):
        if any(key.startswith(prefix) for key in names(root, cfg["name"])):
            _change(ctx_or_root, cfg["name"], drop)


def _change(ctx_or_root, network: str, edit) -> bool:
    from .. import privatedir
    from ..backends.host import BackendContext
    from ..store import Store
    from . import host as nethost

    ctx = ctx_or_root if isinstance(ctx_or_root, BackendContext) else BackendContext(root_of(ctx_or_root))
    root = ctx.root_dir
    store = Store(root)
    with store.lock(LOCK_PREFIX + network, 30, f"eveadm: names of network {network}"):
        cfg = store.network(network)
        if cfg is None or cfg["type"] != "local":
            return False
        entries = names(root, network)
        before = dict(entries)
        edit(entries)
        if entries == before:
            return True
        path = _path(root, network)
        privatedir.ensure(os.path.dirname(path))
        tmp = path + ".tmp"
        with os.fdopen(privatedir.open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as fh:
            json.dump(entries, fh)
        os.replace(tmp, path)
        pid = nethost.dnsmasq_pid(root, network)
        if pid:  # running: anew with the names (stopped: `network up` will)
            nethost.stop_dnsmasq(root, network, pid)
            nethost.start_dnsmasq(ctx, cfg)
        return True
