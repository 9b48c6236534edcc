"""The rkt backend issues exactly domainmgr's rkt/xl/xenstore command lines (read back
from <root>/log/commands.jsonl), against the strict simulator in sim/."""

import os
import subprocess
import sys
import uuid as uuidlib

import pytest

from eveadm.backends import facts
from eveadm.backends.base import ABSENT, CRASHED, FORCED, GRACEFUL, PAUSED, RUNNING, SHUTDOWN, Domain
from eveadm.backends.host import BackendContext, wait_until
from eveadm.backends.rkt import RktBackend
from eveadm.backends.xen import OFFLOAD_FEATURES, device_model_pids, offload_keys
from eveadm.errors import BackendError, BackendUnavailable

HASH = "sha512-" + "ab" * 32


def make(sim, nics=1, env=None, alias=None):
    u = str(uuidlib.uuid4())
    config = {"uuid": u, "brand": "rkt", "image": HASH, "vcpus": 1, "ram": 128, "disks": [],
              "nics": [{"mac": f"02:16:3e:00:00:{i:02x}", "model": "virtio", "bridge": "br0"} for i in range(nics)],
              "pci_devices": [], "env": env if env is not None else {"A": "1", "B": "two words"},
              "cloud_init": None}
    if alias:
        config["alias"] = alias
    ctx = BackendContext(sim.root)
    dom = Domain(u, config, {}, sim.root / "domains" / u, sim.root / "run" / u)
    dom.data_dir.mkdir(parents=True)
    dom.run_dir.mkdir(parents=True)
    return RktBackend(ctx, facts("rkt")), dom


def test_create_paused_is_the_seed_command_line(rktsim):
    be, dom = make(rktsim, alias="web")
    be.check_available()
    be.prepare(dom)
    created = be.create_paused(dom)
    cmds = rktsim.commands()
    d = rktsim.root / "rkt"
    cfg = dom.data_dir / "xl.cfg"
    assert cmds[0]["argv"] == [
        "rkt", f"--dir={d}", "--insecure-options=image", "run", HASH,
        "--stage1-path=" + str(rktsim.stage1), f"--uuid-file-save={dom.run_dir / 'rkt-pod-uuid'}",
        f"--set-env-file={dom.data_dir / 'rkt.env'}"]
    env_file = dom.data_dir / "rkt.env"      # env values stay out of argv and the command log
    assert env_file.read_text() == "A=1\nB=two words\n" and env_file.stat().st_mode & 0o077 == 0
    assert "two words" not in (rktsim.root / "log" / "commands.jsonl").read_text()
    assert cmds[0]["env"] == {"STAGE1_XL_OPTS": "-p", "STAGE1_SEED_XL_CFG": str(cfg)}
    assert cmds[1]["argv"] == ["xl", "domid", f"web.{dom.uuid[:8]}"]
    assert cmds[2]["argv"] == ["xl", "list"]  # the verification behind the returned Status
    assert len(cmds) == 3
    pod = (dom.run_dir / "rkt-pod-uuid").read_text()
    assert dom.backend["pod"] == pod
    assert dom.backend["domid"] == rktsim.xen()["domains"][f"web.{dom.uuid[:8]}"]["domid"]
    # the seed cfg stage1-xen reads: the xen rendering, with the domain name xl will know
    text = cfg.read_text()
    assert f'name = "web.{dom.uuid[:8]}"' in text
    assert "vif = [ 'bridge=br0,mac=02:16:3e:00:00:00,type=vif' ]" in text
    assert created.state == PAUSED and created.domain_id == dom.backend["domid"] and created.detail["pod"] == pod
    assert be.status([dom])[dom.uuid] == created


def test_activate_writes_ten_offload_keys_per_vif_then_unpauses(rktsim):
    be, dom = make(rktsim, nics=2)
    be.prepare(dom)
    be.create_paused(dom)
    n = len(rktsim.commands())
    started = be.unpause(dom)
    domid = dom.backend["domid"]
    tail = rktsim.argvs()[n:]
    keys = []
    for i in range(2):
        keys += [f"/local/domain/0/backend/vif/{domid}/{i}/{f}" for f in OFFLOAD_FEATURES]
        keys += [f"/local/domain/{domid}/device/vif/{i}/{f}" for f in OFFLOAD_FEATURES]
    assert keys == offload_keys(domid, 2) and len(keys) == 20
    assert tail == [["xenstore", "write", k, "0"] for k in keys] + [["xl", "unpause", dom.uuid], ["xl", "list"]]
    store = rktsim.xen()["xenstore"]
    assert all(store[k] == "0" for k in keys)
    assert started.state == RUNNING and started.domain_id == domid


