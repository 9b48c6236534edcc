#!/bin/sh
# build-guest.sh [OUTDIR]
#
# Build the small Linux guest the kvm brand's tests and benchmarks boot, from
# Debian packages only (no network besides the Debian apt mirror; nothing is
# installed on the host):
#   OUTDIR/vmlinuz            kernel of linux-image-<ver>-cloud-amd64 (LZ4: fast under TCG)
#   OUTDIR/initramfs.cpio.gz  busybox-static initramfs, /init described below
#   OUTDIR/guest.json         what was built (kernel package, recipe digest)
#
# OUTDIR defaults to $EVEADM_ARTIFACTS/guest ($EVEADM_ARTIFACTS defaults to
# /var/cache/eveadm/artifacts). Cached: when OUTDIR already holds a complete
# guest built by this very script (guest.json's recipe is the script's digest),
# the script prints its paths and does nothing; any edit to it rebuilds.
#
# The guest's /init (ttyS0 is the console; pass console=ttyS0 on the cmdline):
#   - loads evdev.ko + button.ko and starts busybox acpid so that the ACPI power
#     button (QMP system_powerdown) powers the guest off (`poweroff -f`);
#   - loads pvpanic.ko + pvpanic-mmio.ko (QEMU's ISA pvpanic device, ACPI QEMU0001) so that
#     a kernel panic is reported to QEMU (run state guest-panicked);
#   - prints `EVEADM-GUEST-READY uptime=<s>` once it can handle the power button;
#   - runs a shell on the console, respawned forever.
# Kernel command-line flags understood by /init:
#   eveadm.ignore_powerbutton  do not start acpid: the guest ignores system_powerdown
#   eveadm.poweroff            power off by itself right after the ready line
#   eveadm.vda                 for each virtio disk /dev/vdX print `EVEADM-DISK vdX BEFORE=<first
#                              16 bytes>` then write `WRITTEN-BY-GUEST` there; then `EVEADM-DISKS-DONE`
#   eveadm.cidata              mount the NoCloud cdrom (virtio-scsi) and print
#                              `EVEADM-CIDATA <volume label> <first line of user-data>`
#                              and, when meta-data names one, `EVEADM-GUEST-HOSTNAME <local-hostname>`
#   eveadm.panic               print `EVEADM-GUEST-PANIC` after the ready line, then panic the
#                              kernel (`echo c > /proc/sysrq-trigger`)
#   eveadm.net                 load virtio_net (+ failover, net_failover), bring up eth0 and ask for
#                              an address with busybox udhcpc; print `EVEADM-GUEST-IP eth0 <addr>/<prefix>`
#                              when bound, `EVEADM-GUEST-NO-IP eth0` when no server answered
#   eveadm.ip=<addr>/<prefix>  (with eveadm.net) a static address instead of DHCP, printed the same way;
#                              eveadm.gw=<addr> adds the default route
#   eveadm.hotplug             load virtio_blk, virtio_net and virtio_balloon, then report the devices on
#                              the console whenever they change (hot-added or removed disks, nics, CPUs):
#                              `EVEADM-GUEST-DEVICES block=vda,vdb net=eth0,eth1 cpus=<online count>`;
#                              hot-added CPUs are brought online (as udev would); PCI hotplug itself
#                              (ACPI and PCIe native) is built into Debian's kernel
#
# Host tools: apt-get, apt-cache, dpkg-deb, tar, gzip (busybox provides cpio).
set -eu

# The recipe is this script's own digest: any change to it rebuilds a cached guest.
RECIPE=$(sha256sum "$0" | cut -c1-16)
ART=${EVEADM_ARTIFACTS:-/var/cache/eveadm/artifacts}
OUT=${1:-$ART/guest}

