#!/usr/bin/env bash
# Bring the mesh up on this machine and show it working. `bash scripts/demo.sh down` stops it.
#
# Today this is the control plane: istiod on SQLite (TLS, token auth) with its change stream in
# Redis, and mesh-ca; Istio-style YAML applied with kubectl (or meshctl where kubectl is absent);
# nodes registered with their tokens; and the CA's node rule: a node gets the SPIFFE identity of a
# service account only while a pod of that account runs on it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

STATE="${MESH_STATE_DIR:-$ROOT/.mesh}"
LISTEN="${MESH_LISTEN:-127.0.0.1:6443}"
PIDFILE="$STATE/istiod.pid"
CA_LISTEN="${MESH_CA_LISTEN:-127.0.0.1:15012}"
XDS_LISTEN="${MESH_XDS_LISTEN:-127.0.0.1:15010}"
XDS_ADMIN="${MESH_XDS_ADMIN:-127.0.0.1:15011}"
KUBECONFIG_FILE="$STATE/kubeconfig"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running() { alive "$PIDFILE"; }

stop_pid() {  # stop_pid NAME PIDFILE
  if alive "$2"; then
    say "stopping $1 (pid $(cat "$2"))"
    kill "$(cat "$2")"
    for _ in $(seq 50); do alive "$2" || break; sleep 0.1; done
  fi
  rm -f "$2"
}

down() {
  stop_pid mesh-worker "$STATE/mesh-worker.pid"
  stop_pid mesh-xds "$STATE/mesh-xds.pid"
  stop_pid mesh-ca "$STATE/mesh-ca.pid"
  stop_pid istiod "$PIDFILE"
  say "stopped; the state is kept in $STATE (delete it for a fresh start)"
}

start_service() {  # start_service NAME PORT_TO_WAIT_FOR ARGS...
  local name=$1 addr=$2; shift 2
  local pidfile="$STATE/$name.pid"
  if alive "$pidfile"; then
    say "$name already running (pid $(cat "$pidfile"))"; return
  fi
  if [ -n "$addr" ] && port_open "${addr%:*}" "${addr##*:}"; then
    die "something already listens on $addr (stop it, or set the MESH_*_LISTEN variables)"
  fi
  setsid "$VENV/bin/$name" --state-dir "$STATE" "$@" >>"$STATE/$name.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  for _ in $(seq 150); do
    if [ -z "$addr" ]; then sleep 1; alive "$pidfile" || die "$name exited; see $STATE/$name.log"; return; fi
    port_open "${addr%:*}" "${addr##*:}" && return
    alive "$pidfile" || die "$name exited; see $STATE/$name.log"
    sleep 0.1
  done
  die "$name did not come up; see $STATE/$name.log"
}

start_ca() {
  say "starting mesh-ca on $CA_LISTEN (gRPC over TLS; its root in $STATE/root-cert.pem)"
  start_service mesh-ca "$CA_LISTEN" --listen "$CA_LISTEN"
}

start_xds() {
  say "starting mesh-xds on $XDS_LISTEN (delta ADS for ztunnels; admin on $XDS_ADMIN) and mesh-worker"
  start_service mesh-xds "$XDS_ADMIN" --listen "$XDS_LISTEN" --admin-listen "$XDS_ADMIN"
  start_service mesh-worker ""
}

