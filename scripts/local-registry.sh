#!/bin/bash
# local-registry.sh start DIR [PORT] | stop DIR: a plain-HTTP registry (Debian's docker-registry) on
# 127.0.0.1, holding the busybox root filesystem as busybox:1, for the demo and for trying
# `eveadm image pull` without the Internet.
#   start: writes DIR/config.yml, keeps the registry's blobs in DIR/storage, its pid in DIR/registry.pid,
#          waits until it answers, pushes $EVEADM_ARTIFACTS/rootfs (an OCI layout built from it) with
#          skopeo, writes DIR/registries.conf (this registry marked insecure: plain HTTP) and prints
#          its address, 127.0.0.1:PORT (PORT: a free one unless given). Then, for example:
#            eveadm image pull --tls-verify=false 127.0.0.1:PORT/busybox:1
#            EVEADM_IMAGE_REGISTRIES_CONF=DIR/registries.conf eveadm create --pull -f c.json
#   stop:  ends the registry started in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ART=${EVEADM_ARTIFACTS:-/var/cache/eveadm/artifacts}
usage() { echo "usage: local-registry.sh start DIR [PORT] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
ACTION=$1 DIR=$2

if [ "$ACTION" = stop ]; then
  if [ -f "$DIR/registry.pid" ]; then
    pid=$(cat "$DIR/registry.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$DIR/registry.pid"
  fi
  exit 0
fi
[ "$ACTION" = start ] || usage
for tool in docker-registry skopeo; do
  command -v $tool >/dev/null || { echo "local-registry.sh: $tool is missing: run scripts/setup.sh" >&2; exit 1; }
done
mkdir -p "$DIR/storage"
DIR=$(cd "$DIR" && pwd)
PORT=${3:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
HOST=127.0.0.1:$PORT
cat > "$DIR/config.yml" <<CONF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
http:
  addr: $HOST
CONF
docker-registry serve "$DIR/config.yml" > "$DIR/registry.log" 2>&1 &
echo $! > "$DIR/registry.pid"
for _ in $(seq 100); do
  python3 -c "import urllib.request as u; u.urlopen('http://$HOST/v2/', timeout=1)" 2>/dev/null && break
  kill -0 "$(cat "$DIR/registry.pid")" 2>/dev/null || { cat "$DIR/registry.log" >&2; exit 1; }
  sleep 0.1
done
scripts/build-rootfs.sh "$ART/rootfs" >/dev/null
scripts/build-rootfs.sh --oci "$ART/oci-busybox" "$ART/rootfs" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$ART/oci-busybox:latest" "docker://$HOST/busybox:1"
printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$HOST" > "$DIR/registries.conf"
echo "$HOST"
