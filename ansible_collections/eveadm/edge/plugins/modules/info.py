#!/usr/bin/python
# Copyright: eveadm contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: info
short_description: What an eveadm node runs - its domains, networks and brands
version_added: 0.1.0
description:
  - Reads an eveadm node - its domains with their states and the addresses their nics have, its
    networks, and what the host offers (the brands eveadm knows, with their capabilities) - and
    changes nothing.
  - As C(eveadm list), it asks each backend about the domains it runs, so a domain that ended or
    vanished is shown as it is now.
options:
  filters:
    description:
      - Only the domains that match every filter, as C(eveadm list) takes them (C(brand=container),
        C(state=running), C(tags.role=web)).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - eveadm.edge.node
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: It only reads, in check mode as otherwise.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - eveadm contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: What each node runs
  eveadm.edge.info:
  register: node

- name: The aliases of the running domains
  ansible.builtin.debug:
    msg: "{{ node.domains | selectattr('state', 'equalto', 'running') | map(attribute='alias') | list }}"

- name: Only the containers
  eveadm.edge.info:
    filters: [brand=container]
  register: containers
"""

RETURN = r"""
domains:
  description:
    - One entry per domain - C(uuid), C(alias), C(brand), C(state), C(autoboot), C(ram), C(vcpus),
      C(tags), C(nics) (each as its payload gives it, with C(ip), the address it has now, when
      known), and when set C(pending_restart) and C(error).
  returned: always
  type: list
  elements: dict
  sample:
    - uuid: 6f1c2f4e-8d3a-4b7e-9c2d-0a1b2c3d4e5f
      alias: web
      brand: container
      state: running
      autoboot: true
      ram: 128
      vcpus: 1
      tags: {}
      nics: [{network: lan, mac: "02:08:20:1a:2b:3c", ip: 10.20.0.12}]
networks:
  description:
    - Every network as C(eveadm network get) shows it - its config, what of it is on the host,
      and the domains that use it.
  returned: always
  type: list
  elements: dict
host:
  description:
    - C(eveadm_version), the state C(root), and C(brands) - each brand eveadm knows, with its C(family)
      (vm or container), C(type_code) (the TYPE column of C(eveadm list)), C(capabilities)
      (console, kill, pci, nics), C(available) (whether this node can run it) and C(reason) (why not).
  returned: always
  type: dict
  sample:
    eveadm_version: 0.1.0
    root: /var/lib/eveadm
    brands: [{name: container, family: container, type_code: CONT, capabilities: [console, kill, nics],
              available: true, reason: null}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.eveadm.edge.plugins.module_utils.common import open_node, reported

DOMAIN_FACTS = ("uuid", "alias", "brand", "state", "autoboot", "ram", "vcpus", "tags", "nics", "pending_restart",
                "error")
ALWAYS = ("uuid", "alias", "brand", "state", "autoboot", "ram", "vcpus", "tags", "nics")


def host_facts(node) -> dict:
    from importlib.metadata import version

    return {"eveadm_version": version("eveadm"), "root": str(node.root), "brands": node.brands()}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            filters=dict(type="list", elements="str", default=[]),
            root=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    node = open_node(module)
    with reported(module, node):
        domains = [{k: d.get(k) for k in DOMAIN_FACTS if k in ALWAYS or d.get(k)}
                   for d in node.list(module.params["filters"])]
        networks = node.network_list()
        host = host_facts(node)
    module.exit_json(changed=False, domains=domains, networks=networks, host=host)


if __name__ == "__main__":
    main()