complete() {
    [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initramfs.cpio.gz" ] && [ -s "$OUT/guest.json" ] &&
        grep -q "\"recipe\": \"$RECIPE\"" "$OUT/guest.json"
}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if complete; then
    echo "guest: $OUT (cached)"
    exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/eveadm-guest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
cd "$WORK"

# The meta package names the current versioned image package.
KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$KPKG" ]; then
    apt-get update -q >/dev/null
    KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
[ -n "$KPKG" ] || { echo "build-guest.sh: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }

# apt-get download writes into the cwd; the _apt sandbox user must be able to write it.
chmod 777 "$WORK"
apt-get download -q "$KPKG" busybox-static >/dev/null

mkdir kx bbx
dpkg-deb --fsys-tarfile "$KPKG"_*.deb | tar -x -C kx ./boot ./lib/modules
dpkg-deb -x busybox-static_*.deb bbx
KVER=$(ls kx/lib/modules)
MODS=kx/lib/modules/$KVER/kernel

R=$WORK/root
mkdir -p "$R"/bin "$R"/sbin "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/mnt "$R"/etc/acpi/PWRF "$R"/lib/modules
cp bbx/bin/busybox "$R"/bin/busybox
# power button path (both =m in Debian kernels)
for m in drivers/input/evdev drivers/acpi/button \
         drivers/virtio/virtio drivers/virtio/virtio_ring drivers/virtio/virtio_pci_legacy_dev \
         drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk \
         drivers/scsi/scsi_common drivers/scsi/scsi_mod drivers/cdrom/cdrom drivers/scsi/sr_mod \
         drivers/scsi/virtio_scsi fs/isofs/isofs drivers/misc/pvpanic/pvpanic drivers/misc/pvpanic/pvpanic-mmio \
         net/core/failover drivers/net/net_failover drivers/net/virtio_net drivers/virtio/virtio_balloon; do
    cp "$MODS/$m.ko" "$R/lib/modules/"
done

# busybox acpid: event PWRF runs /etc/acpi/PWRF/00000080
echo 'PWRF PWRF/00000080' > "$R"/etc/acpid.conf
cat > "$R"/etc/acpi/PWRF/00000080 <<'SH'
#!/bin/sh
echo "EVEADM-GUEST-POWERDOWN" > /dev/console
poweroff -f
SH
# busybox poweroff without -f only signals PID 1 (our script): force it.
printf '#!/bin/sh\nexec /bin/busybox poweroff -f\n' > "$R"/sbin/poweroff
printf '#!/bin/sh\nexec /bin/busybox reboot -f\n' > "$R"/sbin/reboot
chmod 755 "$R"/etc/acpi/PWRF/00000080 "$R"/sbin/poweroff "$R"/sbin/reboot

# udhcpc's event script (what busybox's examples/udhcp/simple.script does, IPv4 only): set the
# address and the default route, then say the address on the console
mkdir -p "$R"/etc/udhcpc
cat > "$R"/etc/udhcpc/default.script <<'SH'
#!/bin/sh
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    echo "EVEADM-GUEST-IP $interface $ip/$mask" > /dev/console
    ;;
esac
exit 0
SH
chmod 755 "$R"/etc/udhcpc/default.script

cat > "$R"/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
CMDLINE=" $(cat /proc/cmdline) "
has() { case "$CMDLINE" in *" $1 "*) return 0 ;; esac; return 1; }
# value of a `key=value` word of the cmdline (empty when absent)
arg() { for w in $CMDLINE; do case "$w" in "$1="*) echo "${w#*=}"; return ;; esac; done; }
mods() { for m in "$@"; do insmod /lib/modules/$m.ko 2>/dev/null; done; }

mods pvpanic pvpanic-mmio
if has eveadm.ignore_powerbutton; then
    echo "EVEADM-GUEST-IGNORING-POWERBUTTON"
else
    mods evdev button
    # devtmpfs creates the event nodes asynchronously: wait for all of them, then for acpid
    # (which daemonizes) to hold them open, so the ready line means "the power button works"
    want=$(ls -d /sys/class/input/event* 2>/dev/null | wc -l)
    for i in $(seq 100); do [ "$(ls /dev/input/event* 2>/dev/null | wc -l)" -ge "$want" ] && break; sleep 0.01; done
    acpid -c /etc/acpi -a /etc/acpid.conf -l /tmp/acpid.log
    for i in $(seq 200); do
        P=$(pidof acpid) && [ "$(ls -l /proc/$P/fd 2>/dev/null | grep -c /dev/input/event)" -ge "$want" ] && break
        sleep 0.01
    done
fi
echo "EVEADM-GUEST-READY uptime=$(cut -d' ' -f1 /proc/uptime)"

if has eveadm.vda || has eveadm.cidata || has eveadm.net; then
    mods virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
