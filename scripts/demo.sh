#!/usr/bin/env bash
# Bring the mesh up on this machine and walk through the story of Istio's ambient mode.
# `bash scripts/demo.sh down` removes everything it made.
#
# As root: a control plane (istiod on SQLite, mesh-ca, mesh-xds, mesh-worker; a Redis is started
# when none answers) and a 2-node cluster of network namespaces (`meshctl cluster up`); the
# sample apps `sleep`, `notsleep` and `web-api` v1/v2; then, printing what happens: the namespace
# joins the mesh without a restart, both sides' SPIFFE identities, L4 policies, a waypoint with an
# L7 policy, a 90/10 canary, and the metrics. The mesh stays up afterwards.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

STATE="${MESH_STATE_DIR:-$ROOT/.mesh}"
export MESH_STATE_DIR="$STATE" KUBECONFIG="$STATE/kubeconfig"
MESHCTL="$VENV/bin/meshctl"

step() { printf '\n%s### %s%s\n' "$_B" "$*" "$_N"; }
show() { printf '$ %s\n' "$*"; "$@"; }

down() {
  [ -x "$MESHCTL" ] || die "nothing to stop (no .venv)"
  "$MESHCTL" cluster down --state-dir "$STATE"
  say "the demo's state stays in $STATE (logs, CA); the next run starts afresh"
}

kc() {  # kubectl, or the little meshctl can do where kubectl is absent
  if command -v kubectl >/dev/null; then kubectl --cache-dir "$STATE/kube-cache" "$@"
  elif [ "$1" = apply ]; then shift; "$MESHCTL" apply "$@"
  else warn "kubectl not found: skipping 'kubectl $*'"; fi
}

api_get() {  # api_get PATH PYTHON-EXPRESSION-ON-obj
  "$PY" - "$1" "$2" <<'PY'
import os, ssl, sys, httpx, yaml
state = os.environ["MESH_STATE_DIR"]
ctx = ssl.create_default_context(cafile=f"{state}/istiod-ca.pem")
token = open(f"{state}/admin-token").read().strip()
server = yaml.safe_load(open(f"{state}/kubeconfig"))["clusters"][0]["cluster"]["server"]
obj = httpx.get(server + sys.argv[1], headers={"Authorization": f"Bearer {token}"}, verify=ctx).json()
print(eval(sys.argv[2]))
PY
}

in_pod() {  # in_pod POD COMMAND... : run it inside the pod's network namespace (kubectl exec)
  local pod=$1; shift
  "$MESHCTL" x exec "$pod" -- "$@"
}