xds_view() {
  say "what node-1's ztunnel receives from mesh-xds (meshctl x xds-config --node node-1):"
  "$VENV/bin/meshctl" x xds-config --state-dir "$STATE" --xds "$XDS_LISTEN" --node node-1 || true
  if [ ${#KC[@]} -gt 0 ]; then
    say "mesh-worker wrote each policy's ZtunnelAccepted condition back through istiod:"
    for _ in $(seq 50); do
      "${KC[@]}" get authorizationpolicy web-api-allow-sleep -o jsonpath='{.status.conditions[0].type}' 2>/dev/null \
        | grep -q ZtunnelAccepted && break
      sleep 0.2
    done
    "${KC[@]}" get authorizationpolicies \
      -o custom-columns='NAME:.metadata.name,CONDITION:.status.conditions[0].type,STATUS:.status.conditions[0].status,MESSAGE:.status.conditions[0].message'
  fi
}

identities() {
  say "registering two nodes; each gets a node token (kept in $STATE/nodes/, mode 0600)"
  for n in node-1 node-2; do
    [ -f "$STATE/nodes/$n.token" ] || "$VENV/bin/meshctl" node create "$n" --state-dir "$STATE"
  done
  if [ ${#KC[@]} -gt 0 ]; then
    say "placing sleep on node-1 and web-api on node-2 (spec.nodeName)"
    for p in sleep:node-1 web-api-v1:node-2 web-api-v2:node-2; do
      "${KC[@]}" patch pod "${p%%:*}" --type=merge -p "{\"spec\":{\"nodeName\":\"${p##*:}\"}}" >/dev/null 2>&1 || true
    done
    "${KC[@]}" get pods -o wide
  fi
  say "the CA's node rule: a node gets an identity only for a service account with a pod on it"
  local sleep_id=spiffe://cluster.local/ns/default/sa/sleep
  "$VENV/bin/meshctl" x cert --state-dir "$STATE" --ca "$CA_LISTEN" --node node-1 --identity "$sleep_id" || true
  "$VENV/bin/meshctl" x cert --state-dir "$STATE" --ca "$CA_LISTEN" --node node-2 --identity "$sleep_id" || true
  say "the refusal's full reason is in the CA's audit log (clients only get a generic one):"
  tail -n 1 "$STATE/ca-audit.log"
}

up() {
  bootstrap_python
  ensure_redis || die "Redis is needed for the change stream"
  mkdir -p "$STATE" && chmod 700 "$STATE"
  if running; then
    say "istiod already running (pid $(cat "$PIDFILE"))"
  else
    port_open "${LISTEN%:*}" "${LISTEN##*:}" && die "something already listens on $LISTEN (set MESH_LISTEN)"
    say "starting istiod on https://$LISTEN (SQLite in $STATE)"
    setsid "$VENV/bin/istiod" --state-dir "$STATE" --listen "$LISTEN" --metrics-listen 127.0.0.1:15014 \
      >>"$STATE/istiod.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    for _ in $(seq 150); do
      curl -sk "https://$LISTEN/readyz" 2>/dev/null | grep -q ok && break
      running || die "istiod exited; see $STATE/istiod.log"
      sleep 0.2
    done
  fi
  "$VENV/bin/meshctl" kubeconfig --state-dir "$STATE" >/dev/null
  start_ca
  start_xds
  export KUBECONFIG="$KUBECONFIG_FILE"

  if command -v kubectl >/dev/null; then
    KC=(kubectl --cache-dir "$STATE/kube-cache")
    APPLY=("${KC[@]}" apply -f)
  else
    warn "kubectl not found: applying with meshctl instead"
    KC=()
    APPLY=("$VENV/bin/meshctl" apply --state-dir "$STATE" -f)
  fi

  say "applying the demo manifests (samples/demo): Istio-documentation YAML, unchanged"
  "${APPLY[@]}" samples/demo
  say "applying them again: nothing changes"
  "${APPLY[@]}" samples/demo
  if [ ${#KC[@]} -gt 0 ]; then
    say "enrolling the namespace: kubectl label namespace default istio.io/dataplane-mode=ambient"
    "${KC[@]}" label namespace default istio.io/dataplane-mode=ambient --overwrite
    say "what the store holds"
    "${KC[@]}" get pods,services -o wide
    "${KC[@]}" get authorizationpolicies,gateways,httproutes
    say "an invalid policy is refused with the offending field, and nothing is stored"
    printf 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: typo\nspec:\n  action: ALOW\n' \
      | "${KC[@]}" apply -f - || true
  fi
  identities
  xds_view
  say "every change reached the Redis stream mesh:changes, in revision order (meshctl changes)"
  "$VENV/bin/meshctl" changes --count 5
  cat <<TXT

The control plane is up and stays running: istiod on https://$LISTEN, mesh-ca on $CA_LISTEN,
mesh-xds on $XDS_LISTEN, mesh-worker:
  export KUBECONFIG=$KUBECONFIG_FILE
  kubectl get pods -A                      # or: .venv/bin/meshctl apply -f FILE
  kubectl api-resources                    # every kind istiod serves
  .venv/bin/meshctl changes --follow      # the change stream, live
  .venv/bin/meshctl proxy-status           # proxies connected to mesh-xds
  .venv/bin/meshctl x cert --state-dir $STATE --node node-2 --identity spiffe://cluster.local/ns/default/sa/web-api
  curl -s http://127.0.0.1:15014/metrics   # istiod's metrics
  logs: $STATE/*.log (istiod, mesh-ca, mesh-xds, mesh-worker); CA audit: $STATE/ca-audit.log
Stop it with: bash scripts/demo.sh down
TXT
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 [up|down]" ;;
esac
