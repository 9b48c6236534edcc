#!/bin/bash
# setup.sh [--tests] [--xen]: make this Debian machine ready to run eveadm (idempotent; run as root).
#   - Debian packages: QEMU (software emulation works without KVM), qemu-img, genisoimage (cloud-init
#     ISO), runc + crun, conmon (the per-container monitor), umoci (OCI image layouts), skopeo (image
#     pulls), docker-registry (a local registry for the demo and tests), dnsmasq-base + nftables + the
#     CNI plugins (networks)
#   - a virtualenv at .venv with eveadm installed (editable) and, with --tests, pytest; eveadm linked
#     into /usr/local/bin (on PATH) and its man page into /usr/local/share/man/man8 (`man eveadm`)
#   - the guest kernel + initramfs and the container root filesystem, built from Debian packages into
#     $EVEADM_ARTIFACTS (default /var/cache/eveadm/artifacts); cached, so a rerun is quick
#   - with --xen: the Xen 4.17 hypervisor + dom0 images for the real-Xen test stage
set -euo pipefail
cd "$(dirname "$0")/.."
TESTS=0; XEN=0
for a in "$@"; do
  case "$a" in --tests) TESTS=1;; --xen) XEN=1;; *) echo "setup.sh: unknown option $a" >&2; exit 2;; esac
done
export EVEADM_ARTIFACTS=${EVEADM_ARTIFACTS:-/var/cache/eveadm/artifacts}
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (apt-get, QEMU, OCI runtimes)" >&2; exit 1; }

PKGS="qemu-system-x86 qemu-utils genisoimage runc crun conmon umoci util-linux iproute2 procps"
PKGS="$PKGS dnsmasq-base nftables containernetworking-plugins"   # networks: DHCP/DNS, NAT, container veths
# images: skopeo pulls into the image store; docker-registry is the local registry the demo and the
# tests start themselves (scripts/local-registry.sh), never the package's own service
PKGS="$PKGS skopeo docker-registry"
PKGS="$PKGS ovmf"   # kvm: the UEFI firmware of virt_mode fml when the payload names none
[ "$TESTS" = 1 ] && PKGS="$PKGS systemd iputils-ping"   # systemd-analyze verifies the unit; ping in netns tests
[ "$TESTS" = 1 ] && PKGS="$PKGS man-db"   # the tests render eveadm(8) and look it up as `man eveadm` does
[ "$TESTS" = 1 ] && PKGS="$PKGS openssh-server"   # the Ansible fleet test starts its own sshd on a free loopback port
[ "$TESTS" = 1 ] && PKGS="$PKGS prometheus"   # the metrics tests start their own server on a free loopback port
[ "$TESTS" = 1 ] && PKGS="$PKGS git"   # a test lists the repository's files with `git ls-files`
[ "$XEN" = 1 ] && PKGS="$PKGS libyajl2"   # build-xen.sh copies it into dom0 (xl needs it; crun brings it today)
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$missing python3-venv"
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
  # services these packages start on install, on every address: a registry on :5000, Prometheus on
  # :9090, sshd on :22. Not wanted on a node; the demo and the tests start their own on loopback.
  for pkg_service in docker-registry:docker-registry prometheus:prometheus openssh-server:ssh; do
    case " $missing " in
      *" ${pkg_service%%:*} "*) [ -d /run/systemd/system ] && systemctl disable --now "${pkg_service#*:}.service" || true;;
    esac
  done
fi
# build scripts need an up-to-date package index for `apt-get download`
if [ -z "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial)" ]; then apt-get update -q; fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
extras=""; [ "$TESTS" = 1 ] && extras="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras"
.venv/bin/python -m compileall -q src >/dev/null   # start-up speed even where PYTHONDONTWRITEBYTECODE is set
ln -sfn "$PWD/.venv/bin/eveadm" /usr/local/bin/eveadm   # on PATH, where contrib/eveadm-agent.service runs it
# `man eveadm`: the page the install above generated from this tree (an editable install does not place it)
mkdir -p /usr/local/share/man/man8
ln -sfn "$PWD/man/eveadm.8" /usr/local/share/man/man8/eveadm.8

scripts/build-guest.sh "$EVEADM_ARTIFACTS/guest"
scripts/build-rootfs.sh "$EVEADM_ARTIFACTS/rootfs"
if [ "$XEN" = 1 ]; then
  t0=$(date +%s)
  scripts/build-xen.sh "$EVEADM_ARTIFACTS/xen"
  echo "setup: xen artifacts ready in $(( $(date +%s) - t0 ))s"
fi
