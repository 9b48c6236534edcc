"""validate says each problem of a nic once, for every brand that wires nics: the network-level
problems (a network or a bridge that does not exist, an address outside the network) are the
engine's (network.spec.check_nics); a brand adds only its own (kvm: a `vif` that is someone else's
interface; container: a static address outside a raw bridge's own subnet)."""

import os
from pathlib import Path

import pytest

from eveadm.network import spec as netspec
from eveadm.node import Node
from eveadm.store import Store

ARTIFACTS = Path(os.environ.get("EVEADM_ARTIFACTS", "/var/cache/eveadm/artifacts"))


def payloads(tmp_path) -> dict:
    image = tmp_path / "rootfs"
    image.mkdir()
    kernel = ARTIFACTS / "guest" / "vmlinuz"
    return {
        "kvm": {"brand": "kvm", "kernel": str(kernel)},
        "container": {"brand": "container", "image": str(image), "cmd": ["/bin/true"]},
        "xen": {"brand": "xen", "virt_mode": "pv", "kernel": str(kernel)},
    }


@pytest.mark.parametrize("brand", ["kvm", "container", "xen"])
def test_each_nic_problem_is_reported_once(tmp_path, brand):
    root = tmp_path / "root"
    store = Store(root)
    store.network_insert(netspec.normalize({"name": "lan", "type": "local", "subnet": "10.20.0.0/24"}, []),
                         ("network.create", {}))
    payload = dict(payloads(tmp_path)[brand], nics=[
        {"network": "nope"}, {"bridge": "nosuchbr0"}, {"network": "lan", "ip": "10.99.0.5"}])
    report = Node(root=root).validate(payload)
    problems = [(b["property"], b["message"]) for b in report["bad_values"] if b["property"].startswith("nics.")]
    assert [p for p, _ in problems] == ["nics.0.network", "nics.1.bridge", "nics.2.network", "nics.2.ip"], problems
    messages = dict(problems)
    assert messages["nics.0.network"].startswith("nope is not a network")
    assert messages["nics.1.bridge"] == "nosuchbr0 is not a bridge on this host"
    assert messages["nics.2.network"].startswith("network lan is not up on this host")
    assert messages["nics.2.ip"].startswith("10.99.0.5 is not in network lan")
