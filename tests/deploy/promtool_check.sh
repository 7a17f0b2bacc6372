#!/usr/bin/env bash
# The Prometheus config and alert rules, with Debian's promtool: syntax, rule
# validity, and the rules' unit tests (deploy/prometheus/rules/*.test.yml).
# Usage: promtool_check.sh SOURCE_DIR
set -euo pipefail
src=$1
command -v promtool >/dev/null || { echo "FAIL: promtool missing (Debian package prometheus)"; exit 1; }
cd "$src/deploy/prometheus"
promtool check config --syntax-only prometheus.yml
promtool check rules rules/*.rules.yml
promtool test rules rules/*.test.yml
# The tests must be able to fail: a rule file whose stall window is changed
# must break its unit test.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp rules/*.yml "$tmp/"
sed -i 's/changes(spotter_run_step\[10m\])/changes(spotter_run_step[2m])/' "$tmp/spotter.rules.yml"
if promtool test rules "$tmp/spotter.rules.test.yml" > "$tmp/out" 2>&1; then
  echo "FAIL: the rule tests pass against a broken SpotterRunStalled"; exit 1
fi
echo "PASS"
