"""`eveadm apply` with networks: the network is made before the domains whose nics name it, and a
second run plans nothing. Inside a namespace the test makes (see conftest.py)."""

import json


def test_apply_makes_the_network_first_then_the_domain_on_it(cli, ns, tmp_path):
    doc = tmp_path / "node.yaml"
    doc.write_text("""
networks:
  - {name: lan, type: local, subnet: 10.91.0.0/24}
domains:
  - {alias: app, brand: "null", nics: [{network: lan, ip: 10.91.0.7}]}
""")
    proc = cli("apply", "-f", doc, "-j")
    assert proc.returncode == 0, proc.stderr
    assert [(s["action"], s["status"]) for s in json.loads(proc.stdout)["steps"]] == [
        ("network.create", "done"), ("create", "done")]
    assert "ev-lan" in ns.bridges()
    net = json.loads(cli("network", "get", "lan").stdout)
    assert len(net["domains"]) == 1
    again = cli("apply", "-f", doc, "-j")
    assert json.loads(again.stdout)["steps"] == []
    doc.write_text(doc.read_text().replace("subnet: 10.91.0.0/24}", "subnet: 10.91.0.0/24, mtu: 1400}"))
    steps = json.loads(cli("apply", "-f", doc, "-j").stdout)["steps"]
    assert [(s["action"], s["detail"]) for s in steps] == [("network.update", "mtu")]
    assert ns.link("ev-lan")["mtu"] == 1400
    for uuid in [d["uuid"] for d in json.loads(cli("list", "-j").stdout)]:
        assert cli("delete", uuid).returncode == 0
    assert cli("network", "delete", "lan").returncode == 0