def running_pod(rktsim):
    """A started pod without VIFs: (backend, domain, pod uuid, rkt data dir, commands so far)."""
    be, dom = make(rktsim, nics=0)
    be.prepare(dom)
    be.create_paused(dom)
    be.unpause(dom)
    return be, dom, dom.backend["pod"], rktsim.root / "rkt", len(rktsim.commands())


def test_stop_then_rm(rktsim):
    be, dom, pod, d, n = running_pod(rktsim)
    be.shutdown(dom, GRACEFUL, 10)
    st = be.status([dom])[dom.uuid]
    assert st.state == SHUTDOWN and st.exit_status == 0
    be.destroy(dom)  # the exited pod: removed
    assert be.status([dom])[dom.uuid].state == ABSENT
    assert rktsim.argvs()[n:] == [
        ["rkt", f"--dir={d}", "stop", pod],
        ["xl", "list"], ["rkt", f"--dir={d}", "status", pod, "--format=json"],
        ["rkt", f"--dir={d}", "status", pod, "--format=json"], ["rkt", f"--dir={d}", "rm", pod],
        ["xl", "list"],
    ]
    assert not (d / "pods" / "run" / pod).exists()
    n = len(rktsim.commands())
    removed = be.release(dom, delete=True)
    assert rktsim.argvs()[n:] == []  # destroy removed the pod: nothing left to ask rkt
    assert str(dom.data_dir / "xl.cfg") in removed and not (dom.data_dir / "xl.cfg").exists()


def test_forced_stop_sends_one_request(rktsim):
    be, dom, pod, d, n = running_pod(rktsim)
    be.shutdown(dom, FORCED, 10)
    assert rktsim.argvs()[n:] == [["rkt", f"--dir={d}", "stop", pod, "--force=true"]]
    assert be.status([dom])[dom.uuid].state == SHUTDOWN
    be.shutdown(dom, FORCED, 10)  # the pod no longer runs: not an error
    be.shutdown(dom, GRACEFUL, 10)


def test_destroy_is_one_command_per_call(rktsim):
    """rkt refuses to remove a pod it runs: destroy ends it (stop --force) and the next destroy,
    which the engine sends for what remains, removes it. No call escalates on its own."""
    be, dom, pod, d, n = running_pod(rktsim)
    status = ["rkt", f"--dir={d}", "status", pod, "--format=json"]
    be.destroy(dom)
    assert rktsim.argvs()[n:] == [status, ["rkt", f"--dir={d}", "stop", pod, "--force=true"]]
    assert be.status([dom])[dom.uuid].state == SHUTDOWN
    n = len(rktsim.commands())
    be.destroy(dom)
    assert rktsim.argvs()[n:] == [status, ["rkt", f"--dir={d}", "rm", pod]]
    assert be.status([dom])[dom.uuid].state == ABSENT and "pod" not in dom.backend
    be.destroy(dom)  # already gone: fine
    be.shutdown(dom, FORCED, 10)


def test_destroy_of_a_paused_pod_then_release_leaves_nothing(rktsim):
    """The engine's path after a failed unpause: one destroy, then release."""
    be, dom = make(rktsim, nics=0)
    be.prepare(dom)
    be.create_paused(dom)
    pod, d = dom.backend["pod"], rktsim.root / "rkt"
    be.destroy(dom)
    assert rktsim.xen()["domains"] == {}
    n = len(rktsim.commands())
    be.release(dom)
    assert rktsim.argvs()[n:] == [["rkt", f"--dir={d}", "rm", pod]]
    assert not (d / "pods" / "run" / pod).exists()
    assert be.status([dom])[dom.uuid].state == ABSENT


def test_destroy_without_pod_removes_an_orphan_stage1_domain(rktsim):
    """`rkt run` failed before writing the pod uuid, but stage1-xen already made the paused domain."""
    be, dom = make(rktsim, nics=0)
    be.prepare(dom)
    be.create_paused(dom)
    dom.backend.pop("pod")
    n = len(rktsim.commands())
    be.destroy(dom)
    assert rktsim.argvs()[n:] == [["xl", "list"], ["xl", "destroy", dom.uuid]]
    assert rktsim.xen()["domains"] == {}


