"""A network's payload: its checks, normalization and updates; and the checks of domains' nics
against the stored networks. Pure functions of their arguments, except for asking whether an
interface exists on the host (/sys/class/net)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re

from . import BRIDGE_PREFIX, pools

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")  # as network.state_dir checks it
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
TYPES = ("switch", "local")
FIELDS = ("name", "type", "subnet", "uplink", "dns", "mtu")
UPDATABLE = ("uplink", "dns", "mtu")  # name, type and subnet define the network: delete and create instead
MTU_RANGE = (576, 9000)
MAX_DNS = 8
PREFIX_RANGE = (8, 30)  # a /31 or /32 leaves no address for a guest besides the gateway


def interface_exists(name: str) -> bool:
    return os.path.exists(os.path.join("/sys/class/net", name))


def is_bridge(name: str) -> bool:
    return os.path.isdir(os.path.join("/sys/class/net", name, "bridge"))


def bridge_name(name: str) -> str:
    """ev-NAME when it fits an interface name (15), else a trimmed name with a hash of the whole one,
    so two long names never share a bridge."""
    full = BRIDGE_PREFIX + name
    if len(full) <= 15:
        return full
    digest = hashlib.sha1(name.encode()).hexdigest()[:4]
    return f"{BRIDGE_PREFIX}{name[:7]}-{digest}"


def _ipv4(text) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _check_field(key: str, value, errs: list, net_type=None) -> None:
    if key == "name":
        if not isinstance(value, str) or not NAME_RE.match(value):
            errs.append((key, "must be 1-32 of A-Z a-z 0-9 _ - (starting with a letter or digit)"))
    elif key == "type":
        if value not in TYPES:
            errs.append((key, f"must be one of {', '.join(TYPES)}"))
    elif key == "subnet":
        try:
            if not isinstance(value, str) or "/" not in value:
                raise ValueError
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError:
            errs.append((key, "must be an IPv4 network in CIDR form like 10.10.0.0/24 (host bits zero)"))
            return
        lo, hi = PREFIX_RANGE
        if not lo <= net.prefixlen <= hi:
            errs.append((key, f"prefix length must be {lo}-{hi}"))
        if net_type == "switch":
            errs.append((key, "does not apply to a switch network (the uplink's network has its own)"))
    elif key == "uplink":
        if not isinstance(value, str) or not IFNAME_RE.match(value):
            errs.append((key, "must be an interface name (1-15 of A-Z a-z 0-9 _ . -)"))
        elif net_type == "local":
            errs.append((key, "does not apply to a local network (it reaches out through NAT)"))
        elif not interface_exists(value):
            errs.append((key, f"{value} is not an interface of this host"))
    elif key == "dns":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_DNS:
            errs.append((key, f"must be a list of 1-{MAX_DNS} IPv4 addresses"))
            return
        for i, item in enumerate(value):
            if _ipv4(item) is None:
                errs.append((f"{key}.{i}", "must be an IPv4 address like 192.0.2.53"))
    elif key == "mtu":
        lo, hi = MTU_RANGE
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            errs.append((key, f"must be an integer {lo}-{hi}"))


def _report(errs: list, bad: list, missing: list) -> dict:
    return {"bad_properties": bad, "bad_values": [{"property": p, "message": m} for p, m in errs],
            "missing_properties": missing}


def check_create(payload, existing: list[dict]) -> dict:
    """The validate report of a network payload (empty lists when valid), against the stored networks."""
    if not isinstance(payload, dict):
        return _report([("", "must be a JSON object")], [], [])
    errs: list = []
    bad = [k for k in payload if k not in FIELDS]
    missing = [k for k in ("name", "type") if k not in payload]
    net_type = payload.get("type")
    if net_type == "local" and "subnet" not in payload:
        missing.append("subnet")
    for key, value in payload.items():
        if key in FIELDS:
            _check_field(key, value, errs, net_type)
    if not errs and not bad and not missing:
        errs += _conflicts(payload, existing)
    return _report(errs, bad, missing)


def _conflicts(cfg: dict, existing: list[dict]) -> list:
    errs = []
    subnet = ipaddress.IPv4Network(cfg["subnet"]) if cfg.get("subnet") else None
    for other in existing:
        if other["name"] == cfg["name"]:
            continue
        if subnet and other.get("subnet") and subnet.overlaps(ipaddress.IPv4Network(other["subnet"])):
            errs.append(("subnet", f"{cfg['subnet']} overlaps network {other['name']} ({other['subnet']})"))
        if cfg.get("uplink") and cfg.get("uplink") == other.get("uplink"):
            errs.append(("uplink", f"{cfg['uplink']} is already the uplink of network {other['name']}"))
    return errs


def normalize(payload: dict, existing: list[dict]) -> dict:
    """The stored config of a valid payload: with its bridge's name and, for local, its gateway."""
    cfg = {k: payload[k] for k in FIELDS if k in payload}
    taken = {n["bridge"] for n in existing}
    bridge = bridge_name(cfg["name"])
    if bridge in taken:  # a long name whose trimmed form collides: another hash
        bridge = f"{BRIDGE_PREFIX}{cfg['name'][:5]}-{hashlib.sha1(os.urandom(8)).hexdigest()[:6]}"
    cfg["bridge"] = bridge
    if cfg["type"] == "local":
        net = ipaddress.IPv4Network(cfg["subnet"])
        cfg["gateway"] = str(net.network_address + 1)
    return cfg


