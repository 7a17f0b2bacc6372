#!/usr/bin/env bash
# A real Prometheus (Debian's binary) scrapes a running spotterd while the
# synthetic trainer streams to it:
#   - the target comes up, the Spotter alert rules load and are healthy;
#   - `promtool check metrics` on a live scrape is clean, and it has the heap
#     in use (sampled every --heap_sample_interval, here 1 s);
#   - every panel query of deploy/grafana/dashboards/*.json, with the run
#     variable substituted, returns at least one series
#     (prometheus_dashboard.py), and the directive annotations find events;
#   - the cap on exported runs drops a second run and counts it;
#   - the run's series leave /metrics after the idle TTL once it stops;
#   - with a second replica scraped under the same job (docs/SCALING.md),
#     each run's panels still show one series (per-run queries aggregate by
#     run, server panels sum over instances), for the runs of both replicas.
# Usage: prometheus_scrape.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }
for tool in prometheus promtool curl python3; do
  command -v $tool > /dev/null || fail "$tool missing (scripts/debian-packages.txt)"
done

run=e2e-prom
ttl=15
"$build/server/spotterd" --listen 127.0.0.1:0 --metrics_listen 127.0.0.1:0 \
  --port_file "$tmp/ports" --metrics_run_ttl ${ttl}s --metrics_max_runs 1 \
  --heap_sample_interval 1s \
  2> "$tmp/spotterd.log" &
pids+=($!)
for _ in $(seq 200); do [ -s "$tmp/ports" ] && break; sleep 0.05; done
[ -s "$tmp/ports" ] || fail "spotterd did not start"
grpc=127.0.0.1:$(sed -n 's/^grpc=//p' "$tmp/ports")
metrics=$(sed -n 's/^metrics=//p' "$tmp/ports")
ctl() { "$build/client/cpp/spotterctl" --server "$grpc" "$@"; }
# A second replica with its own run, scraped under the same job.
"$build/server/spotterd" --listen 127.0.0.1:0 --metrics_listen 127.0.0.1:0 \
  --port_file "$tmp/ports_b" --metrics_run_ttl ${ttl}s \
  2> "$tmp/spotterd_b.log" &
pids+=($!)
for _ in $(seq 200); do [ -s "$tmp/ports_b" ] && break; sleep 0.05; done
[ -s "$tmp/ports_b" ] || fail "the second spotterd did not start"
grpc_b=127.0.0.1:$(sed -n 's/^grpc=//p' "$tmp/ports_b")
metrics_b=$(sed -n 's/^metrics=//p' "$tmp/ports_b")

# Prometheus on a free loopback port (it cannot report a port 0 bind, so pick
# one; retry if another process takes it first).
cat > "$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $src/deploy/prometheus/rules/spotter.rules.yml
scrape_configs:
  - job_name: spotterd
    static_configs:
      - targets: ["127.0.0.1:$metrics", "127.0.0.1:$metrics_b"]
YAML
promtool check config "$tmp/prometheus.yml" > /dev/null || fail "generated config invalid"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
prom=""
for attempt in 1 2 3; do
  port=$(free_port)
  prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn > "$tmp/prometheus.log" 2>&1 &
  ppid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/-/ready" > /dev/null 2>&1 && { prom="http://127.0.0.1:$port"; break; }
    kill -0 $ppid 2>/dev/null || break
    sleep 0.1
  done
  if [ -n "$prom" ]; then pids+=($ppid); break; fi
  kill $ppid 2>/dev/null || true
done
[ -n "$prom" ] || fail "prometheus did not become ready"
echo "prometheus at $prom scraping spotterd metrics on :$metrics"
q() {  # q PROMQL -> the API's JSON
  curl -sfG "$prom/api/v1/query" --data-urlencode "query=$1"
}
count() { q "$1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))'; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do [ $SECONDS -lt $deadline ] || fail "timed out waiting for $what"; sleep 0.5; done
}

up_is_1() { [ "$(q 'up{job="spotterd"} == 1' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))')" = 2 ]; }
wait_for 30 "both spotterd targets to be up" up_is_1
targets=$(curl -sf "$prom/api/v1/targets")
grep -q '"health":"up"' <<< "$targets" || fail "target not healthy: $targets"

# The trainer streams in the background (3000 steps at 8 ms, or until the stop directive).
"$build/examples/synthetic_trainer" --server "$grpc" --run $run --step_ms 8 --quiet \
  > "$tmp/trainer.log" 2>&1 &
trainer=$!
pids+=($trainer)
"$build/examples/synthetic_trainer" --server "$grpc_b" --run $run-b --step_ms 8 --quiet \
  > "$tmp/trainer_b.log" 2>&1 &
