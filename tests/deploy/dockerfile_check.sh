#!/usr/bin/env bash
# The Dockerfile, linted by npm dockerfile-utils (the Dockerfile language
# server's validator), plus the properties the image must have: a bookworm
# multi-stage build, a runtime stage without compilers or -dev packages, a
# non-root user, exposed ports, a HEALTHCHECK that calls the gRPC health
# service, and OCI labels. No Docker engine runs here; deploy/image/build.sh
# builds and runs the image with buildah.
# Usage: dockerfile_check.sh SOURCE_DIR NODE_DIR
set -euo pipefail
src=$1
node=$2
lint() { "$node/node_modules/.bin/dockerfile-utils" lint "$1"; }
df=$src/Dockerfile
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
lint "$df"
fail() { echo "FAIL: Dockerfile: $*"; exit 1; }
# The runtime stage: everything after the last FROM.
rt=$tmp/runtime
awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$df" > "$rt"
[ "$(grep -c '^FROM ' "$df")" -ge 2 ] || fail "not multi-stage"
grep -q '^ARG BASE=debian:bookworm' "$df" || fail "base is not Debian bookworm"
grep -qE -- '-dev\b|build-essential|cmake|g\+\+' "$rt" && fail "runtime stage installs build tools"
grep -qE '^USER (10001|[a-z_][a-z0-9_-]*)' "$rt" || fail "no USER in the runtime stage"
grep -qE '^USER (0|root)\b' "$rt" && fail "runtime runs as root"
grep -qE '^EXPOSE .*50051/tcp.*9464/tcp' "$rt" || fail "grpc and metrics ports not exposed"
grep -A1 '^HEALTHCHECK' "$rt" > "$tmp/health"
grep -q 'spotterctl.*health' "$tmp/health" \
  || fail "HEALTHCHECK does not call the gRPC health service"
grep -q 'org.opencontainers.image.title' "$rt" || fail "no OCI labels"
grep -q '^deploy$' "$src/.dockerignore" && grep -q '^\.git$' "$src/.dockerignore" \
  || fail ".dockerignore does not keep .git and deploy out of the context"
# Every path the build stage copies exists.
grep -E '^COPY [^-]' "$df" | awk '{for (i = 2; i < NF; ++i) print $i}' | while read -r p; do
  [ -e "$src/$p" ] || fail "COPY source $p does not exist"
done
# The lint must be able to fail.
sed 's/^HEALTHCHECK --interval=10s/HEALTHCHECK --interval=ten/' "$df" > "$tmp/Dockerfile"
if lint "$tmp/Dockerfile" > "$tmp/out" 2>&1; then fail "the lint accepted --interval=ten"; fi
echo "PASS"
