"""Networks: named objects in the state store that domains' nics attach to (issue 10).

Two types, after EVE's network instances:
- `switch`: a Linux bridge, optionally with an uplink port of the host enslaved;
- `local`: a bridge with its own IPv4 subnet, the first address as the gateway, DHCP and DNS
  served by one dnsmasq per network, outbound NAT by an nftables rule in eveadm's table.

This module is what backends and reports read, and imports nothing of the engine:
`lookup(root, name)` gives a stored network's facts, `leases(root, name)` dnsmasq's leases.
The host side (bridges, dnsmasq, nft) is in `eveadm.network.host`; payload checks in
`eveadm.network.spec`.
"""

from __future__ import annotations

import os
import sqlite3

from ..backends.host import root_of

BRIDGE_PREFIX = "ev-"  # bridges eveadm makes; doctor also requires eveadm's mark on them (host.py)
LOCK_PREFIX = "network-"  # lock file names of networks (domains' lock files are named by uuid)
EVENT_PREFIX = "network:"  # journal entries of a network carry "network:NAME" where a domain has its uuid


def state_dir(root, name: str) -> str:
    """Where a network's dnsmasq keeps its pid file and lease database (under the state root, so
    leases survive a reboot as dnsmasq expects)."""
    import re

    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$", name):  # a stored name; never a path of its own
        raise ValueError(f"{name!r} is not a network name")
    return os.path.join(root_of(root), "networks", name)


def _read(root: str, name: str | None):
    path = os.path.join(root, "eveadm.db")
    if not os.path.exists(path):
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return []
    try:
        if name is None:
            rows = db.execute("SELECT config FROM networks ORDER BY name").fetchall()
        else:
            rows = db.execute("SELECT config FROM networks WHERE name=?", (name,)).fetchall()
    except sqlite3.OperationalError:  # a store from before networks: none
        return []
    finally:
        db.close()
    import json  # here: most commands never get this far, and json's import is not free

    return [json.loads(r[0]) for r in rows]


def pools(subnet: str) -> tuple[tuple[str, str] | None, tuple[str, str]]:
    """(static, dhcp): the first address is the gateway; the lower half of the rest is for static
    addresses (nics' `ip`, a container's IPAM), the upper half is dnsmasq's DHCP pool, so the two never
    hand out the same address. static is None when the subnet is too small to split."""
    import ipaddress

    net = ipaddress.IPv4Network(subnet)
    gateway = net.network_address + 1
    usable = net.num_addresses - 3  # minus network, gateway, broadcast
    half = usable // 2
    static = (str(gateway + 1), str(gateway + half)) if half else None
    dhcp = (str(gateway + half + 1), str(net.broadcast_address - 1))
    return static, dhcp


def facts(cfg: dict) -> dict:
    """What a backend needs of a stored network config."""
    out = {
        "name": cfg["name"],
        "type": cfg["type"],
        "bridge": cfg["bridge"],
        "subnet": cfg.get("subnet"),
        "gateway": cfg.get("gateway"),
        "dns": list(cfg.get("dns") or []),
        "mtu": cfg.get("mtu"),
    }
    if cfg.get("subnet"):
        static, dhcp = pools(cfg["subnet"])
        out["static_range"] = list(static) if static else None
        out["dhcp_range"] = list(dhcp)
    return out


def lookup(ctx_root_dir_or_ctx, name: str) -> dict | None:
    """A stored network as {"name","type","bridge","subnet","gateway","dns","mtu"}, or None.

    `subnet` and `gateway` are None for a switch. `dns` is what a guest should use as resolvers:
    for a local network its gateway (dnsmasq answers there), else the network's `dns` list. A local
    network also has "static_range" [first, last] (for static addresses and IPAM; None if the subnet
    is too small) and "dhcp_range" [first, last] (dnsmasq's pool). A read of the store only: it takes
    no lock and changes nothing.
    """
    rows = _read(root_of(ctx_root_dir_or_ctx), name)
    if not rows:
        return None
    out = facts(rows[0])
    if out["type"] == "local":
        out["dns"] = [out["gateway"]]
    return out


def all_networks(ctx_root_dir_or_ctx) -> list[dict]:
    """Every stored network's config, by name."""
    return _read(root_of(ctx_root_dir_or_ctx), None)


def leases(root_dir, name: str) -> dict[str, str]:
    """dnsmasq's current leases of a local network: {mac: ip} ({} when none or no such network).

    The lease file has one line per lease: expiry-time mac ip hostname client-id.
    """
    out: dict[str, str] = {}
    try:
        path = os.path.join(state_dir(root_dir, name), "leases")
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and ":" in parts[1] and "." in parts[2]:
                    out[parts[1].lower()] = parts[2]
    except (FileNotFoundError, NotADirectoryError, ValueError):
        pass
    return out
