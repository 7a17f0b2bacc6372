#!/usr/bin/env bash
# spotterctl against secured spotterds, with the real binaries:
#   - TLS + bearer tokens: a run opened by the Python client (CA + token);
#     spotterctl reads and steers it with --ca/--token and with the
#     SPOTTER_* environment instead, and prints every command's response as
#     JSON with --output json;
#   - the documented exit codes: plaintext against TLS (4, unreachable), no or
#     a wrong token (5), a viewer's override (5), no such run (3), a missing
#     CA file (6), bad usage (64);
#   - mutual TLS: health with --cert/--key, refused without them (4);
#   - online backup: `spotterctl backup` as admin writes a file whose size and
#     SHA-256 match the server's summary, and a new spotterd started on it
#     (--state_file) holds the run; a viewer is refused (5), an existing file
#     is not overwritten (6), a server without a state file refuses (2).
# Usage: ctl_secure.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }
command -v openssl > /dev/null || fail "openssl missing (scripts/debian-packages.txt)"
ctlbin=$build/client/cpp/spotterctl

# A CA, a server certificate for localhost / 127.0.0.1, a client certificate.
cd "$tmp"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
  -subj "/CN=spotter test CA" > openssl.log 2>&1
for who in server client; do
  openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj "/CN=$who" \
    >> openssl.log 2>&1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > $who.ext
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile $who.ext -out $who.pem >> openssl.log 2>&1
done
admin=admin-token-0123456789abcdef
viewer=viewer-token-0123456789abcdef
printf 'ops admin %s\ngrafana viewer %s\n' $admin $viewer > tokens

start() {  # start NAME extra-flags...: spotterd on a free port; sets $server
  local name=$1
  shift
  "$build/server/spotterd" --listen 127.0.0.1:0 --metrics_listen 127.0.0.1:0 \
    --port_file "$tmp/$name.ports" --tls_cert server.pem --tls_key server.key "$@" \
    2> "$tmp/$name.log" &
  pids+=($!)
  for _ in $(seq 200); do [ -s "$tmp/$name.ports" ] && break; sleep 0.05; done
  [ -s "$tmp/$name.ports" ] || fail "spotterd $name did not start"
  server=127.0.0.1:$(sed -n 's/^grpc=//p' "$tmp/$name.ports")
}
expect_rc() {  # expect_rc CODE WHAT command...
  local want=$1 what=$2 rc=0
  shift 2
  "$@" > "$tmp/out.txt" 2> "$tmp/err.txt" || rc=$?
  [ "$rc" = "$want" ] || { cat "$tmp/err.txt"; fail "$what: exit $rc, expected $want"; }
}

# --- TLS + tokens ------------------------------------------------------------
# --require_run_header: every run-scoped call of spotterctl and the Python
# client must carry x-spotter-run (docs/SCALING.md).
start tls --tokens_file tokens --require_run_header --state_file "$tmp/tls.db"
ctl() { "$ctlbin" --server "$server" --ca ca.pem --timeout 5 "$@"; }
[ "$(ctl --token $admin health)" = SERVING ] || fail "health over TLS with a token"
PYTHONPATH=$build/client/python/site /usr/bin/python3 - "$server" $admin <<'PY' \
  || fail "the Python client could not open the run"
import sys
from spotter import Client
with Client(sys.argv[1], token=sys.argv[2], root_certificates=open("ca.pem", "rb").read()) as c:
    c.open_run("secure", {"total_steps": 1000, "peak_lr": 0.1, "sketch_dim": 16,
                          "sketch_rows": 8})
PY
ctl --token $admin runs | grep -q "^secure " || fail "runs does not list the run"
ctl --token $admin --output json runs > runs.json
/usr/bin/python3 -c 'import json,sys; r=json.load(open("runs.json"))["runs"]; assert [x["name"] for x in r]==["secure"], r' \
  || fail "runs --output json"
