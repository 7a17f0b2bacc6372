#!/usr/bin/env bash
# The Kubernetes base and overlays: `kubectl kustomize` renders them (no
# cluster needed), and every object is validated against the
# kubernetes-models schemas (validate_k8s.mjs). Also checks what they promise:
# named ports, gRPC health probes, resource requests, the dashboard ConfigMap,
# a PodDisruptionBudget and a NetworkPolicy, no CRD in the base, the
# monitoring overlay's ServiceMonitor and PrometheusRule (the rules file's
# groups), the TLS overlay, and the scale-out overlay (N replicas behind the
# nginx gateway rendering deploy/nginx/spotter-gateway.conf).
# Usage: k8s_check.sh SOURCE_DIR NODE_DIR
set -euo pipefail
src=$1
node=$2
command -v kubectl >/dev/null || { echo "FAIL: kubectl missing"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
kubectl kustomize "$src/deploy/k8s/base" > "$tmp/all.yaml"
cp "$src/tests/deploy/validate_k8s.mjs" "$node/"
node "$node/validate_k8s.mjs" "$tmp/all.yaml"
need() { grep -qE "$1" "$tmp/all.yaml" || { echo "FAIL: rendered base lacks: $2"; exit 1; }; }
need '^kind: StatefulSet' "a StatefulSet"
need '^kind: PodDisruptionBudget' "a PodDisruptionBudget"
need '^kind: NetworkPolicy' "a NetworkPolicy"
if grep -qE '^apiVersion: monitoring.coreos.com' "$tmp/all.yaml"; then
  echo "FAIL: the base needs the Prometheus Operator's CRDs"; exit 1
fi
# The memory limit holds the server's own budgets (512 MiB + 1 GiB) and more.
need '^ +memory: 3Gi$' "a 3Gi memory limit"
# The monitoring overlay: ServiceMonitor and a PrometheusRule that is the
# rules file's groups.
kubectl kustomize "$src/deploy/k8s/overlays/monitoring" > "$tmp/mon.yaml"
node "$node/validate_k8s.mjs" "$tmp/mon.yaml"
grep -qE '^kind: ServiceMonitor' "$tmp/mon.yaml" || { echo "FAIL: no ServiceMonitor"; exit 1; }
grep -qE '^kind: PrometheusRule' "$tmp/mon.yaml" || { echo "FAIL: no PrometheusRule"; exit 1; }
/usr/bin/python3 "$src/scripts/gen_prometheusrule.py" --check
need '^  name: spotter-grafana-dashboard' "the dashboard ConfigMap"
need '"uid": "spotter-run"' "the dashboard JSON in the ConfigMap"
need '^ *-? ?name: grpc$' "a named grpc port"
need '^ *-? ?name: metrics$' "a named metrics port"
[ "$(grep -cE '^ +grpc:$' "$tmp/all.yaml")" -eq 3 ] || { echo "FAIL: 3 gRPC health probes"; exit 1; }
need '^ +requests:$' "resource requests"
need 'runAsNonRoot: true' "a non-root pod"
# The TLS overlay: TLS and tokens on, the three probes exec spotterctl over
# TLS (kubelet gRPC probes are plaintext), the Secrets mounted.
kubectl kustomize "$src/deploy/k8s/overlays/tls" > "$tmp/tls.yaml"
node "$node/validate_k8s.mjs" "$tmp/tls.yaml"
tls_need() { grep -qE -- "$1" "$tmp/tls.yaml" || { echo "FAIL: rendered TLS overlay lacks: $2"; exit 1; }; }
tls_need '--tls_cert=/etc/spotter/tls/tls.crt' "--tls_cert"
tls_need '--tokens_file=/etc/spotter/tokens/tokens' "--tokens_file"
tls_need 'secretName: spotter-tls' "the TLS Secret volume"
tls_need 'name: SPOTTER_CA' "SPOTTER_CA for spotterctl"
if grep -qE '^ +- --insecure$' "$tmp/tls.yaml"; then echo "FAIL: TLS overlay keeps --insecure"; exit 1; fi
[ "$(grep -cE '^ +grpc:$' "$tmp/tls.yaml")" -eq 0 ] || { echo "FAIL: plaintext gRPC probes under TLS"; exit 1; }
[ "$(grep -cE -- '--tls_server_name=spotterd' "$tmp/tls.yaml")" -eq 3 ] \
  || { echo "FAIL: 3 spotterctl probes over TLS"; exit 1; }
# The scale-out overlay: N replicas with --require_run_header, the gateway
# Deployment rendering the shipped nginx config (the same file, byte for
# byte) for as many replicas as the StatefulSet has.
kubectl kustomize "$src/deploy/k8s/overlays/scale-out" > "$tmp/scale.yaml"
node "$node/validate_k8s.mjs" "$tmp/scale.yaml"
/usr/bin/python3 - "$tmp/scale.yaml" "$src/deploy/nginx/spotter-gateway.conf" <<'PY' || exit 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def one(kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    if len(found) != 1: sys.exit(f"FAIL: scale-out: {len(found)} {kind} {name}")
    return found[0]
sts = one("StatefulSet", "spotterd")
n = sts["spec"]["replicas"]
if n < 2: sys.exit(f"FAIL: scale-out: StatefulSet replicas {n}")
if "--require_run_header" not in sts["spec"]["template"]["spec"]["containers"][0]["args"]:
    sys.exit("FAIL: scale-out: the replicas lack --require_run_header")
if not sts["spec"]["volumeClaimTemplates"]:
    sys.exit("FAIL: scale-out: no volume per replica")
gw = one("Deployment", "spotter-gateway")
c = gw["spec"]["template"]["spec"]["containers"][0]
env = {e["name"]: e.get("value") for e in c.get("env", [])}
if env.get("SPOTTER_REPLICAS") != str(n):
    sys.exit(f"FAIL: scale-out: the gateway routes to {env.get('SPOTTER_REPLICAS')} replicas, "
             f"the StatefulSet has {n}")
cm = one("ConfigMap", "spotter-gateway")
mounted = [v for v in gw["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
if [v["configMap"]["name"] for v in mounted] != [cm["metadata"]["name"]]:
    sys.exit("FAIL: scale-out: the gateway does not mount the generated ConfigMap")
if cm["data"]["spotter-gateway.conf"] != open(sys.argv[2]).read():
    sys.exit("FAIL: scale-out: the ConfigMap is not deploy/nginx/spotter-gateway.conf")
hl = one("Service", "spotterd-headless")
if not hl["spec"].get("publishNotReadyAddresses"):
    sys.exit("FAIL: scale-out: the headless Service hides not-ready replicas from the gateway")
one("Service", "spotter-gateway")
PY
# The validation must be able to fail.
sed 's/containerPort: 50051/containerPort: grpc/' "$tmp/all.yaml" > "$tmp/bad.yaml"
if node "$node/validate_k8s.mjs" "$tmp/bad.yaml" > /dev/null 2>&1; then
  echo "FAIL: the schema validation accepted a string containerPort"; exit 1
fi
echo "PASS"
