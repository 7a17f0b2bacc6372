#!/usr/bin/env bash
# deploy/compose/compose.yaml, validated by Debian's docker-compose (Compose
# 1.29, which needs no engine for `config`; the Docker Compose v2 plugin is
# not packaged for Debian 12). Also checks that every file the stack mounts
# exists and that the stack has its four services.
# Usage: compose_check.sh SOURCE_DIR
set -euo pipefail
src=$1
command -v docker-compose >/dev/null \
  || { echo "FAIL: docker-compose missing (Debian package docker-compose)"; exit 1; }
cd "$src/deploy/compose"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
docker-compose -f compose.yaml config > "$tmp/config.yaml"
docker-compose -f compose.yaml config --services > "$tmp/services"
for s in spotterd trainer prometheus grafana; do
  grep -qx "$s" "$tmp/services" || { echo "FAIL: no service $s"; exit 1; }
done
# Bind mounts resolved by `config` must exist in the tree.
grep -oE "^\s*- (/[^:]+):/" "$tmp/config.yaml" | sed -E 's/^\s*- //; s/:\/$//' | while read -r path; do
  [ -e "$path" ] || { echo "FAIL: mounted path $path does not exist"; exit 1; }
  echo "mount ok: ${path#$src/}"
done
# A broken file must be rejected (the check can fail).
sed 's/condition: service_healthy/condition: service_ready/' compose.yaml > "$tmp/bad.yaml"
if docker-compose -f "$tmp/bad.yaml" config > /dev/null 2>&1; then
  echo "FAIL: docker-compose accepted an invalid depends_on condition"; exit 1
fi
echo "PASS"
