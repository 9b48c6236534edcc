#!/bin/sh
# build-rootfs.sh [--oci LAYOUT] [OUTDIR]
#
# A container root filesystem made only from Debian's busybox-static package
# (apt-get download + dpkg-deb; no registry, no internet beyond the apt mirror):
# OUTDIR/bin/busybox, its applets as relative symlinks, /etc/passwd, /etc/group.
# OUTDIR defaults to $EVEADM_ARTIFACTS/rootfs ($EVEADM_ARTIFACTS defaults to
# /var/cache/eveadm/artifacts).
#
# --oci LAYOUT also builds an OCI image layout from that tree (umoci init/new/
# insert/config; tag "latest", Cmd /bin/sh -c 'echo EVEADM-OCI-READY; ...'),
# for `image: "oci:LAYOUT"`.
#
# Cached: a tree with its .eveadm-complete marker (a layout with index.json
# naming tag latest) is left alone, so running it again is a no-op. Output is
# built beside the target and renamed into place, so an interrupted run leaves
# nothing half-done.
set -eu

LAYOUT=
if [ "${1:-}" = --oci ]; then
    LAYOUT=${2:?usage: build-rootfs.sh [--oci LAYOUT] [OUTDIR]}
    shift 2
fi
ARTIFACTS=${EVEADM_ARTIFACTS:-/var/cache/eveadm/artifacts}
OUT=${1:-$ARTIFACTS/rootfs}
MARK=.eveadm-complete

if [ ! -f "$OUT/$MARK" ]; then
    mkdir -p "$(dirname "$OUT")"
    WORK=$(mktemp -d "$(dirname "$OUT")/.rootfs.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    chmod 777 "$WORK"   # apt-get download runs as _apt when it can
    (cd "$WORK" && apt-get download -q busybox-static >/dev/null 2>&1) || {
        echo "build-rootfs.sh: apt-get download busybox-static failed (try apt-get update)" >&2
        exit 1
    }
    dpkg-deb -x "$WORK"/busybox-static_*.deb "$WORK/deb"
    R="$WORK/rootfs"
    mkdir -p "$R/bin" "$R/sbin" "$R/etc" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/root" \
        "$R/run" "$R/mnt" "$R/usr/bin" "$R/usr/sbin" "$R/var"
    chmod 1777 "$R/tmp"
    cp "$WORK/deb/bin/busybox" "$R/bin/busybox"
    for applet in $("$R/bin/busybox" --list); do
        [ -e "$R/bin/$applet" ] || ln -s busybox "$R/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$R/etc/passwd"
    echo 'nobody:x:65534:65534:nobody:/:/bin/false' >>"$R/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
    touch "$R/$MARK"
    rm -rf "$OUT"
    mv "$R" "$OUT"
    echo "rootfs: $OUT ($(du -sh "$OUT" | cut -f1))"
fi

if [ -n "$LAYOUT" ] && ! grep -q '"org.opencontainers.image.ref.name":"latest"' "$LAYOUT/index.json" 2>/dev/null; then
    command -v umoci >/dev/null || { echo "build-rootfs.sh: --oci needs umoci: apt-get install umoci" >&2; exit 1; }
    mkdir -p "$(dirname "$LAYOUT")"
    TMP=$(mktemp -d "$(dirname "$LAYOUT")/.layout.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    L="$TMP/layout"
    umoci init --layout "$L"
    umoci new --image "$L:latest"
    umoci insert --image "$L:latest" "$OUT" /
    umoci config --image "$L:latest" \
        --config.env PATH=/bin:/sbin:/usr/bin:/usr/sbin --config.env EVEADM_IMAGE=busybox \
        --config.workingdir /tmp \
        --config.cmd /bin/sh --config.cmd -c \
        --config.cmd 'echo EVEADM-OCI-READY cwd=$(pwd) image=$EVEADM_IMAGE; trap "exit 0" TERM; while true; do sleep 1 & wait; done'
    umoci gc --layout "$L"
    rm -rf "$LAYOUT"
    mv "$L" "$LAYOUT"
    echo "oci layout: $LAYOUT (tag latest)"
fi