# The environment stands in for the flags.
SPOTTER_SERVER=$server SPOTTER_CA=ca.pem SPOTTER_TOKEN=$viewer "$ctlbin" --output json show secure \
  > show.json || fail "show with SPOTTER_SERVER/SPOTTER_CA/SPOTTER_TOKEN"
/usr/bin/python3 -c 'import json; r=json.load(open("show.json"))["run"]; assert r["name"]=="secure" and r["config"]["total_steps"]=="1000", r' \
  || fail "show --output json"
ctl --token $admin --output json override secure --phase refinement --reason "e2e" \
  > override.json || fail "override as admin"
/usr/bin/python3 -c 'import json; d=json.load(open("override.json"))["directive"]; assert d["phase"]=="PHASE_REFINEMENT", d' \
  || fail "override --output json"
ctl --token $admin --output json trajectory secure > traj.json || fail "trajectory json"
/usr/bin/python3 -c 'import json; json.load(open("traj.json"))' || fail "trajectory json parses"
ctl --token $admin --output json health > health.json
grep -q '"SERVING"' health.json || fail "health --output json"

# --- online backup and restore -------------------------------------------------
expect_rc 5 "a viewer's backup" ctl --token $viewer backup --out viewer.db
[ ! -e viewer.db ] || fail "a refused backup left a file"
ctl --token $admin --output json backup --out backup.db > backup.json || fail "backup as admin"
/usr/bin/python3 - <<'PY' || fail "backup --output json: the size and SHA-256 of the file"
import hashlib, json, os
b = json.load(open("backup.json"))
s = b["summary"]
data = open(b["file"], "rb").read()
assert int(s["bytes"]) == len(data) == os.path.getsize("backup.db") > 0, s
assert s["sha256"] == hashlib.sha256(data).hexdigest(), s
PY
expect_rc 6 "a backup onto an existing file" ctl --token $admin backup --out backup.db
# Restore (docs/RUNBOOK.md): the file, copied into place, is the new server's
# --state_file as it is.
tls_server=$server
cp backup.db restored.db
start restored --tokens_file tokens --state_file "$tmp/restored.db"
ctl --token $admin --output json show secure > restored.json \
  || fail "the server started on the backup lacks the run"
/usr/bin/python3 -c 'import json; r=json.load(open("restored.json"))["run"]; assert r["directive"]["phase"]=="PHASE_REFINEMENT" and r["config"]["total_steps"]=="1000", r' \
  || fail "the restored run is not the original (config, the override before the backup)"
server=$tls_server

expect_rc 4 "plaintext against a TLS server" "$ctlbin" --server "$server" --timeout 3 \
  --token $admin health
expect_rc 5 "no token" ctl runs
expect_rc 5 "a wrong token" ctl --token bogus-token-0123456789abcdef runs
expect_rc 5 "a viewer's override" ctl --token $viewer override secure --phase polish
expect_rc 3 "no such run" ctl --token $admin show nothing-here
expect_rc 6 "a missing CA file" "$ctlbin" --server "$server" --ca missing.pem health
expect_rc 64 "a client certificate without its key" ctl --cert client.pem health
expect_rc 64 "an unknown --output" ctl --token $admin --output yaml runs
ctl --token $admin --output json finish secure > finish.json || fail "finish as admin"
ctl --token $admin --output json delete secure | grep -q '"deleted": "secure"' \
  || fail "delete --output json"

# --- mutual TLS ----------------------------------------------------------------
start mtls --tls_client_ca ca.pem
[ "$("$ctlbin" --server "$server" --ca ca.pem --cert client.pem --key client.key health)" \
  = SERVING ] || fail "health over mutual TLS"
expect_rc 4 "mutual TLS without a client certificate" \
  "$ctlbin" --server "$server" --ca ca.pem --timeout 3 health
expect_rc 2 "a backup of a server without a state file" \
  "$ctlbin" --server "$server" --ca ca.pem --cert client.pem --key client.key backup --out none.db
grep -q "no state file" "$tmp/err.txt" || fail "the refusal names the missing state file"
echo "ok: spotterctl over TLS, tokens, mutual TLS, JSON output, exit codes, backup and restore"
