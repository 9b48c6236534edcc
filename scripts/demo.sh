#!/bin/bash
# demo.sh: the main job, end to end on this machine (idempotent; run as root).
# Installs what is needed, then through eveadm: starts a local registry (Debian's docker-registry on
# 127.0.0.1) holding a busybox image and pulls it into eveadm's image store, makes a `local` network
# (a bridge with its own subnet, DHCP/DNS from dnsmasq, NAT from nftables), boots a real VM (QEMU;
# software emulation when KVM is unusable) and a real OCI container (runc/crun) from the pulled
# image on it, lists them with their addresses, pings both, shows their console output, stops and
# deletes them, the network and the image.
# State lives in $EVEADM_ROOT (default /var/lib/eveadm-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export EVEADM_ARTIFACTS=${EVEADM_ARTIFACTS:-/var/cache/eveadm/artifacts}
export EVEADM_ROOT=${EVEADM_ROOT:-/var/lib/eveadm-demo}
EVEADM=(.venv/bin/eveadm)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ eveadm %s\n' "$*"; "${EVEADM[@]}" "$@"; }

# a previous demo that was interrupted: clean up its domains first
for alias in demo-vm demo-ct; do
  for uuid in $("${EVEADM[@]}" lookup alias="$alias"); do "${EVEADM[@]}" delete "$uuid" >/dev/null 2>&1 || true; done
done
"${EVEADM[@]}" network delete demo-lan >/dev/null 2>&1 || true
REGISTRY_DIR=$EVEADM_ROOT-registry
scripts/local-registry.sh stop "$REGISTRY_DIR"
trap 'scripts/local-registry.sh stop "$REGISTRY_DIR"' EXIT

wait_for_log() {  # UUID TEXT SECONDS: poll the console log until TEXT shows up
  local deadline=$(( $(date +%s) + $3 ))
  until "${EVEADM[@]}" info "$1" --log 200 2>/dev/null | grep -q "$2"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "demo: '$2' did not appear within $3 s" >&2; return 1; }
    sleep 0.2
  done
}

step "a local registry on 127.0.0.1 holding busybox:1; pull it into eveadm's image store (skopeo)"
REGISTRY=$(scripts/local-registry.sh start "$REGISTRY_DIR")
run image pull --tls-verify=false "$REGISTRY/busybox:1"
run image list

step "a local network: bridge ev-demo-lan, gateway 10.213.77.1, DHCP and DNS by dnsmasq, NAT by nftables"
echo '{"name": "demo-lan", "type": "local", "subnet": "10.213.77.0/24"}' > /tmp/eveadm-demo-net.json
run network create -f /tmp/eveadm-demo-net.json
run network list

G=$EVEADM_ARTIFACTS/guest
step "a VM: Debian kernel + busybox initramfs, booted by QEMU"
cat > /tmp/eveadm-demo-vm.json <<JSON
{"brand": "kvm", "alias": "demo-vm", "ram": 256, "vcpus": 1,
 "kernel": "$G/vmlinuz", "initrd": "$G/initramfs.cpio.gz", "cmdline": "console=ttyS0 panic=-1 quiet eveadm.net",
 "nics": [{"network": "demo-lan"}], "stop_timeout": 30}
JSON
run create -f /tmp/eveadm-demo-vm.json
VM=$("${EVEADM[@]}" lookup -1 alias=demo-vm)

step "a container from the pulled image, run by an OCI runtime"
cat > /tmp/eveadm-demo-ct.json <<JSON
{"brand": "container", "alias": "demo-ct", "image": "$REGISTRY/busybox:1", "ram": 64,
 "cmd": ["/bin/sh", "-c", "echo hello from the container, pid \$\$; trap 'echo bye; exit 0' TERM; while true; do sleep 1 & wait; done"],
 "env": {"GREETING": "hi"}, "nics": [{"network": "demo-lan"}]}
JSON
run create -f /tmp/eveadm-demo-ct.json
CT=$("${EVEADM[@]}" lookup -1 alias=demo-ct)

step "both are listed, with the address each has on demo-lan (the VM's from dnsmasq's DHCP)"
wait_for_log "$VM" EVEADM-GUEST-IP 180
run list -o uuid,type,state,alias,nics.0.ip

step "both answer on the network (ping from the host, through the bridge's gateway address)"
PING=$EVEADM_ARTIFACTS/rootfs/bin/busybox   # the image's static busybox: the host may have no ping
for uuid in "$VM" "$CT"; do
  addr=$("${EVEADM[@]}" list -H -o nics.0.ip uuid="$uuid")
  printf '$ ping -c 1 %s\n' "$addr"
  "$PING" ping -c 1 -W 5 "$addr"
done

step "console output"
wait_for_log "$VM" EVEADM-GUEST-READY 120
run info "$VM" --log 40
wait_for_log "$CT" "hello from the container" 30
run info "$CT" --log 5

step "stop: the VM powers off on the ACPI button, the container exits on SIGTERM"
run stop "$VM"
run stop "$CT"
run list -o uuid,type,state,alias,exit_status

step "delete both (removes what eveadm made for them: disks, taps, veths, addresses), then the network"
run delete "$VM"
run delete "$CT"
run network delete demo-lan
run image delete "$REGISTRY/busybox:1"
run image prune
run list
step "events journal of this demo"
run events | tail -n 30
echo; echo "demo: done"
