"""What eveadm makes on the host for a network, and finds again: Linux bridges, one dnsmasq per
local network, and its masquerade and isolation rules in eveadm's nftables table.

Every command is an argument list through BackendContext.run (so it is in the command log). Bridges
and addresses are set with `ip` (iproute2) and read back as its JSON (`ip -j`): no new dependency and
nothing parsed by hand. Everything eveadm makes carries a mark naming the state root and the
network, so doctor removes only what this eveadm made:
- a bridge: its interface alias (IFLA_IFALIAS) "eveadm ROOTTAG NAME";
- a dnsmasq: its --pid-file under <root>/networks/NAME/;
- an nft rule: its comment "eveadm ROOTTAG NAME".
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import signal

from .. import privatedir
from ..backends.host import BackendContext, pid_alive, proc_argv, read_pid, wait_until, which
from ..errors import BackendError, BackendUnavailable
from . import BRIDGE_PREFIX, pools, root_of, state_dir
from .spec import IFNAME_RE, NAME_RE

NFT_TABLE = "eveadm"  # table ip eveadm: eveadm's own; nothing else of the host's ruleset is touched
NFT_CHAIN = "postrouting"  # the masquerade rules
NFT_FORWARD = "forward"  # the isolation rules
DNSMASQ_START_TIMEOUT = 10  # s


def root_tag(root) -> str:
    """A short name of the state root (two roots on one host keep apart what each made)."""
    return hashlib.sha1(os.path.abspath(root_of(root)).encode()).hexdigest()[:8]


def mark(root, name: str) -> str:
    return f"eveadm {root_tag(root)} {name}"


def marked_name(root, text: str | None) -> str | None:
    """The network named by one of this root's marks, or None (not ours, or no mark)."""
    prefix = f"eveadm {root_tag(root)} "
    if isinstance(text, str) and text.startswith(prefix):
        return text[len(prefix):]
    return None


# -- bridges -------------------------------------------------------------------------------
def _ip(ctx: BackendContext, *args, check=True):
    return ctx.run(["ip", *args], check=check, timeout=15, install_hint="install iproute2")


def links(ctx: BackendContext, kind: str | None = None) -> list[dict]:
    argv = ["-j", "link", "show"] + (["type", kind] if kind else [])
    out = _ip(ctx, *argv).stdout
    return json.loads(out or b"[]")


def link(ctx: BackendContext, ifname: str) -> dict | None:
    proc = _ip(ctx, "-j", "-d", "link", "show", "dev", ifname, check=False)
    if proc.returncode != 0:
        return None
    found = json.loads(proc.stdout or b"[]")
    return found[0] if found else None


def addresses(ctx: BackendContext, ifname: str) -> list[str]:
    proc = _ip(ctx, "-j", "-4", "addr", "show", "dev", ifname, check=False)
    if proc.returncode != 0:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for entry in json.loads(proc.stdout or b"[]")
            for a in entry.get("addr_info", []) if a.get("family") == "inet"]


def ensure_bridge(ctx: BackendContext, cfg: dict) -> None:
    """The network's bridge as the config says: made if missing, marked, addressed (local), with its
    uplink (switch) and MTU, and up. A bridge of that name that eveadm did not make is refused."""
    root, name, bridge = ctx.root_dir, cfg["name"], cfg["bridge"]
    found = link(ctx, bridge)
    if found is not None and marked_name(root, found.get("ifalias")) != name:
        raise BackendError(f"network {name}: interface {bridge} exists and was not made by eveadm for it")
    if found is None:
        _ip(ctx, "link", "add", "name", bridge, "type", "bridge")
        _ip(ctx, "link", "set", "dev", bridge, "alias", mark(root, name))
    if cfg.get("mtu"):
        _ip(ctx, "link", "set", "dev", bridge, "mtu", str(cfg["mtu"]))
    if cfg.get("gateway"):
        prefix = ipaddress.IPv4Network(cfg["subnet"]).prefixlen
        _ip(ctx, "addr", "replace", f"{cfg['gateway']}/{prefix}", "dev", bridge)
    if cfg.get("uplink"):
        uplink = link(ctx, cfg["uplink"])
        if uplink is None:
            raise BackendError(f"network {name}: uplink {cfg['uplink']} is not an interface of this host")
        if uplink.get("master") != bridge:
            _ip(ctx, "link", "set", "dev", cfg["uplink"], "master", bridge)
        _ip(ctx, "link", "set", "dev", cfg["uplink"], "up")
    _ip(ctx, "link", "set", "dev", bridge, "up")


