#!/usr/bin/env bash
# Type-checks every Grafana dashboard in deploy/grafana/dashboards against
# @grafana/schema's Dashboard type with typescript (dashboard_types.ts), and
# checks that a broken dashboard fails the same check.
# Usage: dashboard_check.sh SOURCE_DIR NODE_DIR
set -euo pipefail
src=$1
node=$2
tmp=$(mktemp -d "$node/dashcheck.XXXXXX")  # inside NODE_DIR: resolves node_modules
trap 'rm -rf "$tmp"' EXIT
tsc() { "$node/node_modules/.bin/tsc" --noEmit --strict --target es2022 --module nodenext \
          --moduleResolution nodenext "$@"; }
emit() {  # emit JSON_FILE OUT_TS
  { cat "$src/tests/deploy/dashboard_types.ts"; printf '\nexport const dashboard = '; cat "$1"
    printf ' satisfies SpotterDashboard;\n'; } > "$2"
}
n=0
for f in "$src"/deploy/grafana/dashboards/*.json; do
  python3 -m json.tool "$f" > /dev/null || { echo "FAIL: $f is not JSON"; exit 1; }
  emit "$f" "$tmp/dashboard$n.ts"
  tsc "$tmp/dashboard$n.ts" || { echo "FAIL: ${f#$src/} does not satisfy Dashboard"; exit 1; }
  echo "ok   ${f#$src/}"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "FAIL: no dashboards"; exit 1; }
# The check must be able to fail: a misspelt panel property and a wrong type.
first=$(ls "$src"/deploy/grafana/dashboards/*.json | head -1)
sed '0,/"gridPos"/s//"gridPosition"/' "$first" > "$tmp/bad1.json"
sed 's/"schemaVersion": \([0-9]*\)/"schemaVersion": "\1"/' "$first" > "$tmp/bad2.json"
for bad in bad1 bad2; do
  emit "$tmp/$bad.json" "$tmp/$bad.ts"
  if tsc "$tmp/$bad.ts" > "$tmp/$bad.out" 2>&1; then
    echo "FAIL: the type check accepted a broken dashboard ($bad)"; exit 1
  fi
  head -1 "$tmp/$bad.out"
done
echo "PASS"
