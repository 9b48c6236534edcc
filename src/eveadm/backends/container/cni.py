"""A container's nics, wired by the standard CNI plugins (Debian `containernetworking-plugins`).

Each nic becomes a veth pair: `eth<N>` in the container's own network namespace,
its host side (renamed `ev<12 hex of the uuid><N>`) a port of the nic's bridge.
eveadm invokes the plugins exactly as a CNI runtime does: it execs
`<cni dir>/bridge` with CNI_COMMAND=ADD|DEL, CNI_CONTAINERID=<uuid>,
CNI_NETNS=/proc/<init pid>/ns/net, CNI_IFNAME=eth<N>, CNI_PATH and the network
config JSON on stdin, and reads the address from the result JSON.

IPAM: `host-local` whenever the nic's subnet is known (a network's `subnet`, or
the address of a raw bridge), with a static `ip` *requested* from it
(runtimeConfig.ips) so one store knows every address on the bridge and never
hands a static one to another container; `static` only for a static `ip` on a
bridge without a subnet. host-local keeps its reservations (a file per address,
holding the container id) under <root>/cni/host-local/<cni network name>/.

The config of each nic is written to <run_dir>/cni/eth<N>.json before ADD, so
DEL (release, doctor) finds it without the record, even after an eveadm killed
in the middle of create. DEL is idempotent: the bridge plugin releases the
address and, without a namespace, deletes nothing else.
"""

from __future__ import annotations

import json
import os

from ... import privatedir
from ...errors import BackendError, PermanentError

TYPE_CHECKING = False  # hashlib, ipaddress and pathlib cost start-up: imported where they are used
if TYPE_CHECKING:
    import ipaddress
    from pathlib import Path

CNI_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
CNI_VERSION = "1.0.0"
INSTALL_HINT = "container nics need the CNI plugins: apt-get install containernetworking-plugins"
VETH_PREFIX = "ev"  # host side: ev + 12 hex of the uuid + the nic index (hex): 15 = IFNAMSIZ - 1
ALIAS_PREFIX = "eveadm:"  # host side's ifalias: eveadm:<uuid>:<hash of the state root>
RESERVED = ("lock",)  # host-local's own files besides one per address (and last_reserved_ip.*)
PLUGIN_TIMEOUT = 30


def cni_dir() -> str:
    return os.environ.get("EVEADM_CNI_PATH") or CNI_DIR


def veth_name(uuid: str, index: int) -> str:
    return f"{VETH_PREFIX}{uuid.replace('-', '')[:12]}{index:x}"


def root_tag(root_dir) -> str:
    """Which state root made a veth (several eveadm roots can share one host)."""
    import hashlib

    return hashlib.sha256(os.fspath(root_dir).encode()).hexdigest()[:12]


def veth_alias(uuid: str, root_dir) -> str:
    return f"{ALIAS_PREFIX}{uuid}:{root_tag(root_dir)}"


def ipam_dir(root_dir) -> Path:
    from pathlib import Path

    return Path(root_dir) / "cni" / "host-local"


def conf_dir(run_dir) -> str:
    return os.path.join(run_dir, "cni")


def bridge_facts(ctx, name: str) -> tuple[bool, ipaddress.IPv4Interface | None]:
    """(is `name` a bridge, its first IPv4 address with prefix) in eveadm's network namespace: one
    `ip -j -d addr show` read as JSON. (Not /sys/class/net: sysfs shows the namespace that mounted
    it, which is not eveadm's under `nsenter --net`.)"""
    import ipaddress

    proc = ctx.run(["ip", "-j", "-d", "addr", "show", "dev", name], check=False)
    if proc.returncode != 0:
        return False, None
    try:
        links = json.loads(proc.stdout or b"[]")
    except ValueError:
        return False, None
    for link in links:
        if (link.get("linkinfo") or {}).get("info_kind") != "bridge":
            return False, None
        for addr in link.get("addr_info") or []:
            if addr.get("family") == "inet" and addr.get("local"):
                return True, ipaddress.IPv4Interface(f"{addr['local']}/{addr.get('prefixlen', 32)}")
        return True, None
    return False, None


def link_names() -> set[str]:
    """The interfaces of this process's network namespace (/proc/self/net/dev follows it)."""
    try:
        with open("/proc/self/net/dev") as fh:
            return {line.split(":", 1)[0].strip() for line in fh.readlines()[2:] if ":" in line}
    except OSError:
        return set()


