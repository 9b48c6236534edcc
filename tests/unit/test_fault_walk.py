"""SIGKILL at every kill point of create, start, stop, update and delete (null brand): the next read is
truthful, `doctor --fix` leaves nothing, the bystander is untouched, the domain is usable or cleanly gone."""

import json

import pytest

import eveadm
from faultwalk import check_after_kill, killed_at, trace, usable_or_gone

UUID = "fa17fa17-0000-4000-8000-000000000001"
WALKED = {}


def prepare(root, state):
    """A bystander running, and the domain in `state` (None: not created yet)."""
    node = eveadm.Node(root=root)
    bystander = node.create({"brand": "null", "alias": "bystander"})["uuid"]
    if state is not None:
        node.create({"brand": "null", "uuid": UUID, "alias": "target", "autoboot": state == "running"})
    return bystander


CASES = {
    "create": (None, ["create"], json.dumps({"brand": "null", "uuid": UUID, "alias": "target"})),
    "start": ("stopped", ["start", UUID], None),
    "stop": ("running", ["stop", UUID], None),
    "update": ("running", ["update", UUID, "ram=512", "alias=t2"], None),
    "delete": ("running", ["delete", UUID], None),
}


@pytest.mark.parametrize("command", list(CASES))
def test_a_kill_at_any_point_leaves_the_truth_and_no_leftovers(cli, command, tmp_path):
    state, args, payload = CASES[command]
    prepare(cli.root, state)
    points = trace(cli, args, payload)
    assert points, "no kill points traced"
    for i, point in enumerate(points):
        cli.root = tmp_path / f"walk{i}"
        bystander = prepare(cli.root, state)
        killed_at(cli, point, args, payload)
        left = check_after_kill(cli, point, UUID, bystander, "running")
        usable_or_gone(cli, point, UUID, left)
    WALKED[command] = len(points)
    assert len(points) >= (1 if command == "update" else 3)  # an update is one record write
