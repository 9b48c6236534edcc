"""A VM's NoCloud seed ISO (volume id `cidata`): what the guest is told about itself.

cloud-init's NoCloud datasource looks for an ISO 9660 (or vfat) filesystem
labelled `cidata`. VM brands attach it as a read-only cdrom. Built with
genisoimage from an argument list. Files of the seed:

  user-data               cloud_init.user_data ("" when absent)
  meta-data               cloud_init.meta_data verbatim when given; else eveadm's:
                            instance-id: <uuid>
                            local-hostname: <alias, else uuid>
                            customer_metadata: {<the domain's customer_metadata as JSON>}
                          (YAML whose values are JSON: cloud-init shows them as
                          ds.meta_data.customer_metadata)
  customer-metadata.json  the domain's customer_metadata, a JSON object of strings (vmadm's
                          mdata-get keys), always written: the stable place for a guest to read
  network-config          only when a nic has a static `ip`: cloud-init network config version 2,
                          one ethernet per nic matched by its MAC, `addresses` + default route via
                          `gateway` + `nameservers` for a static nic, `dhcp4: true` for the others

The seed is built when the payload has cloud_init, non-empty customer_metadata, or a nic with a
static ip. A static `ip` without /prefix takes the prefix of its network's subnet (raw bridge: /24).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..base import Domain
from ..host import BackendContext

GENISOIMAGE_HINT = "apt-get install genisoimage"
DEFAULT_PREFIX = 24  # a static `ip` written without /prefix on a raw bridge (no subnet to take it from)


def iso_path(dom: Domain) -> Path:
    return Path(dom.data_dir) / "cidata.iso"


def wanted(config: dict) -> bool:
    ci = config.get("cloud_init")
    if ci and (ci.get("user_data") is not None or ci.get("meta_data") is not None):
        return True
    return bool(config.get("customer_metadata")) or any(n.get("ip") for n in config.get("nics") or [])


def hostname(config: dict) -> str:
    return config.get("alias") or config["uuid"]


def default_meta_data(config: dict) -> str:
    metadata = json.dumps(config.get("customer_metadata") or {}, sort_keys=True)
    return (f"instance-id: {config['uuid']}\nlocal-hostname: {hostname(config)}\n"
            f"customer_metadata: {metadata}\n")


def lookup_network(ctx: BackendContext, name: str) -> dict | None:
    """The network `name` as eveadm.network.lookup reads it (None when it does not exist)."""
    from ... import network

    return network.lookup(ctx.root_dir, name)


def with_prefix(ip: str, subnet: str | None) -> str:
    """`ip` as address/prefix: its own prefix, else the subnet's, else DEFAULT_PREFIX."""
    import ipaddress

    if "/" in str(ip):
        return str(ip)
    if subnet:
        return f"{ip}/{ipaddress.ip_network(subnet, strict=False).prefixlen}"
    return f"{ip}/{DEFAULT_PREFIX}"


def network_config(ctx: BackendContext, config: dict) -> dict | None:
    """cloud-init network config v2 for the nics, or None when no nic has a static ip."""
    nics = config.get("nics") or []
    if not any(n.get("ip") for n in nics):
        return None
    ethernets = {}
    for i, nic in enumerate(nics):
        eth: dict = {"match": {"macaddress": nic["mac"]}}
        if nic.get("ip"):
            net = lookup_network(ctx, nic["network"]) if nic.get("network") else None
            net = net or {}
            eth["addresses"] = [with_prefix(nic["ip"], net.get("subnet"))]
            gateway = nic.get("gateway") or net.get("gateway")
            if gateway:
                eth["routes"] = [{"to": "default", "via": gateway}]
            if net.get("dns"):
                eth["nameservers"] = {"addresses": list(net["dns"])}
        else:
            eth["dhcp4"] = True
        ethernets[f"nic{i}"] = eth
    return {"version": 2, "ethernets": ethernets}


def build(ctx: BackendContext, dom: Domain) -> Path:
    """Write dom.data_dir/cidata.iso from the payload (rebuilt at every prepare: it may have been updated)."""
    ci = dom.config.get("cloud_init") or {}
    out = iso_path(dom)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cidata-", dir=out.parent) as tmp:
        src = Path(tmp) / "seed"
        src.mkdir()
        files = {
            "user-data": ci.get("user_data") or "",
            "meta-data": ci["meta_data"] if ci.get("meta_data") is not None else default_meta_data(dom.config),
            "customer-metadata.json": json.dumps(dom.config.get("customer_metadata") or {}, indent=1,
                                                 sort_keys=True) + "\n",
        }
        netcfg = network_config(ctx, dom.config)
        if netcfg is not None:
            # JSON is YAML: cloud-init reads it as it reads any network-config
            files["network-config"] = json.dumps(netcfg, indent=1) + "\n"
        for name, text in files.items():
            (src / name).write_text(text)
        part = Path(tmp) / "cidata.iso"
        ctx.run(
            ["genisoimage", "-quiet", "-output", str(part), "-volid", "cidata", "-joliet", "-rock",
             *(str(src / name) for name in files)],
            install_hint=GENISOIMAGE_HINT,
        )
        os.replace(part, out)
    return out
