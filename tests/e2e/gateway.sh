#!/usr/bin/env bash
# Scale-out through the gateway, with the real binaries (docs/SCALING.md):
# Debian's nginx with deploy/nginx/spotter-gateway.conf in front of three
# spotterd replicas (state files, --require_run_header), twelve runs of two
# ranks streaming through it (the synthetic trainer):
#   - every run lives on exactly one replica: the replicas' run lists are
#     disjoint and their union is all twelve;
#   - one replica is killed with SIGKILL mid-stream and restarted on its
#     state file: its runs continue on it (their trainers reconnected), no
#     run appears on another replica, and no acknowledged upload is lost
#     (per rank, the run's last applied seq >= the highest seq the trainer
#     saw acknowledged).
# Usage: gateway.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
tmp=$(mktemp -d)
pids=()
gpid=""
cleanup() {
  # nginx first, gracefully (its workers would outlive a SIGKILLed master).
  [ -n "$gpid" ] && kill -TERM "$gpid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; tail -15 "$f"; done; exit 1; }
command -v nginx > /dev/null || fail "nginx missing (scripts/debian-packages.txt)"
ctl() { "$build/client/cpp/spotterctl" --timeout 5 "$@"; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

n=3
ports=()
rpid=()
for i in $(seq 0 $((n - 1))); do ports+=("$(free_port)"); rpid+=(0); done
start_replica() {  # start_replica I: on its fixed port and state file
  local i=$1
  "$build/server/spotterd" --listen "127.0.0.1:${ports[$i]}" --metrics_listen 127.0.0.1:0 \
    --state_file "$tmp/replica$i.db" --require_run_header 2>> "$tmp/replica$i.log" &
  rpid[$i]=$!
  pids+=($!)
  for _ in $(seq 200); do
    ctl --server "127.0.0.1:${ports[$i]}" health > /dev/null 2>&1 && return 0
    sleep 0.05
  done
  fail "replica $i did not start"
}
for i in $(seq 0 $((n - 1))); do start_replica "$i"; done

# The gateway: the shipped config, rendered for these replicas. nginx cannot
# bind port 0, so pick a free port (and retry if another process takes it).
mkdir -p "$tmp/gw"
lines=""
for i in $(seq 0 $((n - 1))); do lines="$lines server 127.0.0.1:${ports[$i]} max_fails=0;"; done
gw=""
for attempt in 1 2 3; do
  port=$(free_port)
  sed -e "s|@LISTEN@|127.0.0.1:$port|" -e "s|@PREFIX@|$tmp/gw|g" -e "s|@REPLICAS@|$lines|" \
    "$src/deploy/nginx/spotter-gateway.conf" > "$tmp/gw/nginx.conf"
  nginx -t -q -c "$tmp/gw/nginx.conf" -p "$tmp/gw" || fail "the rendered gateway config is invalid"
  nginx -c "$tmp/gw/nginx.conf" -p "$tmp/gw" -g 'daemon off;' 2> "$tmp/gateway.log" &
  gpid=$!
  for _ in $(seq 100); do
    if ctl --server "127.0.0.1:$port" health > /dev/null 2>&1; then gw=127.0.0.1:$port; break; fi
    kill -0 $gpid 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$gw" ] && break
  kill $gpid 2>/dev/null || true
  gpid=""
done
[ -n "$gw" ] || fail "the gateway did not start"

# Twelve runs of two ranks through the gateway.
runs=12
tpid=()
for j in $(seq 1 $runs); do
  "$build/examples/synthetic_trainer" --server "$gw" --run "gw-$j" --ranks 2 --steps 500 \
    --step_ms 8 --params 1024 --sketch_dim 64 --sketch_rows 16 --microbatches 8 --quiet \
    --seed "$j" > "$tmp/trainer$j.log" 2>&1 &
  tpid+=($!)
done
sleep 2
killed=1
kill -KILL "${rpid[$killed]}"
wait "${rpid[$killed]}" 2>/dev/null || true
sleep 1
start_replica $killed
for p in "${tpid[@]}"; do wait "$p" || fail "a trainer failed"; done

# Ownership: disjoint run lists whose union is all twelve.
declare -A owner
for i in $(seq 0 $((n - 1))); do
  for r in $(ctl --server "127.0.0.1:${ports[$i]}" runs | awk 'NR > 1 {print $1}'); do
    [ -z "${owner[$r]:-}" ] || fail "run $r lives on replicas ${owner[$r]} and $i"
    owner[$r]=$i
  done
done
[ "${#owner[@]}" -eq $runs ] || fail "${#owner[@]} runs across the replicas, expected $runs"
on_killed=0
for j in $(seq 1 $runs); do
  r=gw-$j
  [ -n "${owner[$r]:-}" ] || fail "run $r is on no replica"
  # No acknowledged upload lost: the run's last applied seq per rank is at
  # least the highest seq the trainer saw acknowledged.
  ctl --server "127.0.0.1:${ports[${owner[$r]}]}" --output json show "$r" > "$tmp/show.json" \
    || fail "show $r on its owner"
  for rank in 0 1; do
    acked=$(sed -n "s/^rank $rank: .*acked seq \([0-9]*\),.*/\1/p" "$tmp/trainer$j.log")
    [ -n "$acked" ] || fail "trainer $j printed no acked seq for rank $rank"
    applied=$(/usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["run"]["ranks"]; print(int(next(x for x in r if x.get("rank",0)==int(sys.argv[2]))["last_seq"]))' "$tmp/show.json" $rank)
    [ "$applied" -ge "$acked" ] || fail "run $r rank $rank: server applied seq $applied < acknowledged $acked"
  done
  if [ "${owner[$r]}" -eq $killed ]; then
    on_killed=$((on_killed + 1))
    grep -qE "rank 0: .*, ([2-9]|[1-9][0-9]+) connects" "$tmp/trainer$j.log" \
      || fail "run $r lives on the killed replica but its trainer never reconnected"
  fi
done
[ $on_killed -gt 0 ] || fail "the killed replica owned no run (the test needs one)"
echo "ok: $runs runs on $n replicas through the gateway, each on one replica; replica $killed" \
  "(owner of $on_killed runs) killed and restarted, nothing acknowledged lost"
