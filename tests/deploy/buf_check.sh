#!/usr/bin/env bash
# Proto hygiene with npm @bufbuild/buf (buf.yaml at the root): `buf lint`
# (STANDARD rules; the vendored grpc health proto is excluded), and
# `buf breaking` of the working tree against the main branch. A field
# removed from a copy of the proto must be reported as breaking.
# Usage: buf_check.sh SOURCE_DIR NODE_DIR
set -euo pipefail
src=$1
node=$2
buf="$node/node_modules/.bin/buf"
cd "$src"
"$buf" lint
echo "buf lint: clean"
if git rev-parse --verify -q main > /dev/null; then
  against=".git#branch=main"
else
  # A clone without a local main branch (detached CI checkout): HEAD.
  against=".git#ref=HEAD"
fi
# --against-config: read main with this tree's module layout (main may
# predate buf.yaml).
"$buf" breaking --against "$against" --against-config buf.yaml
echo "buf breaking against $against: no breaking change"
# The breaking check must be able to fail: drop a field from a copy.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r buf.yaml proto "$tmp/"
sed -i '0,/^\(\s*\)uint64 step = \([0-9]*\);.*$/s//\1reserved \2;/' "$tmp/proto/spotter/v1/spotter.proto"
if cmp -s proto/spotter/v1/spotter.proto "$tmp/proto/spotter/v1/spotter.proto"; then
  echo "FAIL: could not make the breaking copy"; exit 1
fi
if (cd "$tmp" && "$buf" breaking --against "$src" > "$tmp/out" 2>&1); then
  echo "FAIL: buf breaking accepted a removed field"; exit 1
fi
grep -m1 . "$tmp/out"
echo "PASS"