curl_status() {  # curl_status POD [METHOD] URL : the HTTP status, or 000 when refused or reset
  local pod=$1 method=GET url
  if [ $# -eq 3 ]; then method=$2; url=$3; else url=$2; fi
  in_pod "$pod" curl -s -m 3 -X "$method" -o /dev/null -w '%{http_code}' "$url" || true
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND... : until COMMAND succeeds
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  warn "gave up waiting for $what"
  return 1
}

status_is() { [ "$(curl_status "$2" "${4:-GET}" "$3")" = "$1" ]; }

metrics() {  # metrics NETNS IP PORT NAME LABEL... : one metric's samples with just those labels
  local netns=$1 ip=$2 port=$3; shift 3
  ip netns exec "$netns" curl -s "http://$ip:$port/stats/prometheus" | "$PY" -c '
import sys
from prometheus_client.parser import text_string_to_metric_families
name, labels = sys.argv[1], sys.argv[2:]
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        if s.name == name:
            shown = ", ".join(k + "=" + s.labels.get(k, "") for k in labels)
            print(f"  {s.value:>6.0f}  {shown}")
' "$@"
}

up() {
  [ "$(id -u)" = 0 ] || die "the demo builds network namespaces (pods are namespaces here): run it as root"
  bootstrap_python
  ensure_redis || die "Redis is needed for the change stream and the background jobs"
  command -v curl >/dev/null || apt_install curl
  if ip netns list 2>/dev/null | grep -q '^mesh-underlay'; then
    die "a mesh is already up on this machine; for a fresh walk-through run: bash scripts/demo.sh down"
  fi
  if [ -e "$STATE/istiod.db" ]; then
    say "removing the state of an earlier run ($STATE): the walk-through starts from an empty store"
    rm -rf "$STATE"
  fi
  mkdir -p "$STATE" && chmod 700 "$STATE"

  step "1. The control plane and a 2-node cluster (meshctl cluster up)"
  "$MESHCTL" cluster up --nodes 2 --state-dir "$STATE"

  step "2. The sample apps: sleep and notsleep (clients), web-api v1 and v2 (server)"
  kc apply -f samples/demo/sleep.yaml -f samples/demo/notsleep.yaml -f samples/demo/web-api.yaml
  kc wait --for=condition=Ready pod --all --timeout=60s >/dev/null || warn "pods are slow to start"
  kc get pods -o wide
  local vip pid_before pid_after web_ip
  vip=$(api_get /api/v1/namespaces/default/services/web-api 'obj["spec"]["clusterIP"]')
  web_ip=$(api_get /api/v1/namespaces/default/pods/web-api-v1 'obj["status"]["podIP"]')
  echo "Outside the mesh, sleep reaches web-api-v1's pod IP in plain text:"
  show in_pod sleep curl -s -m 3 "http://$web_ip:8080/hello"; echo

  step "3. Join the mesh: label the namespace (no restart, no sidecar)"
  pid_before=$(pgrep -f -- "--name v1" | head -1 || true)
  show kc label namespace default istio.io/dataplane-mode=ambient --overwrite
  wait_for 10 "sleep to reach web-api through the mesh" status_is 200 sleep "http://$vip/"
  pid_after=$(pgrep -f -- "--name v1" | head -1 || true)
  echo "web-api-v1's process: pid $pid_before before, $pid_after after (not restarted)"
  echo "Each node's ztunnel now carries the pods' traffic over HBONE (mutual TLS on 15008):"
  show "$MESHCTL" ztunnel-config workloads --node node-2
  echo "sleep calls the web-api service by name: its node's ztunnel answers the name with the VIP $vip"
  echo "(the pod's resolv.conf names the node's name server) and picks an endpoint (kube-proxy's job):"
  show in_pod sleep getent hosts web-api
  show in_pod sleep curl -s -m 3 "http://web-api/hello"; echo
  echo "The destination's ztunnel saw both identities (its access log):"
  grep '"direction":"inbound"' "$STATE"/nodes/*/ztunnel.log | grep -o '"src.identity":"[^"]*"\|"dst.identity":"[^"]*"' \
    | sort | uniq -c | head -4
  echo "The certificates node-1's ztunnel holds for its pods (SPIFFE identity per service account):"
  show "$MESHCTL" ztunnel-config certificates --node node-1

  step "4. L4 authorization, enforced by the destination ztunnel"
  show kc apply -f samples/demo/authz-allow-nothing.yaml
  wait_for 10 "allow-nothing to apply" status_is 000 sleep "http://$vip/"
  echo "allow-nothing: sleep → web-api: $(curl_status sleep "http://$vip/") (000 = connection refused by policy)"
  show kc apply -f samples/demo/authz-allow-sleep.yaml
  wait_for 10 "allow-sleep to apply" status_is 200 sleep "http://$vip/"
  echo "allow sleep:   sleep → web-api: $(curl_status sleep "http://$vip/");" \
    "notsleep → web-api: $(curl_status notsleep "http://$vip/")"

  step "5. A waypoint for L7: only GET from sleep"
  show "$MESHCTL" waypoint apply -n default --enroll-namespace --wait
  echo "web-api's traffic now comes through the waypoint, so the L4 policies (which would see the"
  echo "waypoint's identity) give way to an L7 policy the waypoint enforces:"
  show kc delete -f samples/demo/authz-allow-nothing.yaml -f samples/demo/authz-allow-sleep.yaml
  show kc apply -f samples/demo/authz-waypoint-get-only.yaml
  wait_for 20 "the L7 policy to apply" status_is 403 sleep "http://$vip/" DELETE
  echo "sleep GET    → $(curl_status sleep GET "http://$vip/")"
  echo "sleep DELETE → $(curl_status sleep DELETE "http://$vip/") ($(in_pod sleep curl -s -m 3 -X DELETE "http://$vip/"))"

  step "6. A 90/10 canary between web-api v1 and v2 (HTTPRoute on the web-api Service)"
  show kc apply -f samples/demo/web-api-canary.yaml
  sleep 1
  echo "100 requests from sleep:"
  in_pod sleep sh -c "for i in \$(seq 100); do curl -s -m 3 http://$vip/; echo; done" \
    | grep -o '"name": "v[12]"' | sort | uniq -c

  step "7. Metrics: L4 from ztunnel, L7 from the waypoint"
  echo "node-2's ztunnel, istio_tcp_connections_opened_total:"
  metrics mesh-node-2 198.19.255.12 15020 istio_tcp_connections_opened_total \
    source_principal destination_principal destination_workload
  local wp_ip wp_ns
  wp_ip=$(api_get /api/v1/namespaces/default/pods/waypoint-0 'obj["status"]["podIP"]')
  wp_ns=mesh-pod-$(api_get /api/v1/namespaces/default/pods/waypoint-0 'obj["metadata"]["uid"].replace("-", "")[:12]')
  echo "the waypoint, istio_requests_total:"
  metrics "$wp_ns" "$wp_ip" 15020 istio_requests_total \
    source_principal request_protocol response_code response_flags destination_workload

  cat <<TXT

The mesh is up and stays running (state in $STATE):
  export KUBECONFIG=$KUBECONFIG MESH_STATE_DIR=$STATE    # for kubectl, and for meshctl
  kubectl get pods,services,gateways -A
  $MESHCTL x exec sleep -- curl -s http://$vip/     # kubectl exec, for pods that are namespaces
  $MESHCTL ztunnel-config all --node node-1          # what a ztunnel knows
  $MESHCTL waypoint list -A
  $MESHCTL proxy-status --xds-admin http://198.19.255.1:15011   # proxies connected to mesh-xds
  logs: $STATE/*.log, $STATE/nodes/*/*.log
Stop it with: bash scripts/demo.sh down
TXT
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 [up|down]" ;;
esac
