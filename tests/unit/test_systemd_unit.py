"""The shipped systemd unit: valid for systemd, runs the eveadm setup installs, spares the domains.

No systemd runs as PID 1 on the machines these tests run on (containers), so the unit is checked with
`systemd-analyze verify` and by reading it; docs/design.md says so."""

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "eveadm-agent.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit_without_a_warning():
    proc = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_the_unit_runs_the_installed_eveadm_and_never_kills_the_domains():
    service = unit()["Service"]
    program = service["ExecStart"].split()[0]
    assert program == "/usr/local/bin/eveadm" and service["ExecStart"].split()[1:] == ["agent"]
    if Path(program).exists():  # scripts/setup.sh links it
        assert subprocess.run([program, "--version"], capture_output=True, timeout=60).returncode == 0
    # QEMU and conmon run in the unit's cgroup: only the agent may be stopped on stop/restart
    assert service["KillMode"] == "process" and service["KillSignal"] == "SIGTERM"
    u = unit()["Unit"]
    assert "network-online.target" in u["Wants"] and "network-online.target" in u["After"]
