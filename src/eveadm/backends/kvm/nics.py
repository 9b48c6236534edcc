"""A kvm domain's nics on the host: one tap per nic, made by eveadm, joined to a bridge.

A nic names a raw `bridge`, or a `network` (an eveadm network object, resolved to its bridge by
`eveadm.network.lookup`, when that module is installed). eveadm creates the tap itself before QEMU
starts (`ip tuntap add dev TAP mode tap`, from an argument list: iproute2 is already what the rest
of the kvm brand uses, and it is one short command per tap), QEMU opens it by name
(`-netdev tap,ifname=TAP,script=no,downscript=no`), `unpause` joins it to the bridge, and `release`
deletes it.

Every tap carries an alias (`ip link set dev TAP alias ...`, read back from
/sys/class/net/TAP/ifalias) naming the domain and a digest of the state root that made it:
`eveadm <uuid> <16 hex>`. That alias is how `release` and `doctor` tell eveadm's taps from any other
interface: a tap with another alias is never deleted. Creating and labelling are two commands, so the
name is first written to the domain's intent record `<run_dir>/taps`: an alias-less tap is ours only
when that record names it.

Reads go through /sys/class/net (no `ip` output parsed); changes through `ip` argument lists.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import BackendError
from ..base import Domain
from ..host import BackendContext, command_error
from ..vm import cloudinit
from ..vm.cloudinit import with_prefix

SYS_NET = Path("/sys/class/net")
TAP_PREFIX = "ek"  # eveadm's default tap names: ek<first 8 hex of the uuid>.<nic index>
ALIAS_WORD = "eveadm"
IP_HINT = "apt-get install iproute2"


def lookup_network(ctx: BackendContext, name: str) -> dict | None:
    """The network `name` (bridge, subnet, gateway, dns, mtu), None when it does not exist."""
    try:
        return cloudinit.lookup_network(ctx, name)
    except Exception as exc:  # a network store that cannot be read is the operator's to see
        raise BackendError(f"network {name}: {exc}") from None


def leases(ctx: BackendContext, name: str) -> dict:
    """{mac: ip} of the network's dnsmasq leases."""
    from ... import network

    try:
        return network.leases(ctx.root_dir, name) or {}
    except Exception:  # a lease file being rewritten: no address this time
        return {}


def tap_name(dom: Domain, i: int, nic: dict) -> str:
    return nic.get("vif") or f"{TAP_PREFIX}{dom.uuid[:8]}.{i}"


def root_digest(ctx: BackendContext) -> str:
    import hashlib  # here, not at the top: `list` imports this module

    return hashlib.sha256(os.fsencode(os.path.abspath(ctx.root_dir))).hexdigest()[:16]


def alias_for(ctx: BackendContext, dom: Domain) -> str:
    return f"{ALIAS_WORD} {dom.uuid} {root_digest(ctx)}"


def plan(ctx: BackendContext, dom: Domain) -> list[dict]:
    """Per nic: index, mac, tap (None for a user-mode nic), bridge, network, mtu, ip (with /prefix),
    gateway, dns. A nic naming a network that cannot be found has bridge None and `missing` set."""
    out = []
    for i, nic in enumerate(dom.config.get("nics") or []):
        entry = {"index": i, "mac": nic.get("mac"), "tap": None, "bridge": nic.get("bridge"),
                 "network": nic.get("network"), "mtu": nic.get("mtu"), "ip": None,
                 "gateway": nic.get("gateway"), "dns": []}
        net = None
        if nic.get("network"):
            net = lookup_network(ctx, nic["network"])
            if net is None:
                entry["missing"] = f"network {nic['network']} does not exist"
            else:
                entry["bridge"] = net.get("bridge")
                entry["mtu"] = entry["mtu"] or net.get("mtu")
                entry["gateway"] = entry["gateway"] or net.get("gateway")
                entry["dns"] = list(net.get("dns") or [])
        if nic.get("ip"):
            entry["ip"] = with_prefix(nic["ip"], (net or {}).get("subnet"))
        if entry["bridge"] or nic.get("network"):
            entry["tap"] = tap_name(dom, i, nic)
        out.append(entry)
    return out


