#!/usr/bin/env bash
# Builds the Spotter image from the Dockerfile with buildah -- no Docker
# engine, no container registry -- on a Debian 12 base made by debootstrap,
# then starts the image's own entrypoint and command and runs its HEALTHCHECK
# command, which must answer SERVING; /metrics must answer too.
#
# Slow (debootstrap, a full compile on the build stage): run by hand or by a
# separate CI job, not by `make test`. Needs root, buildah and debootstrap
# (scripts/debian-packages.txt) and a reachable Debian mirror.
#
# Usage: deploy/image/build.sh [--skip-run]
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian),
#   SPOTTER_IMAGE (default localhost/spotter:latest),
#   SPOTTER_IMAGE_WORK (default <repo>/build-image: the debootstrap tree).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
work=${SPOTTER_IMAGE_WORK:-$src/build-image}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
image=${SPOTTER_IMAGE:-localhost/spotter:latest}
base=localhost/spotter-base:bookworm
skip_run=false
[ "${1:-}" = "--skip-run" ] && skip_run=true

for tool in buildah debootstrap curl; do
  command -v $tool > /dev/null || { echo "build.sh: $tool missing (apt-get install $tool)"; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "build.sh: run as root (debootstrap, buildah storage)"; exit 1; }
# vfs storage and chroot isolation work without overlay mounts or user
# namespaces, i.e. inside an unprivileged CI container too.
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
log() { echo "build.sh: $*"; }

# 1. The base image: a minimal bookworm from debootstrap, imported as is.
if buildah inspect --type image "$base" > /dev/null 2>&1; then
  log "base $base exists"
else
  rootfs=$work/rootfs
  if [ ! -x "$rootfs/usr/bin/apt-get" ]; then
    rm -rf "$rootfs"
    mkdir -p "$work"
    log "debootstrap bookworm into $rootfs from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror"
  fi
  # What debian:bookworm-slim does too: no docs, no apt caches in layers.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  echo "deb $mirror bookworm main" > "$rootfs/etc/apt/sources.list"
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  tar -C "$rootfs" -cf - . | tar -C "$mnt" -xf -
  buildah umount "$ctr" > /dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/bash --label org.opencontainers.image.description="Debian 12 minbase (debootstrap)" \
    "$ctr"
  buildah commit --rm "$ctr" "$base"
  log "committed $base"
fi

# 2. The image, from the repository's Dockerfile, on that base.
revision=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
log "building $image (revision $revision)"
# Docker format: OCI images cannot carry a HEALTHCHECK.
buildah build --isolation chroot --format docker --layers --build-arg BASE="$base" \
  --build-arg REVISION="$revision" -t "$image" -f "$src/Dockerfile" "$src"
buildah inspect --type image --format '{{.Docker.Config.User}}' "$image" | grep -qv '^\(0\|root\|\)$' \
  || { log "FAIL: the image runs as root"; exit 1; }
$skip_run && { log "built $image (--skip-run)"; exit 0; }

# 3. Start it: the image's entrypoint and command as configured (gRPC on
# 50051, metrics on 9464, as its user), in the host's network namespace.
for port in 50051 9464; do
  if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
    log "FAIL: port $port is in use here; stop what holds it and rerun"; exit 1
  fi
done
ctr=$(buildah from "$image")
tmp=$(mktemp -d)
cleanup() {
  [ -n "${run_pid:-}" ] && kill -TERM "$run_pid" 2> /dev/null && wait "$run_pid" 2> /dev/null || true
  buildah rm "$ctr" > /dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
mapfile -t entry < <(buildah inspect --type image --format '{{range .Docker.Config.Entrypoint}}{{println .}}{{end}}{{range .Docker.Config.Cmd}}{{println .}}{{end}}' "$image" | sed '/^$/d')
log "starting: ${entry[*]}"
buildah run --isolation chroot "$ctr" -- "${entry[@]}" > "$tmp/spotterd.log" 2>&1 &
run_pid=$!

# 4. Its HEALTHCHECK command, as the image declares it, until it passes.
mapfile -t health < <(buildah inspect --type image --format '{{range .Docker.Config.Healthcheck.Test}}{{println .}}{{end}}' "$image" | sed '/^$/d')
[ "${health[0]:-}" = CMD ] || { log "FAIL: no exec-form HEALTHCHECK in $image"; exit 1; }
log "healthcheck: ${health[*]:1}"
for _ in $(seq 60); do
  if out=$(buildah run --isolation chroot "$ctr" -- "${health[@]:1}" 2>&1); then break; fi
  kill -0 "$run_pid" 2> /dev/null || { cat "$tmp/spotterd.log"; log "FAIL: spotterd exited"; exit 1; }
  sleep 0.5
done
[ "$out" = SERVING ] || { cat "$tmp/spotterd.log"; log "FAIL: health answered '$out'"; exit 1; }
curl -sf http://127.0.0.1:9464/metrics | grep -q '^# TYPE spotter_uploads_total counter' \
  || { log "FAIL: no /metrics"; exit 1; }
log "PASS: $image starts as $(buildah inspect --type image --format '{{.Docker.Config.User}}' "$image"), answers health SERVING and serves /metrics"
