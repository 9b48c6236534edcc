#!/bin/bash
# build-xen.sh [OUTDIR]  -- artifacts for eveadm's real-Xen test stage (tests/integration/xen).
#
# Xen 4.17 from Debian boots nested in QEMU TCG with a Debian *std* kernel as PV dom0
# (HVM/PVH guests need VMX, which TCG lacks: PV guests only). Nothing is installed on
# the host: the Xen debs are fetched with `apt-get download` and unpacked with dpkg-deb.
#
#   OUTDIR/xen.elf               gunzipped xen-4.17-amd64.gz (multiboot ELF for qemu -kernel)
#   OUTDIR/vmlinuz               Debian std kernel: dom0 and PV domU kernel
#   OUTDIR/dom0-initramfs.cpio.gz busybox, xl/xenstored/xenconsoled + libs, Xen + virtio-9p
#                                modules; /init starts the toolstack, mounts the host's /
#                                (virtio-9p tag "host", if present) on /host read-only and
#                                gives a root shell on hvc0 (the QEMU serial port)
#   OUTDIR/domu-initramfs.cpio.gz PV guest: prints EVEADM-GUEST-READY on hvc0, powers off on
#                                `xl shutdown`, shell on the console
#   OUTDIR/stamp                 build key; a second run with the same key does nothing
#
# Default OUTDIR: $EVEADM_ARTIFACTS/xen (EVEADM_ARTIFACTS default /var/cache/eveadm/artifacts).
# Needs: apt-get (Debian 12 sources), dpkg-deb, gzip, python3 (module dependency order).
set -euo pipefail
ART=${EVEADM_ARTIFACTS:-/var/cache/eveadm/artifacts}
OUT=${1:-$ART/xen}
KEY=$(sha256sum "$0" | cut -c1-16)
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$KEY" ]; then
  echo "build-xen: cached in $OUT"; exit 0
fi
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT; chmod 777 "$W"; cd "$W"

KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$KPKG" ]; then apt-get update -q >/dev/null
  KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); fi
[ -n "$KPKG" ] || { echo "build-xen: cannot resolve linux-image-amd64" >&2; exit 1; }
apt-get download -q "$KPKG" busybox-static xen-hypervisor-4.17-amd64 xen-utils-4.17 xenstore-utils \
  libxentoolcore1 libxentoollog1 libxencall1 libxendevicemodel1 libxenevtchn1 libxenforeignmemory1 \
  libxengnttab1 libxenhypfs1 libxenstore4 libxenmisc4.17 >/dev/null
mkdir x k
for d in *.deb; do
  case $d in linux-image*) dpkg-deb --fsys-tarfile "$d" | tar -x -C k ./boot ./lib/modules ;;
             *) dpkg-deb -x "$d" x ;; esac
done
KVER=$(ls k/lib/modules); MODS=k/lib/modules/$KVER/kernel

# ---------------------------------------------------------------- dom0 initramfs
R=$W/root; XB=/usr/lib/xen-4.17/bin
mkdir -p $R/{bin,sbin,proc,sys,dev,tmp,host,lib/modules,lib64,lib/x86_64-linux-gnu,etc/xen/scripts,$XB,usr/bin} \
         $R/var/{run/xenstored,run/xen,lib/xenstored,lib/xen,log/xen/console,lock} $R/run
cp x/bin/busybox $R/bin/
# modules and everything they depend on, in load order (xenfs needs xen-privcmd first)
python3 - "$MODS" $R/lib/modules xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xenfs xen-netback \
    xen-pciback virtio_pci 9pnet_virtio 9p bridge <<'PY'
import os, shutil, sys
base, dest, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
paths = {}
for d, _, files in os.walk(base):
    for f in files:
        if f.endswith(".ko"):
            paths[f[:-3].replace("-", "_")] = os.path.join(d, f)
def deps(name):
    data = open(paths[name], "rb").read()
    i = data.find(b"\0depends=")
    if i < 0:
        return []
    val = data[i + 9:data.index(b"\0", i + 1)].decode()
    return [m.replace("-", "_") for m in val.split(",") if m]
order = []
def visit(name):
    name = name.replace("-", "_")
    if name in order:
        return
    for d in deps(name):
        visit(d)
    order.append(name)
for w in wanted:
    visit(w)
for name in order:
    shutil.copy(paths[name], os.path.join(dest, name + ".ko"))
