#!/usr/bin/env bash
# Bring the mesh up on this machine and show it working. `bash scripts/demo.sh down` stops it.
#
# Today this is the control plane's config store: istiod on SQLite (TLS, token auth), its change
# stream in Redis, and Istio-style YAML applied with kubectl (or meshctl where kubectl is absent).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

STATE="${MESH_STATE_DIR:-$ROOT/.mesh}"
LISTEN="${MESH_LISTEN:-127.0.0.1:6443}"
PIDFILE="$STATE/istiod.pid"
KUBECONFIG_FILE="$STATE/kubeconfig"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

down() {
  if running; then
    say "stopping istiod (pid $(cat "$PIDFILE"))"
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 50); do running || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
  say "stopped; the state is kept in $STATE (delete it for a fresh start)"
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
  say "every change reached the Redis stream mesh:changes, in revision order (meshctl changes)"
  "$VENV/bin/meshctl" changes --count 5
  cat <<TXT

The mesh's API is up and stays running:
  export KUBECONFIG=$KUBECONFIG_FILE
  kubectl get pods -A                      # or: .venv/bin/meshctl apply -f FILE
  kubectl api-resources                    # every kind istiod serves
  .venv/bin/meshctl changes --follow      # the change stream, live
  curl -s http://127.0.0.1:15014/metrics   # istiod's metrics
  logs: $STATE/istiod.log
Stop it with: bash scripts/demo.sh down
TXT
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 [up|down]" ;;
esac