def resolve(ctx, root_dir, index: int, nic: dict) -> dict:
    """Where nic `index` goes: {bridge, network, subnet, gateway, ip (with prefix), mtu, mac, dns,
    missing}. PermanentError for what only a container nic needs (a network or a bridge; a static
    address inside a raw bridge's subnet).

    A network that does not exist or a bridge that is not on the host is a network-level problem:
    the engine's validation says it (network.spec.check_nics), so here it is only noted in
    `missing`, and wiring refuses it (network_config), for a bridge removed since the domain was
    validated."""
    import ipaddress

    from ... import network

    where = f"nics.{index}"
    out = {"network": nic.get("network"), "mac": nic.get("mac"), "mtu": nic.get("mtu"), "dns": [], "missing": None}
    subnet = gateway = None
    if nic.get("network"):
        net = network.lookup(root_dir, nic["network"])
        if not net:
            return dict(out, bridge=None, subnet=None, gateway=None, ip=None,
                        missing=f"{where}: network {nic['network']} does not exist")
        out["bridge"] = net.get("bridge")
        subnet = net.get("subnet")
        gateway = net.get("gateway")
        out["dns"] = list(net.get("dns") or ([gateway] if gateway else []))
        out["mtu"] = out["mtu"] or net.get("mtu")
        out["range"] = net.get("static_range")  # a local network's addresses outside dnsmasq's pool
    else:
        out["bridge"] = nic.get("bridge")
    if not out["bridge"]:
        raise PermanentError(f"{where}: a container nic needs a network or a bridge")
    exists, own = bridge_facts(ctx, out["bridge"])
    if not exists:
        out["missing"] = f"{where}: bridge {out['bridge']} does not exist"
    if not subnet:  # a raw bridge: its own address gives the subnet and the gateway
        if own is not None:
            subnet, gateway = str(own.network), gateway or str(own.ip)
    gateway = nic.get("gateway") or gateway
    try:
        net = ipaddress.IPv4Network(subnet) if subnet else None
        ip = None
        if nic.get("ip"):
            text = str(nic["ip"])
            ip = ipaddress.IPv4Interface(text if "/" in text or net is None else f"{text}/{net.prefixlen}")
            # a network's subnet is checked by the engine; a raw bridge's only here
            if net is not None and not nic.get("network") and ip.ip not in net:
                raise PermanentError(f"{where}.ip: {ip.ip} is outside {net}")
    except ValueError as exc:
        raise PermanentError(f"{where}: {exc}") from None
    out.update(subnet=str(net) if net else None, gateway=gateway, ip=str(ip) if ip else None)
    if not out["dns"] and nic.get("dns"):
        out["dns"] = list(nic["dns"])
    return out


def network_config(root_dir, where: dict, default_route: bool) -> dict:
    """The CNI network config (stdin of the bridge plugin) of one resolved nic. PermanentError when
    its network or bridge is missing: the bridge plugin would make a bridge of that name."""
    if where.get("missing"):
        raise PermanentError(where["missing"])
    name = f"eveadm-{where['network']}" if where.get("network") else f"eveadm-br-{where['bridge']}"
    conf: dict = {"cniVersion": CNI_VERSION, "name": name, "type": "bridge", "bridge": where["bridge"],
                  "isGateway": False, "ipMasq": False, "capabilities": {"mac": True, "ips": True},
                  "runtimeConfig": {}}
    if where.get("mtu"):
        conf["mtu"] = int(where["mtu"])
    if where.get("mac"):
        conf["runtimeConfig"]["mac"] = where["mac"]
    routes = [{"dst": "0.0.0.0/0"}] if default_route and where.get("gateway") else []
    if where.get("subnet"):
        rng = {"subnet": where["subnet"]}
        if where.get("range") and not where.get("ip"):  # a requested ip needs the whole subnet
            rng["rangeStart"], rng["rangeEnd"] = where["range"]
        if where.get("gateway"):
            rng["gateway"] = where["gateway"]
        conf["ipam"] = {"type": "host-local", "dataDir": str(ipam_dir(root_dir)), "ranges": [[rng]],
                        "routes": routes}
        if where.get("ip"):
            conf["runtimeConfig"]["ips"] = [where["ip"]]
    elif where.get("ip"):
        addr = {"address": where["ip"]}
        if where.get("gateway"):
            addr["gateway"] = where["gateway"]
        conf["ipam"] = {"type": "static", "addresses": [addr], "routes": routes}
    # no subnet and no address: a layer-2 port only (no ipam)
    return conf


