#!/usr/bin/env bash
# Ingest through the nginx gateway against ingest straight to spotterd, at
# 64 KiB sketch messages on loopback (docs/PERFORMANCE.md, "Through the
# gateway"). One spotterd (SQLite state file) and one gateway rendered from
# deploy/nginx/spotter-gateway.conf with that replica as its upstream, so
# the ratio is the proxy's cost alone. spotter_load drives it the same way
# each time (the run header on every call, an operator override every
# 500 ms whose delivery latency is the directive latency); direct and
# gateway runs alternate, ROUNDS times each, each against a fresh spotterd
# on the same port (a run that exists already would drop the replayed seqs
# as duplicates, which is cheaper than ingest), and the medians are reported.
#   bench/gateway_ratio.sh BUILD_DIR [SECONDS] [ROUNDS] [STREAMS]
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
seconds=${2:-10}
rounds=${3:-3}
streams=${4:-16}
tmp=$(mktemp -d)
spid="" gpid=""
cleanup() {
  [ -n "$gpid" ] && kill -TERM "$gpid" 2>/dev/null || true
  [ -n "$spid" ] && kill -TERM "$spid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
command -v nginx > /dev/null || { echo "nginx missing"; exit 1; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

direct=127.0.0.1:$(free_port)
start_spotterd() {  # a fresh spotterd (empty state file) on $direct
  rm -f "$tmp"/state.db*
  "$build/server/spotterd" --listen "$direct" --metrics_listen "" \
    --state_file "$tmp/state.db" --require_run_header 2>> "$tmp/spotterd.log" &
  spid=$!
  for _ in $(seq 200); do
    "$build/client/cpp/spotterctl" --server "$direct" health > /dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "spotterd did not start on $direct"; exit 1
}
stop_spotterd() { kill -TERM "$spid"; wait "$spid" 2>/dev/null || true; spid=""; }
start_spotterd

mkdir -p "$tmp/gw"
port=$(free_port)
sed -e "s|@LISTEN@|127.0.0.1:$port|" -e "s|@PREFIX@|$tmp/gw|g" \
  -e "s|@REPLICAS@|server $direct max_fails=0;|" \
  "$src/deploy/nginx/spotter-gateway.conf" > "$tmp/gw/nginx.conf"
nginx -c "$tmp/gw/nginx.conf" -p "$tmp/gw" -g 'daemon off;' 2> "$tmp/gateway.log" &
gpid=$!
gateway=127.0.0.1:$port
for _ in $(seq 100); do
  "$build/client/cpp/spotterctl" --server "$gateway" health > /dev/null 2>&1 && break
  sleep 0.05
done

# 16 rows x 1024 floats = 64 KiB of sketch data per message.
load() {  # load TARGET ROUND
  stop_spotterd
  start_spotterd
  "$build/bench/spotter_load" --server "$1" --server_pid "$spid" --streams "$streams" \
    --runs 4 --seconds "$seconds" --rows 16 --dim 1024 --sketch_rows 64 --window 32 \
    --override_ms 500 --report "$tmp/$2.json" > "$tmp/$2.log" 2>&1 \
    || { cat "$tmp/$2.log"; exit 1; }
}
for r in $(seq "$rounds"); do
  load "$direct" "direct-$r"
  load "$gateway" "gateway-$r"
done
/usr/bin/python3 - "$tmp" "$rounds" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def runs(kind):
    return [json.load(open(f"{tmp}/{kind}-{r}.json")) for r in range(1, rounds + 1)]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")
out = {}
for kind in ("direct", "gateway"):
    rs = runs(kind)
    out[kind] = {
        "uploads_per_s": med([r["uploads_per_s"] for r in rs]),
        "mb_per_s": med([r["bytes_per_s"] / 1e6 for r in rs]),
        "directive_p50_ms": med([(r["directive_all_streams_ms"] or {}).get("p50") for r in rs]),
        "directive_p99_ms": med([(r["directive_all_streams_ms"] or {}).get("p99") for r in rs]),
        "ack_p50_ms": med([(r["latency_ms"] or {}).get("p50") for r in rs]),
        "errors": sum(r["errors"] for r in rs),
        "message_bytes": rs[0]["message_bytes"],
        "each_uploads_per_s": [round(r["uploads_per_s"]) for r in rs],
    }
d, g = out["direct"], out["gateway"]
for kind, v in out.items():
    print(f"{kind:8s} {v['uploads_per_s']:8.0f} uploads/s {v['mb_per_s']:7.1f} MB/s "
          f"(rounds {v['each_uploads_per_s']}), ack p50 {v['ack_p50_ms']:.2f} ms, "
          f"directive at every stream p50 {v['directive_p50_ms']:.2f} ms p99 "
          f"{v['directive_p99_ms']:.2f} ms, errors {v['errors']}")
print(f"ratio gateway/direct: {g['uploads_per_s'] / d['uploads_per_s']:.3f} "
      f"(message {d['message_bytes']} bytes); added directive latency p50 "
      f"{g['directive_p50_ms'] - d['directive_p50_ms']:+.2f} ms, p99 "
      f"{g['directive_p99_ms'] - d['directive_p99_ms']:+.2f} ms")
print(json.dumps(out))
PY
