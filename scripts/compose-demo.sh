#!/usr/bin/env bash
# The docker-compose `demo` job (docs/compose.md): apply samples/demo, enroll the namespace in the
# mesh, and check that sleep reaches web-api through it, printing each step. Runs once, after the
# nodes are healthy, in a container on the mesh network with the control plane's state directory
# mounted read-only (its admin token: dev only). Exits non-zero when the check fails.
#
# Pods are network namespaces inside the node containers, so this container cannot `exec` into
# sleep; it runs the request as a one-shot pod with sleep's service account (so the same SPIFFE
# identity) on sleep's node, and reads the proof from the destination ztunnel's metrics.
set -euo pipefail

STATE="${MESH_STATE_DIR:-/var/lib/mesh}"
ISTIOD="${MESH_ISTIOD:-https://istiod:6443}"
KUBECONFIG_FILE="$(mktemp -d)/kubeconfig"
PROBE=sleep-probe

step() { printf '\n### %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }

api() {  # api METHOD PATH [JSON-BODY] [PYTHON-EXPRESSION-ON-obj]: print the expression (default: nothing)
  python3 - "$STATE" "$ISTIOD" "$@" <<'PY'
import json, ssl, sys
import httpx
state, istiod, method, path = sys.argv[1:5]
body = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
expr = sys.argv[6] if len(sys.argv) > 6 else ""
headers = {"Authorization": "Bearer " + open(f"{state}/admin-token").read().strip()}
if method == "PATCH":
    headers["Content-Type"] = "application/merge-patch+json"
ctx = ssl.create_default_context(cafile=f"{state}/istiod-ca.pem")
r = httpx.request(method, istiod + path, headers=headers, content=body, verify=ctx, timeout=10)
if r.status_code >= 400 and not (method == "DELETE" and r.status_code == 404):
    sys.exit(f"{method} {path}: {r.status_code} {r.text[:200]}")
obj = r.json() if r.content else {}
if expr:
    print(eval(expr))
PY
}

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds (bounded)
  local seconds=$1 what=$2; shift 2
  for _ in $(seq "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  fail "gave up after ${seconds}s waiting for $what"
}

pods_running() {
  [ "$(api GET /api/v1/namespaces/default/pods '' \
    'sum(1 for p in obj["items"] if p["metadata"]["name"] in ("sleep", "web-api-v1", "web-api-v2")
         and p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP"))')" = 3 ]
}

pods_captured() {
  [ "$(api GET /api/v1/namespaces/default/pods '' \
    'sum(1 for p in obj["items"] if p["metadata"]["name"] in ("sleep", "web-api-v1", "web-api-v2")
         and (p["metadata"].get("annotations") or {}).get("ambient.istio.io/redirection") == "enabled")')" = 3 ]
}

probe_gone() { ! api GET "/api/v1/namespaces/default/pods/$PROBE"; }

probe_done() {
  case "$(api GET "/api/v1/namespaces/default/pods/$PROBE" '' 'obj.get("status", {}).get("phase", "")')" in
    Succeeded|Failed) return 0 ;;
    *) return 1 ;;
  esac
}

step "1. The sample apps: sleep and notsleep (clients), web-api v1 and v2 (server)"
show meshctl kubeconfig --state-dir "$STATE" --server "$ISTIOD" -o "$KUBECONFIG_FILE"
show meshctl apply --kubeconfig "$KUBECONFIG_FILE" \
  -f samples/demo/sleep.yaml -f samples/demo/notsleep.yaml -f samples/demo/web-api.yaml
wait_until 120 "sleep, web-api-v1 and web-api-v2 to run" pods_running
api GET /api/v1/namespaces/default/pods '' \
  '"\n".join("%-12s %-8s %-14s %s" % (p["metadata"]["name"], p["spec"].get("nodeName", ""),
              p.get("status", {}).get("podIP", ""), p.get("status", {}).get("phase", "")) for p in obj["items"])'

