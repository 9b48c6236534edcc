#!/usr/bin/python
# Copyright: eveadm contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: apply
short_description: Converge an eveadm node to a desired state (eveadm apply)
version_added: 0.1.0
description:
  - Runs C(eveadm apply) on the node with a desired-state document - a C(networks) list of network
    payloads and a C(domains) list of domain payloads, each with an optional C(state), V(running)
    (the default) or V(stopped) (see eveadm's docs/apply.md).
  - eveadm plans what differs (network creates and updates, domain creates, updates, starts,
    stops, and with O(prune) deletes) and carries the steps out in that order, each through the
    same engine, locks and journal as the C(eveadm) command. A second run of the same document
    plans nothing, so reports no change.
  - Domains are matched by C(uuid), else C(alias). What apply creates carries the tag
    C(managed_by=eveadm-apply); O(prune) deletes only such domains, never one made by hand.
  - A step that fails stops the run; the task fails with the steps done and not done, and every
    record stays truthful, so the next run resumes.
options:
  src:
    description:
      - A YAML or JSON file on the node that holds the desired state.
    type: path
  desired:
    description:
      - The desired state itself, instead of O(src).
    type: dict
  prune:
    description:
      - Also delete the domains that apply created and the document no longer names.
    type: bool
    default: false
extends_documentation_fragment:
  - eveadm.edge.node
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: C(eveadm apply --dry-run) - the plan, with nothing changed.
  diff_mode:
    support: full
    details: The plan, one line per step.
  platform:
    platforms: posix
author:
  - eveadm contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: The node's desired state, from a file copied there
  eveadm.edge.apply:
    src: /etc/eveadm/node.yaml
    prune: true

- name: The desired state inline
  eveadm.edge.apply:
    desired:
      domains:
        - alias: web
          brand: container
          image: /srv/rootfs/web
          cmd: ["/bin/httpd", "-f"]
        - alias: batch
          brand: container
          image: /srv/rootfs/batch
          state: stopped
  register: applied
"""

RETURN = r"""
steps:
  description:
    - The plan, in the order it runs. Each step has C(action) (network.create, network.update,
      create, update, start, stop, delete), C(target), C(detail), C(status) (V(planned) in check
      mode, else V(done), V(failed) or V(not done)), the domain's C(uuid) once known, and the
      C(error) of a step that failed.
  returned: always
  type: list
  elements: dict
  sample:
    - action: create
      target: web
      detail: brand container, then running
      status: done
      uuid: 6f1c2f4e-8d3a-4b7e-9c2d-0a1b2c3d4e5f
dry_run:
  description: Whether the steps were only planned (check mode).
  returned: always
  type: bool
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.eveadm.edge.plugins.module_utils.common import eveadm, open_node, reported


def desired_state(params: dict) -> dict:
    from eveadm import apply

    if params["src"]:
        return apply.load(params["src"])
    try:  # only what JSON holds, as in a file
        doc = json.loads(json.dumps(params["desired"], allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise eveadm.ValidationError(f"desired holds a value JSON cannot: {exc}") from None
    return doc  # Node.apply checks its shape, as it does a file's


def plan_text(steps: list[dict]) -> str:
    return "".join(f"{s['action']} {s['target']}" + (f" ({s['detail']})" if s["detail"] else "") + "\n"
                   for s in steps)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path"),
            desired=dict(type="dict"),
            prune=dict(type="bool", default=False),
            root=dict(type="path"),
        ),
        mutually_exclusive=[("src", "desired")],
        required_one_of=[("src", "desired")],
        supports_check_mode=True,
    )
    node = open_node(module)
    with reported(module, node):
        outcome = node.apply(desired_state(module.params), dry_run=module.check_mode, prune=module.params["prune"])
    steps = outcome["steps"]
    changed = bool(steps) if module.check_mode else any(s["status"] == "done" for s in steps)
    result = {"changed": changed, "steps": steps, "dry_run": outcome["dry_run"]}
    if module._diff and steps:
        result["diff"] = {"prepared": plan_text(steps)}
    if outcome["error"]:
        module.fail_json(msg=f"apply stopped: {outcome['error']}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