def check_update(cfg: dict, payload, existing: list[dict]) -> dict:
    """The report of an update payload for the stored network `cfg`."""
    if not isinstance(payload, dict) or not payload:
        return _report([("", "must be a non-empty JSON object")], [], [])
    errs: list = []
    bad = [k for k in payload if k not in FIELDS]
    for key, value in payload.items():
        if key in FIELDS and key not in UPDATABLE:
            if payload[key] != cfg.get(key):
                errs.append((key, "cannot be changed (delete the network and create it again)"))
        elif key in UPDATABLE and value is not None:  # null removes an optional property
            _check_field(key, value, errs, cfg["type"])
    if not errs and not bad:
        errs += _conflicts(apply_update(cfg, payload), existing)
    return _report(errs, bad, [])


def apply_update(cfg: dict, payload: dict) -> dict:
    new = dict(cfg)
    for key in UPDATABLE:
        if key in payload:
            if payload[key] is None:
                new.pop(key, None)
            else:
                new[key] = payload[key]
    return new


def coerce_cli_value(key: str, text: str):
    """key=value from the command line: mtu is a number, dns a comma-separated list, '' removes."""
    if text == "":
        return None
    if key == "mtu":
        try:
            return int(text)
        except ValueError:
            return text
    if key == "dns":
        return [part for part in text.split(",") if part]
    return text


# -- domains' nics ---------------------------------------------------------------------------
def check_nics(nics, networks: dict[str, dict], brand: str) -> list:
    """(path, message) for each nic that names a network that is not stored, an address outside its
    network's subnet, or (for brands wired to the host) a bridge that is not on this host or a
    network whose bridge is not. The one place these are checked, for every brand."""
    errs: list = []
    if not isinstance(nics, list):
        return errs
    for i, nic in enumerate(nics):
        if not isinstance(nic, dict):
            continue
        path = f"nics.{i}"
        name = nic.get("network")
        if name is not None and "bridge" in nic:
            errs.append((path, "names both a network and a bridge: give one"))
            continue
        if name is not None:
            net = networks.get(name)
            if net is None:
                known = ", ".join(sorted(networks)) or "none"
                errs.append((f"{path}.network", f"{name} is not a network (networks: {known})"))
                continue
            if _wires_nics(brand) and not is_bridge(net["bridge"]):
                errs.append((f"{path}.network", f"network {name} is not up on this host (no bridge "
                                                f"{net['bridge']}): run eveadm network up"))
            if net.get("subnet"):
                errs += _check_address(nic, path, net)
        elif "bridge" in nic and _wires_nics(brand) and not is_bridge(nic["bridge"]):
            errs.append((f"{path}.bridge", f"{nic['bridge']} is not a bridge on this host"))
    return errs


def check_static_addresses(nics, taken: dict[tuple[str, str], str]) -> list:
    """(path, message) for each nic whose static `ip` on a network another domain already has;
    `taken` maps (network, ip) to the domain that has it."""
    errs = []
    seen: dict = {}
    for i, nic in enumerate(nics if isinstance(nics, list) else []):
        if not isinstance(nic, dict) or not nic.get("network") or not isinstance(nic.get("ip"), str):
            continue
        key = (nic["network"], nic["ip"].split("/")[0])
        owner = taken.get(key) or seen.get(key)
        if owner:
            errs.append((f"nics.{i}.ip", f"{key[1]} on network {key[0]} is already used by {owner}"))
        seen[key] = f"nics.{i}"
    return errs


def _check_address(nic: dict, path: str, net: dict) -> list:
    errs = []
    subnet = ipaddress.IPv4Network(net["subnet"])
    if "ip" in nic:
        iface = ipaddress.IPv4Interface(nic["ip"])  # checked well-formed by the schema
        if iface.ip not in subnet or ("/" in nic["ip"] and iface.network != subnet):
            errs.append((f"{path}.ip", f"{nic['ip']} is not in network {net['name']} ({net['subnet']})"))
        elif iface.ip in (subnet.network_address, subnet.broadcast_address, ipaddress.IPv4Address(net["gateway"])):
            errs.append((f"{path}.ip", f"{iface.ip} is the network's own address, broadcast or gateway"))
        else:
            first, last = (ipaddress.IPv4Address(a) for a in pools(net["subnet"])[1])
            if first <= iface.ip <= last:
                errs.append((f"{path}.ip", f"{iface.ip} is in network {net['name']}'s DHCP pool ({first}-{last}); "
                                           "static addresses go below it"))
    if "gateway" in nic and ipaddress.IPv4Address(nic["gateway"]) not in subnet:
        errs.append((f"{path}.gateway", f"{nic['gateway']} is not in network {net['name']} ({net['subnet']})"))
    return errs


def nic_field_problem(key: str, value) -> str | None:
    """The schema's check of the nic fields `network`, `ip` and `gateway` (None: fine)."""
    if key == "network":
        if not isinstance(value, str) or not NAME_RE.match(value):
            return "must be a network name (1-32 of A-Z a-z 0-9 _ -)"
    elif key == "ip":
        try:
            if not isinstance(value, str):
                raise ValueError
            iface = ipaddress.IPv4Interface(value)
        except ValueError:
            return "must be an IPv4 address like 10.0.0.5 (or 10.0.0.5/24)"
        if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback:
            return "must be a unicast address"
    elif key == "gateway":
        if _ipv4(value) is None:
            return "must be an IPv4 address like 10.0.0.1"
    return None


def _wires_nics(brand) -> bool:
    """Does this brand put nics on host bridges (so the bridge must exist)? A brand fact."""
    from ..backends import NICS, brands

    facts = brands().get(brand)
    return bool(facts and facts.has(NICS))