fi
if has eveadm.vda; then
    mods virtio_blk
    for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
    for d in /dev/vd?; do
        [ -b "$d" ] || continue
        BEFORE=$(dd if="$d" bs=16 count=1 2>/dev/null | tr -c 'A-Za-z0-9-' '.')
        echo "EVEADM-DISK ${d#/dev/} BEFORE=$BEFORE"
        printf 'WRITTEN-BY-GUEST' | dd of="$d" bs=16 count=1 conv=notrunc,fsync 2>/dev/null
    done
    sync
    echo "EVEADM-DISKS-DONE"
fi
if has eveadm.cidata; then
    mods scsi_common scsi_mod cdrom sr_mod virtio_scsi isofs
    for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/sr0 ] && break; sleep 0.2; done
    if mount -t iso9660 -o ro /dev/sr0 /mnt 2>/dev/null; then
        # ISO 9660 volume id: 32 bytes at offset 40 of the primary volume descriptor (sector 16)
        LABEL=$(dd if=/dev/sr0 bs=1 skip=32808 count=32 2>/dev/null | tr -d ' ')
        echo "EVEADM-CIDATA $LABEL $(head -n 1 /mnt/user-data)"
        HN=$(sed -n 's/^local-hostname: *//p' /mnt/meta-data | head -n 1)
        [ -n "$HN" ] && hostname "$HN" && echo "EVEADM-GUEST-HOSTNAME $HN"
        umount /mnt
    else
        echo "EVEADM-CIDATA-MISSING"
    fi
fi
if has eveadm.net; then
    mods failover net_failover virtio_net
    for i in $(seq 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
    ip link set dev lo up
    ip link set dev eth0 up
    STATIC=$(arg eveadm.ip)
    if [ -n "$STATIC" ]; then
        ip addr add "$STATIC" dev eth0
        GW=$(arg eveadm.gw)
        [ -n "$GW" ] && ip route add default via "$GW" dev eth0
        echo "EVEADM-GUEST-IP eth0 $STATIC"
    else
        # -q: quit once bound (the address stays); -n: give up after the tries instead of backgrounding
        udhcpc -i eth0 -s /etc/udhcpc/default.script -q -n -t 20 -T 1 -x hostname:"$(hostname)" >/dev/null 2>&1 ||
            echo "EVEADM-GUEST-NO-IP eth0"
    fi
fi
if has eveadm.hotplug; then
    mods virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
         failover net_failover virtio_net virtio_balloon
    devices() {
        B=$(ls /sys/block | grep -v -e '^loop' -e '^ram' | tr '\n' ',')
        N=$(ls /sys/class/net | grep -vx lo | tr '\n' ',')
        echo "block=${B%,} net=${N%,} cpus=$(grep -c '^processor' /proc/cpuinfo)"
    }
    (
        last=
        while true; do
            for f in /sys/devices/system/cpu/cpu*/online; do
                [ -e "$f" ] && [ "$(cat "$f")" = 0 ] && echo 1 > "$f" 2>/dev/null
            done
            now=$(devices)
            [ "$now" != "$last" ] && echo "EVEADM-GUEST-DEVICES $now" > /dev/console && last=$now
            sleep 0.3
        done
    ) &
fi
if has eveadm.panic; then
    echo "EVEADM-GUEST-PANIC"
    echo c > /proc/sysrq-trigger
fi
if has eveadm.poweroff; then
    echo "EVEADM-GUEST-POWEROFF"
    poweroff -f
fi
# interactive shell on the serial console, respawned forever
while true; do setsid -c sh </dev/console >/dev/console 2>&1; sleep 1; done
INIT
chmod 755 "$R"/init

(cd "$R" && find . | sort | ./bin/busybox cpio -o -H newc -R 0:0 2>/dev/null) | gzip -9 > initramfs.cpio.gz
cp "kx/boot/vmlinuz-$KVER" vmlinuz
# install atomically: files first, the stamp that marks the guest complete last
rm -f "$OUT/guest.json"
mv vmlinuz "$OUT/vmlinuz.tmp" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv initramfs.cpio.gz "$OUT/initramfs.cpio.gz.tmp" && mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
printf '{"kernel_package": "%s", "kernel_version": "%s", "recipe": "%s"}\n' "$KPKG" "$KVER" "$RECIPE" > "$OUT/guest.json.tmp"
mv "$OUT/guest.json.tmp" "$OUT/guest.json"
echo "guest: $OUT (kernel $KPKG, initramfs $(stat -c %s "$OUT/initramfs.cpio.gz") bytes)"
