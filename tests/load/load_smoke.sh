#!/usr/bin/env bash
# CI smoke of the load tool: 64 streams, 8 runs, 30 s, spotterd with a SQLite
# state file. Fails on any unacknowledged upload, stream error, RSS above
# 1 GiB or RSS growth above 128 MiB over the second half (sanitizer builds
# raise both through LOAD_RSS_LIMIT_MB and LOAD_RSS_GROWTH_MB).
#   tests/load/load_smoke.sh BUILD_DIR [extra spotter_load flags]
set -euo pipefail
build=$1
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/bench/spotter_load" --spotterd "$build/server/spotterd" \
  --spotterd_args "--state_file=$tmp/state.db --checkpoint_every=64" \
  --streams 64 --runs 8 --seconds 30 --rows 8 --dim 128 --window 32 \
  --rss_limit_mb "${LOAD_RSS_LIMIT_MB:-1024}" --rss_growth_mb "${LOAD_RSS_GROWTH_MB:-128}" --report "$tmp/report.json" "$@"
cat "$tmp/report.json"
