#!/usr/bin/env bash
# Run the benchmarks; installs wrk where missing. Prints ratios against same-run baselines.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"
bootstrap_python
ensure_redis
ensure_postgres || warn "no PostgreSQL: only SQLite is measured"
command -v wrk >/dev/null || apt_install wrk
db=both; port_open 127.0.0.1 5432 || db=sqlite
"$PY" bench/istiod_bench.py --db "$db" "$@"
