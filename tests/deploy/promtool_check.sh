#!/usr/bin/env bash
# The Prometheus config and alert rules, with Debian's promtool: syntax, rule
# validity, and the rules' unit tests (deploy/prometheus/tests/*.test.yml).
# `promtool check rules rules/*.yml` must pass as operators run it: the rules
# folder holds rule files only.
# Usage: promtool_check.sh SOURCE_DIR
set -euo pipefail
src=$1
command -v promtool >/dev/null || { echo "FAIL: promtool missing (Debian package prometheus)"; exit 1; }
cd "$src/deploy/prometheus"
promtool check config --syntax-only prometheus.yml
promtool check rules rules/*.yml
promtool test rules tests/*.test.yml
# Every alert links its runbook section, and the section exists.
for a in $(sed -n 's/^ *- alert: //p' rules/*.yml); do
  lower=$(echo "$a" | tr 'A-Z' 'a-z')
  grep -q "runbook_url: \"docs/RUNBOOK.md#$lower\"" rules/*.yml || { echo "FAIL: $a has no runbook_url"; exit 1; }
  grep -q "^## $a\$" "$src/docs/RUNBOOK.md" || { echo "FAIL: docs/RUNBOOK.md has no section $a"; exit 1; }
done
# The tests must be able to fail: a rule file whose stall window is changed
# must break its unit test.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/rules" "$tmp/tests"
cp rules/*.yml "$tmp/rules/"
cp tests/*.yml "$tmp/tests/"
sed -i 's/changes(spotter_run_step\[10m\])/changes(spotter_run_step[2m])/' "$tmp/rules/spotter.rules.yml"
if promtool test rules "$tmp/tests/spotter.rules.test.yml" > "$tmp/out" 2>&1; then
  echo "FAIL: the rule tests pass against a broken SpotterRunStalled"; exit 1
fi
echo "PASS"