def test_status_is_a_pure_read(rktsim):
    be, dom, pod, d, n = running_pod(rktsim)
    be.shutdown(dom, GRACEFUL, 10)  # exited: status asks both xl and rkt

    def world():  # what the domain, Xen and rkt hold (not the simulators' own call log)
        xen = rktsim.xen()
        return dict(dom.backend), xen["domains"], xen["xenstore"], (d / "pods" / "run" / pod / "pod.json").read_text()

    before = world()
    n = len(rktsim.commands())
    assert be.status([dom])[dom.uuid].state == SHUTDOWN
    assert [a[1] if a[0] == "xl" else a[2] for a in rktsim.argvs()[n:]] == ["list", "status"]
    assert world() == before


def test_status_asks_xl_once_for_all_live_pods(rktsim):
    pairs = [make(rktsim, nics=0) for _ in range(3)]
    be = pairs[0][0]
    for _, dom in pairs:
        be.prepare(dom)
        be.create_paused(dom)
    assert pairs[1][0].unpause(pairs[1][1]).state == RUNNING
    n = len(rktsim.commands())
    sts = be.status([d for _, d in pairs])
    assert rktsim.argvs()[n:] == [["xl", "list"]]
    assert [sts[d.uuid].state for _, d in pairs] == [PAUSED, RUNNING, PAUSED]


def test_dead_device_model_is_qemu_crashed_with_exact_domid(rktsim):
    """domainmgr's `pgrep -f "domid 1"` matched `domid 12`; eveadm compares whole argv words."""
    be, dom = make(rktsim, nics=0)
    be.prepare(dom)
    be.create_paused(dom)
    be.unpause(dom)
    domid = dom.backend["domid"]
    assert domid == 1
    dm = rktsim.xen()["domains"][dom.uuid]["dm_pid"]
    # a live device model of domain 12 must not hide the death of domain 1's
    other = subprocess.Popen([sys.executable, "-c", "import signal; signal.alarm(60); signal.pause()", "-xen-domid", "12"])
    try:
        assert wait_until(lambda: device_model_pids(12) == [other.pid], 5)
        assert device_model_pids(1) == [dm]
        os.kill(dm, 9)
        assert wait_until(lambda: not device_model_pids(1), 5)
        assert wait_until(lambda: device_model_pids(12) == [other.pid], 5), f"domid 12 stand-in: rc={other.poll()}"
        st = be.status([dom])[dom.uuid]
        assert st.state == CRASHED and st.error == "qemu crashed - please restart application instance"
    finally:
        other.kill()
        other.wait()


def test_render_shows_command_and_environment(rktsim):
    be, dom = make(rktsim, nics=1, env={"K": "v w"})
    text = be.render(dom)
    first = text.splitlines()[0]
    assert first == (f"STAGE1_XL_OPTS=-p STAGE1_SEED_XL_CFG={dom.data_dir / 'xl.cfg'} rkt "
                     f"--dir={rktsim.root / 'rkt'} --insecure-options=image run {HASH} "
                     f"--stage1-path={rktsim.stage1} --uuid-file-save={dom.run_dir / 'rkt-pod-uuid'} "
                     f"--set-env-file={dom.data_dir / 'rkt.env'}")
    assert f'name = "{dom.uuid}"' in text and 'type = "pvh"' in text
    assert not (dom.data_dir / "xl.cfg").exists()  # render has no side effects


def test_settings_move_dir_stage1_and_binary(rktsim, tmp_path, monkeypatch):
    other = tmp_path / "persist-rkt"
    monkeypatch.setenv("EVEADM_RKT_DIR", str(other))
    be, dom = make(rktsim, nics=0, env={})
    be.prepare(dom)
    be.create_paused(dom)
    assert rktsim.argvs()[0][:2] == ["rkt", f"--dir={other}"]
    assert (other / "pods" / "run" / dom.backend["pod"] / "pod.json").exists()
    monkeypatch.setenv("EVEADM_RKT_STAGE1", str(tmp_path / "nope.aci"))
    with pytest.raises(BackendUnavailable, match="stage1-xen image .*nope.aci"):
        be.check_available()
    monkeypatch.setenv("EVEADM_RKT_BIN", "rkt-not-installed")
    with pytest.raises(BackendUnavailable, match="brand rkt needs rkt-not-installed"):
        be.check_available()


