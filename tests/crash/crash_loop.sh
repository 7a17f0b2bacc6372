#!/usr/bin/env bash
# The crash test: a streaming workload (several runs, several ranks, operator
# overrides, reconnecting watchers) against spotterd with a SQLite state
# file, while spotterd is killed with SIGKILL at random moments and restarted
# on the same file. At the end (spotterd stopped cleanly) the checker reads
# the state file: every acknowledged upload is reflected exactly once, each
# run's sketch equals an uninterrupted run fed the same inputs (within the
# FD tolerance), and no directive a client saw is lost or was issued twice.
#
#   tests/crash/crash_loop.sh BUILD_DIR [--kills N] [--runs R] [--ranks W]
#                             [--steps T] [--step_ms MS] [--sync full|normal]
#                             [--min_ms A --max_ms B] [--seed S]
# CI runs a short loop (tests/crash/CMakeLists.txt); the long form is run by
# hand, e.g. --kills 1000 --steps 20000 (docs/RELIABILITY.md).
set -euo pipefail
build=$1
shift
kills=20 runs=3 ranks=2 steps=400 step_ms=20 sync=full min_ms=100 max_ms=700 seed=$$
while [ $# -gt 0 ]; do
  case $1 in
    --kills) kills=$2 ;; --runs) runs=$2 ;; --ranks) ranks=$2 ;; --steps) steps=$2 ;;
    --step_ms) step_ms=$2 ;; --sync) sync=$2 ;; --min_ms) min_ms=$2 ;; --max_ms) max_ms=$2 ;;
    --seed) seed=$2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift 2
done
RANDOM=$seed
spotterd=$build/server/spotterd
workload=$build/tests/crash/crash_workload
tmp=$(mktemp -d)
keep=0
cleanup() {
  [ -n "${driver:-}" ] && kill -9 "$driver" 2>/dev/null || true
  [ -n "${pid:-}" ] && kill -9 "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ $keep = 1 ] || [ -n "${KEEP:-}" ]; then echo "crash_loop: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; keep=1; exit 1; }

start() {  # starts spotterd on $listen; sets pid and started (ns)
  rm -f "$tmp/ports"
  started=$(date +%s%N)
  "$spotterd" --listen "$listen" --metrics_listen "" --port_file "$tmp/ports" \
    --state_file "$tmp/state.db" --state_sync "$sync" --checkpoint_every 16 \
    --shutdown_grace_seconds 2 >>"$tmp/spotterd.log" 2>&1 &
  pid=$!
  for _ in $(seq 400); do
    [ -s "$tmp/ports" ] && return 0
    kill -0 $pid 2>/dev/null || break
    sleep 0.025
  done
  return 1
}

listen=127.0.0.1:0
start || fail "spotterd did not start: $(tail -5 "$tmp/spotterd.log")"
port=$(sed -n 's/^grpc=//p' "$tmp/ports")
listen=127.0.0.1:$port
"$workload" --server "ipv4:127.0.0.1:$port" --out "$tmp/out" --runs "$runs" --ranks "$ranks" \
  --steps "$steps" --step_ms "$step_ms" >"$tmp/workload.log" 2>&1 &
driver=$!

done_kills=0
t0=$(date +%s)
# Each kill lands while the server is busy: after its first commit since
# the (re)start (the WAL file changes), a random delay later.
wal_changed_since() {
  local t=$1
  [ -e "$tmp/state.db-wal" ] && [ "$(date -r "$tmp/state.db-wal" +%s%N)" -gt "$t" ]
}
# Kills go on after the last upload too, while the sessions replay what was
# not acknowledged and flush.
while kill -0 $driver 2>/dev/null && [ $done_kills -lt "$kills" ]; do
  for _ in $(seq 400); do
    wal_changed_since "$started" && break
    kill -0 $driver 2>/dev/null || break
    sleep 0.025
  done
  kill -0 $driver 2>/dev/null || break
  sleep "$(awk -v a="$min_ms" -v b="$max_ms" -v r=$RANDOM 'BEGIN {printf "%.3f", (a + (b - a) * r / 32767) / 1000}')"
  kill -9 $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  done_kills=$((done_kills + 1))
  # The port is free again at once (SO_REUSEADDR); retry briefly if not.
  for attempt in 1 2 3 4 5; do start && break; sleep 0.2; done
  kill -0 $pid 2>/dev/null || fail "spotterd did not restart after kill $done_kills: $(tail -5 "$tmp/spotterd.log")"
done
wait $driver || { cat "$tmp/workload.log"; fail "the workload failed"; }
kill -TERM $pid
wait $pid || fail "spotterd did not stop cleanly"
pid=
grep -q "runs restored" "$tmp/spotterd.log" || fail "spotterd never reported its restore"
cat "$tmp/workload.log"
"$workload" --verify --state_file "$tmp/state.db" --out "$tmp/out" --runs "$runs" \
  --ranks "$ranks" --steps "$steps" || fail "the state after $done_kills kills is wrong"
echo "crash_loop: $done_kills kills (SIGKILL) in $(( $(date +%s) - t0 )) s, sync=$sync, $runs runs x $ranks ranks x $steps steps: PASS"
