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


# -- what a copy is, is told by its directory, never by its name (issue 9, item 6) ----------------

ADVERSARIAL_NAMES = ["x.fresh.img", "a.fresh.b.preserved.img", "y.part", "disk0.img", "...", "-o,format=qcow2",
                     "owner", "sp ace\nnewline.img", "f" * 200]


@pytest.mark.parametrize("name", ADVERSARIAL_NAMES)
def test_a_preserved_copy_survives_stops_whatever_its_source_is_called(tmp_path, name):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    source = src_dir / name
    source.write_bytes(b"SOURCE" * 100)
    ctx = BackendContext(tmp_path / "root")
    dom = domain(tmp_path, [{"path": str(source), "preserve": True}])
    (use,) = disks.prepare(ctx, dom)
    use.path.write_bytes(b"guest-data")                    # the guest wrote to its private copy
    for _ in range(2):                                     # two stops, then two starts
        assert disks.release(dom) == []
        (use,) = disks.prepare(ctx, dom)
    assert use.path.read_bytes() == b"guest-data" and source.read_bytes() == b"SOURCE" * 100
    assert use.path.parent == disks.kind_dir(dom, disks.PRESERVED)
    assert str(use.path) in disks.release(dom, delete=True) and source.exists()


def test_a_fresh_copy_goes_at_every_stop_whatever_its_source_is_called(tmp_path):
    source = tmp_path / "vm.preserved.img"
    source.write_bytes(b"SOURCE" * 100)
    ctx = BackendContext(tmp_path / "root")
    dom = domain(tmp_path, [{"path": str(source), "preserve": False}])
    (use,) = disks.prepare(ctx, dom)
    assert use.path.parent == disks.kind_dir(dom, disks.FRESH)
    assert disks.release(dom) == [str(use.path)] and not use.path.exists() and source.exists()


def test_a_file_eveadm_made_is_the_users_once_configured_as_the_users(tmp_path):
    target = tmp_path / "vol.img"
    ctx = BackendContext(tmp_path / "root")
    dom = domain(tmp_path, [{"path": str(target), "size": 1}])
    disks.prepare(ctx, dom)
    assert dom.backend["disks_owned"] == [str(target)]
    target.write_bytes(b"user data now")
    dom.config["disks"] = []                                     # remove_disks [target]
    dom.config["disks"] = [{"path": str(target)}]                # add_disks [{path: target}]: used in place
    assert disks.release(dom, delete=True) == [] and target.read_bytes() == b"user data now"


def test_ownership_is_dropped_at_the_next_start_after_the_disk_is_removed(tmp_path):
    target = tmp_path / "vol.img"
    ctx = BackendContext(tmp_path / "root")
    dom = domain(tmp_path, [{"path": str(target), "size": 1}])
    disks.prepare(ctx, dom)
    dom.config["disks"] = []                                     # removed, then a start
    disks.prepare(ctx, dom)
    assert dom.backend["disks_owned"] == []
    dom.config["disks"] = [{"path": str(target), "size": 1}]    # added back: the file is there, not eveadm's
    disks.prepare(ctx, dom)
    assert dom.backend["disks_owned"] == [] and disks.release(dom, delete=True) == [] and target.exists()


def test_blank_disks_keep_their_data_by_id_when_an_earlier_one_goes(tmp_path):
    ctx = BackendContext(tmp_path / "root")
    dom = domain(tmp_path, [{"size": 1, "id": "first"}, {"size": 1, "id": "second"}])
    first, second = disks.prepare(ctx, dom)
    second.path.write_bytes(b"second's data")
    dom.config["disks"] = dom.config["disks"][1:]               # the first is removed
    (use,) = disks.prepare(ctx, dom)
    assert use.path == second.path and use.path.read_bytes() == b"second's data"


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", ".hidden", "x" * 65])
def test_a_blank_disk_id_that_is_not_a_name_is_refused(tmp_path, bad):
    cfg = {"disks": [{"size": 1, "id": bad}]}
    assert [p for p, _ in disks.check(cfg)] == ["disks.0.id"]
    dom = domain(tmp_path, [{"size": 1}])
    dom.config["disks"][0]["id"] = bad
    with pytest.raises(Exception, match="is not a disk id"):
        disks.plan(dom)


def test_kept_disks_of_the_old_layout_are_adopted_not_made_anew(tmp_path):
    source = tmp_path / "a.img"
    source.write_bytes(b"SOURCE" * 100)
    ctx = BackendContext(tmp_path / "root")
    dom = domain(tmp_path, [{"path": str(source), "preserve": True}, {"size": 1}])
    dom.config["disks"][1].pop("id")  # a record from before blank disks had ids
    planned = disks.plan(dom)
    old_dir = disks.disk_dir(dom)
    old_dir.mkdir(parents=True)
    (old_dir / f"{planned[0].path.stem}.preserved.img").write_bytes(b"old copy")
    (old_dir / "disk1.img").write_bytes(b"old blank")
    preserved, blank = disks.prepare(ctx, dom)
    assert preserved.path.read_bytes() == b"old copy" and blank.path.read_bytes() == b"old blank"
    assert sorted(p.name for p in old_dir.iterdir() if p.is_file()) == []