def test_simulator_is_strict(rktsim):
    """The simulator refuses what real rkt / stage1-xen would not take, so the exact-argv tests mean something."""
    d = str(rktsim.root / "rkt")
    cfg = rktsim.tmp / "x.cfg"
    cfg.write_text('name = "x"\n')
    env = dict(os.environ, STAGE1_XL_OPTS="-p", STAGE1_SEED_XL_CFG=str(cfg))
    base = ["rkt", f"--dir={d}", "--insecure-options=image", "run", HASH, f"--stage1-path={rktsim.stage1}",
            f"--uuid-file-save={rktsim.tmp / 'u'}"]
    bad = [
        base[:2] + base[3:],  # no --insecure-options=image
        base + ["--env=A=1"],  # unknown flag
        base[:4] + base[5:] + [HASH],  # flags before the image
        ["rkt", "run", HASH],  # no --dir
        ["rkt", f"--dir={d}", "status", "not-a-uuid", "--format=json"],
    ]
    for argv in bad:
        r = subprocess.run(argv, env=env, capture_output=True, text=True)
        assert r.returncode == 254, argv
    r = subprocess.run(base, env=dict(env, STAGE1_XL_OPTS="-v"), capture_output=True, text=True)
    assert r.returncode == 254 and "STAGE1_XL_OPTS" in r.stderr
    r = subprocess.run(base, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert rktsim.xen()["domains"]["x"]["state"] == "paused"


def test_failed_run_is_one_line_error(rktsim):
    be, dom = make(rktsim, nics=0)
    be.prepare(dom)
    be.create_paused(dom)
    be2, dom2 = make(rktsim, nics=0)
    dom2.config["alias"] = None
    # same Xen name as the first domain: stage1-xen's xl create refuses it
    dom2.uuid = dom.uuid
    be2.prepare(dom2)
    with pytest.raises(BackendError) as exc:
        be2.create_paused(dom2)
    assert "\n" not in str(exc.value) and "already exists" in str(exc.value)


def test_alias_change_keeps_the_running_name(rktsim):
    """An alias may change while the domain runs (update is live): Xen still knows the old name."""
    be, dom = make(rktsim, nics=0, alias="old")
    be.prepare(dom)
    be.create_paused(dom)
    dom.config["alias"] = "new"
    assert be.status([dom])[dom.uuid].state == PAUSED
    assert be.unpause(dom).state == RUNNING
    assert rktsim.argvs()[-2:] == [["xl", "unpause", f"old.{dom.uuid[:8]}"], ["xl", "list"]]


def test_cloud_init_user_data_is_the_pods_environment_not_a_seed_iso(rktsim):
    """EVE's rktRun: user data's KEY=VALUE (and Key:Value) lines become the pod's environment, and a
    pod gets no cloud-init ISO; `env` wins over user data, and values stay out of argv."""
    be, dom = make(rktsim, env={"B": "from env"})
    dom.config["cloud_init"] = {"user_data": "#cloud-config\nA=1\nB=from user data\nurl=http://h:80/x\n"
                                             "Key: Value\nnot a variable\n"}
    dom.config["customer_metadata"] = {"k": "v"}  # would give a VM a seed
    be.prepare(dom)
    be.create_paused(dom)
    argv = rktsim.commands()[0]["argv"]
    assert argv[-1] == f"--set-env-file={be.env_file(dom)}"
    assert not [a for a in argv if a.startswith("--set-env=")]
    pod_env = {"A": "1", "B": "from env", "url": "http://h:80/x", "Key": "Value"}
    assert rktsim.pod_env(dom.backend["pod"]) == pod_env
    assert "from user data" not in (rktsim.root / "log" / "commands.jsonl").read_text()
    assert not (dom.data_dir / "cidata.iso").exists() and "cidata" not in (dom.data_dir / "xl.cfg").read_text()
    assert "genisoimage" not in [c["argv"][0] for c in rktsim.commands()]


def test_user_data_alone_still_reaches_the_pod(rktsim):
    be, dom = make(rktsim, env={})
    dom.config["cloud_init"] = {"user_data": "ONLY=here\n"}
    be.prepare(dom)
    be.create_paused(dom)
    assert rktsim.pod_env(dom.backend["pod"]) == {"ONLY": "here"}