def problems(ctx: BackendContext, config: dict) -> list[tuple[str, str]]:
    """validate's part that is kvm's own: a nic's `vif` (the tap's name) must not be an interface
    eveadm did not make for this domain. Whether a nic's network or bridge exists and its address
    fits are network-level checks, made once for every brand by the engine (network.spec.check_nics)."""
    out = []
    dom = Domain(config.get("uuid") or "0" * 36, config, {}, "/nonexistent", "/nonexistent")
    for entry in plan(ctx, dom):
        nic = config["nics"][entry["index"]]
        tap = entry["tap"]
        if tap and nic.get("vif") and (SYS_NET / tap).exists() and alias_of(tap) != alias_for(ctx, dom):
            out.append((f"nics.{entry['index']}.vif", f"interface {tap} exists and is not a tap eveadm made for this domain"))
    return out


def is_bridge(name: str) -> bool:
    return (SYS_NET / name / "bridge").is_dir()


def alias_of(name: str) -> str | None:
    try:
        return (SYS_NET / name / "ifalias").read_text().strip() or None
    except OSError:
        return None


def is_tap(name: str) -> bool:
    return (SYS_NET / name / "tun_flags").exists()


def intent_path(run_dir) -> Path:
    """`<run_dir>/taps`: the names of the taps eveadm is making or has made for the domain, one a line,
    written BEFORE each tap is created. A command killed between `ip tuntap add` and the alias leaves a
    tap without an alias: this record is what still says it is ours."""
    return Path(run_dir) / "taps"


def intended(run_dir) -> list[str]:
    try:
        return intent_path(run_dir).read_text().split()
    except OSError:
        return []


def _record_intent(dom: Domain, tap: str) -> None:
    names = intended(dom.run_dir)
    if tap not in names:
        Path(dom.run_dir).mkdir(parents=True, exist_ok=True)
        part = intent_path(dom.run_dir).with_suffix(".part")
        part.write_text("".join(n + "\n" for n in (*names, tap)))
        os.replace(part, intent_path(dom.run_dir))


def is_ours(ctx: BackendContext, uuid: str, run_dir, tap: str) -> bool:
    """The tap carries the alias eveadm gives the domain's taps, or it is a tap without any alias that
    the domain's intent record names (made, then killed before the alias)."""
    if not is_tap(tap):
        return False
    alias = alias_of(tap)
    if alias is None:
        return tap in intended(run_dir)
    return alias.split() == [ALIAS_WORD, uuid, root_digest(ctx)]


def create_taps(ctx: BackendContext, dom: Domain) -> list[str]:
    """Make the domain's taps (before QEMU opens them), each labelled with the domain's alias. A leftover
    tap of this very domain is made anew; an interface of that name that is not ours is refused."""
    alias = alias_for(ctx, dom)
    made = []
    for entry in plan(ctx, dom):
        tap = entry["tap"]
        if not tap:
            continue
        if (SYS_NET / tap).exists():
            if not is_ours(ctx, dom.uuid, dom.run_dir, tap):
                raise BackendError(f"{dom.name}: interface {tap} exists and is not this domain's tap")
            ctx.run(["ip", "link", "delete", "dev", tap], install_hint=IP_HINT)
        _record_intent(dom, tap)
        ctx.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], install_hint=IP_HINT)
        argv = ["ip", "link", "set", "dev", tap, "alias", alias]
        if entry["mtu"]:
            argv += ["mtu", str(int(entry["mtu"]))]
        ctx.run(argv, install_hint=IP_HINT)
        made.append(tap)
    return made