step "2. Join the mesh: label the namespace (no restart, no sidecar)"
echo '$ kubectl label namespace default istio.io/dataplane-mode=ambient'
api PATCH /api/v1/namespaces/default '{"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}}'
wait_until 60 "the node agents to capture the pods" pods_captured
echo "sleep, web-api-v1 and web-api-v2 carry ambient.istio.io/redirection=enabled: their traffic goes through ztunnel"

step "3. sleep → web-api through the mesh (HBONE, mutual TLS with SPIFFE identities)"
VIP=$(api GET /api/v1/namespaces/default/services/web-api '' 'obj["spec"]["clusterIP"]')
NODE=$(api GET /api/v1/namespaces/default/pods/sleep '' 'obj["spec"]["nodeName"]')
echo "web-api's Service VIP is $VIP; the request runs as a pod with sleep's service account on $NODE"
api DELETE "/api/v1/namespaces/default/pods/$PROBE"   # from an earlier run
wait_until 30 "an earlier $PROBE to go" probe_gone
PROBE_POD=$(python3 -c '
import json, sys
vip, node, name = sys.argv[1:4]
# No "$(" in the command: the runtime expands $(VAR) references, as the kubelet does.
tries = " ".join(str(i) for i in range(1, 21))
script = f"for i in {tries}; do curl -sS -m 3 --fail http://{vip}/hello && exit 0; sleep 1; done; exit 1"
print(json.dumps({"apiVersion": "v1", "kind": "Pod",
  "metadata": {"name": name, "labels": {"app": name}},
  "spec": {"serviceAccountName": "sleep", "nodeName": node, "restartPolicy": "Never",
           "terminationGracePeriodSeconds": 0,
           "containers": [{"name": "curl", "image": "curlimages/curl", "command": ["/bin/sh", "-c", script]}]}}))
' "$VIP" "$NODE" "$PROBE")
echo "\$ curl http://$VIP/hello   (in pod $PROBE, service account sleep, on $NODE)"
api POST /api/v1/namespaces/default/pods "$PROBE_POD"
wait_until 90 "$PROBE to finish" probe_done
PHASE=$(api GET "/api/v1/namespaces/default/pods/$PROBE" '' 'obj["status"]["phase"]')
[ "$PHASE" = Succeeded ] || fail "sleep could not reach web-api through the mesh ($PROBE: $PHASE)"
echo "sleep reached web-api ($PROBE: $PHASE)"

step "4. The proof: the destination ztunnels counted connections from sleep's identity"
FOUND=0
for pod in web-api-v1 web-api-v2; do
  host=$(api GET "/api/v1/namespaces/default/pods/$pod" '' 'obj["status"].get("hostIP", "")')
  [ -n "$host" ] || continue
  echo "\$ curl http://$host:15020/stats/prometheus | grep istio_tcp_connections_opened_total | grep sa/sleep"
  if lines=$(curl -fsS -m 5 "http://$host:15020/stats/prometheus" \
      | grep '^istio_tcp_connections_opened_total' | grep 'reporter="destination"' | grep 'sa/sleep"'); then
    printf '%s\n' "$lines" | head -4 \
      | grep -o 'source_principal="[^"]*"\|destination_principal="[^"]*"\|} [0-9.e+]*$' | sed 's/^} /  count /'

    FOUND=1
  fi
done
[ "$FOUND" = 1 ] || fail "no destination ztunnel reported a connection from spiffe://cluster.local/ns/default/sa/sleep"
api DELETE "/api/v1/namespaces/default/pods/$PROBE"

cat <<TXT

The mesh carries sleep's traffic to web-api over HBONE with both SPIFFE identities. From the host:
  docker compose exec istiod meshctl kubeconfig --state-dir /var/lib/mesh --server https://127.0.0.1:6443 -o /tmp/kubeconfig
  docker compose cp istiod:/tmp/kubeconfig ./kubeconfig && kubectl --kubeconfig ./kubeconfig get pods -o wide
Stop everything with: docker compose down -v
TXT