def release_uplink(ctx: BackendContext, cfg: dict, uplink: str) -> None:
    """Take an old uplink out of the network's bridge (update changed it)."""
    found = link(ctx, uplink)
    if found is not None and found.get("master") == cfg["bridge"]:
        _ip(ctx, "link", "set", "dev", uplink, "nomaster")


def remove_bridge(ctx: BackendContext, bridge: str, name: str) -> bool:
    """Delete the bridge if it is this root's bridge of `name` (its ports are released with it)."""
    found = link(ctx, bridge)
    if found is None or marked_name(ctx.root_dir, found.get("ifalias")) != name:
        return False
    _ip(ctx, "link", "del", "dev", bridge)
    return True


def our_bridges(ctx: BackendContext) -> dict[str, str]:
    """{bridge: network name} of every bridge carrying this root's mark."""
    out = {}
    for entry in links(ctx, "bridge"):
        owner = marked_name(ctx.root_dir, entry.get("ifalias"))
        if owner is not None:
            out[entry["ifname"]] = owner
    return out


# -- dnsmasq ---------------------------------------------------------------------------------
def pid_file(root, name: str) -> str:
    return os.path.join(state_dir(root, name), "dnsmasq.pid")


def dnsmasq_argv(root, cfg: dict) -> list[str]:
    """dnsmasq for one local network: DHCP and DNS on its bridge only, the gateway as router and
    resolver, names of DHCP clients resolvable by each other; its leases in the network's state dir."""
    net = ipaddress.IPv4Network(cfg["subnet"])
    gateway = ipaddress.IPv4Address(cfg["gateway"])
    first, last = pools(cfg["subnet"])[1]
    directory = state_dir(root, cfg["name"])
    argv = [
        "dnsmasq",
        "--conf-file=/dev/null",  # none of the host's dnsmasq configuration
        f"--pid-file={pid_file(root, cfg['name'])}",
        f"--dhcp-leasefile={os.path.join(directory, 'leases')}",
        f"--interface={cfg['bridge']}",
        "--bind-interfaces",  # this bridge's addresses only: one dnsmasq per network, beside any other
        "--except-interface=lo",
        "--no-hosts",  # not the host's /etc/hosts
        f"--dhcp-range={first},{last},{net.netmask},1h",
        f"--dhcp-option=option:router,{gateway}",
        f"--dhcp-option=option:dns-server,{gateway}",
        "--dhcp-authoritative",
        "--domain-needed",
        "--bogus-priv",
    ]
    if cfg.get("mtu"):
        argv.append(f"--dhcp-option=option:mtu,{cfg['mtu']}")
    from .names import host_records

    argv += host_records(root, cfg["name"])  # names of addresses dnsmasq did not lease (static, IPAM)
    if cfg.get("dns"):  # upstream resolvers; otherwise the host's /etc/resolv.conf
        argv.append("--no-resolv")
        argv += [f"--server={server}" for server in cfg["dns"]]
    return argv


def _cmdline(pid: int) -> list[str]:
    return [part.decode(errors="replace") for part in proc_argv(pid)]


def _is_our_dnsmasq(pid: int, pidfile: str) -> bool:
    argv = _cmdline(pid)
    return bool(argv) and os.path.basename(argv[0]) == "dnsmasq" and f"--pid-file={pidfile}" in argv


def dnsmasq_pid(root, name: str) -> int | None:
    """The pid of the network's running dnsmasq, or None."""
    path = pid_file(root, name)
    pid = read_pid(path)
    return pid if pid_alive(pid) and _is_our_dnsmasq(pid, path) else None


def our_dnsmasqs(root) -> dict[int, str]:
    """{pid: network name} of every dnsmasq running with a pid file under this root's networks."""
    base = os.path.join(os.path.abspath(root_of(root)), "networks") + os.sep
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = _cmdline(int(entry))
        if not argv or os.path.basename(argv[0]) != "dnsmasq":
            continue
        for arg in argv:
            if arg.startswith("--pid-file=" + base):
                rest = arg[len("--pid-file=" + base):]
                name, _, tail = rest.partition(os.sep)
                if tail == "dnsmasq.pid" and NAME_RE.match(name) and pid_alive(int(entry)):
                    out[int(entry)] = name
    return out


