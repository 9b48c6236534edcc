"""Disk files eveadm makes for VMs (needs qemu-img only): copies follow their source, user files are safe."""

import shutil

import pytest

from eveadm import schema
from eveadm.backends.base import Domain
from eveadm.backends.host import BackendContext
from eveadm.backends.vm import disks

pytestmark = pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img missing (apt-get install qemu-utils)")


def domain(tmp_path, disk_list):
    cfg = schema.normalize({"brand": "kvm", "disks": disk_list})
    return Domain(cfg["uuid"], cfg, {}, tmp_path / "data", tmp_path / "run")


def test_kept_copies_follow_their_source_not_their_position(tmp_path):
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    a.write_bytes(b"AAAA" * 256)
    b.write_bytes(b"BBBB" * 256)
    ctx = BackendContext(tmp_path / "root")
    dom = domain(tmp_path, [{"path": str(a), "preserve": True}, {"path": str(b), "preserve": True}])
    first = {u.source.name: u.path for u in disks.prepare(ctx, dom)}
    first[b.name].write_bytes(b"b-private-data")          # the guest wrote to b's private copy
    dom.config["disks"] = dom.config["disks"][1:]          # `remove_disks` of a.img
    (use,) = disks.prepare(ctx, dom)
    assert use.source == b and use.path == first[b.name]
    assert use.path.read_bytes() == b"b-private-data"      # b keeps its own data, not a's


def test_blank_disk_never_replaces_a_file_at_the_users_path(tmp_path):
    target = tmp_path / "vol.img"
    ctx = BackendContext(tmp_path / "root")
    dom = domain(tmp_path, [{"path": str(target), "size": 1}])
    target.write_bytes(b"user data")                       # appears before eveadm creates it
    disks.prepare(ctx, dom)
    assert target.read_bytes() == b"user data" and dom.backend["disks_owned"] == []
    assert disks.release(dom, delete=True) == [] and target.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []


def test_blank_disk_created_at_a_path_is_owned_and_deleted(tmp_path):
    target = tmp_path / "new.img"
    ctx = BackendContext(tmp_path / "root")
    dom = domain(tmp_path, [{"path": str(target), "size": 1}])
    disks.prepare(ctx, dom)
    assert target.stat().st_size == 1024 * 1024 and dom.backend["disks_owned"] == [str(target)]
    assert str(target) in disks.release(dom, delete=True) and not target.exists()