def join_bridges(ctx: BackendContext, dom: Domain) -> None:
    """Join each tap to its bridge and bring it up (at unpause: the guest sends nothing before).
    The domain's hostname (as the seed gives it) is registered for its static addresses on local
    networks: dnsmasq knows by itself only the names of the guests it leased an address to."""
    entries = plan(ctx, dom)
    for entry in entries:
        if not entry["tap"]:
            continue
        if not entry["bridge"]:
            raise BackendError(f"{dom.name}: nic {entry['index']}: {entry.get('missing') or 'no bridge'}")
        argv = ["ip", "link", "set", "dev", entry["tap"], "master", entry["bridge"]]
        if entry["mtu"]:
            argv += ["mtu", str(int(entry["mtu"]))]
        ctx.run(argv + ["up"], install_hint=IP_HINT)
    static = [(e["index"], e["network"], e["ip"]) for e in entries if e["tap"] and e["network"] and e["ip"]]
    if static:
        from ...network import names as hostnames

        hostnames.name_domain(ctx, dom.uuid, dom.alias or dom.uuid, static)


def delete_taps(ctx: BackendContext, dom: Domain, names: list[str]) -> list[str]:
    """Delete the taps in `names` and in the intent record that are this domain's (is_ours); others are
    left alone. Removes the intent record when all are gone. Returns what could not be deleted."""
    from ...network import names as hostnames

    hostnames.unname_domain(ctx, dom.uuid)
    errors = []
    for tap in dict.fromkeys([*names, *intended(dom.run_dir)]):
        if (SYS_NET / tap).exists() and is_ours(ctx, dom.uuid, dom.run_dir, tap):
            proc = ctx.run(["ip", "link", "delete", "dev", tap], check=False, install_hint=IP_HINT)
            if proc.returncode != 0 and (SYS_NET / tap).exists():
                errors.append(f"{tap}: " + command_error(["ip", "link", "delete", "dev", tap], proc))
    if not errors:
        intent_path(dom.run_dir).unlink(missing_ok=True)
    return errors


def orphan_taps(ctx: BackendContext, known: set[str]) -> list[tuple[str, str]]:
    """(tap, uuid) for taps this state root made for a domain not in `known`: those with the alias
    `eveadm <uuid> <our digest>`, and alias-less taps named in such a domain's intent record. A pure
    read of /sys/class/net and the run root."""
    digest = root_digest(ctx)
    found = []
    try:
        names = sorted(os.listdir(SYS_NET))
    except OSError:
        names = []
    for name in names:
        words = (alias_of(name) or "").split()
        if len(words) == 3 and words[0] == ALIAS_WORD and words[2] == digest and is_tap(name):
            if words[1] not in known:
                found.append((name, words[1]))
    try:
        run_dirs = sorted(os.listdir(ctx.run_root_dir))
    except OSError:
        run_dirs = []
    for uuid in run_dirs:
        if uuid in known or len(uuid) != 36:
            continue
        for tap in intended(os.path.join(ctx.run_root_dir, uuid)):
            if is_tap(tap) and alias_of(tap) is None:
                found.append((tap, uuid))
    return found


def remove_orphan_tap(ctx: BackendContext, tap: str, uuid: str) -> None:
    if not is_ours(ctx, uuid, os.path.join(ctx.run_root_dir, uuid), tap):
        return  # gone, or not the tap doctor found: nothing of ours to delete
    ctx.run(["ip", "link", "delete", "dev", tap], install_hint=IP_HINT)


def addresses(ctx: BackendContext, dom: Domain) -> list[str | None]:
    """Each nic's IPv4 address: the static `ip`, else the lease its network's dnsmasq gave its mac."""
    out: list[str | None] = []
    lease_cache: dict[str, dict] = {}
    for i, nic in enumerate(dom.config.get("nics") or []):
        if nic.get("ip"):
            out.append(str(nic["ip"]).split("/")[0])
        elif nic.get("network"):
            if nic["network"] not in lease_cache:
                lease_cache[nic["network"]] = leases(ctx, nic["network"])
            out.append(lease_cache[nic["network"]].get(str(nic.get("mac", "")).lower()))
        else:
            out.append(None)
    return out
