"""brand rkt end to end through the CLI (`python -m eveadm`), against the rkt simulator."""

import json

from test_rkt_backend import HASH


def payload(**kw):
    p = {"brand": "rkt", "alias": "pod1", "image": HASH, "ram": 128, "env": {"MODE": "test"},
         "nics": [{"mac": "02:16:3e:00:00:09", "bridge": "br0"}]}
    p.update(kw)
    return p


def test_cli_lifecycle_issues_the_seed_commands(rktsim, cli):
    rec = cli.create(payload(), "--paused")
    u = rec["uuid"]
    name = f"pod1.{u[:8]}"
    d = rktsim.root / "rkt"
    assert rec["state"] == "paused"
    runs = [c for c in rktsim.commands() if c["argv"][:1] == ["rkt"]]
    assert runs[0]["argv"] == ["rkt", f"--dir={d}", "--insecure-options=image", "run", HASH,
                               f"--stage1-path={rktsim.stage1}",
                               f"--uuid-file-save={rktsim.root / 'run' / u / 'rkt-pod-uuid'}",
                               f"--set-env-file={rktsim.root / 'domains' / u / 'rkt.env'}"]
    assert runs[0]["env"] == {"STAGE1_XL_OPTS": "-p",
                              "STAGE1_SEED_XL_CFG": str(rktsim.root / "domains" / u / "xl.cfg")}
    assert rktsim.xen()["domains"][name]["state"] == "paused"
    pod = rec["backend"]["pod"]

    n = len(rktsim.commands())
    cli.ok("start", u)
    tail = rktsim.argvs()[n:]
    domid = rktsim.xen()["domains"][name]["domid"]
    writes = [a for a in tail if a[0] == "xenstore"]
    assert len(writes) == 10
    assert writes[0] == ["xenstore", "write", f"/local/domain/0/backend/vif/{domid}/0/feature-sg", "0"]
    assert tail.index(["xl", "unpause", name]) > tail.index(writes[-1])
    assert cli.json("get", u)["state"] == "running"

    n = len(rktsim.commands())
    cli.ok("stop", u)
    tail = rktsim.argvs()[n:]
    assert ["rkt", f"--dir={d}", "stop", pod] in tail
    assert ["rkt", f"--dir={d}", "rm", pod] in tail
    assert ["rkt", f"--dir={d}", "stop", pod, "--force=true"] not in tail
    assert cli.json("get", u)["state"] == "stopped"

    cli.ok("start", u)
    pod2 = cli.json("get", u)["backend"]["pod"]
    assert pod2 != pod
    n = len(rktsim.commands())
    cli.ok("stop", "-F", u)
    tail = rktsim.argvs()[n:]
    assert ["rkt", f"--dir={d}", "stop", pod2, "--force=true"] in tail
    assert ["rkt", f"--dir={d}", "stop", pod2] not in tail

    cli.ok("delete", u)
    assert cli("get", u).returncode == 4
    assert not (d / "pods" / "run" / pod2).exists()
    assert rktsim.xen()["domains"] == {}


def test_cli_render_prints_command_and_env(rktsim, cli, tmp_path):
    f = tmp_path / "p.json"
    p = payload(uuid="4a144db0-6b63-405a-b884-7760042023b1")
    f.write_text(json.dumps(p))
    out = cli.ok("validate", "create", "-f", str(f), "--render").stdout
    first = out.splitlines()[0]
    assert first.startswith("STAGE1_XL_OPTS=-p STAGE1_SEED_XL_CFG=")
    assert f" run {HASH} --stage1-path={rktsim.stage1} " in first and first.endswith("/rkt.env")
    assert 'name = "pod1.4a144db0"' in out


def test_killed_device_model_is_failed_qemu_crashed(rktsim, cli):
    import os

    rec = cli.create(payload(nics=[]))
    u = rec["uuid"]
    assert rec["state"] == "running"
    dm = rktsim.xen()["domains"][f"pod1.{u[:8]}"]["dm_pid"]
    os.kill(dm, 9)
    from eveadm.backends.host import wait_until
    from eveadm.backends.xen import device_model_pids
    assert wait_until(lambda: not device_model_pids(rec["domain_id"]), 5)
    got = cli.json("get", u)
    assert got["state"] == "failed"
    assert got["error"]["message"].startswith("qemu crashed - please restart application instance")
    cli.ok("delete", u)


def test_cli_stop_and_delete_of_a_paused_pod(rktsim, cli):
    """A paused pod gets no stop request, only destroy: rkt runs it, so destroy ends it
    (stop --force) and the engine's destroy of what remains removes it (rm)."""
    rec = cli.create(payload(nics=[]), "--paused")
    u, pod = rec["uuid"], rec["backend"]["pod"]
    d = rktsim.root / "rkt"
    n = len(rktsim.commands())
    cli.ok("stop", u)
    tail = [a for a in rktsim.argvs()[n:] if a[0] == "rkt" and a[2] != "status"]
    assert tail == [["rkt", f"--dir={d}", "stop", pod, "--force=true"], ["rkt", f"--dir={d}", "rm", pod]]
    assert cli.json("get", u)["state"] == "stopped"
    assert not (d / "pods" / "run" / pod).exists() and rktsim.xen()["domains"] == {}

    pod2 = cli.create(payload(nics=[], alias="pod2"), "--paused")["backend"]["pod"]
    cli.ok("delete", "pod2")
    assert not (d / "pods" / "run" / pod2).exists() and rktsim.xen()["domains"] == {}
