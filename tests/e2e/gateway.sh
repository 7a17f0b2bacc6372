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
#     saw acknowledged);
#   - then it scales to four replicas with the move procedure
#     (docs/SCALING.md): a staging gateway with the four replicas answers who
#     owns each run, spotterctl rebalance moves the runs whose owner changes
#     while some of them stream, the gateway is reloaded with the new list,
#     and rebalance --finish deletes the tombstones. Every run then lives on
#     exactly one of the four replicas, the moved ones with their full
#     history (idle runs: byte-identical trajectory, same ranks' seqs;
#     streaming runs: the history frozen at the move is a prefix of the new
#     owner's, which went on), and the trainers that streamed across the
#     move reconnected and lost nothing acknowledged.
# Usage: gateway.sh BUILD_DIR SOURCE_DIR (KEEP_TMP=1 keeps the logs and state)
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
tmp=$(mktemp -d)
pids=()
gpid=""
spid=""
cleanup() {
  # nginx first, gracefully (its workers would outlive a SIGKILLed master).
  [ -n "$gpid" ] && kill -TERM "$gpid" 2>/dev/null || true
  [ -n "$spid" ] && kill -TERM "$spid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP_TMP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
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
render() {  # render DIR LISTEN REPLICA_COUNT: DIR/nginx.conf
  local lines=""
  for i in $(seq 0 $(($3 - 1))); do lines="$lines server 127.0.0.1:${ports[$i]} max_fails=0;"; done
  sed -e "s|@LISTEN@|$2|" -e "s|@PREFIX@|$1|g" -e "s|@REPLICAS@|$lines|" \
    "$src/deploy/nginx/spotter-gateway.conf" > "$1/nginx.conf"
  nginx -t -q -c "$1/nginx.conf" -p "$1" || fail "the rendered gateway config is invalid"
}
started_gw="" started_pid=""
start_gateway() {  # start_gateway DIR REPLICA_COUNT: sets started_gw, started_pid
  mkdir -p "$1"
  started_gw=""
  for attempt in 1 2 3; do
    local port
    port=$(free_port)
    render "$1" "127.0.0.1:$port" "$2"
    nginx -c "$1/nginx.conf" -p "$1" -g 'daemon off;' 2>> "$tmp/gateway.log" &
    started_pid=$!
    for _ in $(seq 100); do
      if ctl --server "127.0.0.1:$port" health > /dev/null 2>&1; then
        started_gw=127.0.0.1:$port
        return 0
      fi
      kill -0 "$started_pid" 2>/dev/null || break
      sleep 0.05
    done
    kill "$started_pid" 2>/dev/null || true
  done
  fail "the gateway in $1 did not start"
}
start_gateway "$tmp/gw" $n
gw=$started_gw
gpid=$started_pid

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
echo "ok (1/2): $runs runs on $n replicas through the gateway, each on one replica; replica $killed" \
  "(owner of $on_killed runs) killed and restarted, nothing acknowledged lost"

# Scale out to four replicas with the move procedure (docs/SCALING.md).
py() { /usr/bin/python3 -c "$@"; }
# Every run's history on its current owner, to compare after the move.
for j in $(seq 1 $runs); do
  r=gw-$j
  ctl --server "127.0.0.1:${ports[${owner[$r]}]}" trajectory "$r" --format json > "$tmp/before-$r.json" \
    || fail "trajectory of $r"
  ctl --server "127.0.0.1:${ports[${owner[$r]}]}" --output json show "$r" > "$tmp/before-$r.show" \
    || fail "show $r"
done
n=4
ports+=("$(free_port)")
rpid+=(0)
start_replica 3
all="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]},127.0.0.1:${ports[3]}"
# The staging gateway: the new replica list, answering who owns each run.
start_gateway "$tmp/gw4" 4
staging=$started_gw
spid=$started_pid
# Runs that stream across the move: two that move to the new replica and
# one that stays (ketama moves a run only to the added replica).
id3=$(ctl --server "127.0.0.1:${ports[3]}" --output json where probe | py 'import json,sys; print(json.load(sys.stdin)["replica"])')
moving=() staying=()
for c in $(seq 1 200); do
  name=live-$c
  to=$(ctl --server "$staging" --output json where "$name" | py 'import json,sys; print(json.load(sys.stdin)["replica"])')
  if [ "$to" = "$id3" ]; then
    [ ${#moving[@]} -lt 2 ] && moving+=("$name")
  elif [ ${#staying[@]} -lt 1 ]; then
    staying+=("$name")
  fi
  [ ${#moving[@]} -eq 2 ] && [ ${#staying[@]} -eq 1 ] && break
done
[ ${#moving[@]} -eq 2 ] && [ ${#staying[@]} -eq 1 ] || fail "no live run names for the move"
live=("${moving[@]}" "${staying[@]}")
lpid=()
for name in "${live[@]}"; do
  "$build/examples/synthetic_trainer" --server "$gw" --run "$name" --ranks 2 --steps 900 \
    --step_ms 8 --params 1024 --sketch_dim 64 --sketch_rows 16 --microbatches 8 --quiet \
    > "$tmp/trainer-$name.log" 2>&1 &
  lpid+=($!)
done
sleep 2
# A move whose import fails (its target unreachable) leaves the run frozen
# on its replica; rebalance must retry it.
held_by=$(ctl --server "$gw" --output json where "${moving[0]}" | py 'import json,sys; print(json.load(sys.stdin)["replica"])')
if ctl move "${moving[0]}" --from "127.0.0.1:${held_by##*:}" --to 127.0.0.1:1 > "$tmp/failed-move.log" 2>&1; then
  fail "a move to an unreachable replica succeeded"
fi
grep -q "the run stays frozen" "$tmp/failed-move.log" || fail "the failed move does not say the run stays frozen"
ctl rebalance --gateway "$staging" --replicas "$all" > "$tmp/rebalance.log" 2>&1 \
  || { cat "$tmp/rebalance.log"; fail "rebalance"; }
# The history a streaming run had when it was frozen, read from its
# tombstone: the new owner must hold all of it, and only add to it.
for name in "${moving[@]}"; do
  from=$(sed -n "s/^run $name moved from \([^ ]*\) to .*/\1/p" "$tmp/rebalance.log")
  [ -n "$from" ] || fail "rebalance did not move $name"
  ctl --server "$from" trajectory "$name" --format json > "$tmp/frozen-$name.json" \
    || fail "the tombstone of $name is not readable"
done
# Point the gateway at the four replicas (nginx reloads on SIGHUP) and wait
# until it routes a moved run to the new replica.
render "$tmp/gw" "$gw" 4
kill -HUP "$gpid"
for _ in $(seq 200); do
  to=$(ctl --server "$gw" --output json where "${moving[0]}" | py 'import json,sys; print(json.load(sys.stdin)["replica"])')
  [ "$to" = "$id3" ] && break
  sleep 0.05
done
[ "$to" = "$id3" ] || fail "the reloaded gateway does not route ${moving[0]} to the new replica"
# Until nginx's old worker has exited, a new connection may still reach it
# and be routed by the old list: --finish then keeps those tombstones (their
# runs are not yet routed to the new owner) and says so; run it again.
finished=""
for _ in $(seq 100); do
  if ctl rebalance --gateway "$gw" --replicas "$all" --finish >> "$tmp/finish.log" 2>&1; then
    finished=1
    break
  fi
  sleep 0.1
done
[ -n "$finished" ] || fail "rebalance --finish kept tombstones"
for p in "${lpid[@]}"; do wait "$p" || fail "a live trainer failed"; done
moved_runs=$(grep -c "^run .* moved from" "$tmp/rebalance.log" || true)

# One owner per run among the four, and the moved ones have their history.
unset owner
declare -A owner
for i in $(seq 0 3); do
  for r in $(ctl --server "127.0.0.1:${ports[$i]}" runs | awk 'NR > 1 {print $1}'); do
    [ -z "${owner[$r]:-}" ] || fail "after the move, run $r lives on replicas ${owner[$r]} and $i"
    owner[$r]=$i
  done
done
total=$((runs + ${#live[@]}))
[ "${#owner[@]}" -eq $total ] || fail "${#owner[@]} runs across four replicas, expected $total"
ctl runs --replicas "$all" > "$tmp/merged.txt" || fail "runs --replicas reports a problem"
ctl health --replicas "$all" > "$tmp/health.txt" || fail "health --replicas: not every replica serves"
[ "$(grep -c ' SERVING$' "$tmp/health.txt")" -eq 4 ] || fail "health --replicas: $(cat "$tmp/health.txt")"
# A name standing for one address stays one replica (localhost is 127.0.0.1
# and maybe ::1: one server).
[ "$(ctl health --replicas "localhost:${ports[0]}" | grep -c ' SERVING$')" -eq 1 ] \
  || fail "health --replicas localhost:PORT"
[ "$(awk 'NR > 1' "$tmp/merged.txt" | wc -l)" -eq $total ] || fail "runs --replicas lists $(awk 'NR > 1' "$tmp/merged.txt" | wc -l) runs"
for j in $(seq 1 $runs); do
  r=gw-$j
  o="127.0.0.1:${ports[${owner[$r]}]}"
  [ "$(ctl --server "$gw" --output json where "$r" | py 'import json,sys; d=json.load(sys.stdin); print(d["holds"])')" = True ] \
    || fail "the gateway routes $r to a replica that does not hold it"
  ctl --server "$o" trajectory "$r" --format json > "$tmp/after-$r.json" || fail "trajectory of $r"
  cmp -s "$tmp/before-$r.json" "$tmp/after-$r.json" || fail "run $r: history differs after the move"
  ctl --server "$o" --output json show "$r" > "$tmp/after-$r.show" || fail "show $r"
  py '
import json, sys
a, b = (json.load(open(f))["run"] for f in sys.argv[1:3])
key = lambda run: sorted((r.get("rank", 0), r.get("last_seq"), r.get("uploads"), r.get("rows")) for r in run["ranks"])
assert key(a) == key(b), (key(a), key(b))
assert a.get("transitions") == b.get("transitions") and a.get("directive") == b.get("directive")
assert a.get("points") == b.get("points") and a.get("max_step") == b.get("max_step")
' "$tmp/before-$r.show" "$tmp/after-$r.show" || fail "run $r: ranks, directive or transitions differ after the move"
done
for name in "${live[@]}"; do
  o="127.0.0.1:${ports[${owner[$name]}]}"
  ctl --server "$o" --output json show "$name" > "$tmp/show.json" || fail "show $name"
  for rank in 0 1; do
    acked=$(sed -n "s/^rank $rank: .*acked seq \([0-9]*\),.*/\1/p" "$tmp/trainer-$name.log")
    applied=$(py 'import json,sys; r=json.load(open(sys.argv[1]))["run"]["ranks"]; print(int(next(x for x in r if x.get("rank",0)==int(sys.argv[2]))["last_seq"]))' "$tmp/show.json" $rank)
    [ -n "$acked" ] && [ "$applied" -ge "$acked" ] \
      || fail "live run $name rank $rank: applied seq $applied < acknowledged $acked on its owner"
  done
done
for name in "${moving[@]}"; do
  [ "${owner[$name]}" -eq 3 ] || fail "live run $name should have moved to replica 3, is on ${owner[$name]}"
  grep -qE "rank 0: .*, ([2-9]|[1-9][0-9]+) connects" "$tmp/trainer-$name.log" \
    || fail "live run $name moved but its trainer never reconnected"
  ctl --server "127.0.0.1:${ports[3]}" trajectory "$name" --format json > "$tmp/moved-$name.json" \
    || fail "trajectory of $name on its new owner"
  py '
import json, sys
frozen, now = (json.load(open(f)) for f in sys.argv[1:3])
for key in ("points", "transitions", "directives"):
    a, b = frozen.get(key, []), now.get(key, [])
    assert b[:len(a)] == a, f"{key}: the {len(a)} frozen ones are not a prefix of the {len(b)} now"
assert len(now.get("points", [])) > len(frozen.get("points", [])), "no point after the move"
' "$tmp/frozen-$name.json" "$tmp/moved-$name.json" || fail "live run $name: history lost in the move"
done
echo "ok (2/2): scaled to 4 replicas: $moved_runs runs moved (${#moving[@]} of them streaming)," \
  "every run on one replica with its full history, nothing acknowledged lost"
