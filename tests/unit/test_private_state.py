"""The state root is private and cannot be subverted: modes, foreign owners, symlinks, shared ancestors."""

import json
import os
import stat

import pytest


def modes_under(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = os.lstat(path).st_mode
    return out


def test_everything_eveadm_creates_is_its_owners_alone(cli):
    dom = cli.create({"brand": "null", "alias": "s", "env": {"TOKEN": "hunter2"}, "vnc_password": "pw",
                      "cloud_init": {"user_data": "password: hunter2"}})
    cli.ok("stop", dom["uuid"])
    cli.ok("start", dom["uuid"])
    assert stat.S_IMODE(os.stat(cli.root).st_mode) == 0o700
    found = modes_under(cli.root)
    assert "eveadm.db" in found and "locks" in found
    loose = {p: oct(stat.S_IMODE(m)) for p, m in found.items()
             if stat.S_IMODE(m) & 0o077 and not stat.S_ISLNK(m)}
    assert loose == {}
    log = cli.root / "log" / "commands.jsonl"
    assert not log.exists() or "hunter2" not in log.read_text()


@pytest.mark.parametrize("how, words", [
    ("world-writable", "group or others can write"),
    ("foreign", "belongs to uid 65534"),
    ("symlink", "symbolic link"),
])
def test_a_root_someone_else_could_change_is_refused(cli, tmp_path, how, words):
    root = cli.root
    if how == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        root.symlink_to(tmp_path / "elsewhere")
    else:
        root.mkdir(mode=0o700)
        if how == "world-writable":
            os.chmod(root, 0o777)
        else:
            os.chown(root, 65534, 65534)
    proc = cli("create", input=json.dumps({"brand": "null"}))
    assert proc.returncode == 1 and words in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "elsewhere" / "eveadm.db").exists()


def test_a_root_under_a_shared_directory_without_sticky_bit_is_refused(tmp_path, cli):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    proc = cli("--root", str(shared / "root"), "list")
    assert proc.returncode == 1 and "no sticky bit" in proc.stderr
    os.chmod(shared, 0o1777)                        # as /tmp: others cannot rename what we make there
    assert cli("--root", str(shared / "root"), "list").returncode == 0


def test_a_lock_file_swapped_for_a_symlink_writes_nothing_through_it(cli, tmp_path):
    dom = cli.create({"brand": "null"})
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o600)
    lock = cli.root / "locks" / f"{dom['uuid']}.lock"
    if lock.exists():
        lock.unlink()
    lock.symlink_to(victim)
    proc = cli("stop", dom["uuid"])
    assert proc.returncode == 1 and "symbolic link" in proc.stderr
    assert victim.read_text() == "precious\n"
    locks = cli.root / "locks"
    os.rename(locks, cli.root / "locks.away")
    locks.symlink_to(tmp_path)                      # the whole directory swapped
    proc = cli("stop", dom["uuid"])
    assert proc.returncode == 1 and "symbolic link" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root", "victim"]   # nothing made through it


def test_files_are_written_owner_only_whatever_the_umask_and_never_through_a_symlink(tmp_path):
    from eveadm import privatedir

    old = os.umask(0)  # as the Python API may run: eveadm's CLI sets 077, a library caller may not
    try:
        target = tmp_path / "conf.json"
        target.write_text("old")
        os.chmod(target, 0o644)
        privatedir.write_private(target, '{"new": 1}')
        assert target.read_text() == '{"new": 1}' and stat.S_IMODE(os.stat(target).st_mode) == 0o600
        victim = tmp_path / "victim"
        victim.write_text("untouched")
        (tmp_path / f"link.tmp-{os.getpid()}").symlink_to(victim)  # a planted temporary file
        with pytest.raises(privatedir.UnsafeDirectory):
            privatedir.write_private(tmp_path / "link", "x")
        assert victim.read_text() == "untouched"
    finally:
        os.umask(old)
