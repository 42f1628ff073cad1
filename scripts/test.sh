#!/usr/bin/env bash
# Run the whole test suite. Installs what it needs (virtualenv, Debian packages), starts Redis
# and PostgreSQL only where none answers, and tells the tests which of root, Redis, PostgreSQL
# and kubectl this machine has: a test that needs one of those then fails instead of skipping.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

bootstrap_python
require=()
if [ "$(id -u)" = 0 ]; then
  require+=(root)
  # The node tests build real namespaces, bridges and in-pod rules.
  apt_install iproute2 iptables containernetworking-plugins util-linux || warn "could not install the data-plane packages"
  [ -x /usr/lib/cni/bridge ] && require+=(cni-plugins)
fi
ensure_redis && require+=(redis) || warn "no Redis: tests that need it will be skipped"
ensure_postgres && require+=(postgres) || warn "no PostgreSQL: tests that need it will be skipped"
command -v kubectl >/dev/null && require+=(kubectl) || warn "no kubectl: interop tests will be skipped"
command -v openssl >/dev/null || apt_install openssl || true
command -v openssl >/dev/null && require+=(openssl) || warn "no openssl: certificate interop tests will be skipped"
export MESH_REQUIRE="${require[*]}"

say "lint (ruff)"
"$VENV/bin/ruff" check --quiet .
say "tests (requiring: ${MESH_REQUIRE:-nothing})"
exec "$PY" -m pytest "$@"
