#!/usr/bin/env bash
# Where spotterd's resident memory is, minute by minute, under the soak's load
# (docs/RELIABILITY.md, "Load and soak"): 256 Connect streams over 32 runs,
# SQLite state, an override every 500 ms, for SECONDS; every 60 s gdb stops
# spotterd for a moment and has glibc describe its heap (malloc_info), and
# the script prints one line per minute: RSS, the arenas' mapped bytes, what
# of it is free (freed, kept by the allocator) and what is in use.
#   scripts/heap_snapshots.sh [BUILD=build] [SECONDS=600] [OUT=heap.txt] [spotterd flags...]
# Needs gdb. Writes OUT: a first line naming the commit and command, then the
# lines.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/spotterd.sh
build=${1:-build}
seconds=${2:-600}
out=${3:-heap.txt}
shift 3 2>/dev/null || shift $#
command -v gdb > /dev/null || { echo "heap_snapshots.sh: needs gdb" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
commit=$(spotter_commit)
echo "Commit $commit: \`scripts/heap_snapshots.sh $build $seconds $out $*\`" > "$out"

"$build/bench/spotter_load" --spotterd "$build/server/spotterd" \
  --spotterd_args "--state_file=$dir/state.db $*" \
  --streams 256 --runs 32 --seconds "$seconds" --rows 8 --dim 128 --window 32 \
  --override_ms 500 --rss_limit_mb 4096 --report "$dir/report.json" > "$dir/load.log" 2>&1 &
load=$!
for _ in $(seq 100); do
  pid=$(pgrep -P $load spotterd || true)
  [ -n "$pid" ] && break
  sleep 0.1
done
[ -n "$pid" ] || { cat "$dir/load.log"; exit 1; }

snapshot() {  # snapshot MINUTE
  gdb -p "$pid" -batch -nx \
    -ex "set \$f = (void*)fopen(\"$dir/info.xml\", \"w\")" \
    -ex 'call (int)malloc_info(0, $f)' -ex 'call (int)fclose($f)' > /dev/null 2>&1 || return 0
  local rss
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  /usr/bin/python3 - "$dir/info.xml" "$rss" "$1" >> "$out" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
total = {t.get("type"): int(t.get("size")) for t in root.findall("total")}
heaps = root.findall("heap")
mapped = sum(int(s.get("size")) for h in heaps for s in h.findall("system")
             if s.get("type") == "current")
free = total.get("fast", 0) + total.get("rest", 0)
mib = 1 << 20
print(f"minute {sys.argv[3]:>3}: RSS {int(sys.argv[2]) / 1024:6.1f} MiB  arenas {len(heaps):2d}  "
      f"mapped {mapped / mib:6.1f}  free {free / mib:6.1f}  in use "
      f"{(mapped - free + total.get('mmap', 0)) / mib:6.1f} MiB")
PY
}
for ((m = 1; m * 60 < seconds; ++m)); do
  sleep 60
  kill -0 $load 2>/dev/null || break
  snapshot $m
done
wait $load || { cat "$dir/load.log"; exit 1; }
cat "$out"