open(os.path.join(dest, "order"), "w").write("\n".join(order) + "\n")
PY
for b in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper; do cp x$XB/$b $R$XB/; done
cp x/usr/bin/xenstore $R/usr/bin/
for l in read write ls list rm exists watch chmod; do ln -s xenstore $R/usr/bin/xenstore-$l; done
ln -s $XB/xl $R/usr/bin/xl
# Xen libraries from the debs; glibc, yajl, uuid, z, lzma, zstd from the host (same Debian release)
for f in $R$XB/* $R/usr/bin/xenstore; do
  LD_LIBRARY_PATH=$W/x/usr/lib/x86_64-linux-gnu ldd "$f" | awk '/=>/{print $3}'
done | sort -u | while read -r lib; do cp -L "$lib" $R/lib/x86_64-linux-gnu/; done
cp -L /lib64/ld-linux-x86-64.so.2 $R/lib64/
# glibc dlopen()s libgcc_s for pthread_cancel: without it xl aborts at exit (rc 134)
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 $R/lib/x86_64-linux-gnu/
: > $R/etc/xen/xl.conf
# libxl runs /etc/xen/scripts/vif-bridge for every vif; Debian's needs bash + bridge-utils.
# This one brings the backend interface ($vif) up with the vif's mtu and joins the vif's bridge
# when it exists; both are in the backend's xenstore directory ($XENBUS_PATH), as Debian's reads them.
cat > $R/etc/xen/scripts/vif-bridge <<'SH'
#!/bin/sh
case "$1" in
  online|add)
    bridge=$(xenstore-read "$XENBUS_PATH/bridge" 2>/dev/null)
    mtu=$(xenstore-read "$XENBUS_PATH/mtu" 2>/dev/null)
    [ -n "$mtu" ] && ip link set dev "$vif" mtu "$mtu" 2>/dev/null
    ip link set dev "$vif" up 2>/dev/null
    [ -n "$bridge" ] && [ -d "/sys/class/net/$bridge/bridge" ] && ip link set dev "$vif" master "$bridge" 2>/dev/null ;;
esac
exit 0
SH
chmod 755 $R/etc/xen/scripts/vif-bridge
cat > $R/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/lib/xen-4.17/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run/xen; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /tmp
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "EVEADM-DOM0 insmod $m failed"; done
mount -t xenfs xenfs /proc/xen
xenstored --pid-file /var/run/xenstored.pid
xen-init-dom0 >/dev/null
xenconsoled --pid-file=/var/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
ip link set lo up
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host /host 2>/dev/null \
  && echo "EVEADM-DOM0 host / on /host"
# the harness's work dir (tag "work"), read-write and uncached, on /x; commands arrive as
# files there and `x N` on the console runs /x/cmd/N.sh (Xen's console input ring is
# small: only short lines may travel on the serial line)
mkdir -p /x; mount -t 9p -o trans=virtio,version=9p2000.L,cache=none work /x 2>/dev/null
stty -echo </dev/hvc0
export PS1=''
echo "EVEADM-DOM0-SHELL uptime=$(cut -d' ' -f1 /proc/uptime)"
while true; do setsid -c sh </dev/hvc0 >/dev/hvc0 2>&1; done
INIT
chmod 755 $R/init
printf '#!/bin/sh\ncd /x/cmd && sh "$1.sh" >"$1.out" 2>"$1.err"; echo "__EVXE$1=$?"\n' > $R/bin/x
chmod 755 $R/bin/x
(cd $R && find . | sort | ./bin/busybox cpio -o -H newc -R 0:0 2>/dev/null) | gzip -1 > "$W"/dom0.gz

# ---------------------------------------------------------------- PV domU initramfs
U=$W/domu
mkdir -p $U/{bin,sbin,proc,sys,dev,tmp}
cp x/bin/busybox $U/bin/
# `xl shutdown` makes a PV kernel run /sbin/poweroff (orderly_poweroff): busybox poweroff
# without -f would only signal PID 1 (a shell script here), so force it
printf '#!/bin/busybox sh\necho EVEADM-GUEST-POWEROFF\nexec /bin/busybox poweroff -f\n' > $U/sbin/poweroff
printf '#!/bin/busybox sh\nexec /bin/busybox reboot -f\n' > $U/sbin/reboot
chmod 755 $U/sbin/poweroff $U/sbin/reboot
cat > $U/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "EVEADM-GUEST-READY uptime=$(cut -d' ' -f1 /proc/uptime)"
# test hook: `eveadm.crash` on the kernel command line makes the guest kernel panic
grep -q eveadm.crash /proc/cmdline && echo c > /proc/sysrq-trigger
while true; do setsid -c sh </dev/console >/dev/console 2>&1; sleep 1; done
INIT
chmod 755 $U/init
(cd $U && find . | sort | ./bin/busybox cpio -o -H newc -R 0:0 2>/dev/null) | gzip -9 > "$W"/domu.gz

zcat x/boot/xen-4.17-amd64.gz > "$OUT"/xen.elf.tmp && mv "$OUT"/xen.elf.tmp "$OUT"/xen.elf
cp k/boot/vmlinuz-"$KVER" "$OUT"/vmlinuz
mv "$W"/dom0.gz "$OUT"/dom0-initramfs.cpio.gz
mv "$W"/domu.gz "$OUT"/domu-initramfs.cpio.gz
echo "$KPKG $(dpkg-deb -f xen-utils-4.17_*.deb Version)" > "$OUT"/versions
echo "$KEY" > "$OUT"/stamp
echo "build-xen: built $OUT ($(cat "$OUT"/versions))"