trainer_b=$!
pids+=($trainer_b)
ctl show no-such-run > /dev/null 2>&1 && fail "show of an unknown run succeeded"  # a counted reject
run_in_prometheus() { [ "$(count "spotter_run_effective_rank{run=\"$run\"} >= 0")" = 1 ]; }
wait_for 60 "an evaluated $run in Prometheus" run_in_prometheus
sleep 5  # a few more scrapes, so that rate() windows hold two samples

# The alert rules loaded into the real Prometheus and evaluate without error.
rules=$(curl -sf "$prom/api/v1/rules")
python3 - "$rules" <<'PY' || fail "alert rules not loaded or unhealthy"
import json, sys
groups = json.loads(sys.argv[1])["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [r["name"] for r in rules if r["health"] != "ok"]
print(f"{len(rules)} alert rules loaded, unhealthy: {bad}")
sys.exit(1 if len(rules) < 6 or bad else 0)
PY

# promtool's linter on a live scrape, with every family populated.
curl -sf "http://127.0.0.1:$metrics/metrics" > "$tmp/scrape.txt"
grep -q "^spotter_run_phase{.*run=\"$run\"" "$tmp/scrape.txt" || fail "scrape lacks the run"
grep -q '^spotter_rpc_duration_seconds_bucket' "$tmp/scrape.txt" || fail "scrape lacks RPC latency"
# The heap, sampled at every release (--heap_sample_interval 1s): a
# running server has some of it in use.
awk '$1 == "spotter_heap_bytes{state=\"in_use\"}" && $2 > 1e6 {ok = 1} END {exit !ok}' \
  "$tmp/scrape.txt" || fail "scrape lacks spotter_heap_bytes{state=\"in_use\"} above 1 MB"
if ! promtool check metrics < "$tmp/scrape.txt" > "$tmp/promtool.out" 2>&1; then
  cat "$tmp/promtool.out"; fail "promtool check metrics found problems"
fi
[ -s "$tmp/promtool.out" ] && { cat "$tmp/promtool.out"; fail "promtool check metrics is not clean"; }
echo "promtool check metrics: clean ($(grep -vc '^#' "$tmp/scrape.txt") samples)"

# The cap (--metrics_max_runs 1): a second run is left off /metrics and counted.
"$build/examples/synthetic_trainer" --server "$grpc" --run capped --steps 200 --step_ms 0.2 \
  --quiet > "$tmp/capped.log" 2>&1 || fail "second trainer failed"
curl -sf "http://127.0.0.1:$metrics/metrics" > "$tmp/scrape2.txt"
grep -q 'run="capped"' "$tmp/scrape2.txt" && fail "the cap exported a second run"
grep -q '^spotter_metrics_runs_dropped_total 1$' "$tmp/scrape2.txt" || fail "drop not counted"
ctl runs > "$tmp/runs.txt"
grep -q '^capped ' "$tmp/runs.txt" || fail "the capped run is not held by the server"

wait "$trainer" || { cat "$tmp/trainer.log"; fail "trainer failed"; }
wait "$trainer_b" || { cat "$tmp/trainer_b.log"; fail "the second replica's trainer failed"; }
grep -q "stopped by directive" "$tmp/trainer.log" || fail "the run never reached its stop"

# Every dashboard query, the run substituted, has data; the directive
# annotations find the phase changes. (Within the TTL of the last update.)
sleep 2  # a scrape after the last update
for d in "$src"/deploy/grafana/dashboards/*.json; do
  python3 "$src/tests/e2e/prometheus_dashboard.py" --prometheus "$prom" --dashboard "$d" \
    --run $run --var job=spotterd --range_seconds 300 --no_events_expected Rollbacks || fail "dashboard $(basename "$d")"
  python3 "$src/tests/e2e/prometheus_dashboard.py" --prometheus "$prom" --dashboard "$d" \
    --run $run-b --var job=spotterd --range_seconds 300 --no_events_expected Rollbacks --one_series_per_run \
    || fail "dashboard $(basename "$d") for the second replica's run"
done
# The two runs' series come from different instances (the check above is
# about several replicas), and the server panels sum over both.
instances=$(count "count by (instance) (spotter_run_step{run=~\"$run|$run-b\"})")
[ "$instances" = 2 ] || fail "the runs' series come from $instances instances, expected 2"
[ "$(count 'sum(spotter_streams{job=~"spotterd"})')" = 1 ] || fail "server panel not summed"

# spotterctl plot: a valid PNG of the requested size (every chunk CRC and the
# zlib stream checked, one filter byte plus 3 bytes a pixel per row).
ctl plot $run -o "$tmp/run.png" --width 800 --height 600 || fail "spotterctl plot"
python3 - "$tmp/run.png" <<'PY' || fail "spotterctl plot wrote an invalid PNG"
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "signature"
at, idat, chunks = 8, b"", []
while at < len(data):
    n, kind = struct.unpack(">I4s", data[at:at + 8])
    body = data[at + 8:at + 8 + n]
    assert struct.unpack(">I", data[at + 8 + n:at + 12 + n])[0] == zlib.crc32(kind + body), kind
    chunks.append(kind)
    if kind == b"IHDR":
        w, h, depth, colour = struct.unpack(">IIBB", body[:10])
    idat += body if kind == b"IDAT" else b""
    at += 12 + n
assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND", chunks
assert (w, h, depth, colour) == (800, 600, 8, 2), (w, h, depth, colour)
raw = zlib.decompress(idat)
assert len(raw) == h * (1 + 3 * w), len(raw)
print(f"plot: {w}x{h} RGB PNG, {len(data)} bytes")
PY

# Idle TTL: with no more updates, the run's series leave /metrics.
# (Scrapes go to a file first: grep -q closing a pipe early would fail it.)
gone() {
  curl -sf "http://127.0.0.1:$metrics/metrics" > "$tmp/scrape3.txt" || return 1
  ! grep -q "run=\"$run\"" "$tmp/scrape3.txt"
}
wait_for $((ttl + 20)) "the idle run's series to expire" gone
grep -q '^spotter_metrics_runs_expired_total 1$' "$tmp/scrape3.txt" \
  || fail "expiry not counted: $(grep ^spotter_metrics_runs "$tmp/scrape3.txt")"
ctl show $run > /dev/null || fail "the run itself must stay readable after its series expire"
echo "PASS"