def start_dnsmasq(ctx: BackendContext, cfg: dict) -> int:
    """The network's dnsmasq, started if it is not running; returns its pid."""
    root, name = ctx.root_dir, cfg["name"]
    pid = dnsmasq_pid(root, name)
    if pid:
        return pid
    if which("dnsmasq") is None:
        raise BackendUnavailable("dnsmasq not found: install dnsmasq-base")
    privatedir.ensure(state_dir(root, name))
    # dnsmasq forks and its parent returns once the daemon has bound its sockets (or says why not)
    ctx.run(dnsmasq_argv(root, cfg), timeout=DNSMASQ_START_TIMEOUT)
    found: list[int] = []
    if not wait_until(lambda: found.append(dnsmasq_pid(root, name) or 0) or found[-1], DNSMASQ_START_TIMEOUT):
        raise BackendError(f"network {name}: dnsmasq did not start (no live pid in {pid_file(root, name)})")
    return found[-1]


def stop_dnsmasq(root, name: str, pid: int | None = None, timeout: float = 5) -> bool:
    """Stop the network's dnsmasq (or the given one of ours); True if one was running."""
    pid = pid or dnsmasq_pid(root, name)
    if not pid:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if not wait_until(lambda: not pid_alive(pid), timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_until(lambda: not pid_alive(pid), timeout)
    try:
        os.unlink(pid_file(root, name))
    except OSError:
        pass
    return True


# -- nftables ----------------------------------------------------------------------------------
def _nft(ctx: BackendContext, argv: list[str], script: str | None = None, check=True):
    return ctx.run(["nft", *argv], input=script.encode() if script is not None else None, check=check,
                   timeout=15, install_hint="install nftables")


def nft_rules(ctx: BackendContext) -> list[dict]:
    """This root's rules in table ip eveadm: [{"network", "chain", "handle"}] (empty when no table)."""
    proc = _nft(ctx, ["-j", "list", "table", "ip", NFT_TABLE], check=False)
    if proc.returncode != 0:
        return []
    out = []
    for item in json.loads(proc.stdout or b"{}").get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        owner = marked_name(ctx.root_dir, rule.get("comment"))
        if owner is not None:
            out.append({"network": owner, "chain": rule.get("chain"), "handle": rule["handle"]})
    return out


def has_rules(ctx: BackendContext, name: str) -> bool:
    """Are both of a local network's rules (its masquerade and its isolation) in place?"""
    return {r["chain"] for r in nft_rules(ctx) if r["network"] == name} >= {NFT_CHAIN, NFT_FORWARD}


def ensure_rules(ctx: BackendContext, cfg: dict) -> None:
    """A local network's two rules in table ip eveadm (the table and chains made if missing), and
    IPv4 forwarding on, without which no NAT happens:
    - postrouting: what leaves the subnet for elsewhere is masqueraded (outbound NAT);
    - forward: what another eveadm network's bridge routes into this network's bridge is dropped,
      unless it answers a connection made from inside (EVE isolates its network instances; replies
      to NAT through a switch network's bridge still come back)."""
    name = cfg["name"]
    present = {r["chain"] for r in nft_rules(ctx) if r["network"] == name}
    subnet = str(ipaddress.IPv4Network(cfg["subnet"]))  # validated; re-rendered, never pasted
    bridge = cfg["bridge"]
    if not IFNAME_RE.match(bridge):  # a stored name; never nft syntax of its own
        raise BackendError(f"network {name}: {bridge!r} is not an interface name")
    comment = f'comment "{mark(ctx.root_dir, name)}"'
    script = (
        f"table ip {NFT_TABLE} {{\n"
        f"  chain {NFT_CHAIN} {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
        f"  chain {NFT_FORWARD} {{ type filter hook forward priority filter; policy accept; }}\n"
        f"}}\n"
    )
    if NFT_CHAIN not in present:
        script += (f"add rule ip {NFT_TABLE} {NFT_CHAIN} ip saddr {subnet} ip daddr != {subnet} masquerade "
                   f"{comment}\n")
    if NFT_FORWARD not in present:
        script += (f'add rule ip {NFT_TABLE} {NFT_FORWARD} oifname "{bridge}" iifname != "{bridge}" '
                   f'iifname "{BRIDGE_PREFIX}*" ct direction original drop {comment}\n')
    _nft(ctx, ["-f", "-"], script)
    _enable_forwarding()


def _enable_forwarding() -> None:
    path = "/proc/sys/net/ipv4/ip_forward"
    try:
        with open(path) as fh:
            if fh.read().strip() == "1":
                return
        with open(path, "w") as fh:
            fh.write("1\n")
    except OSError as exc:
        raise BackendError(f"cannot enable IPv4 forwarding ({path}): {exc.strerror}") from None


def remove_rules(ctx: BackendContext, name: str, handle: int | None = None) -> int:
    """Remove the network's rules (or the one with `handle`); how many went."""
    gone = 0
    for rule in nft_rules(ctx):
        if rule["network"] == name and handle in (None, rule["handle"]):
            _nft(ctx, ["delete", "rule", "ip", NFT_TABLE, rule["chain"], "handle", str(rule["handle"])])
            gone += 1
    if gone and not _table_has_rules(ctx):
        _nft(ctx, ["delete", "table", "ip", NFT_TABLE], check=False)  # the last one: nothing of eveadm's stays
    return gone


def _table_has_rules(ctx: BackendContext) -> bool:
    proc = _nft(ctx, ["-j", "list", "table", "ip", NFT_TABLE], check=False)
    if proc.returncode != 0:
        return False
    return any("rule" in item for item in json.loads(proc.stdout or b"{}").get("nftables", []))


# -- a network as a whole --------------------------------------------------------------------
def bring_up(ctx: BackendContext, cfg: dict) -> list[str]:
    """Make the host match the network's config (idempotent: what exists is kept). Returns what it
    had to (re)make, e.g. after a reboot or a dnsmasq that died."""
    made = []
    if link(ctx, cfg["bridge"]) is None:
        made.append(f"bridge {cfg['bridge']}")
    ensure_bridge(ctx, cfg)
    if cfg["type"] == "local":
        if not has_rules(ctx, cfg["name"]):
            made.append("nft rules")
        ensure_rules(ctx, cfg)
        if dnsmasq_pid(ctx.root_dir, cfg["name"]) is None:
            made.append("dnsmasq")
        start_dnsmasq(ctx, cfg)
    return made


def tear_down(ctx: BackendContext, cfg: dict, keep_state: bool = False) -> list[str]:
    """Remove what eveadm made for the network (dnsmasq, nat rule, bridge); with keep_state, the
    lease database stays (a restart of dnsmasq only)."""
    removed = []
    name = cfg["name"]
    if stop_dnsmasq(ctx.root_dir, name):
        removed.append("dnsmasq")
    if cfg["type"] == "local" and remove_rules(ctx, name):  # a switch has none (and needs no nft)
        removed.append("nft rules")
    if remove_bridge(ctx, cfg["bridge"], name):
        removed.append(f"bridge {cfg['bridge']}")
    if not keep_state:
        import shutil

        shutil.rmtree(state_dir(ctx.root_dir, name), ignore_errors=True)
    return removed


def status(ctx: BackendContext, cfg: dict) -> dict:
    """What of the network is on the host now (a pure read)."""
    found = link(ctx, cfg["bridge"])
    out = {"bridge_present": found is not None and marked_name(ctx.root_dir, found.get("ifalias")) == cfg["name"]}
    if cfg["type"] == "local":
        out["dnsmasq_pid"] = dnsmasq_pid(ctx.root_dir, cfg["name"])
        out["nat"] = has_rules(ctx, cfg["name"])
    out["up"] = out["bridge_present"] and all(out.get(k, True) for k in ("dnsmasq_pid", "nat"))
    return out


class Leftover:
    """Something this root's eveadm made for a network it no longer has."""

    def __init__(self, kind: str, name: str, network: str, remove):
        self.kind, self.name, self.network, self._remove = kind, name, network, remove

    def describe(self) -> str:
        return f"{self.kind} {self.name} of network {self.network}"

    def remove(self) -> None:
        self._remove()


def leftovers(ctx: BackendContext, stored: set[str]) -> list[Leftover]:
    """dnsmasq processes, nft rules and bridges carrying this root's mark whose network is not in
    `stored` (a pure read; remove() on each to clean up)."""
    root = ctx.root_dir
    found = []
    for pid, name in our_dnsmasqs(root).items():
        if name not in stored:
            found.append(Leftover("dnsmasq", f"pid {pid}", name, lambda p=pid, n=name: stop_dnsmasq(root, n, p)))
    if which("nft"):
        for rule in nft_rules(ctx):
            if rule["network"] not in stored:
                found.append(Leftover("nft rule", f"handle {rule['handle']} in table ip {NFT_TABLE} chain {rule['chain']}",
                                      rule["network"], lambda r=rule: remove_rules(ctx, r["network"], r["handle"])))
    for bridge, name in (our_bridges(ctx) if which("ip") else {}).items():
        if name not in stored:
            found.append(Leftover("bridge", bridge, name, lambda b=bridge, n=name: remove_bridge(ctx, b, n)))
    return found