def invoke(ctx, command: str, uuid: str, ifname: str, netns: str, conf: dict) -> dict:
    """Exec the plugin named by conf["type"] as a CNI runtime does; its result JSON ({} for DEL)."""
    path = cni_dir()
    plugin = os.path.join(path, conf["type"])
    if not os.path.exists(plugin):
        raise PermanentError(f"{plugin} not found: {INSTALL_HINT}")
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": uuid, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
           "CNI_PATH": path}
    proc = ctx.run([plugin], env=env, input=json.dumps(conf).encode(), timeout=PLUGIN_TIMEOUT, check=False)
    try:
        result = json.loads(proc.stdout or b"{}")
    except ValueError:
        result = {}
    if proc.returncode != 0:
        # a CNI error is a JSON object {code, msg, details} on stdout
        msg = result.get("msg") if isinstance(result, dict) else None
        detail = result.get("details") if isinstance(result, dict) else None
        text = msg or (proc.stderr or b"").decode(errors="replace").strip() or f"exit {proc.returncode}"
        raise BackendError(f"CNI {conf['type']} {command} {ifname} failed: {text}" +
                           (f" ({detail})" if detail else ""))
    return result


def result_address(result: dict, ifname: str) -> tuple[str | None, str | None]:
    """(address/prefix, gateway) the result gives the container's interface `ifname`."""
    interfaces = result.get("interfaces") or []
    for entry in result.get("ips") or []:
        i = entry.get("interface")
        if i is None or (0 <= i < len(interfaces) and interfaces[i].get("name") == ifname):
            return entry.get("address"), entry.get("gateway")
    return None, None


def host_veth(result: dict, bridge: str) -> str | None:
    """The host side of the pair: the result's interface with no sandbox that is not the bridge."""
    for entry in result.get("interfaces") or []:
        if not entry.get("sandbox") and entry.get("name") != bridge:
            return entry.get("name")
    return None


def register_names(ctx, uuid: str, hostname: str, wired: list[dict]) -> None:
    """Make the container's hostname resolve, through each local network's dnsmasq, to the address
    CNI gave its nic there (dnsmasq knows only the addresses it leased itself)."""
    from ...network import names

    names.name_domain(ctx, uuid, hostname, [(i, nic.get("network"), nic.get("ip")) for i, nic in enumerate(wired)])


def drop_names(ctx, uuid: str) -> None:
    """Forget the names register_names gave the container (at every unwiring: stop, release)."""
    from ...network import names

    names.unname_domain(ctx, uuid)


def write_conf(run_dir, ifname: str, conf: dict) -> str:
    path = os.path.join(privatedir.ensure(conf_dir(run_dir)), f"{ifname}.json")
    privatedir.write_private(path, json.dumps(conf))
    return path


def saved_confs(run_dir) -> list[tuple[str, str]]:
    """(ifname, conf file) of every nic wired (or being wired) in this run dir."""
    d = conf_dir(run_dir)
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    return [(n[:-5], os.path.join(d, n)) for n in names if n.endswith(".json")]


def eveadm_veths(ctx, root_dir) -> dict[str, str]:
    """{host veth name: uuid} of every host-side veth this state root made (its name and its alias
    both say so), from one `ip -j -d link show type veth`."""
    proc = ctx.run(["ip", "-j", "-d", "link", "show", "type", "veth"], check=False)
    try:
        links = json.loads(proc.stdout or b"[]") if proc.returncode == 0 else []
    except ValueError:
        links = []
    found = {}
    tag = root_tag(root_dir)
    for link in links:
        name, alias = link.get("ifname") or "", link.get("ifalias") or ""
        if not (name.startswith(VETH_PREFIX) and len(name) == 15 and alias.startswith(ALIAS_PREFIX)):
            continue
        uuid, _, owner = alias[len(ALIAS_PREFIX):].partition(":")
        if owner == tag and veth_name(uuid, 0)[:14] == name[:14]:
            found[name] = uuid
    return found


def reservations(root_dir) -> list[tuple[Path, str, str]]:
    """(file, container id, ifname) of every host-local reservation under this state root."""
    out = []
    base = ipam_dir(root_dir)
    try:
        nets = sorted(os.listdir(base))
    except OSError:
        return []
    for net in nets:
        try:
            names = sorted(os.listdir(base / net))
        except OSError:
            continue
        for name in names:
            if name in RESERVED or name.startswith("last_reserved_ip"):
                continue
            path = base / net / name
            try:
                cid, _, ifname = path.read_text().partition("\n")
            except OSError:
                continue
            out.append((path, cid.strip(), ifname.strip()))
    return out
