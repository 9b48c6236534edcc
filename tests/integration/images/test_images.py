"""The image store against a real registry, real skopeo, umoci, runc and QEMU."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from clitest import ARTIFACTS, commands, process_state, processes, tree_bytes
from eveadm.backends.host import wait_until

pytestmark = pytest.mark.container


def blobs(root) -> set[str]:
    d = root / "images" / "oci" / "blobs" / "sha256"
    return set(os.listdir(d)) if d.is_dir() else set()


def log_of(icli, uuid: str) -> str:
    return icli.ok("info", uuid, "--log", "50").stdout


def wait_log(icli, uuid: str, text: str, timeout: float = 60) -> str:
    assert wait_until(lambda: text in log_of(icli, uuid), timeout), log_of(icli, uuid)
    return log_of(icli, uuid)


def test_pull_by_tag_then_by_digest_stores_the_layers_once(icli, registry, root):
    ref = f"{registry.host}/busybox:1"
    img = icli.json("image", "pull", "-j", f"docker://{ref}")
    assert img["digest"] == registry.digest and img["names"] == [ref] and img["kind"] == "oci"
    stored = blobs(root)
    assert len(stored) == 3  # manifest, config, one layer
    by_digest = f"{registry.host}/busybox@{registry.digest}"
    again = icli.json("image", "pull", "-j", by_digest)
    assert again["digest"] == registry.digest and sorted(again["names"]) == sorted([ref, by_digest])
    assert blobs(root) == stored
    listed = icli.ok("image", "list").stdout.splitlines()
    assert listed[0].split() == ["NAME", "DIGEST", "KIND", "SIZE", "USED"]
    assert any(line.split()[:3] == [ref, registry.digest[:19], "oci"] for line in listed[1:])
    for name in stored:  # every stored blob holds the content its name says, read-only
        path = root / "images" / "oci" / "blobs" / "sha256" / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == name
        assert stat.S_IMODE(path.stat().st_mode) == 0o400


def test_a_container_runs_from_a_pulled_image_with_its_config(icli, registry):
    ref = f"{registry.host}/busybox:1"
    icli.ok("image", "pull", ref)
    by_name = icli.create({"brand": "container", "image": ref})
    assert by_name["backend"]["image_digest"] == registry.digest
    assert "EVEADM-OCI-READY cwd=/tmp image=busybox" in wait_log(icli, by_name["uuid"], "EVEADM-OCI-READY")
    by_digest = icli.create({"brand": "container", "image": registry.digest, "env": {"EVEADM_IMAGE": "mine"},
                             "workdir": "/"})
    assert "EVEADM-OCI-READY cwd=/ image=mine" in wait_log(icli, by_digest["uuid"], "EVEADM-OCI-READY")
    assert icli.json("image", "get", ref)["domains"] == sorted([by_name["uuid"], by_digest["uuid"]])


def test_two_containers_from_one_image_share_its_unpacked_layers(icli, registry, root):
    ref = f"{registry.host}/busybox:1"
    icli.ok("image", "pull", ref)
    first = icli.create({"brand": "container", "image": ref})
    wait_log(icli, first["uuid"], "EVEADM-OCI-READY")
    unpacked = root / "images" / "unpacked"
    before = tree_bytes(root)
    second = icli.create({"brand": "container", "image": ref})
    wait_log(icli, second["uuid"], "EVEADM-OCI-READY")
    grown = tree_bytes(root) - before
    assert len(os.listdir(unpacked)) == 1
    assert [argv[1] for argv in commands(root) if argv[0] == "umoci"] == ["unpack"]  # one unpack for two
    image_tree = tree_bytes(unpacked)
    assert grown < image_tree / 4, (grown, image_tree)  # its upper dir and bundle, not another rootfs
    assert second["backend"]["lower"] == first["backend"]["lower"]


def test_a_missing_image_is_a_validate_error_that_says_how_to_pull_and_create_pull_fetches_it(icli, registry, root):
    ref = f"{registry.host}/busybox:1"
    proc = icli("create", input=json.dumps({"brand": "container", "image": ref}))
    assert proc.returncode == 3 and f"eveadm image pull docker://{ref}" in proc.stderr
    assert not [a for a in commands(root) if a[0] == "skopeo"]
    dom = icli.create({"brand": "container", "image": ref}, "--pull")
    assert dom["state"] == "running" and dom["backend"]["image_digest"] == registry.digest


@pytest.mark.parametrize("args", [
    ["pull", "docker://127.0.0.1:1/Upper/Case:1"],
    ["pull", "dir:/tmp"],
    ["pull", "docker://x/busybox:1", "--name", "bad name"],
    ["pull", "oci:/nonexistent-layout:latest"],
    ["pull", "docker://x/busybox:-bad"],
    ["import", "/etc/hostname", "--sha256", "1234"],
    ["import", "/nonexistent.img", "--sha256", "0" * 64],
])
def test_bad_names_and_sources_are_refused_before_any_tool_runs(icli, root, args):
    proc = icli("image", *args)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("eveadm: ") and len(proc.stderr.splitlines()) == 1
    assert not [a for a in commands(root) if a[0] in ("skopeo", "qemu-img")]
    assert icli.json("image", "list", "-j") == []


def test_a_tampered_blob_fails_the_pull_with_a_digest_error_and_stores_nothing(own_registry, root, tmp_path):
    from clitest import Cli

    cli = Cli(root)
    manifest = json.loads(own_registry.blob_data(own_registry.digest).read_bytes())
    layer = own_registry.blob_data(manifest["layers"][0]["digest"])
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    layer.write_bytes(bytes(data))
    proc = cli("image", "pull", "--tls-verify=false", f"{own_registry.host}/busybox:1")
    assert proc.returncode == 1 and "digest" in proc.stderr.lower(), proc.stderr
    assert cli.json("image", "list", "-j") == []
    assert blobs(root) == set() and os.listdir(root / "images" / "partial") == []


def test_a_pull_killed_at_any_point_lists_nothing_new_and_a_second_pull_succeeds(icli, registry, root, tmp_path):
    ref = f"{registry.host}/busybox:1"
    trace = tmp_path / "trace"
    from clitest import Cli

    scratch = Cli(tmp_path / "scratch", env=icli.env)  # the points a whole pull passes
    scratch.ok("image", "pull", ref, env={"EVEADM_FAULT_TRACE": str(trace)})
    points = trace.read_text().split()
    assert "run:skopeo:after@1" in points and "image.catalog@1" in points
    for point in points:
        killed = icli("image", "pull", ref, env={"EVEADM_FAULT": point})
        assert killed.returncode == -9, (point, killed.stderr)
        listed = icli.json("image", "list", "-j")
        committed = point == "image.catalog:after@1"
        assert [i["digest"] for i in listed] == ([registry.digest] if committed else []), point
        for name in blobs(root):  # whatever reached the store is what its name says
            path = root / "images" / "oci" / "blobs" / "sha256" / name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == name, point
        if committed:
            icli.ok("image", "delete", ref)
        doctor = icli("doctor", "--fix")
        assert doctor.returncode == 0, doctor.stderr
        assert icli("doctor").returncode == 0, (point, icli("doctor").stdout)
        assert os.listdir(root / "images" / "partial") == [], point
    img = icli.json("image", "pull", "-j", ref)
    assert img["digest"] == registry.digest and len(blobs(root)) == 3


def test_sigkill_of_a_running_skopeo_pull_leaves_a_partial_that_doctor_removes(icli, registry, root, tmp_path):
    import shutil
    import signal
    import subprocess
    import sys

    # skopeo, held still as it starts (a wrapper first on PATH stops itself): eveadm is killed while
    # its copy is under way, every time, however fast the real copy would have been
    wrapper_dir = tmp_path / "bin"
    wrapper_dir.mkdir()
    (wrapper_dir / "skopeo").write_text(f'#!/bin/sh\nkill -STOP $$\nexec {shutil.which("skopeo")} "$@"\n')
    (wrapper_dir / "skopeo").chmod(0o700)
    env = {**icli.env, "PATH": f"{wrapper_dir}:{os.environ['PATH']}"}
    ref = f"{registry.host}/busybox:1"
    proc = subprocess.Popen([sys.executable, "-m", "eveadm", "--root", str(root), "image", "pull", ref],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def skopeo_held() -> list[int]:
        return [pid for pid in processes("skopeo", parent=proc.pid) if process_state(pid) == "T"]

    assert wait_until(lambda: skopeo_held() or proc.poll() is not None, 30)
    assert proc.poll() is None, (proc.returncode, proc.stderr.read())
    (skopeo,) = skopeo_held()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    os.kill(skopeo, signal.SIGKILL)
    partial = root / "images" / "partial"
    assert any(partial.iterdir())
    assert icli.json("image", "list", "-j") == []
    found = icli("doctor")
    assert found.returncode == 1 and "images/partial/pull-" in found.stdout
    icli.ok("doctor", "--fix")
    assert list(partial.iterdir()) == []
    assert icli.json("image", "pull", "-j", ref)["digest"] == registry.digest


def test_delete_of_an_image_in_use_exits_5_and_prune_after_its_last_user_frees_the_space(icli, registry, root):
    ref = f"{registry.host}/busybox:1"
    icli.ok("image", "pull", ref)
    dom = icli.create({"brand": "container", "image": ref})
    refused = icli("image", "delete", ref)
    assert refused.returncode == 5 and dom["uuid"] in refused.stderr
    assert icli("image", "delete", registry.digest).returncode == 5
    assert icli.json("image", "prune", "-j")["images"] == []  # in use: kept
    icli.ok("delete", dom["uuid"])
    found = icli("doctor")
    assert found.returncode == 1 and "images/unpacked/" in found.stdout  # the cache its last user left
    before = tree_bytes(root / "images")
    dry = icli.json("image", "prune", "-j", "--dry-run")
    assert dry["images"] == [registry.digest] and tree_bytes(root / "images") == before
    pruned = icli.json("image", "prune", "-j")
    after = tree_bytes(root / "images")
    assert pruned["images"] == [registry.digest] and icli.json("image", "list", "-j") == []
    assert before - after >= 0.9 * pruned["freed_bytes"] > 0 and blobs(root) == set()
    assert not os.listdir(root / "images" / "unpacked")
    assert icli("doctor").returncode == 0


def test_pull_progress_is_json_lines_with_j_and_silent_otherwise(icli, registry):
    ref = f"{registry.host}/busybox:1"
    quiet = icli.ok("image", "pull", ref)
    assert quiet.stderr.splitlines() == [quiet.stderr.splitlines()[-1]]  # only the result line
    icli.ok("image", "delete", ref)
    loud = icli.ok("image", "pull", "-j", ref)
    lines = [json.loads(line) for line in loud.stderr.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["progress"] == "pull" and lines[-1]["finished"] and lines[-1]["ok"]
    assert json.loads(loud.stdout)["digest"] == registry.digest  # stdout stays one JSON document


# -- VM disk images --------------------------------------------------------------------------------------------


def disk_file(tmp_path, text: str):
    path = tmp_path / "disk.img"
    path.write_bytes(text.encode().ljust(16, b"-")[:16] + bytes(1024 * 1024 - 16))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_import_checks_the_sha256_before_anything_is_listed(icli, root, tmp_path):
    path, digest = disk_file(tmp_path, "ORIG-image")
    wrong = icli("image", "import", str(path), "--sha256", "0" * 64, "--name", "disk:1")
    assert wrong.returncode == 1 and digest in wrong.stderr and "nothing stored" in wrong.stderr
    assert icli.json("image", "list", "-j") == [] and not (root / "images" / "disks").exists()
    img = icli.json("image", "import", "-j", str(path), "--sha256", digest.upper(), "--name", "disk:1")
    assert img["digest"] == "sha256:" + digest and img["kind"] == "disk" and img["format"] == "raw"
    stored = root / "images" / "disks" / "sha256" / digest
    assert stat.S_IMODE(stored.stat().st_mode) == 0o400 and stored.read_bytes() == path.read_bytes()
    assert icli.json("image", "get", "disk:1")["domains"] == []


def test_a_name_of_hex_digits_names_the_image_it_was_given_to(icli, tmp_path):
    path, digest = disk_file(tmp_path, "HEX-name")
    hexname = "0123456789abcdef"  # looks like a digest prefix; no digest starts with it
    assert not digest.startswith(hexname)
    icli.ok("image", "import", str(path), "--sha256", digest, "--name", hexname)
    icli.ok("image", "import", str(path), "--sha256", digest, "--name", "other:1")
    icli.ok("image", "delete", hexname)  # that name goes; the image and its other name stay
    assert icli.json("image", "get", "other:1")["names"] == ["other:1"]


def test_a_vm_boots_from_an_imported_disk_image_on_a_throwaway_overlay(icli, root, tmp_path):
    guest = ARTIFACTS / "guest"
    path, digest = disk_file(tmp_path, "ORIG-image")
    icli.ok("image", "import", str(path), "--sha256", digest, "--name", "testdisk:1")
    stored = root / "images" / "disks" / "sha256" / digest
    dom = icli.create({"brand": "kvm", "ram": 128, "kernel": str(guest / "vmlinuz"),
                       "initrd": str(guest / "initramfs.cpio.gz"),
                       "cmdline": "console=ttyS0 quiet panic=-1 eveadm.vda",
                       "disks": [{"image": "testdisk:1", "preserve": False}]})
    (disk,) = dom["backend"]["disks"]
    assert disk["kind"] == "fresh" and disk["image_digest"] == "sha256:" + digest and disk["source"] == str(stored)
    assert icli("image", "delete", "testdisk:1").returncode == 5
    for run in range(2):  # the guest writes to its disk each boot; each boot sees the image again
        log = wait_until(lambda: icli.ok("info", dom["uuid"], "--log", "200").stdout.count("EVEADM-DISKS-DONE") > run,
                         300)
        text = icli.ok("info", dom["uuid"], "--log", "200").stdout
        assert log, text
        seen = [line for line in text.splitlines() if line.startswith("EVEADM-DISK vda")]
        assert seen[-1].split()[2].startswith("BEFORE=ORIG-image"), seen
        icli.ok("stop", dom["uuid"], "-t", "60")
        if run == 0:
            icli.ok("start", dom["uuid"])
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest  # the image is what was imported
    icli.ok("delete", dom["uuid"])
    assert icli.json("image", "prune", "-j")["images"] == ["sha256:" + digest] and not stored.exists()
